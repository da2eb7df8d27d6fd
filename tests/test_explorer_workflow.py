"""The explorer where a researcher used to lose time, driven with Textual's Pilot over
real SQLite stores: an edit keeps the last results on screen and counts the jobs it
will reuse; a restart reopens the experiment last worked on; follow mode names the
process that runs the grid and says when it ends; new experiments get readable names;
help explains the numbers; a key writes the report."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, Static

from lotto_engine.health import FLAGS
from lotto_engine.naming import default_name
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, RunResult
from lotto_engine.store import Store
from lotto_tui.cli import main_parser
from lotto_tui.explore import explorer_options
from lotto_tui.explorer import create_app
from lotto_tui.explorer.help_screen import BEST_MARK, MIXED_MARK, HelpScreen
from lotto_tui.explorer.state import STATE_NAME

from test_explorer import TINY, tiny  # the explorer tests' tiny grid


def tiny_args(store: Path, *extra: str) -> list[str]:
    args = ["--store", str(store)]
    for item in (*TINY, *extra):
        args += ["--set", item]
    return args


def finish_by_hand(root: Path, config, name: str = "") -> int:
    """Every job of ``config``'s plan finished in the store, without training; its id."""
    with Store(root) as store:
        if name:
            config = config.model_copy(update={"run": config.run.model_copy(update={"name": name})})
        exp = store.experiment_for(config, precision="fp32")
        for job in build_plan(config, precision="fp32"):
            store.finish_run(store.start_run(exp.id, job), RunResult(
                status="done", curve=[EpochMetrics(1, 0.5, 0.9, 0.5, 0.9, 0.05, 0.1)], val_acc=0.9,
                best_val_acc=0.9, test_acc=0.9, actual_sparsity=0.0 if job.kind == "dense" else 0.5,
                wall_time=1.0, flags=(), numerics={"device": "cpu", "precision": "fp32", "threads": 1},
            ))
        return exp.id


async def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the explorer")
        await asyncio.sleep(0.05)  # not pilot.pause: that pings every widget


async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    await wait_until(lambda: app._engine_ready and app.plan is not None and not app._dirty, timeout=60)
    await pilot.pause(0)  # every widget has handled its messages


def shown(widget) -> str:  # type: ignore[no-untyped-def]
    """What a Static shows, as plain text on one line."""
    console = Console(record=True, width=300, file=io.StringIO())
    console.print(widget.render())
    return " ".join(console.export_text().split())


def preview(app) -> str:  # type: ignore[no-untyped-def]
    return shown(app.query_one("#config-preview", Static))


