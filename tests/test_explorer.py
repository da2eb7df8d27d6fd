"""The explorer, driven with Textual's Pilot over real tiny runs on `digits`: what a
researcher does from the keyboard, checked against the real SQLite store."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, OptionList, RichLog, Static
from textual_plotext import PlotextPlot

from conftest import db_rows
from lotto_engine.config import load_config
from lotto_engine.errors import ConfigError
from lotto_engine.events import GridFinished, JobFinished
from lotto_engine.health import FLAGS
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, RunResult
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_tui.explorer import create_app
from lotto_tui.explorer.help_screen import HelpScreen
from lotto_tui.explorer.messages import EngineEvent
from lotto_tui.explorer.keys import APP_KEYS

# Tests that train or start processes are slow; the ones over a store written by hand
# (no training) stay in the fast suite.
TINY = [
    "data.subset=240", "model.width=4", "model.hidden=16",
    "train.dense_epochs=2", "train.pruned_epochs=1", "train.batch_size=64",
    "grid.activations=['relu','tanh']", "grid.methods=['magnitude']", "grid.sparsities=[0.5]",
    "run.device='cpu'", "run.threads=1",
]


def tiny(store: Path, *extra: str):
    return load_config(overrides=[*TINY, f"run.store='{store}'", *extra])


async def wait_until(pilot, predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the explorer")
        await asyncio.sleep(0.05)  # not pilot.pause: that pings every widget, starving the run


async def settled(pilot) -> None:
    """A refresh tick (every 0.25 s) has redrawn what changed, and every widget has
    handled its messages: polled, where a fixed pause of a tick or more used to be."""
    await wait_until(pilot, lambda: not pilot.app._dirty)
    await pilot.pause(0)


async def ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app._engine_ready and pilot.app.plan is not None)
    await settled(pilot)


async def run_to_end(pilot, key: str = "r") -> None:
    app = pilot.app
    ended = app.runs_ended
    await pilot.press(key)
    await wait_until(pilot, lambda: app.runs_ended > ended)  # marks the app dirty in the same handler
    await settled(pilot)


def dense_running(app) -> bool:
    running = app.last_progress.running if app.last_progress else None
    return running is not None and running.job.kind == "dense" and running.epoch >= 1


def statuses(store_root: Path, history: bool = False) -> list[tuple[str, str, str, int]]:
    with Store(store_root, create=False) as store:
        exp = store.experiment()
        return [(r.activation, r.method, r.status, r.attempt) for r in store.runs(exp.id, history=history)]


def legend_text(app, chart: str) -> str:  # type: ignore[no-untyped-def]
    """Every entry of a results chart's legend, one a line."""
    legend = app.query_one(f"#{chart}-legend", OptionList)
    return "\n".join(str(legend.get_option_at_index(i).prompt) for i in range(legend.option_count))


def table_column(table: DataTable, column: str) -> list[str]:
    return [str(table.get_cell(row, column)) for row in table.rows]


