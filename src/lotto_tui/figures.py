"""Paper figures drawn with matplotlib from :class:`~lotto_engine.views.results.ResultsData`
(every number comes from the engine; this module arranges and draws).

The write-up's four figure sets (accuracy vs sparsity, mask vs target sparsity,
stability vs sparsity, training curves per activation), and a per-layer sparsity
heatmap per method. Every function takes one or two experiments' results: with two,
the second is drawn over the first, faded (see :data:`EXPERIMENT_ALPHA`), and the
legend says which is which.

matplotlib is imported inside the functions (``lotto-tui --help`` and the explorer
start without it) and only through :class:`matplotlib.figure.Figure` with the Agg
canvas: no pyplot, no global figure registry, no GUI backend. The few settings
matplotlib only takes as rcParams (font sizes, the SVG id salt) are applied under
one lock (:func:`saving`).

One style per series everywhere: :func:`series_style` gives a label (``magnitude``,
``grasp/shuffle``, ``dense``) its colour (the method's, from the Okabe-Ito
colour-blind-safe palette), marker (the method's) and line style (the variant's), so
a series looks the same in every figure of every report.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lotto_engine.views.results import Cell, ResultsData

#: The pruning methods in the engine's registry order (lotto_engine.scores.METHODS,
#: checked in tests) with their colour and marker, whatever an experiment's config
#: lists, so every report draws a method alike. Colours: the Okabe & Ito (2008)
#: colour-blind-safe palette (its black is the dense baseline's), yellow for the
#: rarest method (faint on white), and Paul Tol's wine for the eighth.
METHOD_STYLE = {
    "magnitude": ("#E69F00", "o"),
    "grasp": ("#56B4E9", "s"),
    "random": ("#882255", "^"),
    "snip": ("#009E73", "D"),
    "grasp-hessian": ("#D55E00", "v"),
    "synflow": ("#CC79A7", "P"),
    "magnitude-init": ("#F0E442", "X"),
    "imp": ("#0072B2", "h"),
}
METHOD_ORDER = tuple(METHOD_STYLE)
#: For a method this release does not know: a stable pick from its name.
SPARE = (("#000000", "d"), ("#E69F00", "<"), ("#56B4E9", ">"), ("#009E73", "p"))
DENSE_COLOUR = "#000000"
#: Line style and marker fill per sanity-check variant (lotto_engine.config.VARIANTS);
#: a hollow marker (fill "none") means a flagged run, so no variant uses it.
VARIANT_LINES = {"none": "-", "shuffle": "--", "reinit": ":", "invert": "-."}
VARIANT_FILLS = {"none": "full", "shuffle": "top", "reinit": "bottom", "invert": "left"}
#: Opacity of the first and the second experiment when two are drawn together.
EXPERIMENT_ALPHA = (1.0, 0.45)
CHANCE_COLOUR = "#777777"
#: Formats the figures can be written in.
FORMATS = ("png", "svg", "pdf")
PNG_DPI = 200
#: Panel size in inches (one panel per activation, side by side).
PANEL = (3.1, 2.7)

#: The three numbers of the stability figure: (stat name, y label).
STABILITY_ROWS = (
    ("stability", "D  (‖W_dense − W_pruned‖ / ‖W_dense‖)"),
    ("stability_floor", "floor  (‖W_dense·(1−m)‖ / ‖W_dense‖)"),
    ("kept_change", "kept change  (‖(W_dense − W_pruned)·m‖ / ‖W_dense·m‖)"),
)
CURVE_ROWS = (("train_acc", "training accuracy"), ("val_acc", "validation accuracy"))

RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "lotto-tui",  # stable element ids: the same figure gives the same file
    "svg.fonttype": "path",
    "pdf.fonttype": 42,  # TrueType: text stays text in a paper's PDF
    "ps.fonttype": 42,
}
#: Metadata without dates, so a rerun writes identical files.
METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}

_LOCK = threading.Lock()


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str
    linestyle: Any  # a matplotlib line style
    fill: str = "full"  # marker fill style


def series_style(label: str) -> Style:
    """The colour and marker (the method's), line style and marker fill (the
    variant's) of a series, by its label (``dense``, ``magnitude``,
    ``grasp/shuffle``): the same in every figure and report."""
    method, _, variant = label.partition("/")
    variant = variant or "none"
    if method == "dense":
        return Style(DENSE_COLOUR, "*", "-")
    colour, marker = METHOD_STYLE.get(method) or SPARE[sum(map(ord, method)) % len(SPARE)]
    return Style(colour, marker, VARIANT_LINES.get(variant, (0, (5, 1, 1, 1))), VARIANT_FILLS.get(variant, "right"))


@dataclass(frozen=True)
class Source:
    """One experiment's results as a figure draws them: ``tag`` names it in legends
    (empty when it is the only one); ``index`` 0 or 1 picks its opacity and offset."""

    data: ResultsData
    tag: str = ""
    index: int = 0

    @property
    def alpha(self) -> float:
        return EXPERIMENT_ALPHA[self.index]


@contextlib.contextmanager
def saving() -> Iterator[None]:
    """matplotlib's rcParams for these figures, set under a lock (they are global)."""
    import matplotlib

    with _LOCK, matplotlib.rc_context(RC):
        yield


