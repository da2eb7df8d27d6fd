"""The results panel: the write-up's four figure sets as plotext charts, the mask
sparsity table with per-layer detail, and the results table. Draws
:class:`~lotto_engine.views.results.ResultsData`; computes nothing.

Each chart has its legend beside it (:class:`ChartView`): a list of every series in
its colour and marker, checked when drawn, so a series is hidden from the keyboard
(``l`` goes to the list, ``space`` hides or shows, ``a`` shows all, ``escape`` goes
back). ``z`` zooms an accuracy axis from [0, 1] to the data and back.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.message import Message
from textual.widgets import DataTable, Label, OptionList, Select, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from lotto_engine.statuses import PROBLEMS
from lotto_engine.views.results import CURVE_METRICS, Cell, ResultsData, ordered_cells, point_label

from .. import charts
from ..formatting import (
    BEST_LEGEND,
    MIXED_LEGEND,
    RESULT_COLUMNS,
    SPREAD_LEGEND,
    cell_status,
    cell_values,
    fit_columns,
    health_style,
    num,
    numerics_setting,
    printable,
    text_width,
    unrecorded,
)
from .keys import Key, bindings

#: How the curves tab names each of lotto_engine.views.results.CURVE_METRICS.
CURVE_LABELS = charts.METRIC_LABELS

RESULT_TABS = ("tab-accuracy", "tab-masks", "tab-stability", "tab-curves", "tab-table")
#: The chart each chart tab shows (its ChartView's id).
CHART_TABS = {"tab-accuracy": "accuracy", "tab-masks": "masks", "tab-stability": "stability", "tab-curves": "curves"}

#: Keys of the results panel (not in the footer, which 80 columns cannot hold: the
#: line under each legend names them).
RESULTS_KEYS: tuple[Key, ...] = (
    Key("results-zoom", "z", "zoom", "Zoom the accuracy axis: [0, 1] or the data", show=False),
    Key("results-series", "l", "series", "Series: show or hide them in the legend", show=False),
)
#: Keys of a chart's legend, while it has focus.
LEGEND_KEYS: tuple[Key, ...] = (
    Key("legend-toggle", "space,enter", "select", "Hide or show the series", show=False),
    Key("legend-all", "a", "all", "Show every series", show=False),
    Key("legend-leave", "escape,l", "leave", "Back to the result tabs", show=False),
)

#: Every column of the results table, in order.
TABLE_COLUMNS = (*RESULT_COLUMNS, "health")
#: Columns left out, in this order, while the table is wider than the panel: actual
#: sparsity (the masks tab has it), best val % (near val %), D's two companions, then,
#: for long method labels (``grasp-hessian/shuffle``), n and D. Health always stays.
DROPPABLE = ("actual", "best val %", "floor", "kept Δ", "n", "D")
#: The columns a half-width results table keeps (side-by-side comparison).
COMPACT_COLUMNS = ("activation", "method", "target", "val %", "test %", "D")
#: Panel width (cells) from which a health cell keeps its flags on one line.
WIDE_FROM = 110
HEADERS = {"activation": "act", "target": "tgt"}
#: The table's legend line: what its spreads and marks mean.
TABLE_LEGEND = f"{SPREAD_LEGEND} · {BEST_LEGEND}"
DROPPED_NOTE = "wider terminal: + {} (e exports all)"
# kept for callers of earlier releases: the note when columns were left out
NARROW_NOTE = f"[dim]{escape(TABLE_LEGEND)}[/]"


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


def table_legend(cells: Sequence[Cell], dropped: Sequence[str] = ()) -> str:
    """The results table's note (Rich markup): its spreads and marks, and the columns a
    wider terminal would show."""
    legend = TABLE_LEGEND + (f" · {MIXED_LEGEND}" if any(c.mixed_numerics for c in cells) else "")
    missing = unrecorded(cells)
    if missing and cells:
        legend += f" · {' and '.join(missing)} not recorded for these runs"
    if "status" in dropped:
        legend += " · every row done"
    note = f"[dim]{escape(legend)}[/]"
    named = [HEADERS.get(n, n) for n in dropped if n != "status"]
    if named:
        note += f"\n[dim]{escape(DROPPED_NOTE.format(', '.join(named)))}[/]"
    return note


def health_text_cell(cell: Cell, *, wrap: bool) -> Text | str:
    """The health cell: ``ok``, ``1/3 !chance`` (with ``wrap``, one flag a line)."""
    values = cell_values(cell)
    text = values["health"]
    if text == "-":
        return "-"
    if wrap:  # a narrow column: the count, then one flag a line
        text = text.replace(",", ",\n").replace(" !", "\n!")
    return Text(text, style=health_style(cell.flags, checked=not cell.unchecked))


def fill_results_table(table: DataTable, data: ResultsData, *, compact: bool = False, wide: bool = True,
                       room: int = 0) -> tuple[str, ...]:
    """The results table (activation x method/variant x sparsity: the grid's points, no
    imp level in between), keeping the cursor: every number over seeds as its mean with
    the 95% CI under it, ``*`` on the best validation accuracy at each sparsity, health
    as ``1/3 !chance``. Leaves out :data:`DROPPABLE` columns, in order, while it is
    wider than ``room`` cells (0: never); with ``wide`` False, a health cell has one
    flag a line. Returns the columns it left out."""
    missing = unrecorded(data.cells)
    names = COMPACT_COLUMNS if compact else tuple(c for c in TABLE_COLUMNS if c not in missing)
    rows = []
    for cell in ordered_cells(data.cells, data.axes):
        values: dict[str, Text | str] = dict(cell_values(cell, best=data.is_best(cell), sep="\n"))
        values["activation"], values["method"] = printable(cell.activation), printable(cell.label)
        values["health"] = health_text_cell(cell, wrap=not wide)
        rows.append((cell, values))
    dropped: tuple[str, ...] = ()
    if not compact and room:
        widths = {n: max([len(HEADERS.get(n, n)), *(text_width(v[n]) for _, v in rows)]) for n in names}
        droppable = DROPPABLE
        if rows and all(c.statuses == ("done",) for c, _ in rows):  # status says nothing then
            droppable = (*DROPPABLE[:4], "status", *DROPPABLE[4:])
        kept = fit_columns(names, widths, room, droppable)
        dropped, names = tuple(n for n in names if n not in kept), kept
    cursor = table.cursor_row
    table.clear(columns=True)  # widths from these rows only (they never shrink otherwise)
    for name in names:
        table.add_column(HEADERS.get(name, name), key=name)
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


SHOWN_MARK = "✓"


def legend_prompt(entry: charts.LegendEntry) -> Text:
    """A legend line: ``✓ o relu magnitude`` in the series' colour; a hidden series
    without the check, dim and struck through (readable without colour)."""
    style = entry.color.style + (" dim strike" if entry.hidden else "")
    return Text.assemble(("  " if entry.hidden else f"{SHOWN_MARK} "), (f"{entry.marker} {entry.label}", style))


class Legend(OptionList):
    """A chart's legend: every series in its colour and marker, checked while drawn;
    ``space`` or ``enter`` hides or shows the highlighted one, ``a`` shows all."""

    BINDINGS = bindings(LEGEND_KEYS)
    DEFAULT_CSS = """
    Legend { height: 1fr; max-height: 100%; border: none; padding: 0; text-wrap: wrap; }
    Legend:focus { border: none; }
    """

    class Toggled(Message):
        """Hide or show series ``ids`` (all of them: show every series)."""

        def __init__(self, legend: Legend, ids: list[str] | None) -> None:
            super().__init__()
            self.legend = legend
            self.ids = ids

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, compact=True)

    def action_select(self) -> None:
        index = self.highlighted
        if index is not None:
            option = self.get_option_at_index(index)
            self.post_message(self.Toggled(self, [str(option.id)]))

    def action_all(self) -> None:
        self.post_message(self.Toggled(self, None))

    def action_leave(self) -> None:
        panel = next((a for a in self.ancestors if isinstance(a, ResultsPanel)), None)
        if panel is not None:
            panel.focus_tabs()
        else:
            self.screen.focus_next()


class ChartView(Horizontal):
    """A plotext chart and, beside it, its legend (:class:`Legend`) and a note: the
    keys, what dotted lines and ``!`` mean, points a log axis could not draw. Hidden
    series stay hidden across redraws (by series id)."""

    DEFAULT_CSS = """
    ChartView { height: 1fr; }
    ChartView > PlotextPlot { width: 1fr; }
    ChartView > .legend-column { width: 32%; min-width: 22; max-width: 44; }
    ChartView .legend-note { height: auto; color: $text-muted; }
    """

    def __init__(self, name: str) -> None:
        super().__init__(id=name)
        self.name_ = name
        self.chart: charts.Chart | None = None
        self.hidden: set[str] = set()
        self.zoom = False
        self._entries: list[charts.LegendEntry] = []

    def compose(self) -> ComposeResult:
        yield PlotextPlot(id=f"{self.name_}-plot")
        with Vertical(classes="legend-column"):
            yield Legend(id=f"{self.name_}-legend")
            yield Static("", classes="legend-note", id=f"{self.name_}-note")

    @property
    def plot(self) -> PlotextPlot:
        return self.query_one(PlotextPlot)

    @property
    def legend(self) -> Legend:
        return self.query_one(Legend)

    def show(self, chart: charts.Chart, *, zoom: bool = False) -> None:
        self.chart, self.zoom = chart, zoom
        self._fill_legend()
        self._draw()

    def _fill_legend(self) -> None:
        assert self.chart is not None
        entries = charts.legend_entries(self.chart, self.hidden)
        if entries == self._entries:
            return
        legend = self.legend
        if [e.id for e in entries] == [e.id for e in self._entries]:  # same series: keep the place
            for entry in entries:
                legend.replace_option_prompt(entry.id, legend_prompt(entry))
        else:
            highlighted = legend.highlighted
            legend.clear_options()
            legend.add_options([Option(legend_prompt(e), id=e.id) for e in entries])
            if legend.option_count:
                legend.highlighted = min(highlighted or 0, legend.option_count - 1)
        self._entries = entries

    def _draw(self) -> None:
        plot, chart = self.plot, self.chart
        plot.plt.clear_figure()
        if chart is not None:
            charts.draw(plot.plt, chart, hidden=self.hidden, zoom=self.zoom)
        plot.refresh()
        self.query_one(".legend-note", Static).update(self.note())

    def note(self) -> str:
        """The line(s) under the legend: the keys, the markers, the chart's notes."""
        chart = self.chart
        keys = "l series"
        if chart is not None and chart.unit:
            keys = ("z y 0-1" if self.zoom else "z zoom y") + " · " + keys
        lines = [keys]
        if chart is not None:
            lines += [line for line in (charts.marker_key(chart, short=True), *chart.notes) if line]
            hidden = len(self.hidden & set(chart.ids))
            if hidden:
                lines.append(f"{hidden} hidden (a shows all)")
        return escape("\n".join(lines))

    @on(Legend.Toggled)
    def _toggled(self, event: Legend.Toggled) -> None:
        event.stop()
        if self.chart is None:
            return
        if event.ids is None:
            self.hidden -= set(self.chart.ids)
        else:
            self.hidden ^= set(event.ids)
        self._fill_legend()
        self._draw()

    def visible_ids(self) -> list[str]:
        return [i for i in (self.chart.ids if self.chart else []) if i not in self.hidden]