@pytest.mark.slow
def test_run_grid_fills_jobs_charts_and_table_and_rerun_selected_job_makes_a_new_attempt_of_it_only(
    tmp_path: Path,
) -> None:
    """One finished grid serves both: the panels it fills, then ``s`` on one job."""
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            jobs = app.jobs.table
            assert table_column(jobs, "status") == ["pending"] * 4
            await run_to_end(pilot)
            assert table_column(jobs, "status") == ["done"] * 4
            assert table_column(jobs, "epoch") == ["2/2", "1/1", "2/2", "1/1"]
            summary = str(app.query_one("#jobs-summary", Static).render())
            assert "4 done" in summary

            await pilot.press("3")
            await pilot.pause(0.3)
            cells = app.results.data.cells
            assert {(c.activation, c.method) for c in cells} == {
                ("relu", "dense"), ("relu", "magnitude"), ("tanh", "dense"), ("tanh", "magnitude")
            }
            accuracy = legend_text(app, "accuracy")  # the legend beside the chart names every series
            assert "relu magnitude" in accuracy and "tanh dense" in accuracy
            assert "1.0┤" in app.query_one("#accuracy-plot", PlotextPlot).plt.build()
            await pilot.press("]")  # each tab draws when it is shown
            masks = app.query_one("#masks-table", DataTable)
            assert masks.row_count == 2  # one mask per pruned run, with per-layer columns
            assert "conv1" in [str(c.label) for c in masks.columns.values()]
            assert "Mask sparsity vs target" in app.query_one("#masks-plot", PlotextPlot).plt.build()
            await pilot.press("]")
            assert "tanh magnitude" in legend_text(app, "stability")
            await pilot.press("]")
            curves = legend_text(app, "curves")
            assert "dense" in curves and "magnitude s=0.5" in curves
            await pilot.press("]")
            assert app.query_one("#results-table", DataTable).row_count == 4

            await pilot.press("2")  # back to the jobs: rerun the selected job
            app.jobs.table.move_cursor(row=3)  # tanh magnitude 0.5
            await run_to_end(pilot, "s")

    asyncio.run(scenario())
    assert [s[2] for s in statuses(tmp_path)] == ["done"] * 4
    attempts = {(a, m): n for a, m, _, n in statuses(tmp_path)}
    assert attempts == {("relu", "dense"): 1, ("relu", "magnitude"): 1, ("tanh", "dense"): 1, ("tanh", "magnitude"): 2}


# A dense job long enough (hundreds of epochs) that a cancel always lands inside it,
# even on a loaded machine; the tests cancel again once the resumed job is running.
LONG = "train.dense_epochs=400"


def attempts(store_root: Path) -> list[tuple[str, str, int]]:
    return [(m, st, n) for _, m, st, n in statuses(store_root, history=True)]


def dense_trained_an_epoch(app) -> bool:
    """The dense job trains its second epoch or later: its first is checkpointed."""
    running = app.last_progress.running if app.last_progress else None
    return running is not None and running.job.kind == "dense" and running.epoch >= 2


async def cancel_when_dense_runs(pilot, action: str = "cancel", *, checkpointed: bool = False) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: (dense_trained_an_epoch if checkpointed else dense_running)(app))
    await app.run_action(action)  # what x / q do (pilot.press would wait on every widget)


@pytest.mark.slow
def test_cancel_stops_the_grid_and_run_resumes_it(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path, LONG))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await cancel_when_dense_runs(pilot, checkpointed=True)
            await wait_until(pilot, lambda: app.runs_ended == 1, timeout=30)
            await pilot.pause(0.4)
            assert table_column(app.jobs.table, "status") == ["cancelled", "pending", "pending", "pending"]
            assert attempts(tmp_path) == [("dense", "cancelled", 1)]
            await pilot.press("r")  # resume: the cancelled job continues from its checkpoint, in its row
            await wait_until(pilot, lambda: ("dense", "running", 1) in attempts(tmp_path))
            await cancel_when_dense_runs(pilot)
            await wait_until(pilot, lambda: app.runs_ended == 2, timeout=30)

    asyncio.run(scenario())
    assert attempts(tmp_path) == [("dense", "cancelled", 1)]


@pytest.mark.slow
def test_quit_mid_run_cancels_cleanly_and_the_next_start_resumes(tmp_path: Path) -> None:
    config = tiny(tmp_path, LONG)
    app = create_app(config)

    async def scenario() -> float:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            started = time.monotonic()
            await cancel_when_dense_runs(pilot, "quit", checkpointed=True)
            await wait_until(pilot, lambda: not app.is_running, timeout=30)
            return time.monotonic() - started

    took = asyncio.run(scenario())
    assert took < 30  # no hang: the job stops at its next batch
    assert attempts(tmp_path) == [("dense", "cancelled", 1)]  # nothing left "running"
    again = create_app(config)

    async def resume() -> None:
        async with again.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert table_column(again.jobs.table, "status")[0] == "cancelled"
            await pilot.press("r")  # continues from its checkpoint, in its row
            await wait_until(pilot, lambda: ("dense", "running", 1) in attempts(tmp_path))
            await cancel_when_dense_runs(pilot, "quit")
            await wait_until(pilot, lambda: not again.is_running, timeout=30)

    asyncio.run(resume())
    assert attempts(tmp_path) == [("dense", "cancelled", 1)]


