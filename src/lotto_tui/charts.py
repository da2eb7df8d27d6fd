"""The write-up's four figure sets as terminal charts, from numbers the engine made.

A chart is described first (:class:`Chart`: its series, axes and reference lines, from
:class:`~lotto_engine.views.results.ResultsData`), then drawn with :func:`draw` onto a
plotext-like object (the ``plotext`` module for the batch CLI, a ``textual_plotext``
widget's ``plt`` in the explorer). Nothing here computes science: means and 95%
confidence bands are the engine's.

What the charts promise a reader:

- the legend is never drawn inside the data (plotext puts it over the lines and drops
  it when series outnumber rows): :func:`legend_entries` names every series, and the
  batch report prints them under the chart, the explorer lists them beside it;
- accuracy axes span [0, 1] unless zoomed (``zoom``), with the chance line 1/K;
- stability D is on a log scale (points at or below zero cannot be drawn there and a
  note says how many were left out);
- x ticks are the grid's sparsities exactly;
- a series with flagged runs says so in its legend entry (``2/3 flagged``) and its
  flagged points are drawn as ``!``;
- a training curve over several seeds has its band, mean -/+ 95% CI, drawn as two dim
  dotted lines in the curve's colour (a band narrower than a character cell is hidden
  by the mean line); charts against sparsity draw means only (the tables give each
  point's CI: the bands of a dozen series would hide the means).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lotto_engine.views.results import Cell, CurveKey, ResultsData, point_label

from .formatting import cell_stat


@dataclass(frozen=True)
class Color:
    """A colour in the 16 named ANSI colours: what plotext calls it, its ANSI index (a
    Rich style ``color(n)`` shows the same colour) and its name in a legend."""

    plotext: str
    ansi: int
    name: str

    @property
    def style(self) -> str:
        return f"color({self.ansi})"


#: Series colours (plotext's ``orange`` is ANSI yellow; its ``yellow`` is no colour).
PALETTE = (
    Color("red", 1, "red"), Color("blue", 4, "blue"), Color("green", 2, "green"),
    Color("magenta", 5, "magenta"), Color("cyan", 6, "cyan"), Color("orange", 3, "yellow"),
    Color("red+", 9, "bright red"), Color("blue+", 12, "bright blue"), Color("green+", 10, "bright green"),
    Color("magenta+", 13, "bright magenta"), Color("cyan+", 14, "bright cyan"), Color("orange+", 11, "bright yellow"),
)
#: Reference lines (chance, the target diagonal) and the dense curve among pruned ones.
GRAY = Color("gray", 8, "gray")

METHOD_MARKERS = {"dense": "=", "magnitude": "o", "grasp": "x", "random": "+"}
#: Markers of further methods and variants, in first-seen order (distinct from the
#: ``!`` of flagged points and the ``-`` / ``.`` of reference lines).
MARKERS = ("*", "#", "@", "%", "&", "$", "~", "^", "s", "v", "a", "c", "d", "e", "h", "k", "m", "n", "p", "u",
           "w", "y", "z", "A", "B", "C", "D", "E", "F", "G", "H", "K", "M", "N", "P", "R", "S", "T", "U", "V")
#: Markers when each series needs its own (no colour): the methods' first.
DISTINCT_MARKERS = tuple(dict.fromkeys(("o", "x", "+", "=", *MARKERS)))
FLAG_MARKER = "!"
CHANCE_MARKER = "-"
BAND_MARKER = "·"

#: What the curves chart calls each of lotto_engine.views.results.CURVE_METRICS.
METRIC_LABELS = {"train_acc": "train acc", "val_acc": "val acc", "train_loss": "train loss", "val_loss": "val loss"}
ACCURACY_METRICS = ("train_acc", "val_acc")
#: At most this many epoch ticks on a curves chart (every epoch up to this many).
MAX_EPOCH_TICKS = 12
#: The y ticks of an unzoomed accuracy axis.
UNIT_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Style:
    """Colours and markers by name in first-seen order, so the same series looks the same
    in every chart that shares a Style (the comparison's two sides do).

    ``distinct``: for output without colour (piped, ``NO_COLOR``), where colour cannot
    tell ``relu magnitude`` from ``tanh magnitude``, every series gets a marker of its
    own instead of its method's."""

    def __init__(self, *, distinct: bool = False) -> None:
        self.colors: dict[str, Color] = {}
        self.markers: dict[str, str] = {}
        self.distinct = distinct
        self._series_markers: dict[tuple[str, str], str] = {}

    def color(self, name: str) -> Color:
        return self.colors.setdefault(name, PALETTE[len(self.colors) % len(PALETTE)])

    def marker(self, label: str) -> str:
        if label in METHOD_MARKERS:
            return METHOD_MARKERS[label]
        return self.markers.setdefault(label, MARKERS[len(self.markers) % len(MARKERS)])

    def series_marker(self, group: str, label: str) -> str:
        """The marker of series ``label`` within ``group`` (its activation, or its
        sparsity in a curves chart): the method's, or with ``distinct`` one of its own."""
        if not self.distinct:
            return self.marker(label)
        return self._series_markers.setdefault(
            (group, label), DISTINCT_MARKERS[len(self._series_markers) % len(DISTINCT_MARKERS)])

    def learn(self, cells: Iterable[Cell]) -> Style:
        """Give ``cells``' activations and method labels their styles in order."""
        for cell in cells:
            self.color(cell.activation)
            self.marker(cell.label)
        return self


@dataclass(frozen=True)
class Series:
    """One line of a chart. ``id`` names it across redraws (what the explorer hides)."""

    id: str
    label: str  # the legend's text: the id, with ``(2/3 flagged)`` when runs are flagged
    color: Color
    marker: str
    points: tuple[tuple[float, float], ...]
    #: (x, lo, hi): mean -/+ 95% CI; empty when no point has a spread
    band: tuple[tuple[float, float, float], ...] = ()
    #: points whose runs include flagged ones, drawn as ``!``
    flagged: tuple[tuple[float, float], ...] = ()
    #: a reference line (chance, target diagonal): drawn first, under the data
    reference: bool = False


@dataclass(frozen=True)
class Chart:
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    #: x ticks at exactly these values (the grid's sparsities); None: plotext's own
    xticks: tuple[float, ...] | None = None
    #: y spans [0, 1] unless zoomed
    unit: bool = False
    log: bool = False
    #: lines for under the legend (points a log scale cannot draw, ...)
    notes: tuple[str, ...] = ()
    #: where the data's x axis runs (a shared axis in the comparison); None: the data's own
    xlim: tuple[float, float] | None = None
    #: a y range shared with another chart (the comparison); None: the data's own
    ylim: tuple[float, float] | None = None

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.series]

    def visible(self, hidden: Collection[str] = ()) -> list[Series]:
        return [s for s in self.series if s.id not in hidden]

    def y_range(self, hidden: Collection[str] = ()) -> tuple[float, float] | None:
        """The data's y extent (bands included, reference lines not) of the visible series."""
        ys = [y for s in self.visible(hidden) if not s.reference for y in _ys(s) if not (self.log and y <= 0)]
        return (min(ys), max(ys)) if ys else None


