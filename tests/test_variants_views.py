"""Variants and imp levels on the read side: results grouped by (activation, method,
variant, sparsity) in config order, imp levels between grid sparsities left out of
tables but kept in curves and exports, and labels (``magnitude/shuffle``, ``0.5 L2``)
in the batch output, ``export``, ``experiments`` and the explorer.

One real tiny grid (relu; magnitude and imp; variants none and shuffle; sparsity 0.5;
imp removes 0.3 a level, so its chain is 0.3 then 0.5) is run once by the batch CLI
in-process (about 2 s); the explorer reads that store (the tests that start the whole
app are slow). Long method names that no registered method has yet (``grasp-hessian``)
are drawn from records made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App, ComposeResult
from textual.widgets import DataTable, OptionList, Select, SelectionList, Static, TabbedContent

from conftest import tiny_args, tiny_config
from lotto_engine.plan import Job, build_plan, imp_levels
from lotto_engine.store import Store
from lotto_engine.views.progress import GridProgress, JobRow
from lotto_engine.views.results import Cell, GridAxes, ResultsData, load_results, ordered_cells
from lotto_tui import cli
from lotto_tui.explorer import create_app
from lotto_tui.explorer.jobs_panel import JobsPanel
from lotto_tui.explorer.results_panel import ResultsPanel
from lotto_tui.report import results_table

GRID = ('grid.methods=["magnitude","imp"]', 'grid.variants=["none","shuffle"]', "prune.fraction_per_level=0.3",
        "train.dense_epochs=1", "data.subset=240", "train.batch_size=64")
#: imp's first level, between grid sparsities: 0.3 (as 1 - 0.7 computes it)
L1 = imp_levels([0.5], 0.3)[0]
#: the plan's jobs as (method, variant, level, target)
JOBS = [("dense", "none", None, 0.0), ("magnitude", "none", None, 0.5), ("magnitude", "shuffle", None, 0.5),
        ("imp", "none", 1, L1), ("imp", "none", 2, 0.5), ("imp", "shuffle", 2, 0.5)]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The store and the plain output of ``lotto-tui --batch`` over the variants grid."""
    root = tmp_path_factory.mktemp("variants") / "runs"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--batch", *tiny_args(*GRID), "--store", str(root)])
    assert code == 0, out.getvalue()
    return root, out.getvalue()


def config_of(root: Path, *extra: str):  # type: ignore[no-untyped-def]
    return tiny_config(*GRID, f'run.store="{root}"', *extra)


def test_the_plan_is_the_one_these_tests_read() -> None:
    assert [(j.method, j.variant, j.level, j.sparsity) for j in build_plan(tiny_config(*GRID))] == JOBS


# ---------------------------------------------------------------------------------- views


def test_results_group_by_variant_and_leave_intermediate_imp_levels_to_curves(grid_run: tuple[Path, str]) -> None:
    root, _ = grid_run
    with Store(root, create=False) as store:
        data = load_results(store, store.experiment().id)
    assert [(c.label, c.target_sparsity, c.level, c.done) for c in data.cells] == [
        ("dense", 0.0, None, 1), ("magnitude", 0.5, None, 1), ("magnitude/shuffle", 0.5, None, 1),
        ("imp", 0.5, 2, 1), ("imp/shuffle", 0.5, 2, 1)]
    assert [(c.label, c.target_sparsity, c.level) for c in data.intermediate] == [("imp", L1, 1)]
    # every level has its curve; the charts name the level
    assert set(data.curves["train_acc"]) == {("relu", m, v, s) for m, v, _, s in JOBS}
    assert data.levels == {("relu", "imp", "none", L1): 1, ("relu", "imp", "none", 0.5): 2,
                           ("relu", "imp", "shuffle", 0.5): 2}
    assert data.curve_groups == [("relu", "none"), ("relu", "shuffle")]
    assert sorted((r.method, r.variant, r.target_sparsity) for r, _ in data.masks) == [
        ("imp", "none", 0.5), ("imp", "shuffle", 0.5), ("magnitude", "none", 0.5), ("magnitude", "shuffle", 0.5)]


def cell(method: str, sparsity: float, variant: str = "none", activation: str = "relu") -> Cell:
    return Cell(activation, method, sparsity, runs=1, done=1, val_acc=0.5, best_val_acc=0.5,
                test_acc=0.5, actual_sparsity=sparsity, stability=0.5, statuses=("done",), variant=variant)


def test_grid_order_follows_the_config_with_none_first_whatever_order_the_runs_came_in() -> None:
    came = [cell("random", 0.9, "invert"), cell("grasp", 0.5, "shuffle"), cell("random", 0.5), cell("grasp", 0.9),
            cell("dense", 0.0), cell("grasp", 0.5), cell("dense", 0.0, activation="tanh")]
    axes = GridAxes(("tanh", "relu"), ("grasp", "random"), ("shuffle", "none", "invert"), (0.5, 0.9))
    assert [(c.activation, c.label, c.target_sparsity) for c in ordered_cells(came, axes)] == [
        ("tanh", "dense", 0.0), ("relu", "dense", 0.0), ("relu", "grasp", 0.5), ("relu", "grasp", 0.9),
        ("relu", "grasp/shuffle", 0.5), ("relu", "random", 0.5), ("relu", "random/invert", 0.9)]
    assert axes.on_grid(cell("imp", 0.5)) and not axes.on_grid(cell("imp", 0.36))
    assert axes.on_grid(cell("dense", 0.0)) and GridAxes().on_grid(cell("imp", 0.36))  # unknown grid: all