class ResultsPanel(Widget):
    BINDINGS = bindings(RESULTS_KEYS)
    DEFAULT_CSS = """
    ResultsPanel { height: 1fr; }
    ResultsPanel #numerics-note { height: auto; display: none; }
    ResultsPanel #numerics-note.-shown { display: block; }
    ResultsPanel #table-note { height: auto; }
    ResultsPanel #result-tabs { height: 1fr; }
    ResultsPanel #result-tabs > ContentSwitcher { height: 1fr; }
    ResultsPanel TabPane { padding: 0; height: 1fr; }
    ResultsPanel #masks { height: 1fr; min-height: 10; }
    ResultsPanel #masks-table { height: 30%; min-height: 4; }
    ResultsPanel #curves-bar { height: 1; }
    ResultsPanel #curves-bar Label { padding: 0 1; }
    ResultsPanel #curves-bar Select { width: 20; }
    ResultsPanel #curves-bar #curves-activation { width: 22; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data = ResultsData(None)
        self._activations: list[tuple[str, str]] = []  # (activation, variant) the curves picker offers
        self._drawn: set[str] = set()
        self._table_width: int | None = None  # the width the table was last drawn for
        self.zoom = False

    def compose(self) -> ComposeResult:
        yield Static("", id="numerics-note")
        with TabbedContent(id="result-tabs"):
            with TabPane("Accuracy", id="tab-accuracy"):
                yield ChartView("accuracy")
            with TabPane("Masks", id="tab-masks"):
                with Vertical():
                    yield ChartView("masks")
                    yield DataTable(id="masks-table", zebra_stripes=True, cursor_type="row")
            with TabPane("Stability", id="tab-stability"):
                yield ChartView("stability")
            with TabPane("Curves", id="tab-curves"):
                with Horizontal(id="curves-bar"):
                    yield Label("activation")
                    yield Select([], prompt="-", id="curves-activation", compact=True)
                    yield Label("metric")
                    yield Select(
                        [(CURVE_LABELS.get(name, name), name) for name in CURVE_METRICS],
                        value="train_acc", allow_blank=False, id="curves-metric", compact=True,
                    )
                yield ChartView("curves")
            with TabPane("Table", id="tab-table"):
                yield Static(NARROW_NOTE, id="table-note")
                yield DataTable(id="results-table", zebra_stripes=True, cursor_type="row")

    def show(self, data: ResultsData) -> None:
        """Take new data; draw the tab on screen now, the others when they are opened
        (a running grid changes the data every epoch)."""
        self.data = data
        self._drawn = set()
        note = self.query_one("#numerics-note", Static)
        note.update(numerics_note(data.numerics))
        note.set_class(len(data.numerics) > 1, "-shown")
        self._update_activations()
        self._draw_tab(self.active_tab)

    @property
    def active_tab(self) -> str:
        return str(self.query_one("#result-tabs", TabbedContent).active)

    def chart_view(self, name: str) -> ChartView:
        return self.query_one(f"#{name}", ChartView)

    def _draw_tab(self, tab: str) -> None:
        if tab in self._drawn:
            return
        self._drawn.add(tab)
        data = self.data
        if tab == "tab-accuracy":
            self.chart_view("accuracy").show(charts.accuracy_chart(data), zoom=self.zoom)
        elif tab == "tab-stability":
            self.chart_view("stability").show(charts.stability_chart(data), zoom=self.zoom)
        elif tab == "tab-masks":
            self.chart_view("masks").show(charts.mask_chart(data), zoom=self.zoom)
            self._fill_masks()
        elif tab == "tab-table":
            self._table_width = self.size.width
            dropped = fill_results_table(self.query_one("#results-table", DataTable), data, wide=self.wide,
                                         room=max(0, self.size.width - SCROLLBAR))
            self.query_one("#table-note", Static).update(table_legend(data.cells, dropped))
        elif tab == "tab-curves":
            self._draw_curves()

    @property
    def wide(self) -> bool:
        """Whether a health cell keeps its flags on one line (else one flag a line)."""
        return self.size.width >= WIDE_FROM

    def on_resize(self) -> None:
        if self._table_width is not None and self._table_width != self.size.width:
            self._drawn.discard("tab-table")  # other columns may fit
            # after the resize is laid out: a table rebuilt inside it keeps stale header widths
            self.call_after_refresh(self._draw_tab, self.active_tab)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.tabbed_content.id == "result-tabs" and event.pane.id:
            self._draw_tab(event.pane.id)

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
        view = self.chart_view("curves")
        if not isinstance(group, tuple):
            view.show(charts.Chart("Training curves - no runs yet", "epoch", CURVE_LABELS.get(metric, metric), ()))
            return
        activation, variant = group
        view.show(charts.curve_chart(self.data, activation, variant, metric), zoom=self.zoom)

    def cycle(self, step: int) -> None:
        tabs = self.query_one("#result-tabs", TabbedContent)
        index = RESULT_TABS.index(tabs.active) if tabs.active in RESULT_TABS else 0
        tabs.active = RESULT_TABS[(index + step) % len(RESULT_TABS)]

    # ------------------------------------------------------------------ keys

    def action_zoom(self) -> None:
        """Accuracy axes: [0, 1] <-> the shown data's range (every chart tab)."""
        self.zoom = not self.zoom
        self._drawn -= set(CHART_TABS)
        self._draw_tab(self.active_tab)

    def action_series(self) -> None:
        """Go to the shown chart's legend, where space hides or shows a series."""
        name = CHART_TABS.get(self.active_tab)
        if name is not None:
            self.chart_view(name).legend.focus()

    def focus_tabs(self) -> None:
        self.query_one("#result-tabs Tabs").focus()


#: Columns of room a DataTable's vertical scrollbar and edge take.
SCROLLBAR = 2
