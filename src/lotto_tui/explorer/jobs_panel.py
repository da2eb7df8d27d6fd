"""The jobs panel: the plan as a table, the grid's and the running job's progress
bars, and an event log. It shows a :class:`lotto_engine.monitor.GridProgress` and
live batch progress; it computes nothing."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Label, ProgressBar, RichLog, Static

from lotto_engine.monitor import PROBLEMS, GridProgress, JobRow

from ..formatting import STATUS_STYLE, duration, pct

COLUMNS = ("activation", "method", "target", "seed", "status", "epoch", "val %", "elapsed", "ETA")
#: Fixed widths where values grow while the grid runs (cell updates do not widen columns).
WIDTHS = {"status": 18, "epoch": 7, "val %": 6, "elapsed": 7, "ETA": 7}


def row_cells(row: JobRow) -> tuple[Text | str, ...]:
    job = row.job
    style = STATUS_STYLE.get(row.status, "")
    status = row.status + (" (reused)" if row.reused else "")
    method = "dense" if job.kind == "dense" else job.method
    target = "-" if job.kind == "dense" else f"{job.sparsity:g}"
    cells: tuple[Text | str, ...] = (
        job.activation, method, target, str(job.seed), Text(status, style=style),
        f"{row.epoch}/{row.epochs}", pct(row.val_acc),
        duration(row.elapsed), duration(row.eta),
    )
    if row.status in PROBLEMS:  # failed and diverged rows stand out as a whole
        return tuple(Text(c, style=style) if isinstance(c, str) else c for c in cells)
    return cells


def more_running(progress: GridProgress | None) -> str:
    """`` · +N more running`` when run.parallel trains several jobs at once."""
    n = 0 if progress is None else sum(row.status == "running" for row in progress.rows)
    return f" · +{n - 1} more running" if n > 1 else ""


class JobsPanel(Widget):
    DEFAULT_CSS = """
    JobsPanel { height: 1fr; }
    JobsPanel #jobs-summary { height: 1; }
    JobsPanel .bar { height: 1; }
    JobsPanel .bar > Label { width: 8; }
    JobsPanel .bar > ProgressBar { width: auto; }
    JobsPanel .bar > .bar-text { width: 1fr; padding-left: 1; }
    JobsPanel #jobs-table { height: 1fr; }
    JobsPanel #jobs-log { height: 6; border-top: solid $primary-muted; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: dict[str, tuple[Text | str, ...]] = {}

    def compose(self) -> ComposeResult:
        yield Static("Loading the engine…", id="jobs-summary")
        with Horizontal(classes="bar"):
            yield Label("grid")
            yield ProgressBar(total=1, show_eta=False, id="grid-bar")
            yield Static("", classes="bar-text", id="grid-bar-text")
        with Horizontal(classes="bar", id="job-row"):
            yield Label("job")
            yield ProgressBar(total=1, show_eta=False, id="job-bar")
            yield Static("", classes="bar-text", id="job-bar-text")
        table: DataTable = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(name, key=name, width=WIDTHS.get(name))
        yield table
        yield RichLog(id="jobs-log", max_lines=500, wrap=True, markup=True)

    @property
    def table(self) -> DataTable:
        return self.query_one("#jobs-table", DataTable)

    def selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def show(self, progress: GridProgress, *, device: str, title: str) -> None:
        """Bring the summary, the grid bar and the table up to date."""
        counts = progress.counts
        parts = [f"{counts[s]} {s}" for s in ("done", "running", "failed", "diverged", "cancelled", "pending")
                 if counts.get(s)]
        self.query_one("#jobs-summary", Static).update(
            f"{title} · {len(progress.rows)} jobs · {', '.join(parts) or 'nothing yet'} · {device}"
        )
        bar = self.query_one("#grid-bar", ProgressBar)
        bar.update(total=max(progress.epochs_total, 1), progress=progress.epochs_done)
        eta = f" · ETA {duration(progress.eta)}" if progress.running is not None else ""
        self.query_one("#grid-bar-text", Static).update(f"{progress.epochs_done}/{progress.epochs_total} epochs{eta}")
        self._fill(progress.rows)
        running = progress.running
        if running is None:
            self.show_job("", 0, 1)
        else:
            eta = f" · ETA {duration(running.eta)}" if running.eta is not None else ""
            self.show_job(
                f"{running.job.label} · epoch {running.epoch}/{running.epochs}{eta}{more_running(progress)}",
                running.epoch, running.epochs,
            )

    def show_job(self, text: str, done: float, total: float) -> None:
        """The running job's bar: ``done`` of ``total`` epochs (fractional within an epoch)."""
        bar = self.query_one("#job-bar", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.query_one("#job-bar-text", Static).update(text)
        self.query_one("#job-row").display = bool(text)  # no empty bar while idle

    def _fill(self, rows: tuple[JobRow, ...]) -> None:
        table = self.table
        keys = [row.job.key for row in rows]
        current = [k.value for k in table.rows]
        if current != keys:
            cursor = table.cursor_row
            table.clear()
            self._shown = {}
            for row in rows:
                self._shown[row.job.key] = row_cells(row)
                table.add_row(*self._shown[row.job.key], key=row.job.key)
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
            return
        for row in rows:
            cells = row_cells(row)
            if self._shown.get(row.job.key) == cells:
                continue
            for name, value in zip(COLUMNS, cells):
                table.update_cell(row.job.key, name, value)
            self._shown[row.job.key] = cells

    def log(self, line: str) -> None:
        self.query_one("#jobs-log", RichLog).write(line)
