"""The write-up's four figure sets, drawn with plotext from numbers the engine made.

Each ``draw_*`` function takes a plotext-like object (the ``plotext`` module for the
batch CLI, a ``textual_plotext`` widget's ``plt`` in the explorer) and draws onto it;
nothing here computes science.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lotto_engine.views.results import Cell, CurveKey, point_label

#: Colour says the activation, marker the method (with its variant: ``grasp/shuffle``
#: is a series of its own), so a 9-series chart stays readable without true colour
#: (named ANSI colours only) and in monochrome (distinct markers).
COLORS = ("red", "blue", "green", "magenta", "cyan", "yellow", "orange", "gray")
METHOD_MARKERS = {"dense": "=", "magnitude": "o", "grasp": "x", "random": "+"}
MARKERS = ("*", "#", "@", "%", "&", "$", "~", "^")  # further methods and variants


class _Style:
    """Assigns colours to activations and markers to method labels in first-seen order."""

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
        out.setdefault((cell.activation, cell.label), []).append((cell.target_sparsity, y))
    return {k: sorted(v) for k, v in out.items()}


def _plot_series(plt: Any, series: Mapping[tuple[str, str], list[tuple[float, float]]], style: _Style) -> None:
    for (activation, method), points in series.items():
        xs, ys = zip(*points)
        plt.plot(list(xs), list(ys), label=f"{activation} {method}",
                 marker=style.marker(method), color=style.color(activation))


def draw_accuracy(plt: Any, cells: Sequence[Cell]) -> None:
    """Validation accuracy vs sparsity per activation and method (and variant); dense as a flat line."""
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


def curve_series(curves: Mapping[CurveKey, Sequence[tuple[int, float]]], activation: str,
                 variant: str | None = None) -> list[tuple[CurveKey, Sequence[tuple[int, float]]]]:
    """The curves one chart shows, in the order it draws them: ``activation``'s dense
    curve, then every method (in the order the runs came, which is the plan's) by
    variant ("none" first) and sparsity; with ``variant``, only that variant's."""
    items = [(k, v) for k, v in curves.items()
             if k[0] == activation and v and (variant is None or k[1] == "dense" or k[2] == variant)]
    method_rank = {m: i for i, m in enumerate(dict.fromkeys(k[1] for k, _ in items))}
    variant_rank = {v: i for i, v in enumerate(dict.fromkeys(("none", *(k[2] for k, _ in items))))}
    items.sort(key=lambda kv: (kv[0][1] != "dense", method_rank[kv[0][1]], variant_rank[kv[0][2]], kv[0][3]))
    return items


def draw_curves(plt: Any, activation: str, curves: Mapping[CurveKey, Sequence[tuple[int, float]]],
                *, metric: str = "train acc", levels: Mapping[CurveKey, int] | None = None,
                variant: str | None = None) -> None:
    """Training curves of one activation: dense and every method x variant x sparsity,
    imp levels between grid sparsities too (``levels`` names each one's level: ``L3``);
    with ``variant``, dense and that variant's curves only (title ``relu, shuffle``)."""
    items = curve_series(curves, activation, variant)
    # one activation: colour says the sparsity, marker the method and variant
    sparsities = sorted({k[3] for k, _ in items if k[1] != "dense"})
    style = _Style()
    for key, points in items:
        _, method, variant_of, sparsity = key
        xs, ys = zip(*points)
        name = point_label(method, variant_of)
        level = (levels or {}).get(key)
        label = "dense" if method == "dense" else f"{name} s={sparsity:g}" + (f" L{level}" if level else "")
        color = "gray" if method == "dense" else COLORS[sparsities.index(sparsity) % len(COLORS)]
        plt.plot(list(xs), list(ys), label=label, marker=style.marker(name), color=color)
    which = activation if variant in (None, "none") else f"{activation}, {variant}"
    plt.title(f"Training curves - {which}")
    plt.xlabel("epoch")
    plt.ylabel(metric)


#: Rows of a plotext chart that are not legend: plotext drops the whole legend when it
#: has more lines than the chart's height less these.
LEGEND_MARGIN = 3


def height_for(series: int, minimum: int = 20) -> int:
    """The height (rows) at which a chart of ``series`` labelled lines keeps its legend."""
    return max(minimum, series + LEGEND_MARGIN)


def sparsity_series(cells: Sequence[Cell]) -> int:
    """How many labelled lines the charts against sparsity draw (dense lines included)."""
    return len({(c.activation, c.label) for c in cells}) + 1  # the mask chart's target line
