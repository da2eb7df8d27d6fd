"""One text per engine event (lotto_tui.event_text), read the same in the batch's plain
lines, the batch's rich lines and the explorer's log."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import RichLog

from lotto_engine.events import (
    BatchProgress,
    EpochFinished,
    GridFinished,
    GridStarted,
    JobFailed,
    JobFinished,
    JobStarted,
    Notice,
)
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, RunResult
from lotto_tui import event_text
from lotto_tui.batch import PlainReporter, RichReporter
from lotto_tui.explorer import create_app
from lotto_tui.explorer.messages import EngineEvent

from conftest import tiny_config, wait_until_async

CONFIG = tiny_config("grid.sparsities=[0.8, 0.9]", "train.dense_epochs=8", "train.pruned_epochs=4")
DENSE, PRUNED, OTHER = build_plan(CONFIG).jobs
METRICS = EpochMetrics(epoch=2, train_loss=0.40123, train_acc=0.87904, val_loss=0.35606, val_acc=0.89444, lr=0.1,
                       seconds=0.5312)


def events() -> list:
    """A grid's events in the order the runner sends them, each kind at least once."""
    return [
        GridStarted(7, (DENSE, PRUNED, OTHER), frozenset(), "cpu"),
        JobStarted(DENSE, 11, 8, 56, "cpu"),
        BatchProgress(DENSE, 2, 8, 31, 56),
        EpochFinished(DENSE, METRICS, 8),
        Notice("run.parallel asked for 4 jobs at once; 2 fit in 1.5 GiB"),
        JobFinished(DENSE, 11, RunResult("done", val_acc=0.95671, test_acc=0.95062, wall_time=185.2,
                                         flags=("chance_level",))),
        JobStarted(PRUNED, 12, 4, 56, "cuda:1", resumed_from=3),
        JobFinished(PRUNED, 12, RunResult("diverged", val_acc=0.1, actual_sparsity=0.80001, stability=0.62,
                                          wall_time=2.31, error="non-finite loss")),
        JobFailed(OTHER, None, "the dense job failed"),
        GridFinished(7, {"done": 1, "diverged": 1, "failed": 1}, False, 187.6, peak_memory={"cpu": 2**30}, flags={"chance_level": 1},
                     flagged=1),
    ]


def test_each_event_kind_has_its_text() -> None:
    e = events()
    assert event_text.grid_started(e[0]).plain == "experiment 7: 3 jobs, 0 already done, 3 to run on cpu"
    assert event_text.job_started(e[1]).plain == "relu dense seed=0"
    assert event_text.batch_progress(e[2]).plain == "relu dense seed=0 · epoch 2/8 · batch 31/56"
    assert event_text.epoch_finished(e[3]).plain == (
        "relu dense seed=0 epoch 2/8 train_loss=0.4012 train_acc=0.8790 val_loss=0.3561 val_acc=0.8944 (0.53s)")
    assert event_text.notice(e[4]).plain == "note: run.parallel asked for 4 jobs at once; 2 fit in 1.5 GiB"
    done = event_text.job_finished(e[5])
    assert done.status_first().plain == "done       relu dense seed=0  val_acc=0.9567  test_acc=0.9506  (185.2s)  flagged !chance"
    assert done.label_first("■").plain == "■ relu dense seed=0: done val_acc=0.9567  test_acc=0.9506  (185.2s)  flagged !chance"
    assert event_text.job_started(e[6]).plain == "relu magnitude s=0.8 seed=0 on cuda:1 (resumed after epoch 3)"
    diverged = event_text.job_finished(e[7])
    assert diverged.details.plain == "val_acc=0.1000  sparsity=0.8000  D=0.6200  (2.3s)  - non-finite loss"
    failed = event_text.job_failed(e[8])
    assert failed.status_first().plain == "failed     relu magnitude s=0.9 seed=0  - the dense job failed"
    assert failed.label_first("✗").plain == "✗ relu magnitude s=0.9 seed=0: failed - the dense job failed"
    assert event_text.grid_finished(e[9]).plain == ("grid finished in 3m08s: 1 diverged, 1 done, 1 failed, "
                                                    "1 flagged: 1 chance_level · peak memory 1.0 GiB (process)")


def test_texts_escape_control_characters_and_carry_no_markup() -> None:
    notice = event_text.notice(Notice("a [bold]fake[/] line\x1b[2J\nsecond"))
    assert notice.plain == "note: a [bold]fake[/] line\\x1b[2J\\x0asecond"
    failed = event_text.job_failed(JobFailed(DENSE, None, "boom\x07"))
    assert failed.details.plain == "- boom\\x07"


def test_styles_mark_the_status_and_the_health_flag_only() -> None:
    line = event_text.job_finished(events()[5]).status_first()
    styled = {line.plain[s.start:s.end]: str(s.style) for s in line.spans}
    assert styled["done       relu dense seed=0"] == "green"
    assert styled["flagged !chance"] == "bold yellow reverse"
    assert not any("0.9567" in text for text in styled)  # the numbers are never only a colour


def test_the_plain_epoch_line_is_unchanged() -> None:
    """Scripts parse this line: its bytes are the reference for every other client."""
    out = io.StringIO()
    reporter = PlainReporter(out)
    for event in events()[:4]:
        reporter(event)
    assert out.getvalue() == (
        "experiment 7: 3 jobs, 0 already done, 3 to run on cpu\n"
        "[1/3] relu dense seed=0 epoch 2/8 train_loss=0.4012 train_acc=0.8790 val_loss=0.3561 val_acc=0.8944 "
        "(0.53s)\n"
    )


