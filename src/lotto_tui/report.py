"""The end-of-grid report: the results table and the four figure sets as text, drawn
from :class:`lotto_engine.views.results.ResultsData` (computes nothing)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from lotto_engine.views.results import Cell, CurveKey, ResultsData, ordered_cells

from . import charts
from .formatting import (
    BEST_LEGEND,
    COMPANIONS_LEGEND,
    MIXED_LEGEND,
    RESULT_COLUMNS,
    SPREAD_LEGEND,
    cell_health,
    unrecorded,
    cell_status,
    cell_values,
    health_style,
    printable,
)

#: Columns of the wide form (every number with its spread on one line).
WIDE_COLUMNS = (*RESULT_COLUMNS, "health")
#: Columns of the narrow form: short headers, the spread under the mean, and the
#: activation as a heading row above its group (so a method label never wraps).
NARROW_COLUMNS = ("method", "tgt", "act.sp", "val %", "best %", "test %", "D", "floor", "kept Δ", "n", "status",
                  "health")
#: Narrow-form columns left out, in this order, while the table would cut a value:
#: the mask chart shows actual sparsity, best val % sits near val %, and D's two
#: companions explain D but do not replace it. ``status`` goes last, and only when
#: every row is done (then the caption says so). Health always stays.
NARROW_DROPPABLE = ("act.sp", "best %", "floor", "kept Δ")
NARROW_NAMES = {"tgt": "target", "act.sp": "actual", "best %": "best val %"}
#: Columns that hold words, not numbers: they may wrap (a number never does).
WORDS = ("activation", "status", "health")


def results_table(cells: Sequence[Cell], title: str = "Results", *, width: int | None = None,
                  best: Collection[CurveKey] = ()) -> Table:
    """activation x method x sparsity: accuracies (%), actual sparsity, stability D and
    its two companions, runs, status, health; every number over seeds as mean ±95% CI
    (Student t); ``best`` (:attr:`ResultsData.best`) points marked ``*``.

    The full form (one row a line, greppable by activation) is kept where it fits
    ``width`` whole or without actual sparsity only; otherwise, of it and the narrow
    form, the one that leaves out fewer columns. The narrow form has short headers,
    the spread under the mean, words wrap (one flag or status a line), the activation
    heads its group of rows (a long method label never wraps), columns sit one space
    apart. Either form leaves out :data:`NARROW_DROPPABLE` columns (in that order)
    until nothing is cut; the caption says what is left out and what the marks mean."""
    best = frozenset(best)
    if width is None:
        return _table(cells, title, tuple(c for c in WIDE_COLUMNS if c not in unrecorded(cells)), best, narrow=False)
    done = all(c.statuses == ("done",) for c in cells)
    wide = _fit(cells, title, best, narrow=False, width=width, last=done)
    if wide[2] and wide[1] in ([], ["actual"]):  # the mask chart shows actual sparsity
        return wide[0]
    narrow = _fit(cells, title, best, narrow=True, width=width, last=done)
    if wide[2] and (not narrow[2] or len(wide[1]) <= len(narrow[1])):
        return wide[0]  # ties go to the wide form: one row per line, greppable by activation
    return narrow[0]


def _fit(cells: Sequence[Cell], title: str, best: frozenset[CurveKey], *, narrow: bool, width: int,
         last: bool) -> tuple[Table, list[str], bool]:
    """The table in one form with the fewest droppable columns left out for it to fit
    ``width``: (table, columns left out, whether it fits)."""
    names = tuple(c for c in (NARROW_COLUMNS if narrow else WIDE_COLUMNS) if c not in unrecorded(cells))
    droppable = [*NARROW_DROPPABLE, *(["status"] if last else [])]
    if not narrow:
        droppable = [NARROW_NAMES.get(c, c) for c in droppable]
    droppable = [c for c in droppable if c in names]
    columns, dropped = list(names), []
    while True:
        table = _table(cells, title, tuple(columns), best, narrow=narrow)
        fits = _max_width(table, width) <= width
        if narrow and not fits:  # one flag or status a line
            table = _table(cells, title, tuple(columns), best, narrow=narrow, wrap=True)
            fits = not _cuts(table, width)
        if fits or not droppable:
            return table, dropped, fits
        dropped.append(droppable.pop(0))
        columns.remove(dropped[-1])


def caption(cells: Sequence[Cell], columns: Sequence[str], best: Collection[CurveKey], *, narrow: bool) -> str:
    """What the table's marks, spreads and short names mean, and what it left out."""
    if narrow:
        accuracies = "/".join(n for n, c in (("val", "val %"), ("best", "best %"), ("test", "test %")) if c in columns)
        parts = ["tgt target sparsity", *(["act.sp actual mask sparsity"] if "act.sp" in columns else []),
                 f"{accuracies} accuracy in %"]
    else:
        parts = ["accuracies in %"]
    parts.append(SPREAD_LEGEND)
    if any(c.key in best for c in cells):
        parts.append(BEST_LEGEND + " (per activation)")
    parts.append("n runs done/recorded" + (f", {MIXED_LEGEND}" if any(c.mixed_numerics for c in cells) else ""))
    parts.append(COMPANIONS_LEGEND if {"floor", "kept Δ"} & set(columns) else "D stability")
    parts.append("health: ok, or how many of the row's runs are flagged and why")
    missing = unrecorded(cells)
    left = [NARROW_NAMES.get(c, c) for c in (NARROW_COLUMNS if narrow else WIDE_COLUMNS)
            if c not in columns and c not in missing]
    if missing:
        parts.append(f"D's companions {' and '.join(missing)}: not recorded for these runs")
    if "status" in left:
        left.remove("status")
        parts.append("status left out: every row is done")
    if left:
        parts.append(f"{', '.join(left)} left out at this width")
    return "; ".join(parts)


