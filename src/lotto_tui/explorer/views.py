"""What the result views show, read from the store in one pass. Reading only: the
numbers come from :mod:`lotto_engine.results`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from lotto_engine.records import EpochMetrics, LayerSparsity, RunRecord
from lotto_engine.results import Cell, mean_curves, numerics_in, summarize
from lotto_engine.store import Store

CurveKey = tuple[str, str, float]
#: Curve metrics the curves tab offers: (EpochMetrics field, label).
CURVE_METRICS = (("train_acc", "train acc"), ("val_acc", "val acc"), ("train_loss", "train loss"),
                 ("val_loss", "val loss"))


@dataclass(frozen=True)
class ResultsData:
    """An experiment's results as the views need them."""

    experiment_id: int | None
    cells: list[Cell] = field(default_factory=list)
    #: metric -> grid point -> [(epoch, mean value)], running runs included
    curves: dict[str, dict[CurveKey, list[tuple[int, float]]]] = field(default_factory=dict)
    #: the latest attempt of every pruned run that has a mask, with its per-layer sparsity
    masks: list[tuple[RunRecord, list[LayerSparsity]]] = field(default_factory=list)
    #: the distinct numerics settings ({"device", "precision", "threads"}) of its runs
    numerics: list[dict] = field(default_factory=list)

    @property
    def activations(self) -> list[str]:
        return list(dict.fromkeys(c.activation for c in self.cells))


def load_results(store: Store | None, experiment_id: int | None) -> ResultsData:
    if store is None or experiment_id is None:
        return ResultsData(experiment_id)
    runs = store.runs(experiment_id)

    @lru_cache(maxsize=None)
    def curve_of(run_id: int) -> list[EpochMetrics]:
        return store.curve(run_id)

    curves = {
        metric: mean_curves(runs, curve_of, metric, include_running=True) for metric, _ in CURVE_METRICS
    }
    masks = [(run, store.layers(run.id)) for run in runs if run.kind == "pruned"]
    return ResultsData(
        experiment_id,
        cells=summarize(runs),
        curves=curves,
        masks=[(run, layers) for run, layers in masks if layers],
        numerics=numerics_in(runs),
    )


@dataclass(frozen=True)
class ExperimentSummary:
    """One line of the history: an experiment and how far its plan got."""

    id: int
    name: str
    created_at: str
    dataset: str
    model: str
    grid: str  # "3 act x 2 methods x 3 sparsities x 1 seeds"
    jobs: int  # jobs in its plan (0 when the plan cannot be rebuilt)
    counts: dict[str, int]
    flagged: int = 0  # jobs whose latest run carries a health flag
    unchecked: int = 0  # jobs finished before health checks existed (flags unknown)


def load_history(store: Store | None) -> list[ExperimentSummary]:
    """Every experiment in the store, newest first."""
    from lotto_engine.errors import LottoError
    from lotto_engine.monitor import experiment_plan

    if store is None:
        return []
    out = []
    for record in reversed(store.experiments()):
        cfg = record.config
        grid = cfg.get("grid", {})
        try:
            _, plan = experiment_plan(record)
            jobs = len(plan)
        except LottoError:
            jobs = 0
        counts: dict[str, int] = {}
        runs = store.runs(record.id)
        for run in runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        out.append(
            ExperimentSummary(
                id=record.id,
                name=record.name,
                created_at=record.created_at.replace("T", " ")[:16],
                dataset=str(cfg.get("data", {}).get("dataset", "?")),
                model=str(cfg.get("model", {}).get("name", "?")),
                grid="x".join(
                    str(len(grid.get(k, []))) for k in ("activations", "methods", "sparsities", "seeds")
                ),
                jobs=jobs,
                counts=counts,
                flagged=sum(1 for run in runs if run.flags),
                unchecked=sum(1 for run in runs if not run.checked),
            )
        )
    return out