def new_figure(ncols: int, nrows: int = 1, *, width: float | None = None, height: float | None = None,
               **subplots: Any) -> tuple[Figure, Any]:
    """A figure with an Agg canvas and a grid of axes (always a 2-d array)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width or PANEL[0] * ncols, height or PANEL[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """``fig`` in ``fmt`` (one of :data:`FORMATS`), without dates: reruns give the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=METADATA[fmt] or None, bbox_inches="tight",
                pad_inches=0.04, facecolor="white")
    return buffer.getvalue()


# ------------------------------------------------------------------------ arranging


def activations_of(sources: Sequence[Source]) -> list[str]:
    """Every activation of the experiments, the first's order first."""
    return list(dict.fromkeys(a for s in sources for a in s.data.activations))


def pruned_labels(sources: Sequence[Source]) -> list[str]:
    """The pruned series (method/variant labels) in grid order, the first experiment's first."""
    return list(dict.fromkeys(c.label for s in sources for c in s.data.cells if c.method != "dense"))


def grid_sparsities(sources: Sequence[Source]) -> list[float]:
    """The union of the experiments' pruned target sparsities, ascending (shared x ticks)."""
    return sorted({c.target_sparsity for s in sources for c in s.data.cells if c.method != "dense"})


def series(data: ResultsData, activation: str) -> dict[str, list[Cell]]:
    """Pruned cells of one activation by label, each by sparsity (grid order already)."""
    out: dict[str, list[Cell]] = {}
    for cell in data.cells:
        if cell.activation == activation and cell.method != "dense" and cell.done:
            out.setdefault(cell.label, []).append(cell)
    return out


def dense_cell(data: ResultsData, activation: str) -> Cell | None:
    return next((c for c in data.cells if c.activation == activation and c.method == "dense" and c.done), None)


def any_flagged(sources: Sequence[Source]) -> bool:
    return any(c.flagged for s in sources for c in s.data.cells if c.done)


def dodge(position: int, count: int, span: float) -> float:
    """Sideways offset of the ``position``-th of ``count`` series, so error bars at one
    sparsity do not cover each other (ticks stay at the true sparsities)."""
    step = min(0.025 * span, 0.5 * span / max(count, 1))
    return (position - (count - 1) / 2) * step


# ------------------------------------------------------------------------ drawing


def _points(ax: Axes, xs: list[float], cells: list[Cell], metric: str, style: Style, alpha: float, *,
            errors: bool = True, positive: bool = False, order: int = 0) -> None:
    """A series: line and 95% CI error bars, filled markers, hollow ones where a run is
    flagged. Later series (``order``) get smaller markers, so where two series have the
    same value both stay visible, one inside the other."""
    rows = []
    for x, cell in zip(xs, cells):
        stat = cell.stat(metric)
        if stat.mean is None or (positive and stat.mean <= 0):
            continue
        rows.append((x, stat.mean, stat.ci95 or 0.0, cell.flagged > 0))
    if not rows:
        return
    x, y, err, flagged = zip(*rows)
    ax.errorbar(x, y, yerr=err if errors else None, color=style.colour, linestyle=style.linestyle,
                linewidth=1.3, elinewidth=1.0, capsize=2.5, alpha=alpha, marker="none", zorder=2)
    for hollow in (False, True):
        px = [xi for xi, f in zip(x, flagged) if f == hollow]
        py = [yi for yi, f in zip(y, flagged) if f == hollow]
        if px:
            # a hollow marker is filled white, so a series behind it does not show through
            ax.plot(px, py, linestyle="none", marker=style.marker, markersize=max(3.0, 7.5 - 1.2 * order),
                    color=style.colour, fillstyle="full" if hollow else style.fill,
                    markerfacecolor="white" if hollow else style.colour,
                    markerfacecoloralt="white", markeredgewidth=1.2,
                    alpha=alpha, zorder=3)


