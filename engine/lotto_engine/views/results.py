"""Results as the write-up reports them: per (activation, method, sparsity), averaged
over seeds. Tables and charts (the batch report, the explorer's results panel and its
comparison) draw these numbers and compute none.

:func:`load_results` reads an experiment's results in one pass; :func:`summarize`,
:func:`mean_curves` and :func:`numerics_in` are the computations it is made of.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ..health import FLAGS
from ..records import EpochMetrics, LayerSparsity, RunRecord

if TYPE_CHECKING:
    from ..store import Store

#: (activation, method, target sparsity): one grid point
CurveKey = tuple[str, str, float]
#: The EpochMetrics fields a curve can show, in the order views offer them.
CURVE_METRICS = ("train_acc", "val_acc", "train_loss", "val_loss")


@dataclass(frozen=True)
class Cell:
    """One row of the results table: a grid point, over its seeds."""

    activation: str
    method: str  # "dense" for the baseline
    target_sparsity: float
    runs: int  # runs at this grid point (latest attempts)
    done: int  # of which finished
    val_acc: float | None  # mean final validation accuracy of finished runs
    val_acc_std: float | None
    best_val_acc: float | None
    test_acc: float | None
    actual_sparsity: float | None
    stability: float | None
    statuses: tuple[str, ...]
    #: health flags of any of its runs, in lotto_engine.health.FLAGS order
    flags: tuple[str, ...] = ()
    #: how many of its runs carry at least one flag
    flagged: int = 0
    #: how many of its finished runs were made before health checks (flags unknown)
    unchecked: int = 0


def summarize(runs: Iterable[RunRecord]) -> list[Cell]:
    """Group runs by grid point (in first-seen order) and average the finished ones."""
    groups: dict[CurveKey, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.activation, run.method, run.target_sparsity), []).append(run)
    cells = []
    for (activation, method, sparsity), members in groups.items():
        done = [r for r in members if r.status == "done"]
        cells.append(
            Cell(
                activation=activation,
                method=method,
                target_sparsity=sparsity,
                runs=len(members),
                done=len(done),
                val_acc=_mean(r.val_acc for r in done),
                val_acc_std=_std([r.val_acc for r in done]),
                best_val_acc=_mean(r.best_val_acc for r in done),
                test_acc=_mean(r.test_acc for r in done),
                actual_sparsity=_mean(r.actual_sparsity for r in done),
                stability=_mean(r.stability for r in done),
                statuses=tuple(sorted({r.status for r in members})),
                flags=tuple(f for f in FLAGS if any(f in r.flags for r in members)),
                flagged=sum(1 for r in members if r.flags),
                unchecked=sum(1 for r in members if not r.checked),
            )
        )
    return cells


def numerics_in(runs: Iterable[RunRecord]) -> list[dict]:
    """The distinct numerics settings ({"device", "precision", "threads"}) among runs
    that recorded them, in first-seen order: more than one means a table mixes runs
    whose numbers were made under different settings."""
    seen: list[dict] = []
    for run in runs:
        if run.numerics and run.numerics not in seen:
            seen.append(run.numerics)
    return seen


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.pstdev(vals) if len(vals) > 1 else None


def mean_curves(
    runs: Iterable[RunRecord],
    curve_of: Callable[[int], list[EpochMetrics]],
    metric: str = "train_acc",
    *,
    include_running: bool = False,
) -> dict[CurveKey, list[tuple[int, float]]]:
    """Per grid point, ``metric`` by epoch averaged over the finished seeds (and, with
    ``include_running``, the running ones, so live views see curves grow).

    ``curve_of(run_id)`` returns a run's curve (e.g. ``Store.curve``). An epoch is
    kept only when every averaged run has it.
    """
    groups: dict[CurveKey, list[list[EpochMetrics]]] = {}
    for run in runs:
        if run.status == "done" or (include_running and run.status == "running"):
            key = (run.activation, run.method, run.target_sparsity)
            groups.setdefault(key, []).append(curve_of(run.id))
    out: dict[CurveKey, list[tuple[int, float]]] = {}
    for key, curves in groups.items():
        length = min(len(c) for c in curves)
        out[key] = [
            (curves[0][i].epoch, sum(getattr(c[i], metric) for c in curves) / len(curves))
            for i in range(length)
        ]
    return out


def ordered_cells(cells: Sequence[Cell]) -> list[Cell]:
    """Grid order (as configured): activations, then dense, then methods by sparsity."""
    act_rank = {a: i for i, a in enumerate(dict.fromkeys(c.activation for c in cells))}
    method_rank = {m: i for i, m in enumerate(dict.fromkeys(c.method for c in cells if c.method != "dense"))}
    return sorted(
        cells,
        key=lambda c: (act_rank[c.activation], c.method != "dense", method_rank.get(c.method, -1), c.target_sparsity),
    )


@dataclass(frozen=True)
class ResultsData:
    """An experiment's results as tables and charts need them."""

    experiment_id: int | None
    #: grid points in first-seen order (charts give colours in this order; tables use :func:`ordered_cells`)
    cells: list[Cell] = field(default_factory=list)
    #: metric -> grid point -> [(epoch, mean value)]
    curves: dict[str, dict[CurveKey, list[tuple[int, float]]]] = field(default_factory=dict)
    #: the latest attempt of every pruned run that has a mask, with its per-layer sparsity
    masks: list[tuple[RunRecord, list[LayerSparsity]]] = field(default_factory=list)
    #: the distinct numerics settings ({"device", "precision", "threads"}) of its runs
    numerics: list[dict] = field(default_factory=list)

    @property
    def activations(self) -> list[str]:
        return list(dict.fromkeys(c.activation for c in self.cells))

    @property
    def any_done(self) -> bool:
        """Whether some grid point has a finished run (else there is nothing to chart)."""
        return any(c.done for c in self.cells)


def load_results(
    store: Store | None,
    experiment_id: int | None,
    *,
    metrics: Sequence[str] = CURVE_METRICS,
    include_running: bool = True,
    masks: bool = True,
) -> ResultsData:
    """Read an experiment's results (latest attempts) in one pass over the store.

    ``metrics``: the curves to average (see :data:`CURVE_METRICS`); ``include_running``:
    running runs join the mean curves, so live views see them grow (a finished report
    leaves them out); ``masks``: read every pruned run's per-layer sparsity too.
    Nothing to read (no store yet, no experiment) gives empty results.
    """
    if store is None or experiment_id is None:
        return ResultsData(experiment_id)
    runs = store.runs(experiment_id)

    @lru_cache(maxsize=None)
    def curve_of(run_id: int) -> list[EpochMetrics]:
        return store.curve(run_id)

    curves = {metric: mean_curves(runs, curve_of, metric, include_running=include_running) for metric in metrics}
    layers = [(run, store.layers(run.id)) for run in runs if run.kind == "pruned"] if masks else []
    return ResultsData(
        experiment_id,
        cells=summarize(runs),
        curves=curves,
        masks=[(run, found) for run, found in layers if found],
        numerics=numerics_in(runs),
    )
