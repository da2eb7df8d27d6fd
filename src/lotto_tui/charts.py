"""The write-up's four figure sets, drawn with plotext from numbers the engine made.

Each ``draw_*`` function takes a plotext-like object (the ``plotext`` module for the
batch CLI, a ``textual_plotext`` widget's ``plt`` in the explorer) and draws onto it;
nothing here computes science.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lotto_engine.results import Cell

MARKERS = ("dot", "x", "+", "o", "*", "#", "@", "%")
CurveKey = tuple[str, str, float]  # (activation, method, target sparsity)


def _series(cells: Iterable[Cell], value: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for cell in cells:
        y = getattr(cell, value)
        if cell.method == "dense" or y is None:
            continue
        out.setdefault((cell.activation, cell.method), []).append((cell.target_sparsity, y))
    return {k: sorted(v) for k, v in out.items()}


def _plot_series(plt: Any, series: Mapping[tuple[str, str], list[tuple[float, float]]]) -> None:
    for i, ((activation, method), points) in enumerate(series.items()):
        xs, ys = zip(*points)
        plt.plot(list(xs), list(ys), label=f"{activation} {method}", marker=MARKERS[i % len(MARKERS)])


def draw_accuracy(plt: Any, cells: Sequence[Cell]) -> None:
    """Validation accuracy vs sparsity per activation and method; dense as a flat line."""
    series = _series(cells, "val_acc")
    _plot_series(plt, series)
    xs = sorted({c.target_sparsity for c in cells if c.method != "dense"})
    for i, cell in enumerate(c for c in cells if c.method == "dense" and c.val_acc is not None):
        if xs:
            plt.plot([xs[0], xs[-1]], [cell.val_acc, cell.val_acc],
                     label=f"{cell.activation} dense", marker=MARKERS[(len(series) + i) % len(MARKERS)])
    plt.title("Validation accuracy vs sparsity")
    plt.xlabel("target sparsity")
    plt.ylabel("val acc")


def draw_mask_sparsity(plt: Any, cells: Sequence[Cell]) -> None:
    """Actual mask sparsity vs the target; the diagonal is a perfect mask."""
    series = _series(cells, "actual_sparsity")
    xs = sorted({c.target_sparsity for c in cells if c.method != "dense"})
    if xs:
        plt.plot(xs, xs, label="target", marker="-")
    _plot_series(plt, series)
    plt.title("Mask sparsity vs target")
    plt.xlabel("target sparsity")
    plt.ylabel("actual sparsity")


def draw_stability(plt: Any, cells: Sequence[Cell]) -> None:
    """Stability D = ||W_dense - W_pruned|| / ||W_dense|| vs sparsity."""
    _plot_series(plt, _series(cells, "stability"))
    plt.title("Stability D vs sparsity")
    plt.xlabel("target sparsity")
    plt.ylabel("D")


def draw_curves(plt: Any, activation: str, curves: Mapping[CurveKey, Sequence[tuple[int, float]]],
                *, metric: str = "train acc") -> None:
    """Training curves of one activation: dense and every method x sparsity."""
    items = [(k, v) for k, v in curves.items() if k[0] == activation and v]
    items.sort(key=lambda kv: (kv[0][1] != "dense", kv[0][1], kv[0][2]))
    for i, ((_, method, sparsity), points) in enumerate(items):
        xs, ys = zip(*points)
        label = "dense" if method == "dense" else f"{method} s={sparsity:g}"
        plt.plot(list(xs), list(ys), label=label, marker=MARKERS[i % len(MARKERS)])
    plt.title(f"Training curves - {activation}")
    plt.xlabel("epoch")
    plt.ylabel(metric)