def _ys(series: Series) -> list[float]:
    return [y for _, y in series.points] + [v for _, lo, hi in series.band for v in (lo, hi)]


def flag_note(flagged: int, runs: int) -> str:
    return f" ({flagged}/{runs} flagged)" if flagged else ""


def grid_sparsities(data: ResultsData, cells: Sequence[Cell] | None = None) -> tuple[float, ...]:
    """The x ticks of a chart against sparsity: the sparsities of the pruned grid points."""
    return tuple(sorted({c.target_sparsity for c in (data.cells if cells is None else cells) if c.method != "dense"}))


def _chance_series(chance: float | None, xs: Sequence[float]) -> list[Series]:
    if chance is None or not xs:
        return []
    return [Series("chance", f"chance {chance:g}", GRAY, CHANCE_MARKER, ((xs[0], chance), (xs[-1], chance)),
                   reference=True)]


def _sparsity_series(cells: Sequence[Cell], metric: str, style: Style, *,
                     positive: bool = False) -> tuple[list[Series], int]:
    """Per (activation, method label): ``metric``'s mean over seeds against target
    sparsity, and its flagged points (the table gives each point's 95% CI: bands of a
    dozen series would hide the means). Returns the series and how many points were
    left out for being at or below zero (``positive``: a log axis)."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        if cell.method != "dense":
            groups.setdefault((cell.activation, cell.label), []).append(cell)
    out, dropped = [], 0
    for (activation, label), members in groups.items():
        points, flagged = [], []
        for cell in sorted(members, key=lambda c: c.target_sparsity):
            stat = cell_stat(cell, metric)
            if stat.mean is None:
                continue
            if positive and stat.mean <= 0:
                dropped += 1
                continue
            x = cell.target_sparsity
            points.append((x, stat.mean))
            if cell.flagged:
                flagged.append((x, stat.mean))
        if not points:
            continue
        name = f"{activation} {label}"
        total_flagged = sum(c.flagged for c in members)
        total_runs = sum(c.runs for c in members)
        out.append(Series(name, name + flag_note(total_flagged, total_runs), style.color(activation),
                          style.series_marker(activation, label), tuple(points), flagged=tuple(flagged)))
    return out, dropped


def _dense_series(cells: Sequence[Cell], metric: str, style: Style, xs: Sequence[float]) -> list[Series]:
    """Each activation's dense baseline as a flat line over the grid's sparsities."""
    out = []
    for cell in cells:
        stat = cell_stat(cell, metric)
        if cell.method != "dense" or stat.mean is None or not xs:
            continue
        ends = (xs[0], xs[-1])
        name = f"{cell.activation} dense"
        out.append(Series(
            name, name + flag_note(cell.flagged, cell.runs), style.color(cell.activation),
            style.series_marker(cell.activation, "dense"),
            tuple((x, stat.mean) for x in ends), flagged=tuple((x, stat.mean) for x in ends) if cell.flagged else ()))
    return out


def accuracy_chart(data: ResultsData, *, style: Style | None = None, xticks: Sequence[float] | None = None,
                   title: str = "Validation accuracy vs sparsity") -> Chart:
    """Mean validation accuracy vs target sparsity per activation and method (and
    variant), the dense baseline as a flat line, the chance line."""
    style = style or Style().learn(data.cells)
    xs = tuple(xticks) if xticks is not None else grid_sparsities(data)
    series, _ = _sparsity_series(data.cells, "val_acc", style)
    dense = _dense_series(data.cells, "val_acc", style, xs)
    return Chart(title, "target sparsity", "val acc", (*_chance_series(data.chance, xs), *dense, *series),
                 xticks=xs or None, unit=True)


def mask_chart(data: ResultsData, *, style: Style | None = None) -> Chart:
    """Actual mask sparsity vs the target; the diagonal is a perfect mask."""
    style = style or Style().learn(data.cells)
    xs = grid_sparsities(data)
    target = [Series("target", "target (a perfect mask)", GRAY, CHANCE_MARKER, tuple((x, x) for x in xs),
                     reference=True)] if xs else []
    series, _ = _sparsity_series(data.cells, "actual_sparsity", style)
    return Chart("Mask sparsity vs target", "target sparsity", "actual sparsity", (*target, *series),
                 xticks=xs or None, unit=True)


def stability_chart(data: ResultsData, *, style: Style | None = None) -> Chart:
    """Stability D = ||W_dense - W_pruned|| / ||W_dense|| vs sparsity, log scale."""
    style = style or Style().learn(data.cells)
    xs = grid_sparsities(data)
    series, dropped = _sparsity_series(data.cells, "stability", style, positive=True)
    notes = (f"{dropped} point{'s' if dropped != 1 else ''} with D <= 0 not drawn (log scale)",) if dropped else ()
    return Chart("Stability D vs sparsity (log scale)", "target sparsity", "D", tuple(series),
                 xticks=xs or None, log=True, notes=notes)


def curve_items(curves: Mapping[CurveKey, Sequence[tuple[int, float]]], activation: str,
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


def curve_chart(data: ResultsData, activation: str, variant: str | None = None, metric: str = "train_acc",
                *, distinct: bool = False) -> Chart:
    """Training curves of one activation: dense and every method x variant x sparsity,
    imp levels between grid sparsities too (``L3``); with ``variant``, dense and that
    variant's curves only (title ``relu, shuffle``). Colour says the sparsity, marker
    the method and variant; each curve's band is mean -/+ 95% CI over seeds."""
    curves = data.curves.get(metric, {})
    bands = data.bands.get(metric, {})
    items = curve_items(curves, activation, variant)
    sparsities = sorted({k[3] for k, _ in items if k[1] != "dense"})
    cells = {c.key: c for c in (*data.cells, *data.intermediate)}
    levels = data.levels
    style = Style(distinct=distinct)
    series = []
    for key, points in items:
        _, method, variant_of, sparsity = key
        name = point_label(method, variant_of)
        level = levels.get(key)
        label = "dense" if method == "dense" else f"{name} s={sparsity:g}" + (f" L{level}" if level else "")
        color = GRAY if method == "dense" else PALETTE[sparsities.index(sparsity) % len(PALETTE)]
        band = tuple(bands.get(key, ()))
        cell = cells.get(key)
        note = flag_note(cell.flagged, cell.runs) if cell else ""
        series.append(Series(label, label + note, color, style.series_marker(f"{sparsity}", name), tuple(points),
                             band if any(lo != hi for _, lo, hi in band) else ()))
    unit = metric in ACCURACY_METRICS
    epochs = sorted({e for _, points in items for e, _ in points})
    which = activation if variant in (None, "none") else f"{activation}, {variant}"
    chance = _chance_series(data.chance, epochs) if unit and epochs else []
    step = -(-len(epochs) // MAX_EPOCH_TICKS) if epochs else 1
    return Chart(f"Training curves - {which}", "epoch", METRIC_LABELS.get(metric, metric),
                 (*chance, *series), xticks=tuple(epochs[::step]) or None, unit=unit)


def report_charts(data: ResultsData, metric: str = "train_acc", *, distinct: bool = False) -> list[Chart]:
    """The four figure sets: accuracy, masks and stability against sparsity, then one
    curves chart per activation (and variant). ``distinct``: a marker per series, for
    output without colour (see :class:`Style`)."""
    style = Style(distinct=distinct).learn(data.cells)
    return [accuracy_chart(data, style=style), mask_chart(data, style=style), stability_chart(data, style=style)] + [
        curve_chart(data, a, v, metric, distinct=distinct) for a, v in data.curve_groups]


def shared_limits(charts: Sequence[Chart], hidden: Collection[str] = (), *, zoom: bool = False,
                  ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """One x and one y range for charts drawn side by side (the comparison): the union
    of their sparsities, and of their data (or [0, 1] for an unzoomed accuracy axis)."""
    xs = sorted({x for c in charts for x in (c.xticks or ())})
    xlim = (xs[0], xs[-1]) if xs else None
    if charts and all(c.unit for c in charts) and not zoom:
        return xlim, (0.0, 1.0)
    ranges = [r for r in (c.y_range(hidden) for c in charts) if r]
    ylim = (min(lo for lo, _ in ranges), max(hi for _, hi in ranges)) if ranges else None
    return xlim, ylim


def _pad(lo: float, hi: float, log: bool) -> tuple[float, float]:
    """A data range with a little room, so the extreme points are not on the frame."""
    if log:
        return lo / 1.1, hi * 1.1
    room = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 0.005)
    return lo - room, hi + room


def draw(plt: Any, chart: Chart, *, hidden: Collection[str] = (), zoom: bool = False) -> None:
    """Draw ``chart`` onto ``plt`` without a plotext legend (:func:`legend_entries` is
    the legend). ``hidden``: series ids left out; ``zoom``: the y axis follows the
    visible data instead of [0, 1]."""
    shown = chart.visible(hidden)
    refs = [s for s in shown if s.reference]
    data = [s for s in shown if not s.reference]
    if chart.log and shown:  # plotext cannot build a log axis with nothing on it (TypeError)
        plt.yscale("log")
    for s in refs:
        _line(plt, s.points, s.marker, s.color)
    for s in data:  # bands under every mean line
        if s.band:
            for i in (1, 2):
                _line(plt, [(b[0], b[i]) for b in s.band], BAND_MARKER, s.color, style="dim")
    for s in data:
        _line(plt, s.points, s.marker, s.color)
        if s.flagged:
            xs, ys = zip(*s.flagged)
            plt.scatter(list(xs), list(ys), marker=FLAG_MARKER, color=s.color.plotext)
    ylim = chart.ylim
    if ylim is None:
        extent = chart.y_range(hidden)
        if chart.unit and not zoom:
            ylim = (0.0, 1.0)
        elif extent:
            ylim = _pad(*extent, chart.log)
            if chart.unit:  # zoomed accuracy: never past [0, 1]
                ylim = (max(0.0, ylim[0]), min(1.0, ylim[1]))
    if ylim is not None and ylim[0] < ylim[1] and not (chart.log and ylim[0] <= 0):
        # plotext takes a log axis' limits as exponents (10 ** limit is drawn)
        plt.ylim(*((math.log10(ylim[0]), math.log10(ylim[1])) if chart.log else ylim))
        if ylim == (0.0, 1.0):
            plt.yticks(list(UNIT_TICKS), [f"{t:.1f}" for t in UNIT_TICKS])
    if chart.xticks:
        plt.xticks(list(chart.xticks), [f"{x:g}" for x in chart.xticks])
    if chart.xlim is not None and chart.xlim[0] < chart.xlim[1]:
        plt.xlim(*chart.xlim)
    plt.title(chart.title)
    plt.xlabel(chart.xlabel)
    plt.ylabel(chart.ylabel)


def _line(plt: Any, points: Sequence[tuple[float, float]], marker: str, color: Color, style: str | None = None) -> None:
    xs, ys = zip(*points)
    if len(xs) == 1:
        plt.scatter(list(xs), list(ys), marker=marker, color=color.plotext, style=style)
    else:
        plt.plot(list(xs), list(ys), marker=marker, color=color.plotext, style=style)


@dataclass(frozen=True)
class LegendEntry:
    id: str
    marker: str
    color: Color
    label: str
    hidden: bool = False

    @property
    def text(self) -> str:
        """``o red relu magnitude (1/3 flagged)``: readable without colour."""
        return f"{self.marker} {self.color.name} {self.label}"


def legend_entries(chart: Chart, hidden: Collection[str] = ()) -> list[LegendEntry]:
    """Every series of ``chart``, in drawing order (reference lines first)."""
    return [LegendEntry(s.id, s.marker, s.color, s.label, s.id in hidden) for s in chart.series]


def legend_grid(texts: Sequence[str], width: int) -> tuple[list[list[int]], int]:
    """Entries laid out in as many columns as ``width`` holds, read down the columns (a
    legend reads in chart order): rows of entry indexes, and the column width."""
    if not texts:
        return [], 0
    cell = max(len(t) for t in texts) + 3
    columns = max(1, min(len(texts), (width + 3) // cell))
    rows = -(-len(texts) // columns)
    return [[c * rows + r for c in range(columns) if c * rows + r < len(texts)] for r in range(rows)], cell


def legend_lines(chart: Chart, width: int, *, color: bool = False) -> list[str]:
    """The legend under a batch chart: every series' entry (:attr:`LegendEntry.text`),
    in as many columns as ``width`` holds, each entry in its series' colour; then a
    line for the band and flag markers where the chart has them, and the chart's notes."""
    import plotext

    entries = legend_entries(chart)
    grid, cell = legend_grid([e.text for e in entries], width)
    lines = []
    for row in grid:
        parts = []
        for place, i in enumerate(row):
            e = entries[i]
            text = e.text if place == len(row) - 1 else e.text.ljust(cell)
            parts.append(plotext.colorize(text, e.color.plotext) if color else text)
        lines.append("".join(parts).rstrip())
    keys = marker_key(chart)
    return lines + ([keys] if keys else []) + list(chart.notes)


def marker_key(chart: Chart, *, short: bool = False) -> str:
    """What the extra markers of ``chart`` mean, '' when it has none (``short``: for a
    narrow legend column)."""
    parts = []
    if any(s.band for s in chart.series):
        parts.append(f"{BAND_MARKER}{BAND_MARKER} " + ("mean ± 95% CI" if short else "dotted: mean ± 95% CI over seeds"))
    if any(s.flagged for s in chart.series):
        parts.append(f"{FLAG_MARKER} " + ("flagged runs" if short else "a point with flagged runs"))
    return ("\n" if short else "; ").join(parts)