def notices(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{n.title}: {n.message}" for n in app._notifications]


def startup(*args: str):  # type: ignore[no-untyped-def]
    """What ``lotto-tui ARGS`` opens: the app explore_command would run."""
    options = explorer_options(main_parser().parse_args(list(args)))
    return create_app(options.pop("config"), **options)


# ------------------------------------------------------------------ keep the last results


@pytest.mark.slow  # about 3 s: typing in the form, then another process writes the store
def test_an_edit_keeps_the_last_results_and_the_preview_counts_the_jobs_it_reuses(tmp_path: Path) -> None:
    first = finish_by_hand(tmp_path, tiny(tmp_path))
    app = create_app(tiny(tmp_path), origin=("tiny", tiny(tmp_path)), poll_interval=0.2)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert app.experiment_id == first
            assert preview(app).endswith("4 jobs: 4 finished, 0 to run")
            await pilot.press("1")
            field = app.query_one("#field-grid-sparsities", Input)
            field.focus()
            await pilot.press("end", *", 0.9", "escape")
            await wait_until(lambda: app.plan is not None and len(app.plan) == 6 and not app._dirty)
            assert app.experiment_id is None  # the edited config is a new experiment
            assert "new experiment" in preview(app) and preview(app).endswith("6 jobs: 4 reused, 2 to run")
            assert preview(app).startswith('new experiment "tiny, sparsities=[0.5,0.9]"')  # its name-to-be
            await pilot.press("3")
            await wait_until(lambda: "results" not in app._stale)
            assert app.results.data.experiment_id == first
            assert len(app.results.data.cells) == 4  # still on screen
            source = app.query_one("#results-source", Static)
            assert source.display
            assert shown(source).startswith(f"showing experiment {first} ")
            assert "not run yet" in shown(source)
            summary = shown(app.query_one("#jobs-summary", Static))
            assert summary.startswith("new experiment (4 reused, 2 to run) · 6 jobs · 6 pending")

            # the edited grid gets its experiment (here another process runs it): the
            # results follow it and the line goes
            second = finish_by_hand(tmp_path, tiny(tmp_path, "grid.sparsities=[0.5, 0.9]"))
            await wait_until(lambda: app.experiment_id == second, timeout=10)
            await wait_until(lambda: app.results.data.experiment_id == second, timeout=10)
            assert not source.display
            await wait_until(lambda: preview(app).endswith("6 jobs: 6 finished, 0 to run"), timeout=10)

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_plan_with_nothing_finished_says_every_job_will_run(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            assert preview(app).endswith("4 jobs: 0 reused, 4 to run")
            assert not app.query_one("#results-source", Static).display  # nothing to keep
            assert shown(app.query_one("#jobs-summary", Static)).startswith("new experiment (not run yet)")

    asyncio.run(scenario())
    assert not tmp_path.joinpath("lotto.db").exists()  # counting made no store


# ------------------------------------------------------------------ reopen the last experiment


@pytest.mark.slow  # about 3.5 s: two app starts
def test_a_restart_reopens_the_experiment_last_opened_with_its_stored_config(tmp_path: Path) -> None:
    finish_by_hand(tmp_path, tiny(tmp_path))
    older = finish_by_hand(tmp_path, tiny(tmp_path, "grid.sparsities=[0.8]", "train.lr=0.05"))
    first = startup(*tiny_args(tmp_path))

    async def open_older() -> None:
        async with first.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert first.experiment_id == 1
            await pilot.press("4")
            await wait_until(lambda: first.history.table.row_count == 2)
            first.history.table.move_cursor(row=0)  # newest first: experiment 2
            await pilot.press("enter")
            await wait_until(lambda: first.experiment_id == older)

    asyncio.run(open_older())
    assert json.loads((tmp_path / STATE_NAME).read_text())["experiment_id"] == older

    again = startup("--store", str(tmp_path))  # no --preset/--config/--set: reopen

    async def reopen() -> None:
        async with again.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert again.experiment_id == older
            assert again.query_one("#field-grid-sparsities", Input).value == "0.8"
            assert again.query_one("#field-train-lr", Input).value == "0.05"
            assert any("Reopened experiment 2" in n for n in notices(again))
            await pilot.press("3")
            await wait_until(lambda: "results" not in again._stale)
            assert again.results.data.experiment_id == older

    asyncio.run(reopen())
    # an explicit source wins over the remembered experiment
    assert startup("--preset", "demo", "--store", str(tmp_path))._reopen is None
    assert startup(*tiny_args(tmp_path))._reopen is None


def test_running_a_grid_is_remembered_too_and_a_bad_memory_is_ignored(tmp_path: Path) -> None:
    exp = finish_by_hand(tmp_path, tiny(tmp_path))
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)

    asyncio.run(scenario())
    state = tmp_path / STATE_NAME
    assert json.loads(state.read_text())["experiment_id"] == exp  # opened at start: worked on
    options = explorer_options(main_parser().parse_args(["--store", str(tmp_path), "--device", "cpu"]))
    assert options["reopen"] == exp and options["config"].run.device == "cpu"
    assert options["config"].run.store == str(tmp_path)

    for bad in ("not json", '{"experiment_id": "1"}', '{"experiment_id": 9, "identity": "x"}',
                json.dumps({"experiment_id": exp, "identity": "another store's"})):
        state.write_text(bad)
        options = explorer_options(main_parser().parse_args(["--store", str(tmp_path)]))
        assert "reopen" not in options and options["preset"] == "demo", bad  # today's behaviour
    state.unlink()
    state.mkdir()  # not a file at all
    assert "reopen" not in explorer_options(main_parser().parse_args(["--store", str(tmp_path)]))


# ------------------------------------------------------------------ follow mode

HOLD_LOCK = """
import sys
from lotto_engine.store import Store
with Store(sys.argv[1]) as store, store.lock_experiment(int(sys.argv[2])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_follow_mode_names_the_process_running_the_grid_and_notifies_when_it_ends(tmp_path: Path) -> None:
    exp = finish_by_hand(tmp_path, tiny(tmp_path))
    app = create_app(tiny(tmp_path), poll_interval=0.1)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            line = app.query_one("#jobs-follow", Static)
            assert not line.display
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD_LOCK, str(tmp_path), str(exp)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "held\n"
                await wait_until(lambda: line.display, timeout=10)
                text = shown(line)
                assert f"pid {holder.pid}" in text and "runs this grid" in text
                assert "-c" in text  # its command line, from /proc
                assert holder.stdin is not None
                holder.stdin.close()  # the runner lets go
                assert holder.wait(timeout=30) == 0
            finally:
                holder.kill()
            await wait_until(lambda: not line.display, timeout=10)
            ended = [n for n in notices(app) if n.startswith("Followed grid ended")]
            assert ended == [f"Followed grid ended: pid {holder.pid} ({shown_command(text)}) stopped running "
                             f"experiment {exp}: 4 done, 0 failed"]

    asyncio.run(scenario())


def shown_command(line: str) -> str:
    return line.split("(", 1)[1].rsplit(")", 1)[0]


# ------------------------------------------------------------------ default names


@pytest.mark.slow
def test_a_new_experiment_is_named_after_its_origin_and_an_edit(tmp_path: Path) -> None:
    config = tiny(tmp_path)
    app = create_app(config, origin=("tiny", config))

    async def run_to_end(pilot) -> None:  # type: ignore[no-untyped-def]
        ended = app.runs_ended
        await pilot.press("r")
        await wait_until(lambda: app.runs_ended > ended, timeout=120)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert preview(app).startswith('new experiment "tiny" · 4 jobs')
            await run_to_end(pilot)
            await pilot.press("1")
            field = app.query_one("#field-train-lr", Input)
            field.focus()
            await pilot.press("end", *["backspace"] * 10, *"0.2", "escape")
            await wait_until(lambda: app.experiment_id is None and not app._dirty)
            assert preview(app).startswith('new experiment "tiny, lr=0.2" · 4 jobs: 0 reused')
            await run_to_end(pilot)

    asyncio.run(scenario())
    with Store(tmp_path, create=False) as store:
        assert [e.name for e in store.experiments()] == ["tiny", "tiny, lr=0.2"]


@pytest.mark.slow
def test_reopening_a_named_experiment_keeps_its_name(tmp_path: Path) -> None:
    config = tiny(tmp_path)
    finish_by_hand(tmp_path, config, name="my baseline")
    app = create_app(config)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert preview(app).startswith('experiment 1 "my baseline" · 4 jobs')
            explicit, default = app.query_one("ConfigForm").name_for(app.view_config)
            assert explicit == ""  # the form's run.name was not typed: the stored name stays

    asyncio.run(scenario())
    assert default_name(config, "demo")  # a default exists, but the store keeps "my baseline"


# ------------------------------------------------------------------ help


def test_help_explains_d_its_companions_sparsity_the_interval_marks_reused_and_flags(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path))

    async def scenario() -> str:
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            await wait_until(lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause(0.2)
            console = Console(record=True, width=100, file=io.StringIO())
            for static in app.screen.query(Static):
                console.print(static.content)
            return " ".join(console.export_text().split())

    text = asyncio.run(scenario())
    for needle in (
        "||W_dense - W_pruned|| / ||W_dense||",  # D
        "||W_dense * (1 - m)|| / ||W_dense||: what the mask m alone removes",  # its floor
        "||(W_dense - W_pruned) * m|| / ||W_dense * m||: how far the kept weights moved in retraining",
        "target: the sparsity the grid asks for; actual: the share of prunable weights the mask really removes",
        "t(0.975, n-1) * s / sqrt(n)", "n-1 degrees of freedom",
        f"{BEST_MARK} (best)", f"{MIXED_MARK} (mixed)",
        "is copied into the new experiment, not run again",
        "R (shift+r) Write report",
    ):
        assert needle in text, needle
    for flag, meaning in FLAGS.items():
        assert " ".join(f"{flag}: {meaning}".split()) in text


# ------------------------------------------------------------------ the report key


def test_the_report_key_writes_the_shown_experiments_report_into_the_store_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = finish_by_hand(tmp_path, tiny(tmp_path))
    calls: list[tuple[list[int], Path, bool]] = []

    def write_report(store, experiment_ids, out, formats=("png",)):  # type: ignore[no-untyped-def]
        # C's signature (lotto_tui.paper); the store is a real read-only one
        calls.append((list(experiment_ids), Path(out), bool(store.runs(experiment_ids[0]))))
        Path(out).mkdir(parents=True, exist_ok=True)
        report = Path(out) / "report.md"
        report.write_text("# report\n")
        return [report, Path(out) / "accuracy.png"]

    monkeypatch.setitem(sys.modules, "lotto_tui.paper", types.SimpleNamespace(write_report=write_report))
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await wait_until(lambda: any(n.startswith("Report written") for n in notices(app)))

    asyncio.run(scenario())
    out = tmp_path / "reports" / f"experiment-{exp}"
    assert calls == [([exp], out, True)]
    written = next(n for n in notices(app) if n.startswith("Report written"))
    assert written == f"Report written: {out / 'report.md'}\n+ 1 figure files beside it"


@pytest.mark.slow
def test_the_report_key_says_so_in_one_line_when_reports_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_by_hand(tmp_path, tiny(tmp_path))
    monkeypatch.setitem(sys.modules, "lotto_tui.paper", None)  # its import fails
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await wait_until(lambda: any(n.startswith("Report not written") for n in notices(app)))
            assert app.is_running

    asyncio.run(scenario())
    assert [n for n in notices(app) if n.startswith("Report not written")] == [
        "Report not written: report unavailable: import of lotto_tui.paper halted; None in sys.modules"]
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_the_report_key_before_any_run_says_there_is_nothing_to_report(tmp_path: Path) -> None:
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await wait_until(lambda: bool(notices(app)))

    asyncio.run(scenario())
    assert notices(app) == [": Nothing to report yet: run the grid first"]


@pytest.mark.slow
def test_the_report_key_with_the_real_report_writes_report_md(tmp_path: Path) -> None:
    pytest.importorskip("lotto_tui.paper")
    exp = finish_by_hand(tmp_path, tiny(tmp_path))
    app = create_app(tiny(tmp_path))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await wait_until(lambda: any(n.startswith("Report") and "writ" in n and "Writing" not in n
                                         for n in notices(app)), timeout=120)

    asyncio.run(scenario())
    report = tmp_path / "reports" / f"experiment-{exp}" / "report.md"
    assert report.is_file()
    assert any(n.startswith(f"Report written: {report}") for n in notices(app))


@pytest.mark.slow
def test_the_event_log_wraps_at_its_own_width_at_80_columns(tmp_path: Path) -> None:
    """A long log line wraps inside the panel at 80 columns: no character is cut off."""
    from textual.widgets import RichLog

    line = "grid finished in 0s: 3 done, 1 flagged: 1 chance_level, 1 loss_exploded · peak memory 0.8 GiB (process)"

    async def scenario() -> None:
        app = create_app(tiny(tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await pilot.pause(0.3)
            log = app.query_one("#jobs-log", RichLog)
            for i in range(20):  # enough lines for a scrollbar, which takes from the width
                app.jobs.log(f"line {i}")
            app.jobs.log(line)
            await pilot.pause(0.3)
            shown = [strip.text.rstrip() for strip in log.lines]
            tail = " ".join(shown[-2:])
            assert " ".join(line.split()) == " ".join(tail.split())
            assert all(len(text) <= log.scrollable_content_region.width for text in shown)

    asyncio.run(scenario())