def _table(cells: Sequence[Cell], title: str, columns: tuple[str, ...], best: frozenset[CurveKey], *,
           narrow: bool, wrap: bool = False) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", caption_justify="left",
                  **(dict(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0)) if narrow else {}))  # type: ignore[arg-type]
    table.caption = caption(cells, columns, best, narrow=narrow)
    for name in columns:
        justify = "left" if name in (*WORDS, "method") else "right"
        table.add_column(name, justify=justify, no_wrap=name not in WORDS)  # type: ignore[arg-type]
    previous = None
    for cell in ordered_cells(cells):
        if previous is not None and cell.activation != previous:
            table.add_section()
        if narrow and cell.activation != previous:  # the group's heading row
            table.add_row(Text(printable(cell.activation), style="bold"), *[""] * (len(columns) - 1))
        previous = cell.activation
        table.add_row(*(_row(cell, narrow, cell.key in best, wrap)[name] for name in columns))
    return table


def _row(cell: Cell, narrow: bool, best: bool, wrap: bool) -> dict[str, str | Text]:
    """A results row by column name (both forms' names)."""
    values: dict[str, str | Text] = dict(cell_values(cell, best=best, sep="\n" if narrow else " "))
    values["activation"], values["method"] = printable(cell.activation), printable(cell.label)
    if narrow:
        values["method"] = "  " + str(values["method"])  # under its activation's heading
    status = str(values["status"])
    values["status"] = Text(status.replace(",", ",\n") if wrap else status, style=cell_status(cell)[1])
    values["health"] = health(cell, wrap=wrap)
    if narrow:
        values.update({"tgt": values["target"], "act.sp": values["actual"], "best %": values["best val %"]})
    return values


def _cuts(table: Table, width: int) -> bool:
    """Whether ``table`` drawn ``width`` columns wide cuts a cell (rich ends it with ``…``).

    Drawn, not measured: a table's measured minimum lets a header such as ``best %``
    wrap, which rich never does in a column that may not wrap; it takes the room from
    a wrapping column instead, and cuts a long method label (``magnitude-init/shuffle``)."""
    import io

    from rich.console import Console

    console = Console(width=width, no_color=True, file=io.StringIO())
    console.print(table)
    return "\u2026" in console.file.getvalue()  # type: ignore[attr-defined]


def _max_width(table: Table, width: int) -> int:
    """The columns ``table`` takes when no cell is wrapped or cut."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000, no_color=True)
    return Measurement.get(console, console.options, table).maximum


def health(cell: Cell, *, wrap: bool = False) -> Text:
    """A health cell (:func:`~lotto_tui.formatting.cell_health`; with ``wrap``, one flag a line)."""
    text = cell_health(cell)
    if text == "-":
        return Text("-", style="dim")
    checked = not cell.unchecked
    if wrap:
        text = text.replace(",", ",\n")  # and the count above the flags where the column is narrow
    return Text(text, style=health_style(cell.flags, checked=checked))


#: The curve metric the report's training-curve charts show.
REPORT_CURVE = "train_acc"


#: Rows of a batch chart (its legend is printed under it, as many lines as it needs).
CHART_HEIGHT = 20


def chart_texts(data: ResultsData, *, width: int, color: bool) -> list[str]:
    """The four figure sets as plotext text blocks, each followed by its legend lines
    (:func:`lotto_tui.charts.legend_lines`: every series named, outside the data), the
    training curves of :data:`REPORT_CURVE` one chart per activation (and per variant
    when the grid has variants); none before some run finished."""
    import plotext as plt

    if not data.any_done:
        return []
    texts = []
    for chart in charts.report_charts(data, REPORT_CURVE, distinct=not color):
        plt.clf()
        plt.plotsize(width, CHART_HEIGHT)
        charts.draw(plt, chart)
        text = plt.build()
        text = text if color else plt.uncolorize(text)
        legend = charts.legend_lines(chart, width, color=color)
        texts.append("\n".join([text.rstrip("\n"), *legend]))
    plt.clf()
    return texts
