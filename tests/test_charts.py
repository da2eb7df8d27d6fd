"""Charts and tables that do not mislead, in the batch report and the explorer: the
legend outside the data naming every series, accuracy axes on [0, 1] with a zoom, the
chance line, D on a log scale, x ticks at the grid's sparsities, hidden series, flagged
points; tables with mean ±95% CI (Student t) and n, the best point per sparsity
marked, ``1/3 !chance`` health, mixed numerics marked; the comparison aligned by grid
point with a difference column.

The stores are real SQLite stores written through :class:`Store` with runs finished
by hand (fixed numbers, no training), so every expected number is known: the CI is
checked against an independent computation (numpy-free: t(0.975, 2) = 4.302652729911275).
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import statistics
from pathlib import Path

import plotext
import pytest
from rich.console import Console
from textual.app import App, ComposeResult
from textual.widgets import DataTable, OptionList, Static
from textual_plotext import PlotextPlot

from conftest import tiny_config
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.store import Store
from lotto_engine.views.results import ResultsData, compare_results, load_results
from lotto_tui import charts
from lotto_tui.explorer.history import CompareScreen, compare_charts
from lotto_tui.explorer.results_panel import ResultsPanel
from lotto_tui.report import chart_texts, results_table

#: t(0.975, 2): the 95% two-sided Student t quantile with 2 degrees of freedom (tables)
T_975_2 = 4.302652729911275
SEEDS = (0, 1, 2)
GRID = ('grid.activations=["relu","sigmoid"]', 'grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.5,0.8]",
        f"grid.seeds={list(SEEDS)}")
#: relu magnitude and grasp final val accuracy by sparsity (grasp best at 0.5, magnitude at 0.8)
VAL = {("magnitude", 0.5): 0.90, ("grasp", 0.5): 0.92, ("magnitude", 0.8): 0.88, ("grasp", 0.8): 0.80}
#: sigmoid/magnitude 0.5, seed 1: the one flagged run of its cell
FLAGGED = ("sigmoid", "magnitude", 0.5, 1)
#: relu/grasp 0.8, seed 2: made with 2 threads, the others with 1 (the cell mixes numerics)
MIXED = ("relu", "grasp", 0.8, 2)


def val_of(activation: str, method: str, sparsity: float, seed: int) -> float:
    if activation == "sigmoid":
        return 0.10 + 0.01 * seed
    base = 0.95 if method == "dense" else VAL[(method, sparsity)]
    return base + (0.01, -0.012, 0.004)[seed]


def stability_of(method: str, sparsity: float, seed: int, activation: str) -> float:
    if activation == "sigmoid" and method == "grasp" and sparsity == 0.8:
        return 247.0 + seed  # one exploded D among values below 1
    return round(0.5 + sparsity / 2 + 0.02 * seed + (0.05 if method == "grasp" else 0), 4)


def finish(store: Store, config, *, lr_shift: float = 0.0) -> int:  # type: ignore[no-untyped-def]
    """Every job of ``config`` finished by hand with the numbers above; returns the experiment id."""
    exp = store.experiment_for(config, precision="fp32")
    for job in build_plan(config, precision="fp32"):
        method = "dense" if job.kind == "dense" else job.method
        val = val_of(job.activation, method, job.sparsity, job.seed) + lr_shift
        point = (job.activation, method, job.sparsity, job.seed)
        pruned = job.kind != "dense"
        store.finish_run(store.start_run(exp.id, job), RunResult(
            status="done", curve=[EpochMetrics(e, 1.0 / e, val - 0.1 / e, 1.1 / e, val - 0.05 * (e == 1), 0.05, 0.1)
                                  for e in (1, 2, 3)],
            val_acc=val, best_val_acc=val + 0.005, test_acc=val - 0.01,
            actual_sparsity=job.sparsity if pruned else 0.0,
            layers=[LayerSparsity("fc.weight", 100, round(100 * (1 - job.sparsity)) if pruned else 100)],
            stability=stability_of(method, job.sparsity, job.seed, job.activation) if pruned else None,
            stability_floor=round(job.sparsity * 0.7, 4) if pruned else None,
            kept_change=round(0.3 + 0.01 * job.seed, 4) if pruned else None,
            wall_time=1.0, flags=("chance_level",) if point == FLAGGED else (),
            numerics={"device": "cpu", "precision": "fp32", "threads": 2 if point == MIXED else 1},
        ))
    return exp.id


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two experiments: the 2 x 2 x 2 x 3-seed grid, and one more (lr differs; sparsity
    0.8 only; every val accuracy 0.02 higher) for the comparison."""
    root = tmp_path_factory.mktemp("charts") / "runs"
    with Store(root) as store:
        finish(store, tiny_config(*GRID, f'run.store="{root}"'))
        finish(store, tiny_config(*GRID, "grid.sparsities=[0.8]", "train.lr=0.05", f'run.store="{root}"'),
               lr_shift=0.02)
    return root


