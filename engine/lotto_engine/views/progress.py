"""Progress of a grid as the store records it: per-job rows, totals and ETAs.

Every client that shows a grid's progress reads it from here, whether the grid runs
in the same process (the explorer's worker) or in another one (a ``--batch`` job
under nohup that the explorer follows). The store is the single source of truth;
live events only tell a client *when* to read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import ExperimentConfig, validate
from ..errors import ConfigError
from ..plan import Job, Plan, build_plan
from ..records import ExperimentRecord
from ..statuses import IN_FLIGHT
from ..store import Store


@dataclass(frozen=True)
class JobRow:
    """One job of the plan with its latest attempt's state."""

    job: Job
    status: str  # "pending" when never attempted
    epoch: int  # epochs recorded
    epochs: int  # epochs the job trains
    val_acc: float | None  # final, or latest epoch's while in flight
    elapsed: float | None  # seconds: wall time when finished, so far while running (None while queued)
    eta: float | None  # seconds left for a running job (None when unknown, and while queued)
    run_id: int | None = None
    error: str | None = None
    reused: bool = False  # adopted from another experiment
    flags: tuple[str, ...] = ()  # health flags of the latest attempt (lotto_engine.health)
    checked: bool = True  # False: finished before health checks existed (flags unknown)


@dataclass(frozen=True)
class GridProgress:
    """The whole plan's progress."""

    experiment_id: int | None  # None: this config has no experiment in the store yet
    rows: tuple[JobRow, ...]
    epochs_done: int
    epochs_total: int
    eta: float | None  # seconds until the plan's last epoch, at the measured pace and concurrency

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.status] = out.get(row.status, 0) + 1
        return out

    @property
    def running(self) -> JobRow | None:
        """The first job that trains now (not one that waits in an executor's queue)."""
        return next((row for row in self.rows if row.status == "running"), None)

    @property
    def in_flight(self) -> int:
        """Jobs handed to an executor and not ended: running, or queued."""
        return sum(row.status in IN_FLIGHT for row in self.rows)

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_total if self.epochs_total else 0.0


def job_epochs(config: ExperimentConfig, job: Job) -> int:
    return config.train.dense_epochs if job.kind == "dense" else config.train.pruned_epochs


def grid_progress(
    store: Store | None,
    config: ExperimentConfig,
    plan: Plan,
    experiment_id: int | None,
    *,
    now: datetime | None = None,
) -> GridProgress:
    """Read the plan's state from the store (the latest attempt of each job).

    A finished job counts all its epochs as done (a diverged or failed one stops
    early, but it will not train more); ETAs use the mean measured epoch time. A queued
    job (waiting in its executor's queue) counts the epochs it has (a resumed one), has
    no elapsed time or ETA of its own, and does not count as training at once.
    """
    now = now or datetime.now(timezone.utc)
    if store is None or experiment_id is None:  # nothing run yet: every job pending
        runs, totals = {}, {}
    else:
        runs = {r.job_key: r for r in store.runs(experiment_id)}
        totals = store.epoch_totals(experiment_id)
    measured = [t for t in totals.values() if t[0]]
    pace = sum(s for _, s in measured) / sum(n for n, _ in measured) if measured else None

    rows: list[JobRow] = []
    done_epochs = total_epochs = 0
    for job in plan:
        epochs = job_epochs(config, job)
        total_epochs += epochs
        run = runs.get(job.key)
        if run is None:
            rows.append(JobRow(job, "pending", 0, epochs, None, None, None))
            continue
        recorded, seconds = totals.get(run.id, (0, 0.0))
        if run.status in IN_FLIGHT:
            elapsed = eta = None
            if run.status == "running":
                elapsed = max(0.0, (now - _parse(run.started_at)).total_seconds())
                job_pace = seconds / recorded if recorded else pace
                eta = job_pace * (epochs - recorded) if job_pace is not None else None
            done_epochs += recorded
            val = _latest_val(store, run.id) if recorded else None  # type: ignore[arg-type]
        else:
            elapsed, eta, val = run.wall_time, None, run.val_acc
            # a cancelled job resumes where it stopped; any other ended job trains no more
            done_epochs += recorded if run.status == "cancelled" else epochs
        rows.append(
            JobRow(job, run.status, recorded, epochs, val, elapsed, eta, run.id, run.error,
                   run.reused_from is not None, run.flags, run.checked)
        )
    remaining = total_epochs - done_epochs
    at_once = max(1, sum(row.status == "running" for row in rows))  # run.parallel trains several; queued ones wait
    eta = pace * remaining / at_once if pace is not None else None
    return GridProgress(experiment_id, tuple(rows), done_epochs, total_epochs, eta)


def _latest_val(store: Store, run_id: int) -> float | None:
    curve = store.curve(run_id)
    return curve[-1].val_acc if curve else None


def _parse(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def experiment_config(record: ExperimentRecord) -> ExperimentConfig:
    """The config an experiment in the store was run with."""
    try:
        return validate(record.config)
    except ConfigError as err:
        raise ConfigError([f"experiment {record.id}: its stored config no longer validates: {err}"]) from None


def experiment_plan(record: ExperimentRecord) -> tuple[ExperimentConfig, Plan]:
    """The config and plan of a stored experiment (its precision read off its identity)."""
    config = experiment_config(record)
    for precision in ("fp32", "bf16"):
        if config.identity(precision) == record.identity:
            return config, build_plan(config, precision=precision)
    raise ConfigError([f"experiment {record.id} was made by another engine version; its plan cannot be rebuilt"])
