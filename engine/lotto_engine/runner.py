"""The runner: executes a plan of jobs, records them in the store, emits events.

The protocol, per activation and seed (the write-up's, generalised):

1. Build the net from the seed and save theta0.
2. Train it dense for ``train.dense_epochs``; save its final weights (and, for
   ``prune.rewind = "epoch:K"``, its weights after epoch K).
3. For each method and sparsity: score the weights (magnitude: the trained dense
   weights; grasp and random: theta0), cut a mask, start from the rewind point
   (theta0 or epoch K) times the mask, retrain for ``train.pruned_epochs`` with the
   mask enforced, and measure test accuracy, mask sparsity and stability D against
   the dense net.

Each job is deterministic given its inputs (seeds are derived from the job, never
from execution order), so resumed and fresh grids give the same numbers. Every
client (batch CLI, TUI) drives this one class and only reads its events and the
store.

With ``run.parallel`` > 1 (or several GPUs), independent jobs train at once in
worker threads, one per job slot (:func:`lotto_engine.devices.job_devices`); a pruned
job starts once its dense parent is done. Event handlers are still called one at a
time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from . import devices
from .config import ExperimentConfig
from .data import Dataset, load_dataset
from .data.batches import class_balanced_sample
from .errors import StoreError, one_line
from .events import (
    BatchProgress,
    EpochFinished,
    Event,
    GridFinished,
    GridStarted,
    JobFailed,
    JobFinished,
    JobStarted,
    Notice,
)
from .health import FLAGS, diagnose
from .metrics import mask_sparsity, stability
from .models import build_model
from .plan import Job, Plan, build_plan
from .pruning import compute_masks, prunable_names
from .records import EpochMetrics, RunResult
from .scores import METHODS
from .store import FINAL, Store, StoreWriteError
from .training import batches_per_epoch, evaluate, train

EventHandler = Callable[[Event], None]


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


class _ParentMissing(Exception):
    """A pruned job's dense parent has no usable artifacts."""


