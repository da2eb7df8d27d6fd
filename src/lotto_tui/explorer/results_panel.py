"""The results panel: the write-up's four figure sets as plotext charts, the mask
sparsity table with per-layer detail, and the results table. Draws
:class:`~lotto_tui.explorer.views.ResultsData`; computes nothing."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Label, Select, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from lotto_engine.monitor import PROBLEMS

from .. import charts
from ..formatting import RESULT_COLUMNS, cell_status, cell_values, num, ordered_cells
from .views import CURVE_METRICS, ResultsData

RESULT_TABS = ("tab-accuracy", "tab-masks", "tab-stability", "tab-curves", "tab-table")


#: The columns a half-width results table keeps (side-by-side comparison).
COMPACT_COLUMNS = ("activation", "method", "target", "val %", "test %", "D")


def fill_results_table(table: DataTable, data: ResultsData, *, compact: bool = False) -> None:
    """The results table (activation x method x sparsity), keeping the cursor."""
    names = COMPACT_COLUMNS if compact else RESULT_COLUMNS
    cursor = table.cursor_row
    table.clear(columns=True)  # widths from these rows only (they never shrink otherwise)
    for name in names:
        table.add_column(name, key=name)
    for cell in ordered_cells(data.cells):
        values = dict(zip(RESULT_COLUMNS, cell_values(cell)))
        style = cell_status(cell)[1]
        problem = any(s in PROBLEMS for s in cell.statuses)  # the whole row stands out
        table.add_row(*(Text(values[n], style=style) if problem or n == "status" else values[n] for n in names))
    if table.row_count:
        table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)


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
    ResultsPanel TabPane { padding: 0; }
    ResultsPanel #masks-plot { height: 1fr; }
    ResultsPanel #masks-table { height: 1fr; }
    ResultsPanel #curves-bar { height: 1; }
    ResultsPanel #curves-bar Label { padding: 0 1; }
    ResultsPanel #curves-bar Select { width: 20; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data = ResultsData(None)
        self._activations: list[str] = []
        self._drawn = set()

    def compose(self) -> ComposeResult:
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
                        [(label, name) for name, label in CURVE_METRICS],
                        value="train_acc", allow_blank=False, id="curves-metric", compact=True,
                    )
                yield PlotextPlot(id="curves-plot")
            with TabPane("Table", id="tab-table"):
                yield DataTable(id="results-table", zebra_stripes=True, cursor_type="row")

    def show(self, data: ResultsData) -> None:
        """Take new data; draw the tab on screen now, the others when they are opened
        (a running grid changes the data every epoch)."""
        self.data = data
        self._drawn: set[str] = set()
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
            fill_results_table(self.query_one("#results-table", DataTable), data)
        elif tab == "tab-curves":
            self._draw_curves()

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
                run.activation, run.method, num(run.target_sparsity, 2), str(run.seed),
                num(run.actual_sparsity),
                *(num(by_name[n].sparsity, 3) if n in by_name else "-" for n in layers),
            )

    def _update_activations(self) -> None:
        select = self.query_one("#curves-activation", Select)
        names = self.data.activations
        current = select.value
        options = [(name, name) for name in names]
        if self._activations != names:
            self._activations = names
            with self.prevent(Select.Changed):
                select.set_options(options)
                if current in names:
                    select.value = current
                elif names:
                    select.value = names[0]

    @on(Select.Changed, "#curves-activation")
    @on(Select.Changed, "#curves-metric")
    def _curve_choice(self) -> None:
        self._draw_curves()

    def _draw_curves(self) -> None:
        activation = self.query_one("#curves-activation", Select).value
        metric = str(self.query_one("#curves-metric", Select).value)
        label = dict(CURVE_METRICS).get(metric, metric)
        curves = self.data.curves.get(metric, {})
        if not isinstance(activation, str):
            self._draw("#curves-plot", lambda plt: plt.title("Training curves - no runs yet"))
            return
        self._draw("#curves-plot", lambda plt: charts.draw_curves(plt, activation, curves, metric=label))

    def cycle(self, step: int) -> None:
        tabs = self.query_one("#result-tabs", TabbedContent)
        index = RESULT_TABS.index(tabs.active) if tabs.active in RESULT_TABS else 0
        tabs.active = RESULT_TABS[(index + step) % len(RESULT_TABS)]