@pytest.mark.slow
def test_invalid_edit_shows_the_cli_wording_under_the_field_and_blocks_the_run(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path))
    with pytest.raises(ConfigError) as cli:
        load_config(overrides=["train.lr=abc"])

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("1")
            field = app.query_one("#field-train-lr", Input)
            field.focus()
            await pilot.press("end", *["backspace"] * 10, "a", "b", "c")
            shown = app.query_one("#error-train-lr", Static)
            await wait_until(pilot, lambda: "abc" in str(shown.render()), timeout=5)  # after a typing pause
            error = str(shown.render())
            assert error == cli.value.problems[0]
            assert error.startswith("train.lr: ")
            await pilot.press("ctrl+r")  # works from inside a text field
            await pilot.pause(0.2)
            assert not app.running
            assert app.panel == "config"
            await pilot.press("escape", "2")  # leave the field; letters act again
            await pilot.pause(0.1)
            assert app.panel == "jobs"

    asyncio.run(scenario())
    assert not (tmp_path / "lotto.db").exists()  # nothing ran


@pytest.mark.slow
def test_editing_the_grid_reruns_only_new_jobs_and_keeps_the_old_experiment(tmp_path: Path) -> None:
    Runner(tiny(tmp_path), Store(tmp_path)).run()  # the grid as it was (the app's own runs are tested above)
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            first = app.experiment_id
            assert first == 1 and table_column(app.jobs.table, "status") == ["done"] * 4
            await pilot.press("1")
            field = app.query_one("#field-grid-sparsities", Input)
            field.focus()
            await pilot.press("end", *", 0.9")
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.plan is not None and len(app.plan) == 6)
            await run_to_end(pilot)
            assert app.experiment_id != first
            await pilot.press("4")
            await pilot.pause(0.3)
            assert app.history.table.row_count == 2

    asyncio.run(scenario())
    with Store(tmp_path, create=False) as store:
        old, new = store.experiments()
        assert len(store.runs(old.id)) == 4
        runs = store.runs(new.id)
        reused = [r for r in runs if r.reused_from is not None]
        fresh = [r for r in runs if r.reused_from is None]
        assert len(reused) == 4 and all(r.status == "done" for r in runs)
        assert sorted(r.target_sparsity for r in fresh) == [0.9, 0.9]


@pytest.mark.slow
def test_history_opens_an_experiment_and_compares_two(tmp_path: Path) -> None:
    Runner(tiny(tmp_path), Store(tmp_path)).run()
    Runner(tiny(tmp_path, "grid.sparsities=[0.8]"), Store(tmp_path)).run()
    app = create_app(tiny(tmp_path, "grid.sparsities=[0.8]"))

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            assert app.experiment_id == 2  # the form's config is experiment 2
            await pilot.press("4")
            await pilot.pause(0.3)
            table = app.history.table
            assert table_column(table, "id") == ["2", "1"]
            table.move_cursor(row=1)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.experiment_id == 1)
            assert app.panel == "jobs"
            assert app.query_one("#field-grid-sparsities", Input).value == "0.5"
            await pilot.press("4")
            await pilot.pause(0.3)
            table.move_cursor(row=0)
            await pilot.press("space", "down", "space", "c")
            await pilot.pause(0.3)
            screen = app.screen
            assert type(screen).__name__ == "CompareScreen"
            table = screen.query_one("#compare-table", DataTable)  # one table, aligned by grid point
            # A is the first one marked (experiment 2: 0.8 only), B experiment 1 (0.5 only)
            assert table.row_count == 6  # 2 dense, 2 at 0.5 (B only), 2 at 0.8 (A only)
            rows = [(table_column(table, c)) for c in ("target", "val A", "val B", "Δ val")]
            for target, a, b, delta in zip(*rows):
                if target == "-":  # dense: in both experiments (reused), no difference
                    assert a == b and delta == "+0.00"
                else:
                    assert (a == "-") == (target == "0.50") and (b == "-") == (target == "0.80") and delta == "-"
            await pilot.press("escape")

    asyncio.run(scenario())


