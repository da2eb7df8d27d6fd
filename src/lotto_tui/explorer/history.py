"""History: the experiments in the store. Open one (its config goes into the form and
the views follow it), or mark two and compare them side by side."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from lotto_engine.views.experiments import ExperimentSummary
from lotto_engine.views.results import ComparedPoint, ResultsData, compare_results

from .. import charts
from ..formatting import cell_values, num, printable, text_width
from .keys import HISTORY_KEYS, bindings

HISTORY_COLUMNS = ("", "id", "name", "dataset", "model", "grid", "done", "problems", "flagged", "created")
#: Below this panel width the model column goes and dates lose their year, so a row
#: fits 80 columns whole.
WIDE_FROM = 100


def history_columns(wide: bool) -> tuple[str, ...]:
    return HISTORY_COLUMNS if wide else tuple(c for c in HISTORY_COLUMNS if c != "model")


def flagged_text(exp: ExperimentSummary) -> str:
    """Flagged jobs, ``?`` when some finished before health checks, ``-`` when none."""
    if exp.flagged:
        return f"!{exp.flagged}" + ("?" if exp.unchecked else "")
    return "?" if exp.unchecked else "-"


class HistoryPanel(Widget):
    BINDINGS = bindings(HISTORY_KEYS)
    DEFAULT_CSS = """
    HistoryPanel { height: 1fr; }
    HistoryPanel #history-hint { height: 1; color: $text-muted; }
    HistoryPanel #history-table { height: 1fr; }
    """

    class Open(Message):
        """Open experiment ``experiment_id``: its config into the form, the panels onto it."""

        def __init__(self, experiment_id: int) -> None:
            super().__init__()
            self.experiment_id: int = experiment_id

    class Compare(Message):
        """Compare experiment ``left`` with ``right`` (None: the experiment the panels show)."""

        def __init__(self, left: int, right: int | None) -> None:
            super().__init__()
            self.left: int = left
            self.right: int | None = right

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.marked: list[int] = []
        self._rows: list[ExperimentSummary] = []
        self._current: int | None = None

    def compose(self) -> ComposeResult:
        yield Static("enter open · space mark · c compare (two marked, or selected vs open)",
                     id="history-hint")
        table: DataTable = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        for name in history_columns(wide=True):
            table.add_column(name, key=name or "mark")
        yield table

    def on_resize(self) -> None:
        if self._rows:
            self.show(self._rows, self._current)

    @property
    def table(self) -> DataTable:
        return self.query_one("#history-table", DataTable)

    def show(self, rows: list[ExperimentSummary], current: int | None) -> None:
        """``rows`` newest first; ``current``: the experiment the other panels show."""
        self._rows, self._current = rows, current
        table = self.table
        cursor = table.cursor_row
        wide = self.size.width >= WIDE_FROM
        columns = history_columns(wide)
        table.clear(columns=True)  # widths from these rows only (they never shrink otherwise)
        for name in columns:
            table.add_column(name, key=name or "mark")
        for exp in rows:
            created = exp.created_at.replace("T", " ")[:16]  # minutes are enough here
            problems = exp.to_rerun
            values = {
                "": "*" if exp.id in self.marked else ("›" if exp.id == current else ""),
                "id": str(exp.id), "name": exp.name or "-", "dataset": exp.dataset, "model": exp.model,
                "grid": exp.grid, "done": f"{exp.done}/{exp.jobs or '?'}",
                "problems": str(problems) if problems else "-", "flagged": flagged_text(exp),
                "created": created if wide else created[5:],
            }
            table.add_row(*(values[c] for c in columns), key=str(exp.id))
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)

    def selected(self) -> int | None:
        table = self.table
        if not table.row_count:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(str(key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_experiment()

    def action_open_experiment(self) -> None:
        exp = self.selected()
        if exp is not None:
            self.post_message(self.Open(exp))

    def action_mark(self) -> None:
        exp = self.selected()
        if exp is None:
            return
        if exp in self.marked:
            self.marked.remove(exp)
        else:
            self.marked = (self.marked + [exp])[-2:]
        self.table.update_cell(str(exp), "mark", "*" if exp in self.marked else "")
        for other in list(self._rows):
            if other.id != exp and other.id not in self.marked:
                self.table.update_cell(str(other.id), "mark", "")

    def action_compare(self) -> None:
        if len(self.marked) == 2:
            self.post_message(self.Compare(*self.marked))
            return
        exp = self.selected()
        if exp is not None:
            self.post_message(self.Compare(exp, None))  # against the open experiment


#: Columns of the comparison table; A is the left experiment, B the right one.
COMPARE_COLUMNS = ("activation", "method", "target", "val A", "val B", "Δ val", "test A", "test B", "Δ test",
                   "D A", "D B", "n A", "n B")
#: Left out group by group, in this order, while the table is wider than the screen:
#: a pair goes whole (never ``test B`` without ``test A``); n stays longest.
COMPARE_DROPPABLE = (("D A", "D B"), ("test A", "test B", "Δ test"), ("n A", "n B"))
COMPARE_HEADERS = {"activation": "act"}
COMPARE_NOTE = ("Δ = B − A of the means, in % points · mean ±95% CI over seeds (Student t) · "
                "* best val at its sparsity · - not in that experiment")
COMPARE_TABS = ("compare-table-tab", "compare-charts-tab")


def difference(point: ComparedPoint, metric: str) -> str:
    """B's mean minus A's, in percentage points (``+0.25``); ``-`` when one is missing."""
    diff = point.difference(metric)
    return "-" if diff is None else f"{100 * diff:+.2f}"


def compare_values(point: ComparedPoint, left: ResultsData, right: ResultsData) -> dict[str, str]:
    """One row of the comparison table by column (:data:`COMPARE_COLUMNS`)."""
    a, b = point.a, point.b
    cell = a or b
    assert cell is not None
    va = cell_values(a, best=left.is_best(a), sep="\n") if a else {}
    vb = cell_values(b, best=right.is_best(b), sep="\n") if b else {}
    return {
        "activation": printable(cell.activation), "method": printable(cell.label),
        "target": "-" if cell.method == "dense" else num(cell.target_sparsity, 2),
        "val A": va.get("val %", "-"), "val B": vb.get("val %", "-"), "Δ val": difference(point, "val_acc"),
        "test A": va.get("test %", "-"), "test B": vb.get("test %", "-"), "Δ test": difference(point, "test_acc"),
        "D A": va.get("D", "-"), "D B": vb.get("D", "-"), "n A": va.get("n", "-"), "n B": vb.get("n", "-"),
    }


def fill_compare_table(table: DataTable, left: ResultsData, right: ResultsData, room: int = 0) -> tuple[str, ...]:
    """The comparison table; returns the columns left out for ``room``."""
    rows = [compare_values(point, left, right) for point in compare_results(left, right)]
    names: tuple[str, ...] = COMPARE_COLUMNS
    if room:
        widths = {n: max([len(COMPARE_HEADERS.get(n, n)), *(text_width(r[n]) for r in rows)]) for n in names}
        for k in range(len(COMPARE_DROPPABLE) + 1):
            gone = {name for group in COMPARE_DROPPABLE[:k] for name in group}
            names = tuple(n for n in COMPARE_COLUMNS if n not in gone)
            if sum(widths[n] + 2 for n in names) <= room:
                break
    table.clear(columns=True)
    for name in names:
        table.add_column(COMPARE_HEADERS.get(name, name), key=name)
    for row in rows:
        table.add_row(*(row[n] for n in names), height=None)
    return tuple(n for n in COMPARE_COLUMNS if n not in names)


def compare_charts(left: ResultsData, right: ResultsData, *, zoom: bool = False) -> tuple[charts.Chart, charts.Chart]:
    """Both sides' accuracy charts over one x axis (the union of their sparsities) and
    one y range ([0, 1], or the data of both when zoomed), each series in the same
    colour and marker on both sides."""
    style = charts.Style().learn([*left.cells, *right.cells])
    xs = sorted(set(charts.grid_sparsities(left)) | set(charts.grid_sparsities(right)))
    pair = [charts.accuracy_chart(data, style=style, xticks=xs, title=f"{side}: val accuracy vs sparsity")
            for side, data in (("A", left), ("B", right))]
    xlim, ylim = charts.shared_limits(pair, zoom=zoom)
    return replace(pair[0], xlim=xlim, ylim=ylim), replace(pair[1], xlim=xlim, ylim=ylim)


def legend_text(*drawn: charts.Chart, width: int = 80) -> Text:
    """One legend for charts drawn side by side: every series once, in its colour and
    marker, in as many columns as ``width`` holds (an entry never breaks)."""
    seen: dict[str, charts.LegendEntry] = {}
    labels: dict[str, dict[str, str]] = {}  # id -> side -> its label
    for side, chart in zip("AB", drawn):
        for entry in charts.legend_entries(chart):
            seen.setdefault(entry.id, entry)
            labels.setdefault(entry.id, {})[side] = entry.label
    entries = list(seen.values())
    texts = [f"{e.marker} {_both_sides(e.id, labels[e.id])}" for e in entries]
    grid, cell = charts.legend_grid(texts, width)
    text = Text()
    for r, row in enumerate(grid):
        if r:
            text.append("\n")
        for place, i in enumerate(row):
            text.append(texts[i] if place == len(row) - 1 else texts[i].ljust(cell), style=entries[i].color.style)
    keys = charts.marker_key(drawn[0]) if drawn else ""
    if keys:
        text.append("\n" + keys, style="dim")
    return text


def _both_sides(series: str, labels: dict[str, str]) -> str:
    """A series' legend label when both sides draw it: its own where they agree, else
    each side's note (``relu grasp (A 6/6 flagged; B 9/9 flagged)``)."""
    if len(set(labels.values())) == 1:
        return next(iter(labels.values()))
    notes = [f"{side} {label[len(series):].strip(' ()') or 'ok'}" for side, label in labels.items()]
    return f"{series} ({'; '.join(notes)})"


