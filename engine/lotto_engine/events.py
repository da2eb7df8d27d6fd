"""Typed events the runner emits; clients (batch CLI, TUI) only ever react to these.

Events are small frozen dataclasses, cheap to create on the training thread and
safe to hand to another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Job
from .records import EpochMetrics, RunResult


@dataclass(frozen=True)
class GridStarted:
    experiment_id: int
    jobs: tuple[Job, ...]
    #: keys of jobs already finished in the store (skipped: resume)
    skipped: frozenset[str]
    device: str
    #: of those, the ones whose finished run was adopted from another experiment
    reused: frozenset[str] = frozenset()


@dataclass(frozen=True)
class JobQueued:
    """A job was handed to the executor: its run is ``queued`` until :class:`JobStarted`
    (at once in this process; on a cluster it may wait for a free slot or node)."""

    job: Job
    run_id: int


@dataclass(frozen=True)
class JobStarted:
    job: Job
    run_id: int
    epochs: int
    batches_per_epoch: int
    device: str = ""  # where it trains (several devices or job slots can be busy at once)
    #: epochs already trained before an interruption (continued from a checkpoint); 0 = fresh
    resumed_from: int = 0
    #: with a remote executor, the worker training it ("ray worker pid 123 on box2"); "" here
    worker: str = ""
    #: that worker's process id (0 in this process)
    pid: int = 0


@dataclass(frozen=True)
class BatchProgress:
    """Sent at most every ``Runner.progress_interval`` seconds, and at epoch ends."""

    job: Job
    epoch: int  # 1-based epoch being trained
    epochs: int
    batch: int  # batches done in this epoch
    batches: int


@dataclass(frozen=True)
class EpochFinished:
    job: Job
    metrics: EpochMetrics
    epochs: int


@dataclass(frozen=True)
class JobFinished:
    """A job ended with status done, diverged or cancelled (see ``result.status``)."""

    job: Job
    run_id: int
    result: RunResult


@dataclass(frozen=True)
class JobFailed:
    """A job raised: its error is recorded and the grid goes on."""

    job: Job
    run_id: int | None
    error: str


@dataclass(frozen=True)
class GridFinished:
    experiment_id: int
    counts: dict[str, int]  # status -> number of jobs in the plan with it
    cancelled: bool
    wall_time: float
    #: peak bytes per device during the grid ("cpu": the process's peak resident set)
    peak_memory: dict[str, int] = field(default_factory=dict)
    #: health flag -> number of the plan's jobs whose latest run has it (see lotto_engine.health)
    flags: dict[str, int] = field(default_factory=dict)
    #: number of the plan's jobs whose latest run has at least one flag
    flagged: int = 0
    #: jobs whose finished run was made before health checks (flags unknown)
    unchecked: int = 0


@dataclass(frozen=True)
class Notice:
    """Something to tell the user that is no job's result: say, the fast path fell back."""

    message: str


Event = (
    GridStarted | JobQueued | JobStarted | BatchProgress | EpochFinished | JobFinished | JobFailed | GridFinished | Notice
)