def _chance(ax: Axes, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOUR, linestyle=(0, (1, 2)), linewidth=1.0, zorder=1)


def _legend(fig: Figure, sources: Sequence[Source], labels: Sequence[str], *, dense: str | None = None,
            chance: bool = False, diagonal: bool = False, flagged: bool = False, bands: bool = False,
            markers: bool = True) -> None:
    """One legend for the whole figure, below the panels (never over the data)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, names = [], []
    if dense:
        handles.append(Line2D([], [], color=DENSE_COLOUR, linewidth=1.3))
        names.append(dense)
    for label in labels:
        style = series_style(label)
        handles.append(Line2D([], [], color=style.colour, marker=style.marker if markers else None,
                              linestyle=style.linestyle, linewidth=1.3, markersize=5, fillstyle=style.fill,
                              markerfacecoloralt="white"))
        names.append(label)
    if chance:
        handles.append(Line2D([], [], color=CHANCE_COLOUR, linestyle=(0, (1, 2))))
        names.append("chance (1/K)")
    if diagonal:
        handles.append(Line2D([], [], color=CHANCE_COLOUR, linestyle="--"))
        names.append("actual = target")
    if bands:
        handles.append(Patch(facecolor="#888888", alpha=0.25))
        names.append("95% CI over seeds" + (" (B: dotted edges)" if len(sources) > 1 else ""))
    if flagged:
        handles.append(Line2D([], [], color="#444444", marker="o", markerfacecolor="none", linestyle="none"))
        names.append("hollow: a run is flagged")
    if len(sources) > 1:
        for source in sources:
            handles.append(Line2D([], [], color="#444444", linewidth=2.5, alpha=source.alpha))
            names.append(source.tag + (" (faded)" if source.index else ""))
    place_legend(fig, handles, names)


def place_legend(fig: Figure, handles: list[Any], names: list[str]) -> None:
    """A legend below the panels with as many entries side by side as fit the
    figure's width (matplotlib fills a legend column by column, so one row, when it
    fits, reads left to right), measured, not guessed."""
    renderer = fig.canvas.get_renderer()
    room = fig.get_figwidth() * fig.dpi
    for columns in range(len(names), 0, -1):
        legend = fig.legend(handles, names, loc="outside lower center", ncols=columns, frameon=False)
        if columns == 1 or legend.get_window_extent(renderer).width <= room:
            return
        legend.remove()


def _sparsity_axis(ax: Axes, ticks: list[float]) -> None:
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("target sparsity")
    if ticks:
        span = (ticks[-1] - ticks[0]) or 0.5
        ax.set_xlim(ticks[0] - 0.12 * span, ticks[-1] + 0.12 * span)


def accuracy_vs_sparsity(sources: Sequence[Source], metric: str = "val_acc") -> Figure | None:
    """Validation accuracy against target sparsity, one panel per activation: each
    method's mean with 95% CI error bars, the dense baseline as a line with its CI
    band, chance as a dotted line, y from 0 to 1."""
    activations = activations_of(sources)
    if not activations:
        return None
    labels, ticks = pruned_labels(sources), grid_sparsities(sources)
    span = (ticks[-1] - ticks[0]) if len(ticks) > 1 else 0.5
    fig, axes = new_figure(len(activations), sharey=True)
    count = len(labels) * len(sources)
    for ax, activation in zip(axes[0], activations):
        for source in sources:
            dense = dense_cell(source.data, activation)
            stat = dense.stat(metric) if dense else None
            if stat is not None and stat.mean is not None:
                if source.index:  # the second experiment's interval as edges, so A stays readable
                    for edge in (stat.lo, stat.hi):
                        ax.axhline(edge, color=DENSE_COLOUR, linewidth=0.8, linestyle=":", alpha=source.alpha)
                else:
                    ax.axhspan(stat.lo, stat.hi, color=DENSE_COLOUR, alpha=0.12 * source.alpha, linewidth=0)
                ax.axhline(stat.mean, color=DENSE_COLOUR, linewidth=1.3, alpha=source.alpha, zorder=1)
            by_label = series(source.data, activation)
            for i, label in enumerate(labels):
                cells = by_label.get(label, [])
                offset = dodge(source.index * len(labels) + i, count, span)
                _points(ax, [c.target_sparsity + offset for c in cells], cells, metric, series_style(label),
                        source.alpha, order=i)
        _chance(ax, sources[0].data.chance)
        ax.set_title(activation)
        ax.set_ylim(0, 1)
        _sparsity_axis(ax, ticks)
    axes[0][0].set_ylabel({"val_acc": "validation accuracy", "test_acc": "test accuracy"}.get(metric, metric))
    _legend(fig, sources, labels, dense="dense baseline (band: 95% CI)", chance=sources[0].data.chance is not None,
            flagged=any_flagged(sources))
    return fig


def mask_vs_target(sources: Sequence[Source]) -> Figure | None:
    """Actual mask sparsity against target sparsity, one panel per activation, with
    the diagonal where the mask removes exactly what was asked."""
    activations = activations_of(sources)
    labels, ticks = pruned_labels(sources), grid_sparsities(sources)
    if not activations or not labels:
        return None
    fig, axes = new_figure(len(activations), sharey=True, width=2.6 * len(activations) + 0.4)
    for ax, activation in zip(axes[0], activations):
        for tick in ticks:  # the grid's sparsities, where the points are
            ax.axvline(tick, color="#dddddd", linewidth=0.8, zorder=0)
        ax.plot([0, 1], [0, 1], color=CHANCE_COLOUR, linestyle="--", linewidth=1.0, zorder=1)
        for source in sources:
            by_label = series(source.data, activation)
            for i, label in enumerate(labels):
                cells = by_label.get(label, [])
                _points(ax, [c.target_sparsity for c in cells], cells, "actual_sparsity", series_style(label),
                        source.alpha, order=i)
        ax.set_title(activation)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_xlabel("target sparsity (grey lines: the grid's)")
    axes[0][0].set_ylabel("actual mask sparsity")
    _legend(fig, sources, labels, diagonal=True, flagged=any_flagged(sources))
    return fig


def stability_vs_sparsity(sources: Sequence[Source]) -> Figure | None:
    """D against target sparsity (log scale) with its two companions below it: the
    floor (what the mask alone removes) and the change on the kept weights. A row
    whose number no run recorded (an older store) is left out."""
    activations, labels, ticks = activations_of(sources), pruned_labels(sources), grid_sparsities(sources)
    if not activations or not labels:
        return None
    rows = [(name, text) for name, text in STABILITY_ROWS
            if any(c.stat(name).mean is not None for s in sources for c in s.data.cells)]
    if not rows:
        return None
    span = (ticks[-1] - ticks[0]) if len(ticks) > 1 else 0.5
    count = len(labels) * len(sources)
    fig, axes = new_figure(len(activations), len(rows), sharex=True, sharey="row",
                           height=PANEL[1] * 0.9 * len(rows) + 0.5)
    for r, (name, text) in enumerate(rows):
        for ax, activation in zip(axes[r], activations):
            for source in sources:
                by_label = series(source.data, activation)
                for i, label in enumerate(labels):
                    cells = by_label.get(label, [])
                    offset = dodge(source.index * len(labels) + i, count, span)
                    _points(ax, [c.target_sparsity + offset for c in cells], cells, name, series_style(label),
                            source.alpha, positive=True, order=i)
            ax.set_yscale("log", nonpositive="clip")
            _plain_log_labels(ax)
            if r == 0:
                ax.set_title(activation)
            _sparsity_axis(ax, ticks)
            if r < len(rows) - 1:
                ax.set_xlabel("")
        axes[r][0].set_ylabel(text.replace("  (", "\n("))
    _legend(fig, sources, labels, flagged=any_flagged(sources))
    return fig


def _plain_log_labels(ax: Axes) -> None:
    """Log-axis labels as plain numbers (0.3, 1, 100), not powers of ten, on the
    ticks matplotlib would label (minor ones only where the range is short)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))