@pytest.mark.slow
def test_export_writes_json_and_csv_and_says_where(tmp_path: Path) -> None:
    Runner(tiny(tmp_path), Store(tmp_path)).run()
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("e")
            await pilot.pause(0.2)
            messages = [n.message for n in app._notifications]
            assert any("experiment-1.json" in m and "experiment-1.csv" in m for m in messages)

    asyncio.run(scenario())
    assert '"runs"' in (tmp_path / "exports" / "experiment-1.json").read_text()
    assert (tmp_path / "exports" / "experiment-1.csv").read_text().count("\n") == 5


def freeze_once_running(proc: subprocess.Popen, db: Path, frozen: threading.Event) -> None:
    """Stop ``proc`` (SIGSTOP) as soon as the store ``db`` shows a job running, and set
    ``frozen``; the caller sends SIGCONT. Gives up when the process ends."""
    while proc.poll() is None:
        if db_rows(db, "SELECT 1 FROM runs WHERE status = 'running'", timeout=0.05):
            os.kill(proc.pid, signal.SIGSTOP)
            if db_rows(db, "SELECT 1 FROM runs WHERE status = 'running'", timeout=0.05):
                frozen.set()  # what the explorer reads now stays so until the caller resumes it
                return
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)


@pytest.mark.slow
def test_follow_mode_shows_a_batch_process_writing_the_same_store(tmp_path: Path) -> None:
    # The batch process is frozen (SIGSTOP) while a job of it is running, until the
    # explorer's 0.2 s poll has seen it running and named the process: the job's length
    # no longer decides whether the poll catches it, so one activation and a dense job
    # of 40 epochs (not two of 150) do, however busy the machine.
    extra = ["grid.activations=['relu']", "train.dense_epochs=40"]
    config = tiny(tmp_path, *extra)
    app = create_app(config, poll_interval=0.2)
    args = [sys.executable, "-m", "lotto_tui", "--batch", "--store", str(tmp_path)]
    for item in [*TINY, *extra]:
        args += ["--set", item]

    async def scenario() -> tuple[set[str], str, str]:
        seen: set[str] = set()
        follow = ""
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            batch = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            frozen = threading.Event()
            freezer = threading.Thread(target=freeze_once_running, args=(batch, tmp_path / "lotto.db", frozen),
                                       daemon=True)
            freezer.start()
            resumed = False
            line = app.query_one("#jobs-follow", Static)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if line.display and not follow:
                        follow = str(line.render())  # the status line names the process
                    progress = app.last_progress
                    if progress is not None:
                        seen.update(progress.counts)
                        if progress.counts.get("done") == 2:
                            break
                    if frozen.is_set() and not resumed and "running" in seen and follow:
                        os.kill(batch.pid, signal.SIGCONT)
                        resumed = True
                    await pilot.pause(0.05)
                assert batch.wait(timeout=60) == 0, batch.stderr.read() if batch.stderr else ""
            finally:
                if batch.poll() is None:
                    batch.kill()
                freezer.join(5)
            ended = ""
            deadline = time.monotonic() + 30
            while not ended and time.monotonic() < deadline:
                ended = next((f"{n.title}: {n.message}" for n in app._notifications
                              if f"{n.title}: {n.message}".startswith("Followed grid ended")), "")
                await pilot.pause(0.1)
            assert not app.running  # nothing ran in the explorer itself
            assert table_column(app.jobs.table, "status") == ["done"] * 2
        return seen, follow, str(ended)

    seen, follow, ended = asyncio.run(scenario())
    assert "running" in seen  # it was watched live, not only read at the end
    assert "following: pid" in follow and "-m lotto_tui --batch --store" in follow
    assert ended.endswith("stopped running experiment 1: 2 done, 0 failed")  # and said when it ended


