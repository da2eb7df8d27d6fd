"""Plain result records shared by the training loop, the runner, the store and the
clients. Dataclasses, no torch: views and exporters can use them freely."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["running", "done", "failed", "diverged", "cancelled"]


@dataclass(frozen=True)
class EpochMetrics:
    """One point of a training curve (accuracies in [0, 1])."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class LayerSparsity:
    """How much of one prunable weight tensor a mask removes."""

    name: str
    numel: int
    kept: int
    units: int | None = None  # output units (rows of the weight); None: not recorded (older stores)
    dead_units: int | None = None  # of those, units whose every incoming weight is pruned

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.numel if self.numel else 0.0


@dataclass
class RunResult:
    """Everything one finished (or stopped) run records."""

    status: Status
    curve: list[EpochMetrics] = field(default_factory=list)
    val_acc: float | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    actual_sparsity: float | None = None
    layers: list[LayerSparsity] = field(default_factory=list)
    stability: float | None = None
    #: ||W_dense * (1 - m)|| / ||W_dense||: the part of D the mask alone removes
    stability_floor: float | None = None
    #: ||(W_dense - W_pruned) * m|| / ||W_dense * m||: how far the kept weights moved
    kept_change: float | None = None
    wall_time: float = 0.0
    error: str | None = None
    #: health flags (:data:`lotto_engine.health.FLAGS`): the run ran but may not have trained
    flags: tuple[str, ...] = ()
    #: settings that change the numbers without being inputs of the job:
    #: {"device", "precision", "threads"}; not part of the job key
    numerics: dict[str, object] | None = None
    #: what a reader needs to trust the numbers (versions, device name, threads, ...):
    #: see :mod:`lotto_engine.provenance`; never part of the job key
    provenance: dict[str, object] | None = None


@dataclass(frozen=True)
class RunRecord:
    """A run as the store holds it (one row per attempt at a job)."""

    id: int
    experiment_id: int
    job_key: str
    kind: str
    activation: str
    method: str
    target_sparsity: float
    seed: int
    status: str
    attempt: int
    val_acc: float | None
    best_val_acc: float | None
    test_acc: float | None
    actual_sparsity: float | None
    stability: float | None
    wall_time: float | None
    error: str | None
    started_at: str
    finished_at: str | None
    reused_from: int | None = None  # run id this result was copied from (same job key)
    flags: tuple[str, ...] = ()  # health flags, see lotto_engine.health
    numerics: dict | None = None  # {"device", "precision", "threads"} it ran with
    #: False for a run finished by a release before health checks: its flags are unknown
    checked: bool = True
    #: sanity-check variant of a pruned run: "none", "shuffle", "reinit" or "invert"
    variant: str = "none"
    #: level of an iterative (imp) run, 1, 2, ...; None for dense and one-shot runs
    level: int | None = None
    #: see RunResult.stability_floor / kept_change; None for dense runs and older stores
    stability_floor: float | None = None
    kept_change: float | None = None
    #: see RunResult.provenance; None for runs made before provenance was recorded
    provenance: dict | None = None


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment as the store holds it: its full config and identity hash."""

    id: int
    identity: str
    name: str
    created_at: str
    config: dict