def training_curves(sources: Sequence[Source], activation: str, variant: str = "none") -> Figure | None:
    """Mean training and validation accuracy by epoch with 95% CI bands, one column
    per grid sparsity: the dense net in every column, with the pruned runs of
    ``variant`` (the method itself for "none") at that sparsity."""
    from matplotlib.ticker import MaxNLocator

    ticks = grid_sparsities(sources)
    rows = [(m, t) for m, t in CURVE_ROWS if any(s.data.curves.get(m) for s in sources)]
    if not rows or not ticks:
        return None
    labels = [label for label in pruned_labels(sources) if (label.partition("/")[2] or "none") == variant]
    if not labels:
        return None
    fig, axes = new_figure(len(ticks), len(rows), sharex=True, sharey=True, width=2.5 * len(ticks) + 0.4,
                           height=2.2 * len(rows) + 0.6)
    for r, (metric, text) in enumerate(rows):
        for ax, sparsity in zip(axes[r], ticks):
            for source in sources:
                cells = [c for c in source.data.cells if c.activation == activation and c.done and (
                    c.method == "dense" or (c.label in labels and c.target_sparsity == sparsity))]
                for cell in cells:
                    _curve(ax, source, metric, cell)
            _chance(ax, sources[0].data.chance)
            ax.set_ylim(0, 1)
            if r == 0:
                ax.set_title(f"{activation}, sparsity {sparsity:g}")
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
        axes[r][0].set_ylabel(text)
    for ax in axes[-1]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, sources, labels, dense="dense", chance=sources[0].data.chance is not None, bands=True,
            markers=False)
    return fig


