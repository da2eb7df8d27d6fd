"""The ``queued`` status: a job handed to an executor that has not started yet (a
Slurm array waiting for nodes, a Ray task waiting for a worker) is ``queued``, not
``running``, in the store, in progress counts and ETAs, in the explorer and in the
batch bars; a dead driver's queued rows are recovered like its running ones.

A cluster's queue is stood in for by the real local executor with one job slot
taking more jobs than it trains at once (``capacity``, as a Slurm executor's): the
others really wait in its queue while the first trains, in the runner's thread."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from conftest import TINY, db_rows, tiny_config
from lotto_engine.events import EpochFinished, JobQueued, JobStarted
from lotto_engine.export import export_experiment
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, RunResult
from lotto_engine.runner import Runner, grid
from lotto_engine.store import Store
from lotto_engine.views.progress import grid_progress

ROOT = Path(__file__).resolve().parents[1]
#: a dense job, then two pruned siblings the runner submits together
SIBLINGS = ("grid.sparsities=[0.5, 0.8]",)


def queueing(monkeypatch: pytest.MonkeyPatch, capacity: int = 4) -> None:
    """The runner's executor takes up to ``capacity`` jobs but trains one at a time."""
    real = grid.make_executor

    def make(*args, **kwargs):
        executor = real(*args, **kwargs)
        assert executor.capacity == 1  # one slot: it runs its queue in order, in wait()
        executor.capacity = capacity
        return executor

    monkeypatch.setattr(grid, "make_executor", make)


def status(store: Store, run_id: int) -> str:
    """A run's status as another process reads it."""
    return db_rows(store.db_path, f"SELECT status FROM runs WHERE id = {int(run_id)}")[0][0]


@pytest.fixture
def stores():
    """Opens stores that the test leaves open for its checks; closed at its end."""
    opened: list[Store] = []

    def open_store(root: Path) -> Store:
        opened.append(Store(root))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def test_a_submitted_job_is_queued_until_its_executor_starts_it(tmp_path: Path, monkeypatch, stores) -> None:
    queueing(monkeypatch)
    config = tiny_config(*SIBLINGS)
    plan = build_plan(config)
    dense, first, second = plan.jobs
    store = stores(tmp_path)
    seen: list[tuple[str, str, str]] = []
    live = []

    def on_event(event) -> None:
        if isinstance(event, (JobQueued, JobStarted)):
            seen.append((type(event).__name__, event.job.key, status(store, event.run_id)))
        if isinstance(event, EpochFinished) and event.job.key == first.key:
            exp_id = store.experiment().id
            live.append((grid_progress(store, config, plan, exp_id), store.epoch_totals(exp_id)))

    summary = Runner(config, store, on_event=on_event).run()
    assert summary.counts == {"done": 3}
    assert seen == [
        ("JobQueued", dense.key, "queued"), ("JobStarted", dense.key, "running"),
        ("JobQueued", first.key, "queued"), ("JobQueued", second.key, "queued"),  # submitted together
        ("JobStarted", first.key, "running"), ("JobStarted", second.key, "running"),
    ]
    # while the first sibling trains, the second waits in the executor's queue
    ((progress, totals),) = live
    rows = {row.job.key: row for row in progress.rows}
    assert progress.counts == {"done": 1, "running": 1, "queued": 1}
    assert (progress.running.job.key, progress.in_flight) == (first.key, 2)
    waiting = rows[second.key]
    assert (waiting.status, waiting.epoch, waiting.elapsed, waiting.eta) == ("queued", 0, None, None)
    # the grid's ETA: one job trains at a time, so the epochs left take their full time
    epochs, seconds = map(sum, zip(*totals.values()))
    pace = seconds / epochs
    assert progress.eta == pytest.approx(pace * (progress.epochs_total - progress.epochs_done), rel=1e-6)
    assert not db_rows(store.db_path, "SELECT id FROM runs WHERE status IN ('queued', 'running')")


def test_the_batch_bars_count_queued_jobs_apart_from_the_job_that_trains(tmp_path: Path, monkeypatch, stores) -> None:
    from lotto_tui.batch import RichReporter

    queueing(monkeypatch)
    config = tiny_config(*SIBLINGS)
    first = build_plan(config).jobs[1]
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True, width=100))
    seen: list[tuple[str, list[str]]] = []

    def on_event(event) -> None:
        reporter(event)
        if isinstance(event, EpochFinished) and event.job.key == first.key:
            tasks = reporter.progress.tasks
            seen.append((tasks[0].description, [t.description for t in tasks[1:]]))

    try:
        Runner(config, stores(tmp_path), on_event=on_event).run()
    finally:
        reporter.close()
    # one bar for the job that trains; its queued sibling is counted on the grid's bar
    assert seen == [("experiment 1 · 1 queued", [first.label])]
    assert reporter.progress.tasks[0].description == "experiment 1"
    assert reporter.queued == set()


