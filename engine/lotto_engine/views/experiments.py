"""The experiments in a store, one summary each: what ``lotto-tui experiments`` lists
and the explorer's history shows (how far each plan got, how many runs are flagged)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import LottoError
from ..records import ExperimentRecord, RunRecord
from ..statuses import RERUNNABLE
from .progress import experiment_plan

if TYPE_CHECKING:
    from ..store import Store

#: The grid axes, in the order :attr:`ExperimentSummary.grid` gives their sizes.
GRID_AXES = ("activations", "methods", "sparsities", "seeds")


def grid_text(grid: Mapping[str, Any]) -> str:
    """The sizes of :data:`GRID_AXES` (``3x2x3x1``), then the variants when the grid has
    sanity-check variants besides the method itself (``3x2x3x1x3v``: three variants
    of every pruned method). ``?`` for an axis a stored config does not list."""
    def size(axis: str) -> str:
        value = grid.get(axis, ())
        return str(len(value)) if isinstance(value, (list, tuple)) else "?"

    text = "x".join(size(axis) for axis in GRID_AXES)
    variants = grid.get("variants", ["none"])
    return text + (f"x{size('variants')}v" if variants != ["none"] else "")


@dataclass(frozen=True)
class ExperimentSummary:
    """One experiment and how far its plan got (counts over the latest attempts)."""

    id: int
    name: str
    created_at: str  # as stored (ISO 8601)
    dataset: str
    model: str
    grid: str  # sizes of GRID_AXES: "3x2x3x1", "3x2x3x1x2v" with variants (grid_text)
    #: jobs in its plan, rebuilt exactly; None when it cannot be (another engine version)
    jobs: int | None
    #: jobs its config plans: :attr:`jobs`, else counted from the grid (never fewer than recorded)
    planned: int
    counts: dict[str, int] = field(default_factory=dict)  # status -> recorded jobs with it
    flagged: int = 0  # jobs whose latest run carries a health flag
    unchecked: int = 0  # jobs finished before health checks existed (flags unknown)

    @property
    def done(self) -> int:
        return self.counts.get("done", 0)

    @property
    def to_rerun(self) -> int:
        """Failed, diverged and cancelled jobs: what "rerun failed" would run again."""
        return sum(self.counts.get(status, 0) for status in RERUNNABLE)


def summarize_experiment(record: ExperimentRecord, runs: list[RunRecord]) -> ExperimentSummary:
    """One experiment's summary from its record and the latest attempt of each job."""
    cfg = record.config
    grid = cfg.get("grid", {})
    try:
        _, plan = experiment_plan(record)
        jobs: int | None = len(plan)
    except (LottoError, ValueError, TypeError):
        jobs = None
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ExperimentSummary(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        dataset=str(cfg.get("data", {}).get("dataset", "?")),
        model=str(cfg.get("model", {}).get("name", "?")),
        grid=grid_text(grid) if isinstance(grid, Mapping) else "?",
        jobs=jobs,
        planned=jobs if jobs is not None else planned_jobs(cfg, len(runs)),
        counts=counts,
        flagged=sum(1 for run in runs if run.flags),
        unchecked=sum(1 for run in runs if not run.checked),
    )


def experiment_summaries(store: Store | None) -> list[ExperimentSummary]:
    """Every experiment in the store, oldest first (none without a store)."""
    if store is None:
        return []
    return [summarize_experiment(record, store.runs(record.id)) for record in store.experiments()]


def planned_jobs(config: Mapping[str, Any], recorded: int) -> int:
    """How many jobs a stored config plans (dense and pruned over every seed); from
    the grid alone when the config no longer validates (written by another release):
    then an imp chain counts one job per grid sparsity and variant, as one-shot
    methods do (its levels in between depend on settings that may not validate),
    and never fewer than ``recorded``."""
    from pydantic import ValidationError

    from ..config import ExperimentConfig
    from ..plan import build_plan

    try:
        return len(build_plan(ExperimentConfig.model_validate(config)))
    except (ValidationError, ValueError, TypeError):
        grid = config.get("grid", {})
        try:
            dense = len(grid["activations"]) * len(grid["seeds"])
            variants = len(grid.get("variants", ["none"]))
            return max(recorded, dense * (1 + len(grid["methods"]) * len(grid["sparsities"]) * variants))
        except (KeyError, TypeError):
            return recorded
