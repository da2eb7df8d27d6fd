"""History: the experiments in the store. Open one (its config goes into the form and
the views follow it), or mark two and compare them side by side."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Label, Static
from textual_plotext import PlotextPlot

from lotto_engine.views.experiments import ExperimentSummary
from lotto_engine.views.results import ResultsData

from .keys import HISTORY_KEYS, bindings
from .results_panel import draw_accuracy, fill_results_table

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


class ComparePane(Vertical):
    DEFAULT_CSS = """
    ComparePane { width: 1fr; }
    ComparePane > Label { text-style: bold; }
    ComparePane DataTable { height: 1fr; }
    ComparePane PlotextPlot { height: 1fr; }
    """

    def __init__(self, title: str, data: ResultsData) -> None:
        super().__init__()
        self.title, self.data = title, data

    def compose(self) -> ComposeResult:
        yield Label(self.title)
        yield DataTable(zebra_stripes=True, cursor_type="row")
        yield PlotextPlot()

    def on_mount(self) -> None:
        fill_results_table(self.query_one(DataTable), self.data, compact=True)
        draw_accuracy(self.query_one(PlotextPlot), self.data, title="Val accuracy vs sparsity")


class CompareScreen(ModalScreen[None]):
    """Two experiments side by side: results tables and accuracy charts. Modal, so the
    panels' keys cannot act on what is hidden behind it."""

    BINDINGS = [("escape,q", "dismiss", "Back")]
    DEFAULT_CSS = """
    CompareScreen { background: $background; }
    CompareScreen Horizontal { height: 1fr; }
    """

    def __init__(self, left: tuple[str, ResultsData], right: tuple[str, ResultsData]) -> None:
        super().__init__()
        self.left, self.right = left, right

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ComparePane(*self.left)
            yield ComparePane(*self.right)
        yield Footer()
