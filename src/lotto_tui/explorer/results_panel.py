"""The results panel: the write-up's four figure sets as plotext charts, the mask
sparsity table with per-layer detail, and the results table. Draws
:class:`~lotto_engine.views.results.ResultsData`; computes nothing."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Label, Select, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from lotto_engine.statuses import PROBLEMS
from lotto_engine.views.results import CURVE_METRICS, ResultsData, ordered_cells, point_label

from .. import charts
from ..formatting import (
    RESULT_COLUMNS,
    cell_status,
    cell_values,
    fit_columns,
    num,
    numerics_setting,
    pct,
    printable,
    text_width,
)
from .jobs_panel import SCROLLBAR, health_cell

#: How the curves tab names each of lotto_engine.views.results.CURVE_METRICS.
CURVE_LABELS = {"train_acc": "train acc", "val_acc": "val acc", "train_loss": "train loss", "val_loss": "val loss"}

RESULT_TABS = ("tab-accuracy", "tab-masks", "tab-stability", "tab-curves", "tab-table")

#: Every column of the results table, as wide terminals show it.
WIDE_COLUMNS = (*RESULT_COLUMNS, "health")
#: What an 80-column terminal shows: best val %, actual sparsity (also in the masks tab)
#: and the seed std of val % make room for n, status and health.
NARROW_COLUMNS = ("activation", "method", "target", "val %", "test %", "D", "n", "status", "health")
#: The columns a half-width results table keeps (side-by-side comparison).
COMPACT_COLUMNS = ("activation", "method", "target", "val %", "test %", "D")
#: Panel width (cells) from which the wide columns fit.
WIDE_FROM = 110
HEADERS = {"activation": "act"}
NARROW_NOTE = "[dim]wider terminal: + best val %, actual sparsity, seed std (or e exports all)[/]"
#: The note when columns were left out too (shorter: it names them).
DROPPED_NOTE = "[dim]wider terminal: + best val %, actual sparsity, seed std{} (e exports all)[/]"
#: Narrow-set columns left out, in this order, while long method labels
#: (``grasp-hessian/shuffle``) make the table wider than the panel.
NARROW_DROPPABLE = ("n", "D")


def curve_group_label(activation: str, variant: str) -> str:
    """A curves-picker entry: ``relu``, or ``relu, shuffle`` for a variant's curves."""
    return activation if variant == "none" else f"{activation}, {variant}"


def numerics_note(numerics: list[dict]) -> str:
    """One line when the shown runs were made under different numerics settings (device,
    precision, threads), which change results by more than rounding."""
    if len(numerics) < 2:
        return ""
    settings = ", ".join(escape(printable(numerics_setting(n))) for n in numerics)
    return f"[bold yellow]![/] mixed numerics: {settings} (results can differ)"


def fill_results_table(table: DataTable, data: ResultsData, *, compact: bool = False, wide: bool = True,
                       room: int = 0) -> tuple[str, ...]:
    """The results table (activation x method/variant x sparsity: the grid's points, no
    imp level in between), keeping the cursor. The narrow set leaves out
    :data:`NARROW_DROPPABLE` columns while it is wider than ``room`` cells (0: never);
    returns the columns it left out."""
    names = COMPACT_COLUMNS if compact else WIDE_COLUMNS if wide else NARROW_COLUMNS
    rows = []
    for cell in ordered_cells(data.cells, data.axes):
        values: dict[str, Text | str] = dict(zip(RESULT_COLUMNS, cell_values(cell)))
        if not wide:
            values["val %"] = pct(cell.val_acc)
        values["health"] = (health_cell(cell.flags, wrap=not wide, checked=not cell.unchecked)
                            if cell.flags or cell.done else "-")
        rows.append((cell, values))
    dropped: tuple[str, ...] = ()
    if not wide and not compact and room:
        widths = {n: max([len(HEADERS.get(n, n)), *(text_width(v[n]) for _, v in rows)]) for n in names}
        kept = fit_columns(names, widths, room, NARROW_DROPPABLE)
        dropped, names = tuple(n for n in names if n not in kept), kept
    cursor = table.cursor_row
    table.clear(columns=True)  # widths from these rows only (they never shrink otherwise)
    for name in names:
        table.add_column(name if wide or compact else HEADERS.get(name, name), key=name)
    for cell, values in rows:
        style = cell_status(cell)[1]
        problem = any(s in PROBLEMS for s in cell.statuses)  # the whole row stands out
        table.add_row(
            *(Text(v, style=style) if isinstance(v, str) and (problem or n == "status") else v
              for n, v in ((n, values[n]) for n in names)),
            height=None,
        )
    if table.row_count:
        table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)
    return dropped


