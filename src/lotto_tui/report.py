"""The end-of-grid report: the results table and the four figure sets as text."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from lotto_engine.results import Cell, mean_curves, summarize
from lotto_engine.store import Store

from . import charts

STATUS_STYLE = {"done": "green", "failed": "bold red", "diverged": "bold magenta", "cancelled": "yellow"}


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    return f"{text} ±{100 * std:.2f}" if std is not None else text


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(cells: Sequence[Cell], title: str = "Results") -> Table:
    """activation x method x sparsity: accuracies (%), actual sparsity, stability D."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (
        ("activation", "left"), ("method", "left"), ("target", "right"), ("actual", "right"),
        ("val %", "right"), ("best val %", "right"), ("test %", "right"),
        ("D", "right"), ("n", "right"), ("status", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    # Grid order (as configured): activations, then dense, then methods by sparsity.
    act_rank = {a: i for i, a in enumerate(dict.fromkeys(c.activation for c in cells))}
    method_rank = {m: i for i, m in enumerate(dict.fromkeys(c.method for c in cells if c.method != "dense"))}
    ordered = sorted(
        cells,
        key=lambda c: (act_rank[c.activation], c.method != "dense", method_rank.get(c.method, -1), c.target_sparsity),
    )
    previous = None
    for cell in ordered:
        if previous is not None and cell.activation != previous:
            table.add_section()
        previous = cell.activation
        status = ",".join(cell.statuses)
        style = next((STATUS_STYLE[s] for s in ("failed", "diverged", "cancelled") if s in cell.statuses), "green")
        table.add_row(
            cell.activation, cell.method,
            _num(cell.target_sparsity, 2), _num(cell.actual_sparsity),
            _pct(cell.val_acc, cell.val_acc_std), _pct(cell.best_val_acc), _pct(cell.test_acc),
            _num(cell.stability), f"{cell.done}/{cell.runs}", f"[{style}]{status}[/]",
        )
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
