"""Results as the write-up reports them: per (activation, method, sparsity), averaged
over seeds. Views (tables, charts) draw these numbers and compute none."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .health import FLAGS
from .records import EpochMetrics, RunRecord


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
    groups: dict[tuple[str, str, float], list[RunRecord]] = {}
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
) -> dict[tuple[str, str, float], list[tuple[int, float]]]:
    """Per grid point, ``metric`` by epoch averaged over the finished seeds (and, with
    ``include_running``, the running ones, so live views see curves grow).

    ``curve_of(run_id)`` returns a run's curve (e.g. ``Store.curve``). An epoch is
    kept only when every averaged run has it.
    """
    wanted = ("done", "running") if include_running else ("done",)
    groups: dict[tuple[str, str, float], list[list[EpochMetrics]]] = {}
    for run in runs:
        if run.status in wanted:
            key = (run.activation, run.method, run.target_sparsity)
            groups.setdefault(key, []).append(curve_of(run.id))
    out: dict[tuple[str, str, float], list[tuple[int, float]]] = {}
    for key, curves in groups.items():
        length = min(len(c) for c in curves)
        out[key] = [
            (curves[0][i].epoch, sum(getattr(c[i], metric) for c in curves) / len(curves))
            for i in range(length)
        ]
    return out
