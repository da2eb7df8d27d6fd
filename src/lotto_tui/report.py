"""The end-of-grid report: the results table and the four figure sets as text, drawn
from :class:`lotto_engine.views.results.ResultsData` (computes nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from lotto_engine.views.results import Cell, ResultsData, ordered_cells

from . import charts
from .formatting import RESULT_COLUMNS, cell_status, cell_values, health_style, health_text, printable

#: Columns of the narrow form: activation and method share one (it wraps between them).
NARROW_COLUMNS = ("act method", "tgt", "act.sp", "val %", "best %", "test %", "D", "n", "status", "health")
LEGEND = ("tgt target sparsity; act.sp actual mask sparsity; val/best/test accuracy in % (± std over seeds); "
          "D stability; n runs done/recorded")
#: Columns that hold words, not numbers: they may wrap (a number never does).
WORDS = ("activation", "method", "act method", "status", "health")


def results_table(cells: Sequence[Cell], title: str = "Results", *, width: int | None = None) -> Table:
    """activation x method x sparsity: accuracies (%), actual sparsity, stability D, health.

    Where the full form does not fit ``width`` without cutting a word, the narrow form
    has short headers (a legend below says them), words wrap (the seed std under the mean, one flag or status a line) and
    columns sit one space apart, so every number stays whole at 80 columns; where
    even that is too wide, ``best %`` is left out (the legend says so)."""
    table = _table(cells, title, (*RESULT_COLUMNS, "health"), narrow=False)
    if width is None or _max_width(table, width) <= width:
        return table
    table = _table(cells, title, NARROW_COLUMNS, narrow=True)
    if _cuts(table, width):
        table = _table(cells, title, tuple(c for c in NARROW_COLUMNS if c != "best %"), narrow=True)
    return table


def _table(cells: Sequence[Cell], title: str, columns: tuple[str, ...], *, narrow: bool) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", caption_justify="left",
                  **(dict(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0)) if narrow else {}))  # type: ignore[arg-type]
    if narrow:
        table.caption = LEGEND + ("" if "best %" in columns else "; best val % left out at this width")
    for name in columns:
        justify = "left" if name in WORDS else "right"
        table.add_column(name, justify=justify, no_wrap=name not in WORDS)  # type: ignore[arg-type]
    previous = None
    for cell in ordered_cells(cells):
        if previous is not None and cell.activation != previous:
            table.add_section()
        previous = cell.activation
        table.add_row(*(_row(cell, narrow)[name] for name in columns))
    return table


def _row(cell: Cell, narrow: bool) -> dict[str, str | Text]:
    """A results row by column name (both forms' names)."""
    values: dict[str, str | Text] = dict(zip(RESULT_COLUMNS, cell_values(cell)))
    values["activation"], values["method"] = printable(cell.activation), printable(cell.label)
    status = str(values["status"])
    values["status"] = Text(status.replace(",", ",\n") if narrow else status, style=cell_status(cell)[1])
    values["health"] = health(cell, wrap=narrow)
    if narrow:
        values["val %"] = str(values["val %"]).replace(" ±", "\n±")  # the std under the mean
        values.update({"act method": f"{values['activation']} {values['method']}", "tgt": values["target"],
                       "act.sp": values["actual"], "best %": values["best val %"]})
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
    """A health cell (with ``wrap``, one flag a line); ``-`` before any run of the row finished."""
    if not cell.flags and not cell.done:
        return Text("-", style="dim")
    checked = not cell.unchecked
    text = health_text(cell.flags, checked=checked)
    return Text(text.replace(",", ",\n") if wrap else text, style=health_style(cell.flags, checked=checked))


#: The curve metric the report's training-curve charts show.
REPORT_CURVE = "train_acc"


def chart_texts(data: ResultsData, *, width: int, color: bool) -> list[str]:
    """The four figure sets as plotext text blocks (training curves of :data:`REPORT_CURVE`:
    one chart per activation, and per variant when the grid has variants); none before
    some run finished. A chart grows taller when its legend needs the rows."""
    import plotext as plt

    if not data.any_done:
        return []
    cells = data.cells
    curves = data.curves.get(REPORT_CURVE, {})
    levels = data.levels
    against = charts.height_for(charts.sparsity_series(cells))
    figures = [
        (against, lambda: charts.draw_accuracy(plt, cells)),
        (against, lambda: charts.draw_mask_sparsity(plt, cells)),
        (against, lambda: charts.draw_stability(plt, cells)),
    ] + [
        (charts.height_for(len(charts.curve_series(curves, a, v))),
         lambda a=a, v=v: charts.draw_curves(plt, a, curves, levels=levels, variant=v))
        for a, v in data.curve_groups
    ]
    texts = []
    for height, draw in figures:
        plt.clf()
        plt.plotsize(width, height)
        draw()
        text = plt.build()
        texts.append(text if color else plt.uncolorize(text))
    plt.clf()
    return texts