def results(root: Path, experiment: int = 1) -> ResultsData:
    with Store(root, create=False) as store:
        return load_results(store, experiment)


def render(table: object, width: int) -> str:
    console = Console(width=width, no_color=True, file=io.StringIO(), record=True)
    console.print(table)
    return console.export_text()


def row_of(text: str, activation: str, label: str, target: str) -> list[str]:
    """The lines of the results row (narrow form: under its activation's heading; a row
    with a spread takes two lines)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == activation or line.split()[:1] == [activation])
    for i in range(start, len(lines)):
        words = lines[i].split()
        if label in words and target in words:
            return lines[i:i + 2]
    raise AssertionError(f"no row {activation} {label} {target} in\n{text}")


def independent_ci(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), T_975_2 * statistics.stdev(values) / math.sqrt(len(values))


# ------------------------------------------------------------------------------- tables


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_shows_mean_and_95_ci_over_seeds_as_an_independent_computation_gives_them(
        store_root: Path, width: int) -> None:
    data = results(store_root)
    text = render(results_table(data.cells, title="Experiment 1", width=width, best=data.best), width)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
    assert "mean ±95% CI over seeds (Student t)" in " ".join(text.split())
    for activation, method, sparsity in (("relu", "magnitude", 0.5), ("relu", "grasp", 0.8), ("sigmoid", "grasp", 0.5)):
        mean, ci = independent_ci([val_of(activation, method, sparsity, s) for s in SEEDS])
        words = " ".join(row_of(text, activation, method, f"{sparsity:.2f}")).replace("*", "").split()
        assert f"{100 * mean:.2f}" in words and f"±{100 * ci:.2f}" in words, (words, text)
        d_mean, d_ci = independent_ci([stability_of(method, sparsity, s, activation) for s in SEEDS])
        assert f"{d_mean:.4f}" in words and f"±{d_ci:.4f}" in words, (words, text)
        assert "3/3" in words or "3/3~" in words  # n: runs done of runs recorded


def test_best_mark_health_count_and_mixed_numerics_are_on_their_rows(store_root: Path) -> None:
    data = results(store_root)
    text = render(results_table(data.cells, title="Experiment 1", width=80, best=data.best), 80)
    flat = " ".join(text.split())
    # best mean validation accuracy at each (activation, sparsity): grasp at 0.5, magnitude at 0.8
    for method, target, best in (("grasp", "0.50", True), ("magnitude", "0.50", False),
                                 ("magnitude", "0.80", True), ("grasp", "0.80", False)):
        first = row_of(text, "relu", method, target)[0]
        assert ("*" in first) == best, (method, target, text)
    assert "* highest mean val % at its sparsity" in flat
    # one of the three sigmoid/magnitude 0.5 runs is flagged: the cell says how many
    assert "1/3 !chance" in " ".join(row_of(text, "sigmoid", "magnitude", "0.50"))
    assert "ok" in row_of(text, "sigmoid", "magnitude", "0.80")[0]
    # relu/grasp 0.8 mixes 1 and 2 threads: marked beside n, and the legend says so
    assert "3/3~" in row_of(text, "relu", "grasp", "0.80")[0].split()
    assert "3/3~" not in row_of(text, "relu", "grasp", "0.50")[0].split()
    assert "~ runs made under different numerics settings" in flat


@pytest.mark.parametrize("width", [80, 100])
def test_long_labels_stay_on_the_line_of_their_numbers_at_80_columns(width: int) -> None:
    from test_variants_views import cell

    labels = [("grasp-hessian", "shuffle"), ("magnitude-init", "reinit")]
    cells = [cell("dense", 0.0, activation="sigmoid")] + [cell(m, 0.9, v, activation="sigmoid") for m, v in labels]
    text = render(results_table(cells, width=width), width)
    for method, variant in labels:
        line = next(line for line in text.splitlines() if f"{method}/{variant}" in line)
        assert "0.90" in line.split() and "50.00" in line.split(), text  # target and val % on the same line
    assert "health" in text


# ------------------------------------------------------------------------------- charts


def drawn(chart: charts.Chart, *, width: int = 80, height: int = 20, **options) -> str:  # type: ignore[no-untyped-def]
    plotext.clf()
    plotext.plotsize(width, height)
    charts.draw(plotext, chart, **options)
    text = plotext.uncolorize(plotext.build())
    plotext.clf()
    return text


def y_ticks(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"^\s*(-?[\d.]+)┤", text, re.M)]


def x_ticks(text: str) -> list[str]:
    lines = text.splitlines()
    axis = next(i for i, line in enumerate(lines) if "└" in line)
    return lines[axis + 1].split()


def test_accuracy_axes_span_0_to_1_and_zoom_to_the_data(store_root: Path) -> None:
    chart = charts.accuracy_chart(results(store_root))
    text = drawn(chart)
    ticks = y_ticks(text)
    assert ticks[0] == 1.0 and ticks[-1] == 0.0 and "1.0┤" in text and "0.0┤" in text
    relu_only = {s.id for s in chart.series if s.id.startswith("sigmoid") or s.reference}
    zoomed = y_ticks(drawn(chart, zoom=True, hidden=relu_only))
    assert 0.75 < min(zoomed) and max(zoomed) < 1.0  # relu's 0.79-0.96 fill the axis
    assert y_ticks(drawn(chart, hidden=relu_only))[0] == 1.0  # hiding alone never zooms


def test_the_chance_line_is_drawn_at_1_over_k(store_root: Path) -> None:
    data = results(store_root)
    assert data.chance == pytest.approx(0.1)
    chart = charts.accuracy_chart(data)
    chance = next(s for s in chart.series if s.id == "chance")
    assert chance.reference and {y for _, y in chance.points} == {0.1}
    only_chance = drawn(chart, hidden=[s.id for s in chart.series if s.id != "chance"], height=21)
    rows = [line for line in only_chance.splitlines() if "│" in line or "┤" in line]
    marked = [line for line in rows if line.count(charts.CHANCE_MARKER) > 40]
    assert len(marked) == 1  # one full-width line, at 0.1 of a [0, 1] axis: two rows above 0.0
    assert rows.index(marked[0]) == len(rows) - 3
    curve = charts.curve_chart(data, "relu", "none", "val_acc")
    assert any(s.id == "chance" for s in curve.series)
    assert not any(s.id == "chance" for s in charts.curve_chart(data, "relu", "none", "val_loss").series)


def test_d_is_drawn_on_a_log_scale(store_root: Path) -> None:
    chart = charts.stability_chart(results(store_root))
    assert chart.log
    ticks = y_ticks(drawn(chart))
    assert ticks[0] > 200 and ticks[-1] < 1  # 247 and 0.75 on one axis
    ratios = [a / b for a, b in zip(ticks, ticks[1:])]
    assert max(ratios) / min(ratios) < 1.1  # evenly spaced in log, not in value


def test_a_log_axis_leaves_out_non_positive_points_and_says_so() -> None:
    from test_variants_views import cell

    cells = [cell("magnitude", 0.5), cell("magnitude", 0.8)]
    cells[0] = cells[0].__class__(**{**cells[0].__dict__, "stability": 0.0})
    chart = charts.stability_chart(ResultsData(1, cells=cells))
    assert [p for s in chart.series for p in s.points] == [(0.8, 0.5)]
    assert chart.notes == ("1 point with D <= 0 not drawn (log scale)",)
    assert chart.notes[0] in charts.legend_lines(chart, 80)


def test_a_log_chart_with_nothing_to_draw_still_draws(store_root: Path) -> None:
    """A grid stopped before any pruned run finished has no D to plot, and every series
    can be hidden from the legend: the log axis must not crash the report or the panel
    (plotext raises TypeError building a log axis with no data)."""
    from test_variants_views import cell

    nothing = charts.stability_chart(ResultsData(1, cells=[cell("magnitude", 0.5)]))
    nothing = nothing.__class__(**{**nothing.__dict__, "series": ()})
    assert "Stability D" in drawn(nothing)
    chart = charts.stability_chart(results(store_root))
    assert "Stability D" in drawn(chart, hidden={s.id for s in chart.series})


def test_x_ticks_are_exactly_the_grids_sparsities(store_root: Path) -> None:
    data = results(store_root)
    for chart in (charts.accuracy_chart(data), charts.mask_chart(data), charts.stability_chart(data)):
        assert x_ticks(drawn(chart)) == ["0.5", "0.8"], chart.title
    assert x_ticks(drawn(charts.curve_chart(data, "relu"))) == ["1", "2", "3"]  # epochs


def test_every_series_is_named_outside_the_data_even_with_40_series_at_80_columns(tmp_path: Path) -> None:
    methods = ["magnitude", "grasp", "random", "snip", "grasp-hessian", "synflow", "magnitude-init"]
    config = tiny_config('grid.activations=["relu","tanh","sigmoid"]', f"grid.methods={methods!r}".replace("'", '"'),
                         'grid.variants=["none","shuffle"]', "grid.sparsities=[0.5,0.9]", f'run.store="{tmp_path}"')
    with Store(tmp_path) as store:
        exp = finish_all(store, config)
        data = load_results(store, exp)
    chart = charts.accuracy_chart(data)
    series = [s for s in chart.series if not s.reference]
    assert len(series) == 3 * (7 * 2 + 1)  # 45: every activation x method x variant, and dense
    lines = charts.legend_lines(chart, 80)
    assert max(len(line) for line in lines) <= 80
    legend = "\n".join(lines)
    for s in chart.series:
        assert f"{s.marker} {s.color.name} {s.label}" in legend
    assert len({(s.marker, s.color) for s in series}) == len(series)  # no two series look alike
    # the batch prints every chart with its legend under it, none inside the canvas
    texts = chart_texts(data, width=80, color=False)
    first = texts[0].splitlines()
    frame = max(i for i, line in enumerate(first) if "└" in line)
    assert not any("sigmoid grasp-hessian/shuffle" in line for line in first[:frame])
    assert "o red relu magnitude" in "\n".join(first[frame:])


def finish_all(store: Store, config) -> int:  # type: ignore[no-untyped-def]
    exp = store.experiment_for(config, precision="fp32")
    for i, job in enumerate(build_plan(config, precision="fp32")):
        pruned = job.kind != "dense"
        val = 0.9 - 0.001 * i if job.activation != "sigmoid" else 0.1
        store.finish_run(store.start_run(exp.id, job), RunResult(
            status="done", curve=[EpochMetrics(1, 1.0, val, 1.0, val, 0.05, 0.1)], val_acc=val, best_val_acc=val,
            test_acc=val, actual_sparsity=job.sparsity if pruned else 0.0, stability=0.5 if pruned else None,
            wall_time=1.0, flags=("chance_level",) if job.activation == "sigmoid" else ()))
    return exp.id


def test_flagged_points_are_marked_and_their_legend_entry_counts_them(store_root: Path) -> None:
    chart = charts.accuracy_chart(results(store_root))
    entry = next(s for s in chart.series if s.id == "sigmoid magnitude")
    assert entry.label == "sigmoid magnitude (1/6 flagged)"  # one of the 3 + 3 runs of its points
    assert entry.flagged == ((0.5, pytest.approx(0.11)),)
    text = drawn(chart, hidden=[s.id for s in chart.series if s.id != "sigmoid magnitude"])
    assert charts.FLAG_MARKER in text
    assert "! a point with flagged runs" in charts.legend_lines(chart, 80)


def test_hidden_series_leave_the_chart_and_their_legend_entry_says_so(store_root: Path) -> None:
    chart = charts.accuracy_chart(results(store_root))
    assert "x" in drawn(chart)  # grasp's marker
    hidden = [s.id for s in chart.series if s.marker == "x"]
    assert "x" not in drawn(chart, hidden=hidden).split("└")[0]
    entries = charts.legend_entries(chart, hidden)
    assert {e.id for e in entries if e.hidden} == set(hidden) and len(entries) == len(chart.series)


def test_curves_have_a_band_of_the_ci_over_seeds(store_root: Path) -> None:
    data = results(store_root)
    chart = charts.curve_chart(data, "relu", "none", "val_acc")
    dense = next(s for s in chart.series if s.id == "dense")
    epoch, lo, hi = dense.band[-1]
    mean, ci = independent_ci([val_of("relu", "dense", 0.0, s) for s in SEEDS])
    assert epoch == 3 and lo == pytest.approx(mean - ci) and hi == pytest.approx(mean + ci)
    assert "mean ± 95% CI" in charts.marker_key(chart)
    assert charts.BAND_MARKER in drawn(chart, zoom=True)


# ----------------------------------------------------------------------------- explorer


class Panel(App[None]):
    def __init__(self, panel: ResultsPanel) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        yield self.panel


async def settle(pilot, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the explorer did not get there"
        await pilot.pause(0.05)


def plot_text(panel: ResultsPanel, name: str) -> str:
    return plotext.uncolorize(panel.query_one(f"#{name}-plot", PlotextPlot).plt.build())


def legend_lines(panel: ResultsPanel, name: str) -> list[str]:
    legend = panel.query_one(f"#{name}-legend", OptionList)
    return [str(legend.get_option_at_index(i).prompt) for i in range(legend.option_count)]


def test_the_explorer_legend_names_every_series_and_hides_them_from_the_keyboard(store_root: Path) -> None:
    panel = ResultsPanel()
    data = results(store_root)

    async def scenario() -> None:
        async with Panel(panel).run_test(size=(80, 24)) as pilot:
            panel.show(data)
            await settle(pilot, lambda: legend_lines(panel, "accuracy"))
            chart = charts.accuracy_chart(data)
            shown = legend_lines(panel, "accuracy")
            assert [line[2:] for line in shown] == [f"{s.marker} {s.label}" for s in chart.series]
            assert all(line.startswith("✓") for line in shown)
            assert "1.0┤" in plot_text(panel, "accuracy")
            panel.focus_tabs()
            await pilot.press("z")  # zoom to the data
            await settle(pilot, lambda: "1.0┤" not in plot_text(panel, "accuracy"))
            await pilot.press("z")
            await settle(pilot, lambda: "1.0┤" in plot_text(panel, "accuracy"))
            await pilot.press("l")  # to the legend; hide every grasp series
            legend = panel.query_one("#accuracy-legend", OptionList)
            assert legend.has_focus
            for i, s in enumerate(chart.series):
                if s.marker == "x":
                    legend.highlighted = i
                    await pilot.press("space")
            await settle(pilot, lambda: "x" not in plot_text(panel, "accuracy").split("└")[0])
            lines = legend_lines(panel, "accuracy")
            assert [line.startswith("✓") for line in lines] == [s.marker != "x" for s in chart.series]
            note = str(panel.query_one("#accuracy-note", Static).render())
            assert "2 hidden (a shows all)" in note
            panel.show(data)  # new data (a running grid): still hidden
            await pilot.pause(0.1)
            assert "x" not in plot_text(panel, "accuracy").split("└")[0]
            await pilot.press("a")
            await settle(pilot, lambda: "x" in plot_text(panel, "accuracy").split("└")[0])
            await pilot.press("escape")
            assert not legend.has_focus

    asyncio.run(scenario())


def test_the_masks_chart_has_room_at_80x24_and_the_table_drops_columns_not_health(store_root: Path) -> None:
    panel = ResultsPanel()
    data = results(store_root)

    async def scenario() -> None:
        async with Panel(panel).run_test(size=(80, 24)) as pilot:
            panel.show(data)
            panel.cycle(1)
            await settle(pilot, lambda: legend_lines(panel, "masks"))
            await pilot.pause(0.1)
            assert panel.query_one("#masks-plot", PlotextPlot).size.height >= 12
            panel.cycle(3)  # the table
            table = panel.query_one("#results-table", DataTable)
            await settle(pilot, lambda: table.row_count == len(data.cells))
            await pilot.pause(0.1)
            labels = [str(c.label) for c in table.columns.values()]
            assert "health" in labels and "val %" in labels
            assert table.virtual_size.width <= table.scrollable_content_region.width
            note = str(panel.query_one("#table-note", Static).render())
            assert "mean ±95% CI over seeds (Student t)" in note and "wider terminal: +" in note
            health = [str(table.get_cell(row, "health")) for row in table.rows]
            assert "1/3\n!chance" in health

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- compare


@pytest.mark.slow
def test_compare_aligns_rows_by_grid_point_with_b_minus_a_and_shares_the_axes(store_root: Path) -> None:
    left, right = results(store_root, 1), results(store_root, 2)
    rows = compare_results(left, right)
    assert len(rows) == len(left.cells)  # right's points are a subset: no row of its own
    missing = [p.key for p in rows if p.b is None]
    assert sorted({k[3] for k in missing}) == [0.5]  # right has no 0.5 points
    a_chart, b_chart = compare_charts(left, right)
    assert a_chart.xticks == b_chart.xticks == (0.5, 0.8)  # the union, on both sides
    assert a_chart.ylim == b_chart.ylim == (0.0, 1.0)
    za, zb = compare_charts(left, right, zoom=True)
    assert za.ylim == zb.ylim and za.ylim[0] < 0.2 and za.ylim[1] > 0.9

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(CompareScreen(("experiment 1", left), ("experiment 2", right)))

    async def scenario() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            table = app.screen.query_one("#compare-table", DataTable)
            await settle(pilot, lambda: table.row_count == len(rows))
            cols = [str(c.label) for c in table.columns.values()]
            assert cols[:6] == ["act", "method", "target", "val A", "val B", "Δ val"]
            assert {"n A", "n B"} <= set(cols)  # n stays at 80 columns
            assert ("test B" in cols) == ("test A" in cols) == ("Δ test" in cols)  # a pair goes whole
            values = {(str(table.get_cell(r, "activation")), str(table.get_cell(r, "method")),
                       str(table.get_cell(r, "target"))): r for r in table.rows}
            at_08 = values[("relu", "magnitude", "0.80")]
            assert str(table.get_cell(at_08, "Δ val")) == "+2.00"  # every right val is 0.02 higher
            at_05 = values[("relu", "magnitude", "0.50")]
            assert str(table.get_cell(at_05, "val B")) == "-" and str(table.get_cell(at_05, "Δ val")) == "-"
            mean, ci = independent_ci([val_of("relu", "magnitude", 0.5, s) for s in SEEDS])
            assert str(table.get_cell(at_05, "val A")).split() == [f"{100 * mean:.2f}", f"±{100 * ci:.2f}"]
            await pilot.press("]")
            left_plot = app.screen.query_one("#compare-left", PlotextPlot)
            right_plot = app.screen.query_one("#compare-right", PlotextPlot)
            await pilot.pause(0.2)
            for plot in (left_plot, right_plot):
                text = plotext.uncolorize(plot.plt.build())
                assert "1.0┤" in text and "0.0┤" in text and x_ticks(text) == ["0.5", "0.8"]
            legend = str(app.screen.query_one("#compare-legend", Static).render())
            assert "o relu magnitude" in legend and "x sigmoid grasp" in legend
            await pilot.press("escape")

    asyncio.run(scenario())


def test_without_colour_every_series_has_a_marker_of_its_own(store_root: Path) -> None:
    """Piped or NO_COLOR, colour cannot tell relu magnitude from tanh magnitude: each
    series of every chart then gets its own marker; with colour, the method's."""
    data = results(store_root)
    for chart in charts.report_charts(data, "train_acc", distinct=True):
        markers = [s.marker for s in chart.series if not s.reference]
        assert len(markers) == len(set(markers)), chart.title
    coloured = charts.accuracy_chart(data)
    by_method: dict[str, set[str]] = {}
    for s in coloured.series:
        if not s.reference:
            by_method.setdefault(s.id.split(" ", 1)[1], set()).add(s.marker)
    assert all(len(m) == 1 for m in by_method.values()) and len(by_method) > 1


def test_piped_output_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from lotto_tui.batch import PIPED_WIDTH, piped_width

    monkeypatch.setenv("COLUMNS", "80")
    assert piped_width() == 80
    for bad in ("", "abc", "10", "100000"):
        monkeypatch.setenv("COLUMNS", bad)
        assert piped_width() == PIPED_WIDTH


def test_the_compare_legend_gives_each_sides_flag_count() -> None:
    from lotto_tui.explorer.history import _both_sides

    assert _both_sides("relu grasp", {"A": "relu grasp (6/6 flagged)", "B": "relu grasp (9/9 flagged)"}) == (
        "relu grasp (A 6/6 flagged; B 9/9 flagged)")
    assert _both_sides("relu grasp", {"A": "relu grasp", "B": "relu grasp (1/9 flagged)"}) == (
        "relu grasp (A ok; B 1/9 flagged)")
    assert _both_sides("relu dense", {"A": "relu dense", "B": "relu dense"}) == "relu dense"
