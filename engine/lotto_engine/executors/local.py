"""The local executor: jobs in this process.

With one job slot, a job runs in the thread that waits for it (the runner's), one
after the other in submission order: the sequential grid, with nothing in between.
On CPU this matters for speed: a 2-thread job trained from a second thread ran the
`demo` grid 2.5x slower on the 2-core reference machine (training in the main thread
under ``OMP_WAIT_POLICY=PASSIVE`` was as slow: OpenMP's spin-waits, most likely).

With several slots (a GPU each, or shares of the CPU threads), one worker thread per
slot takes the next task when free, and :meth:`wait` hands their messages over.
Each job seeds itself, so its numbers do not depend on which slot runs it or when;
on CPU the slots share the threads (``run.threads / slots`` each), and the thread
count, as always, changes the rounding.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Sequence

import torch

from .. import devices
from ..data import Dataset
from ..errors import one_line
from ..protocol import JobHooks, run_job
from .base import Finished, Message, Task
from .worker import job_hooks

DataFor = Callable[[torch.device], Dataset]
Deliver = Callable[[Message], None]


class LocalExecutor:
    """Runs tasks in this process over ``slots``; see the module doc."""

    def __init__(
        self,
        slots: Sequence[torch.device],
        data_for: DataFor,
        *,
        threads: int,
        cancel: threading.Event,
        progress_interval: float = 0.1,
    ) -> None:
        self.slots = list(slots)
        self.capacity = len(self.slots)
        self._data_for = data_for
        self._threads = threads
        self._cancel = cancel
        self._interval = progress_interval
        self._pending: collections.deque[Task] = collections.deque()  # one slot: run by wait()
        self._inbox: queue.Queue[Task | None] = queue.Queue()
        self._outbox: queue.Queue[Message] = queue.Queue()
        self._in_workers = 0  # tasks handed to the workers whose Finished was not handed over
        self._workers = [
            threading.Thread(target=self._work, args=(d,), name=f"lotto-job-{i}", daemon=True)
            for i, d in enumerate(self.slots)
        ] if self.capacity > 1 else []
        for worker in self._workers:
            worker.start()

    def submit(self, group: Sequence[Task]) -> None:
        for task in group:
            if self._workers:
                self._in_workers += 1
                self._inbox.put(task)
            else:
                self._pending.append(task)

    @property
    def busy(self) -> int:
        return self._in_workers + len(self._pending)

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

    # ------------------------------------------------------------------ one slot

    def _run_here(self, task: Task, on_message: Deliver) -> None:
        """Run ``task`` in this thread, its messages delivered as they happen. An error
        of ``on_message`` (the runner's) is not the job's: it propagates. Ctrl-C ends
        the job as cancelled, then propagates."""
        device = self.slots[0]
        broken: list[BaseException] = []

        def deliver(message: Message) -> None:
            try:
                on_message(message)
            except BaseException as err:
                broken.append(err)
                raise

        started = time.perf_counter()
        try:
            with devices.on_device(device):
                output = run_job(task.spec, self._data_for(device), parent=task.parent, resume=task.resume,
                                 hooks=self._hooks(task, device, deliver))
        except KeyboardInterrupt:
            if not broken:
                on_message(Finished(task.key, None, "cancelled", time.perf_counter() - started, cancelled=True))
            raise
        except Exception as err:
            if broken and err is broken[0]:
                raise
            on_message(Finished(task.key, None, f"{type(err).__name__}: {one_line(err)}", time.perf_counter() - started))
            return
        on_message(Finished(task.key, output, None, time.perf_counter() - started))

    # ------------------------------------------------------------------ several slots

    def _work(self, device: torch.device) -> None:
        torch.set_num_threads(self._threads)  # per thread under OpenMP: set it where jobs run
        with devices.on_device(device):
            while (task := self._inbox.get()) is not None:
                self._outbox.put(self._run(task, device))

    def _run(self, task: Task, device: torch.device) -> Finished:
        started = time.perf_counter()
        try:
            data = self._data_for(device)
            output = run_job(task.spec, data, parent=task.parent, resume=task.resume,
                             hooks=self._hooks(task, device, self._outbox.put))
        except Exception as err:  # the job raised: its error is recorded, the grid goes on
            return Finished(task.key, None, f"{type(err).__name__}: {one_line(err)}", time.perf_counter() - started)
        return Finished(task.key, output, None, time.perf_counter() - started)

    def _hooks(self, task: Task, device: torch.device, put: Deliver) -> JobHooks:
        return job_hooks(task, device, put, self._cancel, self._interval)