@pytest.mark.slow
def test_help_screen_and_command_palette_list_every_action(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path / "store"))

    async def scenario() -> None:
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            assert isinstance(app.screen, HelpScreen)
            console = Console(record=True, width=100, file=io.StringIO())
            for static in app.screen.query(Static):
                console.print(static.content)
            text = console.export_text()
            for key in APP_KEYS:
                assert key.description in text
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {k.description for k in APP_KEYS} <= titles

    asyncio.run(scenario())
    assert not (tmp_path / "store").exists()  # a start and a quit with nothing run create no store


@pytest.mark.slow
def test_config_saves_as_toml_that_loads_back_to_the_same_config(tmp_path: Path) -> None:
    config = tiny(tmp_path)
    target = tmp_path / "saved" / "grid.toml"
    app = create_app(config)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("1")
            app.query_one("#toml-path", Input).value = str(target)
            await pilot.press("ctrl+s")
            await pilot.pause(0.1)

    asyncio.run(scenario())
    assert load_config(file=target) == config
    assert [p.name for p in target.parent.iterdir()] == ["grid.toml"]  # no temp file left


@pytest.mark.slow
def test_cuda_graphs_on_without_cuda_is_an_error_in_the_app_not_a_crash(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path, "run.cuda_graphs='on'"))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app._engine_ready and app.device == "no device", timeout=60)
            assert app.plan is None
            await pilot.press("r")  # nothing to run: the app says so and stays up
            await pilot.pause(0.3)
            assert not app.running and app.is_running

    asyncio.run(scenario())
    assert not (tmp_path / "lotto.db").exists()


# ---------------------------------------------------------------- over a store written by hand

def flagged_store(root: Path):
    """The TINY grid's four jobs finished by hand (no training): relu dense trained,
    relu magnitude at chance with a collapsed layer, tanh dense blew up, tanh magnitude
    trained; the relu runs used 1 thread and the tanh runs 2, so numerics are mixed."""
    config = tiny(root)
    flags = {("relu", "magnitude"): ("chance_level", "layer_collapse"), ("tanh", "dense"): ("loss_exploded",)}
    with Store(root) as store:
        exp = store.experiment_for(config, precision="fp32")
        for job in build_plan(config, precision="fp32"):
            method = "dense" if job.kind == "dense" else job.method
            run_flags = flags.get((job.activation, method), ())
            val = 0.1 if "chance_level" in run_flags else 0.9
            threads = 1 if job.activation == "relu" else 2
            store.finish_run(store.start_run(exp.id, job), RunResult(
                status="done", curve=[EpochMetrics(1, 0.5, val, 0.5, val, 0.05, 0.1)], val_acc=val,
                best_val_acc=val, test_acc=val, actual_sparsity=0.0 if job.kind == "dense" else 0.5,
                wall_time=1.0, flags=run_flags, numerics={"device": "cpu", "precision": "fp32", "threads": threads},
            ))
    return config


def shown_text(renderable) -> str:  # type: ignore[no-untyped-def]
    """What a cell or a Static shows, as plain text."""
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def fits(table: DataTable) -> bool:
    """Every column of ``table`` is on screen: no horizontal scrolling needed."""
    return table.virtual_size.width <= table.scrollable_content_region.width