class Runner:
    """Runs an experiment's plan against a store, emitting typed events.

    ``cancel`` (a ``threading.Event``) is checked before every training batch; a
    cancelled job is recorded as ``cancelled`` and the grid stops.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        store: Store,
        *,
        on_event: EventHandler | None = None,
        cancel: threading.Event | None = None,
        progress_interval: float = 0.1,
    ) -> None:
        self.config = config
        self.store = store
        self.execution = devices.execution(config.run)
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

    # ------------------------------------------------------------------ public

    def run(self, jobs: Iterable[str] | None = None) -> GridSummary:
        """Run the jobs not yet done (resume), or exactly ``jobs`` (by key) again.

        Raises :class:`~lotto_engine.errors.LottoError` subclasses for missing data or
        an experiment already running elsewhere (and, from the constructor, for a
        device that does not exist).
        """
        started = time.perf_counter()
        threads = self.execution.threads
        cpu_slots = sum(1 for d in self.slots if d.type == "cpu")
        devices.configure(max(1, threads // max(1, cpu_slots)), self.config.run.deterministic)
        devices.reset_peak_memory(self.slots)
        precision = self.fast.precision
        if self.store.find_experiment(self.config, precision=precision) is None:
            self._data()  # a missing dataset must not leave an empty experiment behind
        experiment = self.store.experiment_for(self.config, precision=precision)
        with self.store.lock_experiment(experiment.id):
            self.store.recover_interrupted(experiment.id)
            self.store.remove_partial_artifacts(job.key for job in self.plan)
            reused: frozenset[str] = frozenset()
            failed_parents: set[str] = set()
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
            self._emit(GridStarted(experiment.id, self.plan.jobs, skipped, devices.describe_slots(self.slots), reused))
            self._notice(self.execution.notes)
            if todo:
                self._data(self.slots[0])
            if len(self.slots) == 1:
                with devices.on_device(self.slots[0]):
                    for job in todo:
                        if self.cancel.is_set():
                            break
                        status = self._run_job(experiment.id, job, failed_parents, self.slots[0])
                        if job.kind == "dense" and status != "done":
                            failed_parents.add(job.key)
            else:
                self._run_parallel(experiment.id, todo, failed_parents)
            counts, flags, flagged, unchecked = self._counts(experiment.id)
        wall = time.perf_counter() - started
        cancelled = self.cancel.is_set()
        peak = devices.peak_memory(self.slots)
        self._emit(GridFinished(experiment.id, counts, cancelled, wall, peak, flags, flagged, unchecked))
        return GridSummary(experiment.id, counts, cancelled, wall, peak, flags, flagged, unchecked)

    def _resume(self, experiment_id: int) -> tuple[list[Job], frozenset[str], set[str]]:
        """What a resume runs: (jobs to run, keys adopted and skipped, diverged parents).

        Jobs never attempted here are first adopted from other experiments when they
        finished there. Final jobs (done, diverged) are skipped. A pruned job of a
        diverged dense run is recorded once as failed, then skipped. A done dense job
        whose saved weights are gone runs again when a pending pruned job needs them.
        """
        latest = self.store.latest_statuses(experiment_id)
        adopted = self.store.adopt_runs(experiment_id, [job.key for job in self.plan if job.key not in latest])
        latest = self.store.latest_statuses(experiment_id)
        diverged = {key for key, status in latest.items() if status == "diverged"}
        todo = [
            job for job in self.plan
            if latest.get(job.key) not in FINAL and not (job.parent in diverged and job.key in latest)
        ]
        keys = {job.key for job in todo}
        needed = {job.parent for job in todo if job.parent and job.parent not in keys | diverged}
        missing = {key for key in needed if not self._usable_parent_weights(key)}
        run = [job for job in self.plan if job.key in keys | missing]
        return run, frozenset(adopted).difference(job.key for job in run), diverged

    def _parent_names(self) -> tuple[str, ...]:
        """The dense artifacts a pruned job starts from."""
        return ("theta0", "dense") + (("rewind",) if self.config.prune.rewind_epoch is not None else ())

    def _has_parent_weights(self, dense_key: str) -> bool:
        """Whether a dense job's saved weights needed by its pruned jobs exist."""
        return all(self.store.has_tensors(dense_key, name) for name in self._parent_names())

    def _usable_parent_weights(self, dense_key: str) -> bool:
        """Whether those weights exist and load clean; a bad file is named in a note
        (its dense job then trains again)."""
        if not self._has_parent_weights(dense_key):
            return False
        job = next(j for j in self.plan if j.key == dense_key)
        reference = self._build(job).state_dict()
        for name in self._parent_names():
            problem = self.store.check_tensors(dense_key, name, like=reference)
            if problem:
                if self.store.has_tensors(dense_key, name):
                    self._notice([f"{problem}; its dense job trains again"])
                return False
        return True

    def rerun(self, *job_keys: str) -> GridSummary:
        """Run jobs again as new attempts (a dense job with all its dependents)."""
        keys = dict.fromkeys(k for key in job_keys for k in [key, *(j.key for j in self.plan.dependents(key))])
        return self.run(list(keys))

    def rerun_failed(self) -> GridSummary:
        """Run again every job whose latest attempt failed, diverged or was cancelled
        (with the dependents of such dense jobs); nothing runs when there are none."""
        experiment = self.store.find_experiment(self.config, precision=self.fast.precision)
        latest = {} if experiment is None else self.store.latest_statuses(experiment.id)
        keys = [job.key for job in self.plan if latest.get(job.key) in ("failed", "diverged", "cancelled")]
        return self.rerun(*keys)

    # ------------------------------------------------------------------ jobs

    def _run_parallel(self, experiment_id: int, todo: list[Job], failed_parents: set[str]) -> None:
        """Train ``todo`` on every slot at once; a pruned job waits for its parent."""
        waiting = list(todo)
        unfinished = {job.key for job in todo}
        ready = threading.Condition()

        def next_job() -> Job | None:
            with ready:
                while waiting and not self.cancel.is_set():
                    job = next((j for j in waiting if j.parent not in unfinished), None)
                    if job is not None:
                        waiting.remove(job)
                        return job
                    ready.wait(0.5)
                return None

        errors: list[BaseException] = []

        def work(device: torch.device) -> None:
            try:
                with devices.on_device(device):
                    while (job := next_job()) is not None:
                        status = None
                        try:
                            status = self._run_job(experiment_id, job, failed_parents, device)
                        finally:
                            with ready:  # mark a failed parent before its children can start
                                if job.kind == "dense" and status not in (None, "done"):
                                    failed_parents.add(job.key)
                                unfinished.discard(job.key)
                                ready.notify_all()
            except BaseException as err:  # the store or a handler broke: stop the grid, raise it in run()
                errors.append(err)
                self.cancel.set()

        workers = [threading.Thread(target=work, args=(d,), name=f"lotto-job-{i}", daemon=True)
                   for i, d in enumerate(self.slots)]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except BaseException:  # Ctrl-C in the main thread: stop the workers, then re-raise
            self.cancel.set()
            _join_through_interrupts(workers)
            raise
        if errors:
            raise errors[0]

    def _run_job(self, experiment_id: int, job: Job, failed_parents: set[str], device: torch.device) -> str:
        run_id = self.store.start_run(experiment_id, job)
        started = time.perf_counter()
        try:
            if job.parent in failed_parents:
                raise _ParentMissing("its dense run did not finish")
            if job.kind == "dense":
                result = self._dense(job, run_id, device)
            else:
                result = self._pruned(job, run_id, device)
        except StoreWriteError as err:  # the store cannot take results: stop the grid
            with contextlib.suppress(StoreError):
                self.store.mark_failed(run_id, _one_line(err))
            raise
        except BaseException as err:
            cancelled = isinstance(err, KeyboardInterrupt)
            message = "cancelled" if cancelled else _one_line(err)
            result = RunResult(
                status="cancelled" if cancelled else "failed",
                error=message,
                wall_time=time.perf_counter() - started,
            )
            self.store.finish_run(run_id, result)
            if not isinstance(err, Exception):
                raise
            self._emit(JobFailed(job, run_id, message))
            return result.status
        result.wall_time = time.perf_counter() - started
        result.numerics = self._numerics(device)
        try:
            self.store.finish_run(run_id, result)
        except StoreWriteError as err:  # e.g. a full disk: never leave the run "running"
            with contextlib.suppress(StoreError):
                self.store.mark_failed(run_id, _one_line(err))
            raise
        self._emit(JobFinished(job, run_id, result))
        return result.status

    def _dense(self, job: Job, run_id: int, device: torch.device) -> RunResult:
        data = self._data(device)
        model = self._build(job)
        theta0 = {k: v.clone() for k, v in model.state_dict().items()}
        model.to(device)
        rewind = self.config.prune.rewind_epoch
        epochs = self.config.train.dense_epochs
        self._emit(JobStarted(job, run_id, epochs, self._batches(data), str(device)))
        outcome = train(
            model, data.train, data.val, self.config.train,
            epochs=epochs,
            seed=job.seed,
            augment=self.config.data.augment,
            padding=self.config.data.crop_padding,
            cancel=self.cancel,
            on_batch=self._progress(job, epochs),
            on_epoch=self._on_epoch(job, run_id, epochs),
            snapshot_epochs=(rewind,) if rewind is not None else (),
            **self._fast_options(),
        )
        self._notice(outcome.notes)
        names = prunable_names(model, exclude_classifier=self.config.prune.exclude_classifier)
        params = dict(model.named_parameters())
        _, layers = mask_sparsity({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})
        result = self._result(outcome.status, outcome.curve, model, data)
        result.actual_sparsity = 0.0
        result.layers = layers
        result.flags = self._diagnose(result, data)
        if outcome.status == "done":
            self.store.save_tensors(job.key, "theta0", theta0)
            if rewind is not None:
                self.store.save_tensors(job.key, "rewind", outcome.snapshots[rewind])
            self.store.save_tensors(job.key, "dense", model.state_dict())
        return result

    def _pruned(self, job: Job, run_id: int, device: torch.device) -> RunResult:
        data = self._data(device)
        prune = self.config.prune
        parent = job.parent
        assert parent is not None
        if not self._has_parent_weights(parent):
            raise _ParentMissing("its dense run has not finished (no saved weights)")
        scorer = METHODS.get(job.method)
        model = self._build(job)
        reference = model.state_dict()
        theta0 = self.store.load_tensors(parent, "theta0", like=reference)
        dense = self.store.load_tensors(parent, "dense", like=reference)

        model.load_state_dict(dense if scorer.scores_at == "trained" else theta0)
        model.to(device)
        score_data = None
        if scorer.needs_gradients:
            x, y = class_balanced_sample(data.train.x, data.train.y, prune.score_samples, job.seed)
            step = self.config.train.eval_batch_size
            score_data = [(x[i : i + step], y[i : i + step]) for i in range(0, len(y), step)]
        masks = compute_masks(
            model, job.method, job.sparsity,
            data=score_data,
            scope=prune.scope,
            tie_mode=prune.tie_mode,
            exclude_classifier=prune.exclude_classifier,
            seed=job.seed,
        )
        actual, layers = mask_sparsity(masks)
        self.store.record_mask(run_id, actual, layers)

        start = theta0 if prune.rewind_epoch is None else self.store.load_tensors(parent, "rewind", like=reference)
        model.load_state_dict(start)
        model.to(device)
        epochs = self.config.train.pruned_epochs
        self._emit(JobStarted(job, run_id, epochs, self._batches(data), str(device)))
        outcome = train(
            model, data.train, data.val, self.config.train,
            epochs=epochs,
            seed=job.seed,
            masks=masks,
            augment=self.config.data.augment,
            padding=self.config.data.crop_padding,
            cancel=self.cancel,
            on_batch=self._progress(job, epochs),
            on_epoch=self._on_epoch(job, run_id, epochs),
            **self._fast_options(),
        )
        self._notice(outcome.notes)
        result = self._result(outcome.status, outcome.curve, model, data)
        result.actual_sparsity = actual
        result.layers = layers
        result.flags = self._diagnose(result, data)
        if outcome.status == "done":
            final = model.state_dict()
            result.stability = stability(
                {n: dense[n] for n in masks}, {n: final[n] for n in masks}
            )
            self.store.save_tensors(job.key, "mask", masks)
            self.store.save_tensors(job.key, "final", final)
        return result

    # ------------------------------------------------------------------ helpers

    def _result(self, status: str, curve: list, model: torch.nn.Module, data: Dataset) -> RunResult:
        result = RunResult(status=status, curve=curve)  # type: ignore[arg-type]
        if curve:
            result.val_acc = curve[-1].val_acc
            result.best_val_acc = max(m.val_acc for m in curve)
        if status == "done":
            _, result.test_acc = evaluate(
                model, data.test, self.config.train.eval_batch_size, precision=self.fast.precision
            )
        elif status == "diverged":
            result.error = "loss became NaN or infinite"
        elif status == "cancelled":
            result.error = "cancelled"
        return result

    def _diagnose(self, result: RunResult, data: Dataset) -> tuple[str, ...]:
        """The run's health flags (lotto_engine.health): did it really train?"""
        return diagnose(
            num_classes=data.num_classes,
            curve=result.curve,
            layers=result.layers,
            val=None if result.val_acc is None else (result.val_acc, len(data.val)),
            test=None if result.test_acc is None else (result.test_acc, len(data.test)),
        )

    def _numerics(self, device: torch.device) -> dict[str, object]:
        """The settings that changed this run's numbers without being inputs of its job."""
        name = str(device)
        if device.type == "cuda":
            name = f"{device} ({torch.cuda.get_device_name(device)})"
        return {"device": name, "precision": self.fast.precision, "threads": torch.get_num_threads()}

    def _fast_options(self) -> dict[str, object]:
        return {
            "precision": self.fast.precision,
            "channels_last": self.fast.channels_last,
            "compile": self.fast.compile,
            "cuda_graphs": self.fast.cuda_graphs,
        }

    def _build(self, job: Job) -> torch.nn.Module:
        data = self._data()
        return build_model(self.config.model, data.input_shape, data.num_classes, job.activation, job.seed)

    def _data(self, device: torch.device | None = None) -> Dataset:
        """The dataset on ``device`` (default: the first slot's), loaded once per device."""
        device = device or self.slots[0]
        with self._data_lock:
            if device not in self._datasets:
                self._datasets[device] = load_dataset(self.config.data, device)
            return self._datasets[device]

    def _batches(self, data: Dataset) -> int:
        return batches_per_epoch(len(data.train), self.config.train.batch_size)

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

    def _on_epoch(self, job: Job, run_id: int, epochs: int) -> Callable[[EpochMetrics], None]:
        def on_epoch(metrics: EpochMetrics) -> None:
            self.store.record_epoch(run_id, metrics)
            self._emit(EpochFinished(job, metrics, epochs))

        return on_epoch

    def _progress(self, job: Job, epochs: int) -> Callable[[int, int, int], None]:
        last = [0.0]

        def on_batch(epoch: int, batch: int, batches: int) -> None:
            now = time.perf_counter()
            if batch == batches or now - last[0] >= self.progress_interval:
                last[0] = now
                self._emit(BatchProgress(job, epoch, epochs, batch, batches))

        return on_batch

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


def _join_through_interrupts(workers: list[threading.Thread]) -> None:
    """Wait for cancelled workers (each stops at its next batch), even through more
    Ctrl-C presses: the store must not close under them."""
    for worker in workers:
        while worker.is_alive():
            try:
                worker.join(0.2)
            except KeyboardInterrupt:
                continue


def _one_line(err: BaseException) -> str:
    """A failed run's error as stored and shown: one short printable line (no C++
    backtrace), prefixed by the exception's type except for a missing parent."""
    text = one_line(err)
    return text if isinstance(err, _ParentMissing) else f"{type(err).__name__}: {text}"