def test_a_queued_row_left_by_a_dead_driver_is_recovered_as_interrupted(tmp_path: Path, stores) -> None:
    """A driver that died after submitting a job leaves its row queued: the next run
    marks it cancelled (interrupted), as it does a running one, and runs the job again."""
    config = tiny_config()
    dense = build_plan(config).jobs[0]
    store = stores(tmp_path)
    exp = store.experiment_for(config)
    left = store.start_run(exp.id, dense)  # queued; its driver never saw it start
    assert status(store, left) == "queued"
    assert grid_progress(store, config, build_plan(config), exp.id).counts == {"queued": 1, "pending": 1}
    exported = export_experiment(store, exp.id)  # listed as a run, never counted as a result
    assert [(r["status"], r["val_acc"], r["epochs"]) for r in exported["runs"]] == [("queued", None, 0)]
    assert [(c["method"], c["runs"], c["n"], c["val_acc"]["mean"]) for c in exported["cells"]] == [("dense", 1, 0, None)]

    assert Runner(config, store).run().counts == {"done": 2}
    history = [(r.attempt, r.status, r.error) for r in store.runs(exp.id, history=True) if r.job_key == dense.key]
    assert history[0][:2] == (1, "cancelled") and "interrupted" in history[0][2]
    assert history[1:] == [(2, "done", None)]


#: a driver on the queueing executor that dies (SIGKILL) in the first sibling's last
#: epoch: it leaves that sibling running with a checkpoint, the other one queued
KILLED_DRIVER = """
import os, signal, sys
from lotto_engine.config import load_config
from lotto_engine.events import EpochFinished
from lotto_engine.runner import grid
from lotto_engine.store import Store

real = grid.make_executor
def make(*args, **kwargs):
    executor = real(*args, **kwargs)
    executor.capacity = 4
    return executor
grid.make_executor = make

def on_event(event):
    if isinstance(event, EpochFinished) and event.job.kind == "pruned" and event.metrics.epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)

grid.Runner(load_config(preset="demo", overrides=sys.argv[2:]), Store(sys.argv[1]), on_event=on_event).run()
"""


@pytest.mark.slow
def test_a_killed_drivers_queued_and_running_rows_are_recovered_and_resumed(tmp_path: Path, stores) -> None:
    overrides = [*TINY, *SIBLINGS, "train.pruned_epochs=2"]
    config = tiny_config(*SIBLINGS, "train.pruned_epochs=2")
    dense, first, second = build_plan(config).jobs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "engine"), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(tmp_path), *overrides], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = stores(tmp_path)
    left = {key: (run_id, st) for run_id, key, st in db_rows(store.db_path, "SELECT id, job_key, status FROM runs")}
    assert {key: st for key, (_, st) in left.items()} == {dense.key: "done", first.key: "running", second.key: "queued"}
    assert store.has_checkpoint(first.key) and not store.has_checkpoint(second.key)

    seen: list[tuple[str, str, int, str]] = []

    def on_event(event) -> None:
        if isinstance(event, (JobQueued, JobStarted)):
            seen.append((type(event).__name__, event.job.key, event.run_id, status(store, event.run_id)))

    assert Runner(config, store, on_event=on_event).run().counts == {"done": 3}
    history = {(r.job_key, r.attempt): (r.id, r.status, r.error) for r in store.runs(1, history=True)}
    resumed, fresh = left[first.key][0], history[(second.key, 2)][0]
    # the first continues in its row from its checkpoint, queued again until it starts
    assert seen == [("JobQueued", first.key, resumed, "queued"), ("JobStarted", first.key, resumed, "running"),
                    ("JobQueued", second.key, fresh, "queued"), ("JobStarted", second.key, fresh, "running")]
    assert history[(first.key, 1)] == (resumed, "done", None) and (first.key, 2) not in history
    _, old_status, old_error = history[(second.key, 1)]
    assert old_status == "cancelled" and "interrupted" in old_error
    assert history[(second.key, 2)][1] == "done"


# ---------------------------------------------------------------- the explorer, over a store written by hand

def test_the_explorer_counts_queued_jobs_apart_and_says_they_wait(tmp_path: Path) -> None:
    from lotto_tui.explorer import create_app

    config = tiny_config('grid.activations=["relu", "tanh"]', f"run.store='{tmp_path}'")
    plan = build_plan(config)
    with Store(tmp_path) as store:  # as a driver leaves it while a cluster holds two jobs in its queue
        exp = store.experiment_for(config)
        relu_dense, relu_pruned, tanh_dense, _ = plan.jobs
        store.finish_run(store.start_run(exp.id, relu_dense), RunResult(
            "done", [EpochMetrics(e, 1, 0.5, 1, 0.5, 0.1, 0.1) for e in (1, 2)], val_acc=0.5, wall_time=0.2))
        store.start_run(exp.id, relu_pruned)
        store.start_run(exp.id, tanh_dense)
    app = create_app(config)

    async def scenario() -> tuple[str, str, list[str]]:
        async with app.run_test(size=(120, 30)) as pilot:
            summary = app.query_one("#jobs-summary", Static)
            deadline = time.monotonic() + 60
            # ready, the reuse count in (settled: nothing left to redraw), the store read
            while not (app._engine_ready and app.plan is not None and not app._dirty
                       and "queued" in str(summary.render())):
                assert time.monotonic() < deadline, str(summary.render())
                await asyncio.sleep(0.05)
            await pilot.pause(0)
            table = app.jobs.table
            return (str(summary.render()), str(app.query_one("#job-bar-text", Static).render()),
                    [str(table.get_cell(row, "status")) for row in table.rows])

    summary, bar, statuses = asyncio.run(scenario())
    assert "4 jobs · 1 done, 2 queued, 1 pending" in summary
    assert bar == "2 queued, waiting to start"
    assert statuses == ["done", "queued", "queued", "pending"]