# ---------------------------------------------------------------------------------- batch


def test_batch_lines_report_and_charts_name_variants_and_levels(grid_run: tuple[Path, str]) -> None:
    _, out = grid_run
    done = re.findall(r"^\[\d+/6\] done\s+(relu \S+ s=\S+(?: L\d+)? seed=0)", out, re.M)
    assert done == ["relu magnitude s=0.5 seed=0", "relu magnitude/shuffle s=0.5 seed=0", "relu imp s=0.3 L1 seed=0",
                    "relu imp s=0.5 L2 seed=0", "relu imp/shuffle s=0.5 L2 seed=0"]
    table = out[out.index("Experiment 1"):].split("\n\n")[0]  # the results table (120 wide when piped)
    # (method, target) of each row, in the full form (``│ relu │ dense │ - │``) or the
    # narrow one (rows under an activation heading: ``  dense   -``)
    rows = re.findall(r"^(?:│ relu\s+│ |  )(\S+)\s+│?\s*(\S+)\s", table, re.M)
    assert rows == [("dense", "-"), ("magnitude", "0.50"), ("magnitude/shuffle", "0.50"), ("imp", "0.50"),
                    ("imp/shuffle", "0.50")]
    assert "Training curves - relu, shuffle" in out
    mine = re.split(r"Training curves - relu\s*\n", out, maxsplit=1)[1].split("Training curves - relu, shuffle")[0]
    assert "imp s=0.3 L1" in mine and "imp s=0.5 L2" in mine and "shuffle" not in mine
    assert "imp/shuffle s=0.5 L2" in out.split("Training curves - relu, shuffle")[1]


def render(table: object, width: int) -> str:
    console = Console(width=width, no_color=True, file=io.StringIO(), record=True)
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100])
def test_the_narrow_report_keeps_long_method_and_variant_labels_whole(width: int) -> None:
    labels = [("magnitude-init", "shuffle"), ("grasp-hessian", "reinit"), ("synflow", "invert"), ("imp", "none")]
    cells = [cell("dense", 0.0, activation="leaky_relu")] + [
        cell(m, 0.9, v, activation="leaky_relu") for m, v in labels]
    text = render(results_table(cells, width=width), width)
    assert "…" not in text, text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for method, variant in labels:
        assert (method if variant == "none" else f"{method}/{variant}") in text.split(), text


# ---------------------------------------------------------------------------------- commands


def test_export_gives_every_run_its_variant_and_level(grid_run: tuple[Path, str], capsys) -> None:
    root, _ = grid_run
    assert cli.main(["export", "--format", "json", "--store", str(root)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["method"], r["variant"], r["level"], r["target_sparsity"]) for r in runs] == JOBS
    assert all(r["epochs"] >= 1 for r in runs)  # the level between grid sparsities has its curve too
    assert cli.main(["export", "--format", "csv", "--store", str(root)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["method"], r["variant"], r["level"], r["target_sparsity"]) for r in rows] == [
        (m, v, "" if level is None else str(level), str(s)) for m, v, level, s in JOBS]


