"""What followers of a grid read from the store: per-epoch rows as epochs finish, mask
sparsity as soon as the mask is cut, progress/ETA per job, and rerun of failed jobs."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from lotto_engine.events import EpochFinished, JobStarted
from lotto_engine.views.progress import experiment_plan, grid_progress
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, RunResult
from lotto_engine.views.results import mean_curves
from lotto_engine.runner import Runner
from lotto_engine.store import Store

from conftest import tiny_config

# two pruned jobs and epochs of unequal count, so counts and ETAs tell them apart
GRID = ("grid.sparsities=[0.5, 0.8]", "train.dense_epochs=3", "train.pruned_epochs=2")


def tiny(*extra: str):
    return tiny_config(*GRID, *extra)


def test_epochs_and_masks_are_readable_by_another_connection_while_the_job_runs(tmp_path):
    """Follow mode rests on this: a reader sees each epoch as it is committed."""
    config = tiny()
    writer = Store(tmp_path)
    reader = Store(tmp_path, create=False)
    seen: list[tuple[str, int, int]] = []
    masks: list[float | None] = []

    def on_event(event):
        if isinstance(event, EpochFinished):
            exp = reader.experiment()
            run = next(r for r in reader.runs(exp.id) if r.job_key == event.job.key)
            seen.append((run.status, event.metrics.epoch, len(reader.curve(run.id))))
        if isinstance(event, JobStarted) and event.job.kind == "pruned":
            exp = reader.experiment()
            run = next(r for r in reader.runs(exp.id) if r.job_key == event.job.key)
            masks.append(run.actual_sparsity)
            assert reader.layers(run.id), "per-layer sparsity is written when the mask is cut"

    version = reader.data_version()
    Runner(config, writer, on_event=on_event).run()
    assert reader.data_version() != version  # followers can poll this instead of reading tables
    dense = [s for s in seen if s[1] <= 3][:3]
    assert dense == [("running", 1, 1), ("running", 2, 2), ("running", 3, 3)]
    assert masks == pytest.approx([0.5, 0.8], abs=1e-3)  # round(s*N) of the prunable weights


def test_grid_progress_counts_epochs_and_estimates_what_is_left(tmp_path):
    config = tiny()
    plan = build_plan(config)
    store = Store(tmp_path)
    empty = grid_progress(store, config, plan, None)
    assert [r.status for r in empty.rows] == ["pending"] * 3
    assert (empty.epochs_done, empty.epochs_total, empty.eta) == (0, 3 + 2 + 2, None)

    exp = store.experiment_for(config)
    dense, first, second = plan.jobs
    run = store.start_run(exp.id, dense)
    store.finish_run(run, RunResult("done", [EpochMetrics(e, 1, 0.5, 1, 0.5, 0.1, 2.0) for e in (1, 2, 3)],
                                    val_acc=0.5, wall_time=6.5))
    running = store.start_run(exp.id, first)
    store.mark_started(running)  # its executor said it started
    store.record_epoch(running, EpochMetrics(1, 1, 0.6, 1, 0.7, 0.1, 2.0))
    now = datetime.now(timezone.utc) + timedelta(seconds=3)
    progress = grid_progress(store, config, plan, exp.id, now=now)

    rows = {r.job.key: r for r in progress.rows}
    assert (rows[dense.key].status, rows[dense.key].epoch, rows[dense.key].elapsed) == ("done", 3, 6.5)
    live = rows[first.key]
    assert (live.status, live.epoch, live.epochs, live.val_acc) == ("running", 1, 2, 0.7)
    assert live.eta == pytest.approx(2.0)  # one epoch left at 2 s per epoch
    assert 2.0 <= live.elapsed <= 5.0
    assert rows[second.key].status == "pending"
    assert progress.running == live
    assert (progress.epochs_done, progress.epochs_total) == (4, 7)
    assert progress.eta == pytest.approx(3 * 2.0)  # three epochs left in the plan
    assert progress.counts == {"done": 1, "running": 1, "pending": 1}


def test_a_stored_experiment_gives_back_its_config_and_plan(tmp_path):
    config = tiny()
    store = Store(tmp_path)
    exp = store.experiment_for(config)
    again, plan = experiment_plan(store.experiment(exp.id))
    assert again == config
    assert [j.key for j in plan] == [j.key for j in build_plan(config)]


def test_rerun_failed_reruns_only_failed_diverged_and_cancelled_jobs(tmp_path):
    config = tiny()
    store = Store(tmp_path)
    assert Runner(config, store).run().counts == {"done": 3}
    plan = build_plan(config)
    exp = store.experiment()
    # pretend the second pruned job failed last time
    failed = store.start_run(exp.id, plan.jobs[2])
    store.finish_run(failed, RunResult("failed", error="boom"))
    started: list[str] = []
    summary = Runner(config, store, on_event=lambda e: isinstance(e, JobStarted) and started.append(e.job.key)).rerun_failed()
    assert started == [plan.jobs[2].key]
    assert summary.counts == {"done": 3}
    nothing: list[str] = []
    Runner(config, store, on_event=lambda e: isinstance(e, JobStarted) and nothing.append(e.job.key)).rerun_failed()
    assert nothing == []


def test_cancel_from_another_thread_leaves_a_consistent_store(tmp_path):
    config = tiny("train.dense_epochs=200")
    store = Store(tmp_path)
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, EpochFinished) and event.metrics.epoch == 2:
            cancel.set()

    summary = Runner(config, store, on_event=on_event, cancel=cancel).run()
    assert summary.cancelled
    runs = store.runs(summary.experiment_id)
    assert [r.status for r in runs] == ["cancelled"]
    assert len(store.curve(runs[0].id)) == 2  # the epochs it finished are kept


def test_live_curves_include_running_runs_only_when_asked(tmp_path):
    config = tiny()
    store = Store(tmp_path)
    exp = store.experiment_for(config)
    dense = build_plan(config).jobs[0]
    run = store.start_run(exp.id, dense)
    store.mark_started(run)
    store.record_epoch(run, EpochMetrics(1, 1.0, 0.25, 1.0, 0.3, 0.1, 1.0))
    runs = store.runs(exp.id)
    assert mean_curves(runs, store.curve) == {}
    assert mean_curves(runs, store.curve, include_running=True) == {("relu", "dense", "none", 0.0): [(1, 0.25)]}