def draw_accuracy(plot: PlotextPlot, data: ResultsData, title: str = "") -> None:
    plt = plot.plt
    plt.clear_figure()
    charts.draw_accuracy(plt, data.cells)
    if title:
        plt.title(title)
    plot.refresh()


class ResultsPanel(Widget):
    DEFAULT_CSS = """
    ResultsPanel { height: 1fr; }
    ResultsPanel #numerics-note { height: auto; display: none; }
    ResultsPanel #numerics-note.-shown { display: block; }
    ResultsPanel #table-note { height: 1; display: none; }
    ResultsPanel #table-note.-shown { display: block; }
    ResultsPanel TabPane { padding: 0; }
    ResultsPanel #masks-plot { height: 1fr; }
    ResultsPanel #masks-table { height: 1fr; }
    ResultsPanel #curves-bar { height: 1; }
    ResultsPanel #curves-bar Label { padding: 0 1; }
    ResultsPanel #curves-bar Select { width: 20; }
    ResultsPanel #curves-bar #curves-activation { width: 22; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data = ResultsData(None)
        self._activations: list[tuple[str, str]] = []  # (activation, variant) the curves picker offers
        self._drawn = set()
        self._table_wide: bool | None = None  # the column set the table was last drawn with

    def compose(self) -> ComposeResult:
        yield Static("", id="numerics-note")
        with TabbedContent(id="result-tabs"):
            with TabPane("Accuracy", id="tab-accuracy"):
                yield PlotextPlot(id="accuracy-plot")
            with TabPane("Masks", id="tab-masks"):
                with Vertical():
                    yield PlotextPlot(id="masks-plot")
                    yield DataTable(id="masks-table", zebra_stripes=True, cursor_type="row")
            with TabPane("Stability", id="tab-stability"):
                yield PlotextPlot(id="stability-plot")
            with TabPane("Curves", id="tab-curves"):
                with Horizontal(id="curves-bar"):
                    yield Label("activation")
                    yield Select([], prompt="-", id="curves-activation", compact=True)
                    yield Label("metric")
                    yield Select(
                        [(CURVE_LABELS.get(name, name), name) for name in CURVE_METRICS],
                        value="train_acc", allow_blank=False, id="curves-metric", compact=True,
                    )
                yield PlotextPlot(id="curves-plot")
            with TabPane("Table", id="tab-table"):
                yield Static(NARROW_NOTE, id="table-note")
                yield DataTable(id="results-table", zebra_stripes=True, cursor_type="row")

    def show(self, data: ResultsData) -> None:
        """Take new data; draw the tab on screen now, the others when they are opened
        (a running grid changes the data every epoch)."""
        self.data = data
        self._drawn: set[str] = set()
        note = self.query_one("#numerics-note", Static)
        note.update(numerics_note(data.numerics))
        note.set_class(len(data.numerics) > 1, "-shown")
        self._update_activations()
        self._draw_tab(str(self.query_one("#result-tabs", TabbedContent).active))

    def _draw_tab(self, tab: str) -> None:
        if tab in self._drawn:
            return
        self._drawn.add(tab)
        data = self.data
        if tab == "tab-accuracy":
            draw_accuracy(self.query_one("#accuracy-plot", PlotextPlot), data)
        elif tab == "tab-stability":
            self._draw("#stability-plot", lambda plt: charts.draw_stability(plt, data.cells))
        elif tab == "tab-masks":
            self._draw("#masks-plot", lambda plt: charts.draw_mask_sparsity(plt, data.cells))
            self._fill_masks()
        elif tab == "tab-table":
            wide = self._table_wide = self.wide
            dropped = fill_results_table(self.query_one("#results-table", DataTable), data, wide=wide,
                                         room=max(0, self.size.width - SCROLLBAR))
            note = self.query_one("#table-note", Static)
            note.update(DROPPED_NOTE.format("".join(f", {name}" for name in dropped)) if dropped else NARROW_NOTE)
            note.set_class(not wide, "-shown")
        elif tab == "tab-curves":
            self._draw_curves()

    @property
    def wide(self) -> bool:
        """Whether every results column fits (else the narrow set, for 80 columns)."""
        return self.size.width >= WIDE_FROM

    def on_resize(self) -> None:
        if self._table_wide is not None and self._table_wide != self.wide:
            self._drawn.discard("tab-table")  # the other column set
            # after the resize is laid out: a table rebuilt inside it keeps stale header widths
            self.call_after_refresh(self._draw_tab, str(self.query_one("#result-tabs", TabbedContent).active))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.tabbed_content.id == "result-tabs" and event.pane.id:
            self._draw_tab(event.pane.id)

    def _draw(self, selector: str, draw) -> None:  # type: ignore[no-untyped-def]
        plot = self.query_one(selector, PlotextPlot)
        plot.plt.clear_figure()
        draw(plot.plt)
        plot.refresh()

    def _fill_masks(self) -> None:
        table = self.query_one("#masks-table", DataTable)
        layers = [layer.name for layer in self.data.masks[0][1]] if self.data.masks else []
        wanted = ["activation", "method", "target", "seed", "actual", *(n.removesuffix(".weight") for n in layers)]
        if [str(c.label) for c in table.columns.values()] != wanted:
            table.clear(columns=True)
            for name in wanted:
                table.add_column(name)
        else:
            table.clear()
        for run, run_layers in self.data.masks:
            by_name = {layer.name: layer for layer in run_layers}
            table.add_row(
                run.activation, point_label(run.method, run.variant), num(run.target_sparsity, 2), str(run.seed),
                num(run.actual_sparsity),
                *(num(by_name[n].sparsity, 3) if n in by_name else "-" for n in layers),
            )

    def _update_activations(self) -> None:
        """The curves picker: one entry per activation, and per activation and variant
        when the grid has variants (``relu``, ``relu, shuffle``)."""
        select = self.query_one("#curves-activation", Select)
        groups = self.data.curve_groups
        current = select.value
        options = [(curve_group_label(a, v), (a, v)) for a, v in groups]
        if self._activations != groups:
            self._activations = groups
            with self.prevent(Select.Changed):
                select.set_options(options)
                if current in groups:
                    select.value = current
                elif groups:
                    select.value = groups[0]

    @on(Select.Changed, "#curves-activation")
    @on(Select.Changed, "#curves-metric")
    def _curve_choice(self) -> None:
        self._draw_curves()

    def _draw_curves(self) -> None:
        group = self.query_one("#curves-activation", Select).value
        metric = str(self.query_one("#curves-metric", Select).value)
        label = CURVE_LABELS.get(metric, metric)
        curves = self.data.curves.get(metric, {})
        if not isinstance(group, tuple):
            self._draw("#curves-plot", lambda plt: plt.title("Training curves - no runs yet"))
            return
        activation, variant = group
        levels = self.data.levels
        self._draw("#curves-plot", lambda plt: charts.draw_curves(plt, activation, curves, metric=label,
                                                                 levels=levels, variant=variant))

    def cycle(self, step: int) -> None:
        tabs = self.query_one("#result-tabs", TabbedContent)
        index = RESULT_TABS.index(tabs.active) if tabs.active in RESULT_TABS else 0
        tabs.active = RESULT_TABS[(index + step) % len(RESULT_TABS)]
