"""The local executor: jobs in this process.

With one job slot, a job runs in the thread that waits for it (the runner's), one
after the other in submission order: the sequential grid, with nothing in between.
On CPU this matters for speed: a 2-thread job trained from a second thread ran the
`demo` grid 2.5x slower on the 2-core reference machine (training in the main thread
under ``OMP_WAIT_POLICY=PASSIVE`` was as slow: OpenMP's spin-waits, most likely).

With several slots (a GPU each, or shares of the CPU threads), or one on a GPU, one
worker thread per slot takes the next task when free, and :meth:`wait` hands their
messages over.
Each job seeds itself, so its numbers do not depend on which slot runs it or when;
on CPU the slots share the threads (``run.threads / slots`` each), and the thread
count, as always, changes the rounding.

With ``run.lockstep`` (on; auto on CUDA when a probe finds it faster) the executor
takes whole sibling groups: the runner submits the ready siblings of one parent
together, the executor splits them into units of tasks that can share batches, and
a slot runs a unit at a time: each job prepared on its own (its Started, its mask),
the nets trained in one step (:mod:`lotto_engine.lockstep`), each job finished on its
own (its Finished, its artifacts). A unit of one is the plain path.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence

import torch

from .. import devices
from ..data import Dataset
from ..errors import one_line
from ..lockstep import CHOICES, MAX_GROUP, Choices, group_key, train_together, unsupported
from ..protocol.jobs import JobHooks, JobOutput, PreparedJob, prepare_job, run_job
from ..step import STEPS
from ..training import TrainOutcome, train
from .base import Finished, Message, Task
from .worker import job_hooks

DataFor = Callable[[torch.device], Dataset]
Deliver = Callable[[Message], None]


class _HandlerFailed(BaseException):
    """The runner's message handler raised while a job reported: not the job's error.
    A BaseException, so no ``except Exception`` on the way records it as the job's."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class LocalExecutor:
    """Runs tasks in this process over ``slots``; see the module doc.

    ``lockstep`` is ``run.lockstep``: with ``on`` (or ``auto`` on CUDA, after a probe:
    ``choices``, default :data:`lotto_engine.lockstep.CHOICES`) siblings that can share
    batches train in one step, and the executor takes up to
    :data:`~lotto_engine.lockstep.MAX_GROUP` tasks per slot at once."""

    def __init__(
        self,
        slots: Sequence[torch.device],
        data_for: DataFor,
        *,
        threads: int,
        cancel: threading.Event,
        progress_interval: float = 0.1,
        lockstep: str = "off",
        choices: Choices | None = None,
    ) -> None:
        self.slots = list(slots)
        #: "on", "off" or "probe" (auto on CUDA): devices.lockstep_mode
        self.lockstep = devices.lockstep_mode(lockstep, self.slots[0])
        self._choices = choices or CHOICES
        self.capacity = len(self.slots) * (1 if self.lockstep == "off" else MAX_GROUP)
        self._data_for = data_for
        self._threads = threads
        self._cancel = cancel
        self._interval = progress_interval
        #: units (a task, or siblings that may train together) to run; one slot: run by wait()
        self._pending: collections.deque[list[Task]] = collections.deque()
        self._inbox: queue.Queue[list[Task] | None] = queue.Queue()
        self._outbox: queue.Queue[Message] = queue.Queue()
        self._in_workers = 0  # tasks handed to the workers whose Finished was not handed over
        # one CPU slot trains in the runner's thread (see the module doc); on a GPU a
        # slot thread only launches kernels, and the runner's store writes (a SQLite
        # commit per epoch) then stay off the training thread
        threaded = len(self.slots) > 1 or self.slots[0].type != "cpu"
        self._workers = [
            threading.Thread(target=self._work, args=(d,), name=f"lotto-job-{i}", daemon=True)
            for i, d in enumerate(self.slots)
        ] if threaded else []
        for worker in self._workers:
            worker.start()

    def submit(self, group: Sequence[Task]) -> None:
        for unit in self._units(group):
            if self._workers:
                self._in_workers += len(unit)
                self._inbox.put(unit)
            else:
                self._pending.append(unit)

    @property
    def busy(self) -> int:
        return self._in_workers + sum(len(unit) for unit in self._pending)

    def wait(self, on_message: Deliver, timeout: float) -> None:
        if not self._workers:
            if self._pending:
                self._run_here(self._pending.popleft(), on_message)
            return
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._outbox.get(timeout=left)
            except queue.Empty:
                return
            if isinstance(message, Finished):
                self._in_workers -= 1
                on_message(message)
                return
            on_message(message)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Let the workers go and wait for them, even through Ctrl-C (a running job
        stops at its next batch once cancelled)."""
        for _ in self._workers:
            self._inbox.put(None)
        for worker in self._workers:
            while worker.is_alive():
                try:
                    worker.join(0.2)
                except KeyboardInterrupt:
                    self._cancel.set()
        STEPS.clear()  # captured steps hold their graphs' memory: the grid is over

    def notes(self) -> list[str]:
        return []

    def describe(self) -> str | None:
        return None

    # ------------------------------------------------------------------ one slot

    def _run_here(self, unit: list[Task], on_message: Deliver) -> None:
        """Run ``unit`` in this thread, its messages delivered as they happen. An error
        of ``on_message`` (the runner's) is not a job's: it propagates. Ctrl-C ends
        the unit's jobs as cancelled, then propagates."""

        def deliver(message: Message) -> None:
            try:
                on_message(message)
            except BaseException as err:
                raise _HandlerFailed(err) from err

        try:
            with devices.on_device(self.slots[0]):
                self._run_unit(unit, self.slots[0], deliver)
        except _HandlerFailed as failed:
            raise failed.error from None

    # ------------------------------------------------------------------ several slots

    def _work(self, device: torch.device) -> None:
        torch.set_num_threads(self._threads)  # per thread under OpenMP: set it where jobs run
        with devices.on_device(device):
            while (unit := self._inbox.get()) is not None:
                self._run_unit(unit, device, self._outbox.put)

    # ------------------------------------------------------------------ a unit of tasks

    def _units(self, group: Sequence[Task]) -> list[list[Task]]:
        """``group`` (siblings of one parent) as units to run: one task each without
        lockstep; with it, the tasks that may share batches together (the jobs' own
        settings only: :func:`_run_unit` checks the prepared nets again)."""
        if self.lockstep == "off":
            return [[task] for task in group]
        units: dict[Hashable, list[Task]] = {}
        for task in group:
            units.setdefault(_sibling_key(task), []).append(task)
        return [unit[i : i + MAX_GROUP] for unit in units.values() for i in range(0, len(unit), MAX_GROUP)]

    def _run_unit(self, unit: list[Task], device: torch.device, put: Deliver) -> None:
        """Run ``unit``, every job's messages and its Finished going to ``put``: one
        task as :func:`~lotto_engine.protocol.run_job` runs it, siblings through
        :meth:`_run_siblings`. A job that raises ends with its error and the grid goes
        on. Ctrl-C ends the unit's jobs not finished yet as cancelled, then propagates."""
        started = time.perf_counter()
        ended: set[str] = set()

        def end(task: Task, output: JobOutput | None, error: Exception | None = None, *, wall: float) -> None:
            ended.add(task.key)
            put(Finished(task.key, output, None if error is None else f"{type(error).__name__}: {one_line(error)}",
                         wall))

        try:
            if self.lockstep != "off" and self._cancel.is_set():  # queued behind a cancel: none of it started
                for task in unit:
                    ended.add(task.key)
                    put(Finished(task.key, None, "cancelled", 0.0, cancelled=True))
            elif len(unit) == 1:
                task = unit[0]
                try:
                    output = run_job(task.spec, self._data_for(device), parent=task.parent, resume=task.resume,
                                     hooks=self._hooks(task, device, put))
                except Exception as err:  # the job raised: its error is recorded, the grid goes on
                    end(task, None, err, wall=time.perf_counter() - started)
                else:
                    end(task, output, wall=time.perf_counter() - started)
            else:
                self._run_siblings(unit, device, put, end)
        except KeyboardInterrupt:
            for task in unit:
                if task.key not in ended:
                    put(Finished(task.key, None, "cancelled", time.perf_counter() - started, cancelled=True))
            raise

    def _run_siblings(
        self, unit: list[Task], device: torch.device, put: Deliver, end: Callable[..., None]
    ) -> None:
        """Prepare each job of ``unit``, train the prepared nets (together where they
        can, :meth:`_together`), finish each. An error in training ends every job
        trained in that step. A job's wall time is its preparation plus its group's
        training and its own finish."""
        try:
            data = self._data_for(device)
        except Exception as err:
            for task in unit:
                end(task, None, err, wall=0.0)
            return
        prepared: list[tuple[Task, PreparedJob]] = []
        preparing: dict[str, float] = {}
        for task in unit:
            since = time.perf_counter()
            try:
                prepared.append((task, prepare_job(task.spec, data, parent=task.parent, resume=task.resume,
                                                   hooks=self._hooks(task, device, put))))
            except Exception as err:  # the job raised: its error is recorded, the others go on
                end(task, None, err, wall=time.perf_counter() - since)
                continue
            preparing[task.key] = time.perf_counter() - since
        for group, note in self._together(prepared, data):
            since = time.perf_counter()
            try:
                outcomes = _train(group, data)
            except Exception as err:
                for task, _ in group:
                    end(task, None, err, wall=preparing[task.key] + time.perf_counter() - since)
                continue
            for (task, job), outcome in zip(group, outcomes, strict=True):
                try:
                    output = job.finish(outcome)
                except Exception as err:
                    end(task, None, err, wall=preparing[task.key] + time.perf_counter() - since)
                    continue
                if note is not None:
                    output.notes.append(note)
                end(task, output, wall=preparing[task.key] + time.perf_counter() - since)

    def _together(
        self, prepared: list[tuple[Task, PreparedJob]], data: Dataset
    ) -> list[tuple[list[tuple[Task, PreparedJob]], str | None]]:
        """The prepared jobs as groups to train in one step (a job alone where lockstep
        is off, does not apply, or the probe finds it slower), each with the note of
        the probe that decided it (None but once per architecture and device)."""
        if self.lockstep == "off" or len(prepared) < 2:
            return [([item], None) for item in prepared]
        by_key: dict[Hashable, list[tuple[Task, PreparedJob]]] = {}
        for task, job in prepared:
            key = (group_key(job.model, job.loop), job.spec.train.model_dump_json(), job.spec.fast)
            by_key.setdefault(key, []).append((task, job))
        out: list[tuple[list[tuple[Task, PreparedJob]], str | None]] = []
        for group in by_key.values():
            first = group[0][1]
            if len(group) == 1 or unsupported(first.model, first.spec.fast) is not None:
                out += [([item], None) for item in group]
                continue
            note = None
            if self.lockstep == "probe":
                spec = first.spec
                together, note = self._choices.choose(
                    [job.model for _, job in group], [job.loop for _, job in group], data.train, spec.train,
                    spec.fast, label=f"{spec.model.name} {spec.job.activation}",
                )
                if not together:
                    out += [([group[0]], note)] + [([item], None) for item in group[1:]]
                    continue
            out.append((group, note))
        return out

    def _hooks(self, task: Task, device: torch.device, put: Deliver) -> JobHooks:
        return job_hooks(task, device, put, self._cancel, self._interval)


def _train(group: list[tuple[Task, PreparedJob]], data: Dataset) -> list[TrainOutcome]:
    """Train the prepared jobs of ``group``: one alone (``train``), several in one step."""
    spec = group[0][1].spec
    if len(group) == 1:
        job = group[0][1]
        return [train(job.model, data.train, data.val, spec.train, spec.fast, job.loop)]
    models, loops = [job.model for _, job in group], [job.loop for _, job in group]
    return train_together(models, data.train, data.val, spec.train, spec.fast, loops)


def _sibling_key(task: Task) -> Hashable:
    """What siblings must share to train in one step, as far as their tasks tell
    (architecture, activation, seed, epochs, training, augmentation, fast path, the
    resume epoch): the prepared nets are checked again (:func:`~lotto_engine.lockstep.group_key`)."""
    spec = task.spec
    return (
        spec.job.kind, spec.job.activation, spec.job.seed, spec.epochs, spec.prune.rewind_epoch,
        spec.model.model_dump_json(), spec.train.model_dump_json(), spec.data.model_dump_json(), spec.fast,
        None if task.resume is None else task.resume.epoch,
    )