def test_experiments_shows_the_variants_of_the_grid(grid_run: tuple[Path, str], capsys) -> None:
    root, _ = grid_run
    assert cli.main(["experiments", "--store", str(root)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert re.search(r"\s1x2x1x1x2v\s+6/6\s", row), row
    assert header.index("done") + 4 == row.index("6/6") + 3  # the done column still lines up


# ---------------------------------------------------------------------------------- explorer


async def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the explorer")
        await asyncio.sleep(0.05)


def column(table: DataTable, key: str) -> list[str]:
    return [str(table.get_cell(row, key)) for row in table.rows]


def fits(table: DataTable) -> bool:
    """Every column of ``table`` is on screen: no horizontal scrolling needed."""
    return table.virtual_size.width <= table.scrollable_content_region.width


@pytest.mark.slow  # about 2 s: the whole app starts
def test_the_config_form_edits_variants_and_the_new_prune_keys_from_the_keyboard(tmp_path: Path) -> None:
    app = create_app(tiny_config(f'run.store="{tmp_path}"'))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(lambda: app._engine_ready and app.plan is not None)
            form = app.query_one("ConfigForm")
            variants = app.query_one("#field-grid-variants", SelectionList)
            assert [variants.get_option_at_index(i).value for i in range(variants.option_count)] == [
                "none", "shuffle", "reinit", "invert"]
            assert variants.selected == ["none"]
            variants.focus()
            await pilot.press("down", "space")  # highlight shuffle, select it
            await wait_until(lambda: form.config is not None and form.config.grid.variants == ["none", "shuffle"])
            await wait_until(lambda: any(job.variant == "shuffle" for job in app.plan or ()))
            for key in ("grasp-temperature", "rounds"):
                assert app.query_one(f"#field-prune-{key}")
            app.query_one("#field-prune-fraction-per-level").focus()
            await pilot.press("end", "backspace", "backspace", "backspace", *"0.5")
            await wait_until(lambda: form.config is not None and form.config.prune.fraction_per_level == 0.5)

    asyncio.run(scenario())


@pytest.mark.slow  # about 2 s: the whole app starts
def test_jobs_results_and_curves_show_variants_and_levels_at_80x24(grid_run: tuple[Path, str]) -> None:
    root, _ = grid_run
    app = create_app(config_of(root))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(lambda: app._engine_ready and app.plan is not None)
            jobs = app.jobs.table
            await wait_until(lambda: jobs.row_count == 6 and "pending" not in column(jobs, "status"))
            assert column(jobs, "method") == ["dense", "magnitude", "magnitude/shuffle", "imp", "imp", "imp/shuffle"]
            assert column(jobs, "target") == ["-", "0.5", "0.5", "0.3 L1", "0.5 L2", "0.5 L2"]
            assert "health" in [str(c.label) for c in jobs.columns.values()] and fits(jobs)
            await pilot.press("3", "[")  # the results table
            table = app.query_one("#results-table", DataTable)
            await wait_until(lambda: table.row_count == 5)
            assert column(table, "method") == ["dense", "magnitude", "magnitude/shuffle", "imp", "imp/shuffle"]
            assert "0.30" not in column(table, "target") and fits(table)
            await pilot.press("[")  # the curves: one entry per activation and variant
            picker = app.query_one("#curves-activation", Select)
            assert picker.value == ("relu", "none")
            legend = app.query_one("#curves-legend", OptionList)

            def entries() -> str:
                return "\n".join(str(legend.get_option_at_index(i).prompt) for i in range(legend.option_count))

            await wait_until(lambda: "imp s=0.3 L1" in entries())
            picker.value = ("relu", "shuffle")  # refused if the picker did not offer it
            await wait_until(lambda: "imp/shuffle s=0.5 L2" in entries())
            assert "imp s=0.3 L1" not in entries()

    asyncio.run(scenario())


class Panels(App[None]):
    """The jobs or the results panel alone, shown data made here."""

    def __init__(self, panel: JobsPanel | ResultsPanel) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        yield self.panel


LONG = [("grasp-hessian", "shuffle", None, 0.9), ("magnitude-init", "reinit", None, 0.9), ("imp", "invert", 13, 0.9)]


def long_progress() -> GridProgress:
    rows = [JobRow(Job(f"k{i}", "pruned", "sigmoid", 0, m, s, "d", v, level), "done", 8, 8, 0.1, 1.0, None,
                   flags=("chance_level", "layer_collapse")) for i, (m, v, level, s) in enumerate(LONG)]
    rows.insert(0, JobRow(Job("d", "dense", "sigmoid", 0, "dense", 0.0), "running", 3, 12, 0.5, 3.0, 9.0))
    return GridProgress(1, tuple(rows), 27, 36, 9.0)


@pytest.mark.parametrize("width", [80, pytest.param(120, marks=pytest.mark.slow)])
def test_long_labels_leave_the_health_column_on_screen(width: int) -> None:
    jobs_panel, results_panel = JobsPanel(), ResultsPanel()
    cells = [Cell("sigmoid", m, s, 1, 1, 0.1, 0.1, 0.1, s, 0.9, ("done",), ("chance_level",), 1,
                  variant=v, level=level) for m, v, level, s in LONG]

    async def scenario() -> None:
        async with Panels(jobs_panel).run_test(size=(width, 24)) as pilot:
            jobs_panel.show(long_progress(), device="cpu", title="experiment 1")
            table = jobs_panel.table
            await wait_until(lambda: table.row_count == 4)
            await pilot.pause(0.2)
            labels = [str(c.label) for c in table.columns.values()]
            assert column(table, "method")[1:] == ["grasp-hessian/shuffle", "magnitude-init/reinit", "imp/invert"]
            assert column(table, "target")[1:] == ["0.9", "0.9", "0.9 L13"]
            assert "health" in labels and fits(table)
            assert ("ETA" in labels) == (width > 80)  # the job bar says the running job's ETA
        async with Panels(results_panel).run_test(size=(width, 24)) as pilot:
            results_panel.show(ResultsData(1, cells=cells))
            results_panel.query_one("#result-tabs", TabbedContent).active = "tab-table"
            table = results_panel.query_one("#results-table", DataTable)
            await wait_until(lambda: table.row_count == 3)
            await pilot.pause(0.2)
            labels = [str(c.label) for c in table.columns.values()]
            assert column(table, "method") == ["grasp-hessian/shuffle", "magnitude-init/reinit", "imp/invert"]
            assert "health" in labels and fits(table)
            note = str(results_panel.query_one("#table-note", Static).render())
            # every row done: the status column goes first (the note says so), n and D stay
            assert ("status" in labels) == (width > 80) and ("every row done" in note) == (width == 80)
            assert "n" in labels and "D" in labels

    asyncio.run(scenario())
