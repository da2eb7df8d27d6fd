"""The jobs panel: the plan as a table, the grid's and the running job's progress
bars, and an event log. It shows a :class:`lotto_engine.views.progress.GridProgress` and
live batch progress; it computes nothing."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Label, ProgressBar, RichLog, Static

from lotto_engine.statuses import FINAL, ORDER, PROBLEMS
from lotto_engine.views.progress import GridProgress, JobRow
from lotto_engine.views.results import point_label

from ..formatting import STATUS_STYLE, duration, fit_columns, health_style, health_text, pct, text_width

#: (column key, header). Short headers and auto widths keep every column on an 80-column
#: screen; the seed column shows only when the plan has more than one seed. The method
#: column names the variant too (``imp/shuffle``), the target an imp job's level
#: (``0.36 L2``); where long labels leave no room, :data:`DROPPABLE` go.
COLUMNS = (("activation", "act"), ("method", "method"), ("target", "target"), ("seed", "seed"),
           ("status", "status"), ("epoch", "epoch"), ("val %", "val %"), ("elapsed", "time"),
           ("ETA", "ETA"), ("health", "health"))
#: Columns left out, in this order, while the table is wider than its panel: the job
#: bar shows the running job's ETA and the grid bar the grid's.
DROPPABLE = ("ETA", "elapsed")
#: Marks a job whose finished run was adopted from an earlier experiment (help explains it).
REUSED_MARK = "*"

#: Cells of a panel a table cannot use: its vertical scrollbar.
SCROLLBAR = 2
#: Panel width (cells) from which health cells keep several flags on one line.
ONE_LINE_FROM = 110


class JobsTable(DataTable):
    """The jobs table: a DataTable that repaints every row once column widths are
    remeasured.

    textual 8.2.8 measures new rows' widths on idle (``_update_dimensions``) without
    invalidating rows it already rendered: their cache keys do not include the widths.
    Twice in about ten full suite runs under load, a snapshot showed the header with its
    pre-rebuild widths over correctly measured rows; this is the likely path (not
    reproduced on demand), so the caches are dropped whenever widths are remeasured."""

    def _update_dimensions(self, new_rows):  # type: ignore[no-untyped-def]
        super()._update_dimensions(new_rows)
        self._clear_caches()
        self.refresh()


def health_cell(flags: tuple[str, ...], *, wrap: bool = True, checked: bool = True) -> Text:
    """A health cell; with ``wrap``, one flag per line, so the column stays narrow."""
    text = health_text(flags, checked=checked)
    return Text(text.replace(",", ",\n") if wrap else text, style=health_style(flags, checked=checked))


def column_keys(seeds: bool, dropped: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(key for key, _ in COLUMNS if (seeds or key != "seed") and key not in dropped)


def row_cells(row: JobRow, *, seeds: bool = True, wrap: bool = True,
              dropped: tuple[str, ...] = ()) -> tuple[Text | str, ...]:
    """A jobs-table row in :func:`column_keys` order; health only once the job has a run."""
    job = row.job
    style = STATUS_STYLE.get(row.status, "")
    status = row.status + (REUSED_MARK if row.reused else "")
    method = "dense" if job.kind == "dense" else point_label(job.method, job.variant)
    target = "-" if job.kind == "dense" else f"{job.sparsity:g}" + ("" if job.level is None else f" L{job.level}")
    health: Text | str = health_cell(row.flags, wrap=wrap, checked=row.checked) if row.status in FINAL else "-"
    values: dict[str, Text | str] = {
        "activation": job.activation, "method": method, "target": target, "seed": str(job.seed),
        "status": Text(status, style=style), "epoch": f"{row.epoch}/{row.epochs}", "val %": pct(row.val_acc),
        "elapsed": duration(row.elapsed), "ETA": duration(row.eta), "health": health,
    }
    cells = tuple(values[key] for key in column_keys(seeds, dropped))
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
    JobsPanel #jobs-follow { height: auto; display: none; color: $text-accent; }
    JobsPanel #jobs-follow.-shown { display: block; }
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
        self._seeds = False  # whether the table has a seed column
        self._dropped: tuple[str, ...] = ()  # DROPPABLE columns left out at this width
        self._rows: tuple[JobRow, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static("Loading the engine…", id="jobs-summary")
        yield Static("", id="jobs-follow", markup=False)
        with Horizontal(classes="bar"):
            yield Label("grid")
            yield ProgressBar(total=1, show_eta=False, id="grid-bar")
            yield Static("", classes="bar-text", id="grid-bar-text")
        with Horizontal(classes="bar", id="job-row"):
            yield Label("job")
            yield ProgressBar(total=1, show_eta=False, id="job-bar")
            yield Static("", classes="bar-text", id="job-bar-text")
        table: DataTable = JobsTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        self._add_columns(table)
        yield table
        yield RichLog(id="jobs-log", max_lines=500, wrap=True, markup=True, min_width=20)

    @property
    def table(self) -> DataTable:
        return self.query_one("#jobs-table", DataTable)

    def selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def _add_columns(self, table: DataTable) -> None:
        headers = dict(COLUMNS)
        for key in column_keys(self._seeds, self._dropped):
            table.add_column(headers[key], key=key)

    def show(self, progress: GridProgress, *, device: str, title: str) -> None:
        """Bring the summary, the grid bar and the table up to date."""
        counts = progress.counts
        parts = [f"{counts[s]} {s}" for s in ORDER if counts.get(s)]
        self.query_one("#jobs-summary", Static).update(
            f"{title} · {len(progress.rows)} jobs · {', '.join(parts) or 'nothing yet'} · {device}"
        )
        bar = self.query_one("#grid-bar", ProgressBar)
        bar.update(total=max(progress.epochs_total, 1), progress=progress.epochs_done)
        eta = f" · ETA {duration(progress.eta)}" if progress.running is not None else ""
        self.query_one("#grid-bar-text", Static).update(f"{progress.epochs_done}/{progress.epochs_total} epochs{eta}")
        self._fill(progress.rows)
        running = progress.running
        if running is None:  # jobs in an executor's queue (a cluster's) may wait long to start
            queued = progress.counts.get("queued", 0)
            self.show_job(f"{queued} queued, waiting to start" if queued else "", 0, 1)
        else:
            eta = f" · ETA {duration(running.eta)}" if running.eta is not None else ""
            self.show_job(
                f"{running.job.label} · epoch {running.epoch}/{running.epochs}{eta}{more_running(progress)}",
                running.epoch, running.epochs,
            )

    def show_follow(self, text: str) -> None:
        """The follow-mode line: which other process runs the shown grid ("" hides it)."""
        line = self.query_one("#jobs-follow", Static)
        line.update(text)
        line.set_class(bool(text), "-shown")

    def show_job(self, text: str, done: float, total: float) -> None:
        """The running job's bar: ``done`` of ``total`` epochs (fractional within an epoch)."""
        bar = self.query_one("#job-bar", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.query_one("#job-bar-text", Static).update(text)
        self.query_one("#job-row").display = bool(text)  # no empty bar while idle

    def on_resize(self) -> None:
        # health cells wrap on narrow screens only; refill after the resize is laid out:
        # a table rebuilt inside it can keep stale header widths (seen once in a full run)
        self.call_after_refresh(lambda: self._fill(self._rows))

    def _fill(self, rows: tuple[JobRow, ...]) -> None:
        self._rows = rows
        table = self.table
        keys = [row.job.key for row in rows]
        seeds = len({row.job.seed for row in rows}) > 1
        wrap = self.size.width < ONE_LINE_FROM
        current = [k.value for k in table.rows]

        dropped = self._fit(rows, seeds, wrap)
        fresh = {row.job.key: row_cells(row, seeds=seeds, wrap=wrap, dropped=dropped) for row in rows}
        # A new health cell (the last column) can change a row's height, which only a
        # rebuild measures.
        reshaped = any(self._shown.get(k, fresh[k])[-1] != fresh[k][-1] for k in keys)
        if current != keys or (seeds, dropped) != (self._seeds, self._dropped) or reshaped:
            cursor = table.cursor_row
            self._seeds, self._dropped = seeds, dropped
            table.clear(columns=True)  # widths from these rows only
            self._add_columns(table)
            self._shown = {}
            for key in keys:
                self._shown[key] = fresh[key]
                table.add_row(*fresh[key], key=key, height=None)
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
            return
        for key in keys:
            shown = fresh[key]
            if self._shown.get(key) == shown:
                continue
            for name, value in zip(column_keys(seeds, dropped), shown):
                table.update_cell(key, name, value, update_width=True)  # columns grow as values do
            self._shown[key] = shown

    def _fit(self, rows: tuple[JobRow, ...], seeds: bool, wrap: bool) -> tuple[str, ...]:
        """The :data:`DROPPABLE` columns to leave out for the rest to fit the panel."""
        keys = column_keys(seeds)
        widths = {key: len(header) for key, header in COLUMNS}
        for row in rows:
            for key, value in zip(keys, row_cells(row, seeds=seeds, wrap=wrap)):
                widths[key] = max(widths[key], text_width(value))
        room = max(0, self.size.width - SCROLLBAR)
        kept = fit_columns(keys, widths, room, DROPPABLE)
        return tuple(key for key in DROPPABLE if key not in kept)

    def log(self, line: str | Text) -> None:
        """Add a line to the event log: markup in a ``str`` is rendered; a ``Text`` is shown as it is."""
        self.query_one("#jobs-log", RichLog).write(line)