@pytest.mark.slow
def test_health_at_80x24_in_the_jobs_and_results_tables_with_every_column_on_screen(tmp_path: Path) -> None:
    app = create_app(flagged_store(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            jobs = app.jobs.table
            await wait_until(pilot, lambda: jobs.row_count == 4 and "pending" not in table_column(jobs, "status"))
            assert table_column(jobs, "health") == ["ok", "!chance,\ncollapse", "!exploded", "ok"]
            assert [str(c.label) for c in jobs.columns.values()] == [
                "act", "method", "target", "status", "epoch", "val %", "time", "ETA", "health"]
            assert fits(jobs)
            await pilot.press("3", "[")  # the table tab
            table = app.query_one("#results-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 4)
            assert [str(c.label) for c in table.columns.values()] == [
                "act", "method", "tgt", "val %", "test %", "D", "n", "status", "health"]
            assert table_column(table, "health") == ["ok", "!chance,\ncollapse", "!exploded", "ok"]
            assert table_column(table, "n") == ["1/1"] * 4
            assert fits(table)
            note = shown_text(app.query_one("#numerics-note", Static).render())
            assert app.query_one("#numerics-note").display
            assert "mixed numerics: cpu fp32 1 thread, cpu fp32 2 threads" in note
            await pilot.resize_terminal(120, 40)  # wide: every column, flags on one line
            await wait_until(pilot, lambda: "best val %" in [str(c.label) for c in table.columns.values()])
            assert table_column(table, "health")[1] == "!chance,collapse"
            assert fits(table)
            await pilot.press("2")
            await wait_until(pilot, lambda: table_column(jobs, "health")[1] == "!chance,collapse", timeout=5)
            assert fits(jobs)

    asyncio.run(scenario())


def test_the_log_says_a_finished_job_is_flagged_and_the_grid_line_counts_flags(tmp_path: Path) -> None:
    config = flagged_store(tmp_path)
    app = create_app(config)
    job = next(iter(build_plan(config, precision="fp32")))

    async def scenario() -> str:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            # what the runner's worker posts, in order
            app.post_message(EngineEvent(JobFinished(job, 1, RunResult(
                status="done", val_acc=0.1, test_acc=0.1, flags=("chance_level", "loss_exploded")))))
            app.post_message(EngineEvent(GridFinished(
                1, {"done": 21}, False, 3.0, flags={"chance_level": 11, "layer_collapse": 2}, flagged=11)))
            log = app.query_one("#jobs-log", RichLog)
            await wait_until(pilot, lambda: any("grid finished" in line.text for line in log.lines))
            return "\n".join(line.text for line in log.lines)

    text = asyncio.run(scenario())
    line = f"■ {job.label}: done val_acc=0.1000  test_acc=0.1000  (0.0s)  flagged !chance,exploded"
    assert " ".join(line.split()) in " ".join(text.split())  # the log wraps long lines
    assert "grid finished in 3s: 21 done, 11 flagged: 11 chance_level, 2 layer_collapse" in text


@pytest.mark.slow
def test_help_explains_every_flag_and_its_closing_line_is_on_screen_at_80x24(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause(0.2)
            text = "".join(shown_text(s.content) for s in app.screen.query(Static))
            for flag, meaning in FLAGS.items():
                assert " ".join(f"{flag}: {meaning}".split()) in " ".join(text.split())
            closing = app.screen.query_one("#help-close")
            assert closing.region.bottom <= 24 and closing.region.height == 1  # on screen
            body = app.screen.query_one("#help-body")
            assert body.max_scroll_y > 0  # the rest scrolls
            await pilot.press("end")
            assert body.scroll_y == body.max_scroll_y
            assert app.screen.query_one("#help-close").region == closing.region

    asyncio.run(scenario())


@pytest.mark.slow
def test_ctrl_s_without_a_config_file_saves_beside_the_store_and_names_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    config = tiny(store)
    app = create_app(config)

    async def scenario() -> list[str]:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("1")
            assert app.query_one("#toml-path", Input).value == str(store / "lotto.toml")
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: (store / "lotto.toml").exists(), timeout=5)
            return [n.message for n in app._notifications]

    messages = asyncio.run(scenario())
    assert list(work.iterdir()) == []  # nothing in the working directory
    assert load_config(file=store / "lotto.toml") == config
    assert f"Saved {store / 'lotto.toml'}" in messages


@pytest.mark.slow
def test_a_start_that_cannot_get_its_data_makes_no_store_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("network is off in this test")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    store = tmp_path / "store"
    app = create_app(tiny(store, "data.dataset='cifar10'", f"data.root='{tmp_path / 'data'}'", "data.download=true"))

    async def scenario() -> list[str]:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await run_to_end(pilot)
            return [n.message for n in app._notifications]

    messages = asyncio.run(scenario())
    assert any(m.startswith("cifar10: no cifar-10-batches-py folder") and "download failed" in m for m in messages)
    assert not store.exists()
