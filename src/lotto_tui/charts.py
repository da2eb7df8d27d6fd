"""The write-up's four figure sets, drawn with plotext from numbers the engine made.

Each ``draw_*`` function takes a plotext-like object (the ``plotext`` module for the
batch CLI, a ``textual_plotext`` widget's ``plt`` in the explorer) and draws onto it;
nothing here computes science.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lotto_engine.views.results import Cell, CurveKey

#: Colour says the activation, marker the method, so a 9-series chart stays readable
#: without true colour (named ANSI colours only) and in monochrome (distinct markers).
COLORS = ("red", "blue", "green", "magenta", "cyan", "yellow", "orange", "gray")
METHOD_MARKERS = {"dense": "=", "magnitude": "o", "grasp": "x", "random": "+"}
MARKERS = ("*", "#", "@", "%", "&", "$", "~", "^")  # further methods, sparsities in curves


class _Style:
    """Assigns colours to activations and markers to methods in first-seen order."""

    def __init__(self) -> None:
        self.colors: dict[str, str] = {}
        self.markers: dict[str, str] = {}

    def color(self, activation: str) -> str:
        return self.colors.setdefault(activation, COLORS[len(self.colors) % len(COLORS)])

    def marker(self, method: str) -> str:
        if method in METHOD_MARKERS:
            return METHOD_MARKERS[method]
        return self.markers.setdefault(method, MARKERS[len(self.markers) % len(MARKERS)])


def _series(cells: Iterable[Cell], value: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for cell in cells:
        y = getattr(cell, value)
        if cell.method == "dense" or y is None:
            continue
        out.setdefault((cell.activation, cell.method), []).append((cell.target_sparsity, y))
    return {k: sorted(v) for k, v in out.items()}


def _plot_series(plt: Any, series: Mapping[tuple[str, str], list[tuple[float, float]]], style: _Style) -> None:
    for (activation, method), points in series.items():
        xs, ys = zip(*points)
        plt.plot(list(xs), list(ys), label=f"{activation} {method}",
                 marker=style.marker(method), color=style.color(activation))


def draw_accuracy(plt: Any, cells: Sequence[Cell]) -> None:
    """Validation accuracy vs sparsity per activation and method; dense as a flat line."""
    series = _series(cells, "val_acc")
    style = _Style()
    _plot_series(plt, series, style)
    xs = sorted({c.target_sparsity for c in cells if c.method != "dense"})
    for cell in (c for c in cells if c.method == "dense" and c.val_acc is not None):
        if xs:
            plt.plot([xs[0], xs[-1]], [cell.val_acc, cell.val_acc], label=f"{cell.activation} dense",
                     marker=style.marker("dense"), color=style.color(cell.activation))
    plt.title("Validation accuracy vs sparsity")
    plt.xlabel("target sparsity")
    plt.ylabel("val acc")


def draw_mask_sparsity(plt: Any, cells: Sequence[Cell]) -> None:
    """Actual mask sparsity vs the target; the diagonal is a perfect mask."""
    series = _series(cells, "actual_sparsity")
    xs = sorted({c.target_sparsity for c in cells if c.method != "dense"})
    if xs:
        plt.plot(xs, xs, label="target", marker="-", color="gray")
    _plot_series(plt, series, _Style())
    plt.title("Mask sparsity vs target")
    plt.xlabel("target sparsity")
    plt.ylabel("actual sparsity")


def draw_stability(plt: Any, cells: Sequence[Cell]) -> None:
    """Stability D = ||W_dense - W_pruned|| / ||W_dense|| vs sparsity."""
    _plot_series(plt, _series(cells, "stability"), _Style())
    plt.title("Stability D vs sparsity")
    plt.xlabel("target sparsity")
    plt.ylabel("D")


def draw_curves(plt: Any, activation: str, curves: Mapping[CurveKey, Sequence[tuple[int, float]]],
                *, metric: str = "train acc") -> None:
    """Training curves of one activation: dense and every method x sparsity."""
    items = [(k, v) for k, v in curves.items() if k[0] == activation and v]
    items.sort(key=lambda kv: (kv[0][1] != "dense", kv[0][1], kv[0][2]))
    # one activation: colour says the sparsity, marker the method
    sparsities = sorted({k[2] for k, _ in items if k[1] != "dense"})
    style = _Style()
    for (_, method, sparsity), points in items:
        xs, ys = zip(*points)
        label = "dense" if method == "dense" else f"{method} s={sparsity:g}"
        color = "gray" if method == "dense" else COLORS[sparsities.index(sparsity) % len(COLORS)]
        plt.plot(list(xs), list(ys), label=label, marker=style.marker(method), color=color)
    plt.title(f"Training curves - {activation}")
    plt.xlabel("epoch")
    plt.ylabel(metric)