def _curve(ax: Axes, source: Source, metric: str, cell: Cell) -> None:
    points = source.data.curves.get(metric, {}).get(cell.key, [])
    band = source.data.bands.get(metric, {}).get(cell.key, [])
    if not points:
        return
    style = series_style(cell.label)
    ax.plot([e for e, _ in points], [v for _, v in points], color=style.colour, linestyle=style.linestyle,
            linewidth=1.3, alpha=source.alpha, zorder=2)
    if band and source.index:  # the second experiment's band as dotted edges, so A's stays readable
        for i in (1, 2):
            ax.plot([b[0] for b in band], [b[i] for b in band], color=style.colour, linestyle=":",
                    linewidth=0.8, alpha=source.alpha, zorder=1)
    elif band:
        ax.fill_between([e for e, _, _ in band], [lo for _, lo, _ in band], [hi for _, _, hi in band],
                        color=style.colour, alpha=0.18 * source.alpha, linewidth=0, zorder=1)


def layer_sparsity(sources: Sequence[Source], label: str) -> Figure | None:
    """Each layer's mask sparsity (mean over seeds) for one method: rows are layers
    in the net's order, columns the grid's target sparsities, one panel per
    activation (a row of panels per experiment when there are two)."""
    rows = []  # per source: [(activation, layers, sparsities, {(layer, sparsity): mean})]
    for source in sources:
        stats = source.data.layer_stats
        panels = []
        for activation in activations_of(sources):
            keys = sorted((k for k in stats if k[0] == activation and _label(k) == label), key=lambda k: k[3])
            layers = list(dict.fromkeys(name for k in keys for name in stats[k]))
            values = {(name, k[3]): stats[k][name].mean for k in keys for name in stats[k]}
            panels.append((activation, layers, [k[3] for k in keys], values))
        rows.append((source, panels))
    if not any(p[1] for _, panels in rows for p in panels):
        return None
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    columns = len(rows[0][1])
    tallest = max(len(p[1]) for _, panels in rows for p in panels)
    widest = max(len(p[2]) for _, panels in rows for p in panels)
    fig, axes = new_figure(columns, len(rows), width=max(2.4, 0.6 * widest + 1.4) * columns + 0.9,
                           height=(0.3 * tallest + 1.0) * len(rows) + 0.5)
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)
    image = None
    for r, (source, panels) in enumerate(rows):
        for ax, (activation, layers, sparsities, values) in zip(axes[r], panels):
            ax.set_title(activation + (f" — {source.tag}" if source.tag else ""))
            for spine in ax.spines.values():
                spine.set_visible(False)
            if not layers:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
                continue
            grid = [[values.get((name, s), float("nan")) for s in sparsities] for name in layers]
            image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
            for i, row in enumerate(grid):
                for j, value in enumerate(row):
                    if value == value:  # not NaN
                        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5,
                                color="white" if value < 0.55 else "black")
            ax.set_xticks(range(len(sparsities)), [f"{s:g}" for s in sparsities])
            ax.set_yticks(range(len(layers)), layers)
            ax.set_xlabel("target sparsity")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="layer sparsity (mean over seeds)", shrink=0.9)
    fig.suptitle(f"per-layer mask sparsity: {label}", fontsize=9)
    return fig


def _label(key: tuple[str, str, str, float]) -> str:
    from lotto_engine.views.results import point_label

    return point_label(key[1], key[2])
