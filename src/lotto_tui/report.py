"""The end-of-grid report: the results table and the four figure sets as text."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from lotto_engine.results import Cell, mean_curves, summarize
from lotto_engine.store import Store

from . import charts
from .formatting import RESULT_COLUMNS, cell_status, cell_values, ordered_cells

def results_table(cells: Sequence[Cell], title: str = "Results") -> Table:
    """activation x method x sparsity: accuracies (%), actual sparsity, stability D."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in RESULT_COLUMNS:
        justify = "left" if name in ("activation", "method", "status") else "right"
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    previous = None
    for cell in ordered_cells(cells):
        if previous is not None and cell.activation != previous:
            table.add_section()
        previous = cell.activation
        *values, status = cell_values(cell)
        table.add_row(*values, f"[{cell_status(cell)[1]}]{status}[/]")
    return table


def chart_texts(store: Store, experiment_id: int, *, width: int, color: bool) -> list[str]:
    """The four figure sets as plotext text blocks (training curves: one per activation)."""
    import plotext as plt

    runs = store.runs(experiment_id)
    cells = summarize(runs)
    if not any(c.done for c in cells):
        return []
    curves = mean_curves(runs, store.curve, "train_acc")
    activations = list(dict.fromkeys(c.activation for c in cells))
    figures = [
        lambda: charts.draw_accuracy(plt, cells),
        lambda: charts.draw_mask_sparsity(plt, cells),
        lambda: charts.draw_stability(plt, cells),
    ] + [(lambda a=a: charts.draw_curves(plt, a, curves)) for a in activations]
    texts = []
    for draw in figures:
        plt.clf()
        plt.plotsize(width, 20)
        draw()
        text = plt.build()
        texts.append(text if color else plt.uncolorize(text))
    plt.clf()
    return texts