def test_plain_batch_says_a_job_resumed_and_nothing_for_a_fresh_start() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out)
    for event in events():
        reporter(event)
    lines = out.getvalue().splitlines()
    assert lines[3:] == [
        "[1/3] done       relu dense seed=0  val_acc=0.9567  test_acc=0.9506  (185.2s)  flagged !chance",
        "[2/3] relu magnitude s=0.8 seed=0 on cuda:1 (resumed after epoch 3)",
        "[2/3] diverged   relu magnitude s=0.8 seed=0  val_acc=0.1000  sparsity=0.8000  D=0.6200  (2.3s)  - non-finite loss",
        "[3/3] failed     relu magnitude s=0.9 seed=0  - the dense job failed",
    ]  # the dense job's fresh start printed no line of its own


def test_plain_lines_number_each_job_once_whatever_order_jobs_end_or_restart_in() -> None:
    # two jobs at once (or on a cluster): the second started ends first, the first is
    # retried on another worker; each keeps its number, so grep follows one job
    out = io.StringIO()
    reporter = PlainReporter(out)
    for event in [
        GridStarted(7, (DENSE, PRUNED, OTHER), frozenset(), "ray: cpu per job"),
        JobStarted(PRUNED, 12, 4, 56, "cpu"),
        JobStarted(OTHER, 13, 4, 56, "cpu"),
        JobFinished(OTHER, 13, RunResult("done", val_acc=0.5, wall_time=1.0)),
        JobStarted(PRUNED, 12, 4, 56, "cpu", resumed_from=2),
        EpochFinished(PRUNED, METRICS, 4),
        JobFinished(PRUNED, 12, RunResult("done", val_acc=0.5, wall_time=1.0)),
    ]:
        reporter(event)
    numbers = [(line[:5], "s=0.8" in line) for line in out.getvalue().splitlines()[1:]]
    assert numbers == [("[2/3]", False), ("[1/3]", True), ("[1/3]", True), ("[1/3]", True)]


def test_the_rich_bar_of_a_resumed_job_starts_at_the_epochs_it_had() -> None:
    reporter = RichReporter(Console(file=io.StringIO(), width=120, no_color=True))
    e = events()
    try:
        reporter(e[0])
        reporter(e[6])  # resumed after epoch 3 of 4
        task = reporter.progress.tasks[-1]
        assert (task.completed, task.total) == (3 * 56, 4 * 56)
        reporter(e[1])
        assert reporter.progress.tasks[-1].completed == 0
    finally:
        reporter.close()


def _numbers(line: str) -> list[str]:
    """The numbers a line shows, after its ``[k/n]`` counter."""
    return re.findall(r"\d+(?:\.\d+)?", re.sub(r"^\[\d+/\d+\] ", "", line))


def test_batch_and_explorer_show_the_same_numbers_for_the_same_events(tmp_path: Path) -> None:
    sent = events()
    plain = io.StringIO()
    reporter = PlainReporter(plain)
    for event in sent:
        reporter(event)
    console = Console(file=io.StringIO(), width=200, no_color=True, record=True)
    rich_reporter = RichReporter(console)
    for event in sent:
        rich_reporter(event)
    rich_reporter.close()
    rich_lines = [line.rstrip() for line in console.export_text().splitlines() if line.strip()]

    app = create_app(tiny_config(f"run.store='{tmp_path / 'store'}'"))

    async def scenario() -> list[str]:
        async with app.run_test(size=(200, 40)):
            await wait_until_async(lambda: app._engine_ready and app.plan is not None, timeout=60)
            log = app.query_one("#jobs-log", RichLog)
            log.wrap = False  # one event, one line (a headless app's console is 80 columns wide)
            for event in sent:
                app.post_message(EngineEvent(event))
            await wait_until_async(lambda: any("grid finished" in line.text for line in log.lines), timeout=10)
            return [line.text.rstrip() for line in log.lines]

    explorer = asyncio.run(scenario())[1:]  # after the hint line
    batch = plain.getvalue().splitlines()

    def pick(lines: list[str], needle: str) -> str:
        (line,) = [line for line in lines if needle in line]
        return line

    for needle in ("to run on", "train_loss=", "note:", "done ", "diverged ", "failed ", "resumed after"):
        expected = _numbers(pick(batch, needle))
        assert expected, needle
        assert _numbers(pick(explorer, needle)) == expected, needle
        if needle != "train_loss=":  # rich draws bars, not epoch lines
            assert _numbers(pick(rich_lines, needle)) == expected, needle
    # the explorer's log says the grid's end as the batch's last line counts it
    assert pick(explorer, "grid finished").endswith("1 diverged, 1 done, 1 failed, 1 flagged: 1 chance_level · "
                                                    "peak memory 1.0 GiB (process)")


@pytest.mark.parametrize("resumed", [0, 2])
def test_job_start_mentions_resume_only_when_it_resumes(resumed: int) -> None:
    text = event_text.job_started(JobStarted(DENSE, 1, 8, 56, resumed_from=resumed)).plain
    assert ("resumed after epoch 2" in text) == bool(resumed)
    assert text.startswith("relu dense seed=0")