class CompareScreen(ModalScreen[None]):
    """Two experiments compared: one table with both experiments' values aligned by grid
    point and B − A differences, and both accuracy charts over a shared x axis and y
    range with one legend. Modal, so the panels' keys cannot act on what is hidden
    behind it. ``[`` / ``]`` switch between table and charts, ``z`` zooms the y axis."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Back"),
        Binding("left_square_bracket,right_square_bracket", "switch", "Table/charts"),
        Binding("z", "zoom", "Zoom y"),
    ]
    DEFAULT_CSS = """
    CompareScreen { background: $background; }
    CompareScreen #compare-sides { height: auto; }
    CompareScreen #compare-tabs { height: 1fr; }
    CompareScreen #compare-tabs ContentSwitcher { height: 1fr; }
    CompareScreen TabPane { height: 1fr; }
    CompareScreen #compare-note { height: auto; color: $text-muted; }
    CompareScreen TabPane { padding: 0; }
    CompareScreen #compare-table { height: 1fr; }
    CompareScreen #compare-plots { height: 1fr; }
    CompareScreen #compare-plots PlotextPlot { width: 1fr; }
    CompareScreen #compare-legend { height: auto; max-height: 8; }
    """

    def __init__(self, left: tuple[str, ResultsData], right: tuple[str, ResultsData]) -> None:
        super().__init__()
        self.left, self.right = left, right
        self.zoom = False

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("A ", "bold"), printable(self.left[0]), "\n", ("B ", "bold"),
                                   printable(self.right[0])), id="compare-sides")
        with TabbedContent(id="compare-tabs"):
            with TabPane("Table", id="compare-table-tab"):
                yield Static(COMPARE_NOTE, id="compare-note")
                yield DataTable(id="compare-table", zebra_stripes=True, cursor_type="row")
            with TabPane("Charts", id="compare-charts-tab"):
                with Horizontal(id="compare-plots"):
                    yield PlotextPlot(id="compare-left")
                    yield PlotextPlot(id="compare-right")
                yield Static("", id="compare-legend")
        yield Footer()

    def on_mount(self) -> None:
        self._fill()
        self._draw()
        self.query_one("#compare-table", DataTable).focus()

    def on_resize(self) -> None:
        self._fill()
        self._draw()

    def _fill(self) -> None:
        dropped = fill_compare_table(self.query_one("#compare-table", DataTable), self.left[1], self.right[1],
                                     room=max(0, self.size.width - 4))
        note = COMPARE_NOTE + (f" · wider terminal: + {', '.join(dropped)}" if dropped else "")
        self.query_one("#compare-note", Static).update(note)

    def _draw(self) -> None:
        pair = compare_charts(self.left[1], self.right[1], zoom=self.zoom)
        for plot_id, chart in zip(("#compare-left", "#compare-right"), pair):
            plot = self.query_one(plot_id, PlotextPlot)
            plot.plt.clear_figure()
            charts.draw(plot.plt, chart, zoom=self.zoom)
            plot.refresh()
        legend = legend_text(*pair, width=max(20, self.size.width - 1))
        legend.append(("\nz: y 0-1" if self.zoom else "\nz: zoom y") + " · [ ] table/charts · esc back", style="dim")
        self.query_one("#compare-legend", Static).update(legend)

    def action_switch(self) -> None:
        tabs = self.query_one("#compare-tabs", TabbedContent)
        tabs.active = COMPARE_TABS[1 - COMPARE_TABS.index(str(tabs.active))]

    def action_zoom(self) -> None:
        self.zoom = not self.zoom
        self._draw()
