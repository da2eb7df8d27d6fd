"""The runner: turns a plan into finished runs in the store, emitting typed events.

It builds the dependency graph of the jobs still to run (resume, adoption from other
experiments, explicit reruns), hands ready jobs with their inputs to an executor
(``run.executor``), and turns what comes back into store writes and events. It is
the only writer of the store: runs, epochs, masks, artifacts and checkpoints. The
jobs themselves (:mod:`lotto_engine.protocol`) never see the store.

A job is checkpointed after every epoch; running the same experiment again
continues an interrupted job in its run row from its last checkpoint, with numbers
identical to an uninterrupted run. An explicit rerun starts over.

Each call that runs or adopts jobs records the experiment's provenance once
(:meth:`Store.record_provenance`); provenance is never part of a job key.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import devices
from ..config import ExperimentConfig
from ..data import Dataset, load_dataset
from ..naming import name_to_store
from ..errors import StoreError, one_line
from ..events import (
    BatchProgress,
    EpochFinished,
    Event,
    GridFinished,
    GridStarted,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    Notice,
)
from ..executors import (
    BatchDone, Checkpointed, EpochDone, Executor, Finished, Masked, Message, Retrying, Started, Task, WorkerSettings,
    make_executor,
)
from ..files import on_network_filesystem
from ..health import FLAGS
from ..models import build_model
from ..plan import Job, Plan, build_plan
from ..protocol import JobCheckpoint, JobSpec
from ..provenance import experiment_provenance
from ..records import RunResult
from ..statuses import FINAL, RERUNNABLE
from ..store import Store, StoreWriteError, tensor_problem
from .graph import JobGraph

EventHandler = Callable[[Event], None]

#: what a pruned job records when its parent did not finish, or left no weights
PARENT_FAILED = "its dense run did not finish"
PARENT_MISSING = "its dense run has not finished (no saved weights)"
#: the same for an imp level whose previous level did not finish
LEVEL_FAILED = "its previous imp level did not finish"
LEVEL_MISSING = "its previous imp level has not finished (no saved weights)"
#: saved tensors that are not a net's weights (no state dict to check them against)
_NOT_WEIGHTS = frozenset({"mask", "rewind_order"})


@dataclass(frozen=True)
class GridSummary:
    """What a call to :meth:`Runner.run` did."""

    experiment_id: int
    counts: dict[str, int]
    cancelled: bool
    wall_time: float
    #: peak bytes per device ("cpu": the process's peak resident set)
    peak_memory: dict[str, int] = field(default_factory=dict)
    #: health flag -> jobs of the plan whose latest run has it
    flags: dict[str, int] = field(default_factory=dict)
    #: jobs of the plan whose latest run has at least one health flag
    flagged: int = 0
    #: jobs whose finished run was made before health checks (flags unknown)
    unchecked: int = 0

    @property
    def ok(self) -> bool:
        """True when no job of the plan is failed or diverged."""
        return not (self.counts.get("failed") or self.counts.get("diverged"))


@dataclass
class _Running:
    """A submitted job as the runner tracks it: queued until its executor says it
    started (``Started``, or a pruned job's ``Masked``, which comes first)."""

    job: Job
    run_id: int
    epochs: int = 0
    started: bool = False


class Runner:
    """Runs an experiment's plan against a store, emitting typed events.

    ``cancel`` (a ``threading.Event``) is checked by every job before each training
    batch; a cancelled job is recorded as ``cancelled`` (its checkpoint kept) and the
    grid stops. Event handlers are called one at a time, from the thread that calls
    :meth:`run`.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        store: Store,
        *,
        on_event: EventHandler | None = None,
        cancel: threading.Event | None = None,
        progress_interval: float = 0.1,
        default_name: str | None = None,
    ) -> None:
        self.config = config
        #: the name a new (or unnamed) experiment gets when run.name is empty
        #: (:func:`lotto_engine.naming.default_name`); a named experiment keeps its name
        self.default_name = default_name
        self.store = store
        self.execution = devices.execution(config.run)
        if self.execution.remote:  # a worker elsewhere reads the data from this path, not from its own cwd
            root = str(Path(config.data.root).expanduser().absolute())
            self.config = config = config.model_copy(update={"data": config.data.model_copy(update={"root": root})})
        self.device: torch.device = self.execution.device
        self.fast = self.execution.fast
        self.slots: list[torch.device] = self.execution.slots
        self.plan: Plan = build_plan(config, precision=self.fast.precision)
        self.cancel = cancel or threading.Event()
        self.progress_interval = progress_interval
        self._emit_to = on_event
        self._emit_lock = threading.Lock()
        self._datasets: dict[torch.device, Dataset] = {}
        self._data_lock = threading.Lock()
        self._noticed: set[str] = set()
        self._references: dict[str, dict[str, torch.Tensor]] = {}
        #: cancelled jobs that rerun_failed continues from their checkpoints
        self._continuable: frozenset[str] = frozenset()
        #: peak memory reported by remote workers, per device
        self._worker_peak: dict[str, int] = {}

    # ------------------------------------------------------------------ public

    def run(self, jobs: Iterable[str] | None = None) -> GridSummary:
        """Run the jobs not yet done (resume), or exactly ``jobs`` (by key) again.

        Raises :class:`~lotto_engine.errors.LottoError` subclasses for missing data or
        an experiment already running elsewhere (and, from the constructor, for a
        device that does not exist).
        """
        started = time.perf_counter()
        cpu_slots = sum(1 for d in self.slots if d.type == "cpu")
        threads = devices.configure(max(1, self.execution.threads // max(1, cpu_slots)), self.config.run.deterministic)
        devices.reset_peak_memory(self.slots)
        self._worker_peak = {}
        self._cluster: str | None = None
        # connected before anything is written: an unreachable cluster leaves no experiment behind
        executor = make_executor(
            self.config.run, slots=self.slots, data_for=self._data, threads=threads, cancel=self.cancel,
            settings=WorkerSettings(self.execution.device.type, self.execution.threads, self.config.run.deterministic,
                                    self.progress_interval),
            progress_interval=self.progress_interval,
        )
        try:
            return self._run(jobs, executor, started)
        finally:
            executor.close()

    def _run(self, jobs: Iterable[str] | None, executor: Executor, started: float) -> GridSummary:
        precision = self.fast.precision
        found = self.store.find_experiment(self.config, precision=precision)
        if found is None:
            self._data()  # a missing dataset must not leave an empty experiment behind
        if self.default_name is not None:
            name = name_to_store(self.config, self.default_name, found.name if found else None)
            self.config = self.config.model_copy(update={"run": self.config.run.model_copy(update={"name": name})})
        experiment = self.store.experiment_for(self.config, precision=precision)
        with self.store.lock_experiment(experiment.id):
            self.store.recover_interrupted(experiment.id)
            self.store.remove_partial_artifacts(job.key for job in self.plan)
            reused: frozenset[str] = frozenset()
            failed_parents: set[str] = set()
            resuming = jobs is None
            if jobs is None:
                todo, reused, failed_parents = self._resume(experiment.id)
            else:
                wanted = set(jobs)
                unknown = wanted - {job.key for job in self.plan}
                if unknown:
                    raise StoreError(f"no job {sorted(unknown)[0]!r} in this experiment's plan")
                todo = [job for job in self.plan if job.key in wanted]
            todo_keys = {job.key for job in todo}
            skipped = frozenset(job.key for job in self.plan if job.key not in todo_keys)
            self._emit(GridStarted(experiment.id, self.plan.jobs, skipped, self.execution.where, reused))
            self._notice(self.execution.notes)
            self._cluster = executor.describe()
            if self._cluster:
                self._notice([f"jobs run on the {self._cluster}"])
            self._executor_notes(executor)
            network = on_network_filesystem(self.store.root)
            if network:
                self._notice([f"the store {self.store.root} is on a network file system ({network}): SQLite's "
                              "write-ahead log needs a local disk; keep --store on this machine's disk "
                              "(workers never write it)"])
            if todo:
                self._data(self.slots[0])  # before provenance: a download has then happened
            if todo or reused:
                self._record_provenance(experiment.id, ran=len(todo), reused=len(reused),
                                        action="rerun" if not resuming else "start" if found is None else "resume")
            if todo:
                self._drive(experiment.id, JobGraph(todo, failed_parents), executor, resuming=resuming)
            counts, flags, flagged, unchecked = self._counts(experiment.id)
        wall = time.perf_counter() - started
        cancelled = self.cancel.is_set()
        peak = devices.peak_memory(self.slots)
        peak.update(self._worker_peak)
        self._emit(GridFinished(experiment.id, counts, cancelled, wall, peak, flags, flagged, unchecked))
        return GridSummary(experiment.id, counts, cancelled, wall, peak, flags, flagged, unchecked)

    def rerun(self, *job_keys: str) -> GridSummary:
        """Run jobs again as new attempts, from scratch (a job with all its dependents)."""
        keys = dict.fromkeys(k for key in job_keys for k in [key, *self._dependents(key)])
        return self.run(list(keys))

    def rerun_failed(self) -> GridSummary:
        """Run again every job whose latest attempt failed, diverged or was cancelled
        (with the dependents of such jobs); nothing runs when there are none. A
        cancelled job continues from its checkpoint, as a resume would; the others
        start over."""
        experiment = self.store.find_experiment(self.config, precision=self.fast.precision)
        latest = {} if experiment is None else self.store.latest_statuses(experiment.id)
        keys = [job.key for job in self.plan if latest.get(job.key) in RERUNNABLE]
        self._continuable = frozenset(key for key in keys if latest.get(key) == "cancelled")
        try:
            return self.rerun(*keys)
        finally:
            self._continuable = frozenset()

    # ------------------------------------------------------------------ what to run

    def _resume(self, experiment_id: int) -> tuple[list[Job], frozenset[str], set[str]]:
        """What a resume runs: (jobs to run, keys adopted and skipped, diverged parents).

        Jobs never attempted here are first adopted from other experiments when they
        finished there. Final jobs (done, diverged) are skipped. A job below a diverged
        run (its dense net, or an earlier imp level) is recorded once as failed, then
        skipped. A done job whose saved tensors are gone or bad runs again when a job to
        run needs them.
        """
        latest = self.store.latest_statuses(experiment_id)
        adopted = self.store.adopt_runs(experiment_id, [job.key for job in self.plan if job.key not in latest])
        latest = self.store.latest_statuses(experiment_id)
        for job in self.plan:  # a checkpoint outlived its job's end (killed between the two writes)
            if latest.get(job.key) in FINAL:
                self.store.drop_checkpoint(job.key)
        # jobs below a diverged run never run: each is recorded failed once, then skipped
        dead = {key for key, status in latest.items() if status == "diverged"}
        todo = []
        for job in self.plan:  # parents come first
            if latest.get(job.key) in FINAL:
                continue
            if job.parent in dead and job.key in latest:
                dead.add(job.key)
                continue
            todo.append(job)
        keys = {job.key for job in todo}
        # done jobs whose saved tensors a job to run needs but which are gone or bad
        # run again (and so, in turn, may the jobs they read from)
        missing: set[str] = set()
        frontier = todo
        while frontier:
            sources = {src for job in frontier for src, _ in self._inputs(job).values()} - keys - dead - missing
            again = {key for key in sources if not self._usable_weights(key, frontier)}
            missing |= again
            frontier = [job for job in self.plan if job.key in again]
        run = [job for job in self.plan if job.key in keys | missing]
        return run, frozenset(adopted).difference(job.key for job in run), dead

    def _dependents(self, key: str) -> list[str]:
        """Every job downstream of ``key`` (children, their children...)."""
        out: list[str] = []
        frontier = [key]
        while frontier:
            children = [job.key for parent in frontier for job in self.plan.dependents(parent)]
            out += children
            frontier = children
        return out

    def _inputs(self, job: Job) -> dict[str, tuple[str, str]]:
        return JobSpec.of(job, self.config, self.fast).inputs

    def _has_inputs(self, job: Job) -> bool:
        """Whether the saved tensors ``job`` reads exist."""
        return all(self.store.has_tensors(key, name) for key, name in self._inputs(job).values())

    def _usable_weights(self, source: str, readers: list[Job]) -> bool:
        """Whether the tensors ``readers`` need from job ``source`` exist and load
        clean; a bad file is named in a note (its job then trains again)."""
        wanted = {(name, job) for job in readers for key, name in self._inputs(job).values() if key == source}
        for name, job in sorted(wanted, key=lambda item: item[0]):
            if not self.store.has_tensors(source, name):
                return False
            like = None if name in _NOT_WEIGHTS else self._reference(job)
            problem = self.store.check_tensors(source, name, like=like)
            if problem:
                self._notice([f"{problem}; its job trains again"])
                return False
        return True

    def _reference(self, job: Job) -> dict[str, torch.Tensor]:
        """A state dict shaped like ``job``'s net (names, shapes, dtypes), to check
        loaded tensors against; one per activation."""
        if job.activation not in self._references:
            data = self._data()
            model = build_model(self.config.model, data.input_shape, data.num_classes, job.activation, 0)
            self._references[job.activation] = model.state_dict()
        return self._references[job.activation]

    # ------------------------------------------------------------------ driving the executor

    def _drive(self, experiment_id: int, graph: JobGraph, executor: Executor, *, resuming: bool) -> None:
        """Submit ready jobs while the executor has room; record what comes back.

        A submitted job's run is ``queued`` (the executor may hold it in a queue: a
        Slurm array waits for nodes) until the executor says it started."""
        running: dict[str, _Running] = {}  # submitted, queued or running
        try:
            while True:
                ready: list[Task] = []
                while not self.cancel.is_set() and len(running) < executor.capacity:
                    job = graph.ready()
                    if job is None:
                        break
                    prepared = self._prepare(experiment_id, job, graph, resuming=resuming)
                    if prepared is not None:
                        ready.append(prepared[0])
                        running[job.key] = prepared[1]
                        self._emit(JobQueued(job, prepared[1].run_id))
                # siblings (one parent) go together: an executor may train them in one step
                for _, group in itertools.groupby(ready, key=lambda task: task.spec.job.parent):
                    executor.submit(list(group))
                if not running:
                    if graph.waiting and not self.cancel.is_set():
                        raise RuntimeError(f"{len(graph.waiting)} jobs wait for parents that never run")
                    return
                executor.wait(lambda message: self._handle(message, running, graph), 0.2)
                self._executor_notes(executor)
        except BaseException:  # Ctrl-C, a store that cannot take results, a handler that raised
            self.cancel.set()
            self._drain(running, graph, executor)
            raise

    def _drain(self, running: dict[str, _Running], graph: JobGraph, executor: Executor) -> None:
        """After an error: wait for the cancelled jobs to stop and record their ends,
        best effort, even through more Ctrl-C presses (the store must not close
        under them)."""

        def record_end(message: Message) -> None:
            if isinstance(message, (Finished, Checkpointed)) and message.key in running:
                with contextlib.suppress(Exception):
                    self._handle(message, running, graph)
                if isinstance(message, Finished):
                    running.pop(message.key, None)

        while running and executor.busy:
            try:
                executor.wait(record_end, 0.2)
            except KeyboardInterrupt:
                continue
            except Exception:  # the executor itself broke: nothing more will come
                break
        for entry in list(running.values()):  # stopped with no end handed over: never left queued or running
            with contextlib.suppress(Exception):
                self._record(entry.run_id, RunResult(status="cancelled", error="cancelled"))
        running.clear()

    def _prepare(self, experiment_id: int, job: Job, graph: JobGraph, *, resuming: bool) -> tuple[Task, _Running] | None:
        """Queue ``job``'s run row and gather its inputs; record it failed (and return
        None) when its parent did not finish or left no usable weights."""
        spec = JobSpec.of(job, self.config, self.fast)
        resuming = resuming or job.key in self._continuable
        resume = self._checkpoint(job) if resuming else None
        if not resuming:
            self.store.drop_checkpoint(job.key)  # an explicit rerun starts over
        if resume is not None:
            run_id = self.store.resume_run(experiment_id, job, resume.train.curve)
        else:
            run_id = self.store.start_run(experiment_id, job)
        parent = None
        error = None
        if graph.parent_failed(job):
            error = PARENT_FAILED if job.parent == job.dense else LEVEL_FAILED
        elif job.parent is not None:
            if not self._has_inputs(job):
                error = PARENT_MISSING if job.parent == job.dense else LEVEL_MISSING
            else:
                try:
                    reference = self._reference(job)
                    parent = {
                        local: self.store.load_tensors(key, name, like=None if name in _NOT_WEIGHTS else reference)
                        for local, (key, name) in spec.inputs.items()
                    }
                except StoreError as err:
                    error = f"{type(err).__name__}: {one_line(err)}"
        if error is not None:
            self._record(run_id, RunResult(status="failed", error=error))
            self.store.drop_checkpoint(job.key)
            self._emit(JobFailed(job, run_id, error))
            graph.finish(job.key, ok=False)
            return None
        return Task(spec, parent, resume), _Running(job, run_id)

    def _checkpoint(self, job: Job) -> JobCheckpoint | None:
        """The checkpoint to continue ``job`` from, or None; a bad one is named in a
        note and deleted (the job starts over)."""
        try:
            payload = self.store.load_checkpoint(job.key)
            if payload is None:
                return None
            checkpoint = JobCheckpoint.from_payload(payload, job.key)
            problem = tensor_problem(checkpoint.train.weights, self._reference(job))
            if problem:
                raise ValueError(problem)
        except (StoreError, ValueError) as err:
            text = str(err)
            path = self.store.checkpoint_path(job.key)
            where = "" if str(path) in text else f"checkpoint {path}: "
            self._notice([f"{where}{text}; its job starts over"])
            self.store.drop_checkpoint(job.key)
            return None
        return checkpoint

    def _handle(self, message: Message, running: dict[str, _Running], graph: JobGraph) -> None:
        """One message from the executor: the store write and the event it makes."""
        entry = running[message.key]
        job, run_id = entry.job, entry.run_id
        if isinstance(message, (Started, Masked)) and not entry.started:  # it left the queue
            self.store.mark_started(run_id)
            entry.started = True
        if isinstance(message, Started):
            entry.epochs = message.epochs
            self._emit(JobStarted(job, run_id, message.epochs, message.batches, message.device, message.resumed_from,
                                  message.worker, message.pid))
        elif isinstance(message, Masked):
            self.store.record_mask(run_id, message.actual_sparsity, message.layers)
        elif isinstance(message, BatchDone):
            self._emit(BatchProgress(job, message.epoch, entry.epochs, message.batch, message.batches))
        elif isinstance(message, EpochDone):
            self.store.record_epoch(run_id, message.metrics)
            self._emit(EpochFinished(job, message.metrics, entry.epochs))
        elif isinstance(message, Checkpointed):
            self.store.save_checkpoint(job.key, message.checkpoint.to_payload())
        elif isinstance(message, Retrying):  # submitted again: it waits for a worker, queued
            self.store.keep_epochs(run_id, message.resume_epoch)
            self.store.mark_queued(run_id)
            entry.started = False
            start = f"from epoch {message.resume_epoch}" if message.resume_epoch else "from the start"
            of = f" of {message.attempts}" if message.attempts else ""
            self._notice([f"{job.label}: {message.reason}; running it again {start} (attempt {message.attempt}{of})"])
        elif isinstance(message, Finished):
            del running[message.key]
            for device, size in message.peak_memory.items():
                where = f"{self.execution.executor} workers {device}"
                self._worker_peak[where] = max(size, self._worker_peak.get(where, 0))
            self._finish(job, run_id, message, graph)

    def _finish(self, job: Job, run_id: int, message: Finished, graph: JobGraph) -> None:
        """Record a job's end: artifacts first, then its row in one transaction."""
        if message.output is None and message.cancelled:  # Ctrl-C inside the job: its checkpoint stays
            self._record(run_id, RunResult(status="cancelled", error="cancelled", wall_time=message.wall_time))
            graph.finish(job.key, ok=False)
            return
        if message.output is None:
            error = message.error or "failed"
            self._record(run_id, RunResult(status="failed", error=error, wall_time=message.wall_time))
            self.store.drop_checkpoint(job.key)
            graph.finish(job.key, ok=False)
            self._emit(JobFailed(job, run_id, error))
            return
        output = message.output
        result = output.result
        result.wall_time = message.wall_time
        self._notice(output.notes)
        try:
            for name, tensors in output.artifacts.items():
                self.store.save_tensors(job.key, name, tensors)
        except StoreWriteError as err:
            with contextlib.suppress(StoreError):
                self.store.mark_failed(run_id, f"{type(err).__name__}: {one_line(err)}")
            raise
        self._record(run_id, result)
        if result.status != "cancelled":  # a cancelled job continues from it next time
            self.store.drop_checkpoint(job.key)
        graph.finish(job.key, ok=result.status == "done")
        self._emit(JobFinished(job, run_id, result))

    def _record(self, run_id: int, result: RunResult) -> None:
        """Commit a run's end; a store that cannot take it still gets the run marked
        failed (never left running), then the grid stops."""
        try:
            self.store.finish_run(run_id, result)
        except StoreWriteError as err:
            with contextlib.suppress(StoreError):
                self.store.mark_failed(run_id, f"{type(err).__name__}: {one_line(err)}")
            raise

    # ------------------------------------------------------------------ helpers

    def _record_provenance(self, experiment_id: int, *, ran: int, reused: int, action: str) -> None:
        """Record where this invocation's numbers come from (command line, versions,
        git commit, dataset checksums...: :func:`~lotto_engine.provenance.experiment_provenance`),
        with what it does: ``action`` (``start``: the experiment is new; ``resume``; or
        ``rerun``), ``jobs`` to run and
        ``reused`` from other experiments. Never part of a job key or the experiment's
        identity; a store that cannot take it gets a notice, and the grid goes on."""
        data = experiment_provenance(self.config, execution=self.execution)
        data.update(action=action, jobs=ran, reused=reused)
        if self._cluster:
            data["cluster"] = self._cluster
        try:
            self.store.record_provenance(experiment_id, data)
        except StoreError as err:
            self._notice([f"provenance not recorded: {one_line(err)}"])

    def _data(self, device: torch.device | None = None) -> Dataset:
        """The dataset on ``device`` (default: the first slot's), loaded once per device."""
        device = device or self.slots[0]
        with self._data_lock:
            if device not in self._datasets:
                self._datasets[device] = load_dataset(self.config.data, device)
            return self._datasets[device]

    def _counts(self, experiment_id: int) -> tuple[dict[str, int], dict[str, int], int, int]:
        """(status -> jobs, health flag -> jobs, jobs with any flag, jobs never checked)
        over the plan."""
        latest = {run.job_key: run for run in self.store.runs(experiment_id)}
        counts: dict[str, int] = {}
        flags: dict[str, int] = {}
        flagged = unchecked = 0
        for job in self.plan:
            run = latest.get(job.key)
            status = run.status if run else "pending"
            counts[status] = counts.get(status, 0) + 1
            if run and not run.checked:
                unchecked += 1
            if run and run.flags:
                flagged += 1
                for flag in run.flags:
                    flags[flag] = flags.get(flag, 0) + 1
        return counts, {f: flags[f] for f in FLAGS if f in flags}, flagged, unchecked

    def _executor_notes(self, executor: Executor) -> None:
        """What the executor has to tell since it was last asked (a cluster's queue
        waits, how it chose its cluster): each already told once per change by the
        executor, so emitted as it comes."""
        for note in executor.notes():
            self._emit(Notice(note))

    def _notice(self, notes: Iterable[str]) -> None:
        """Emit each distinct note once per runner (e.g. a CUDA graph fallback)."""
        for note in notes:
            with self._emit_lock:
                if note in self._noticed:
                    continue
                self._noticed.add(note)
            self._emit(Notice(note))

    def _emit(self, event: Event) -> None:
        if self._emit_to is not None:
            with self._emit_lock:
                self._emit_to(event)
