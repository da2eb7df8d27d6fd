"""A job is a pure function that can run anywhere, and resumes mid-way.

- the job function run in a separate (spawned) process from plain inputs gives the
  numbers the runner gives in-process;
- a job killed with ``kill -9`` (or cancelled) continues from its last finished
  epoch in the same run row when the experiment runs again, and ends bit for bit
  where an uninterrupted run ends;
- a corrupt checkpoint is named in one line and its job starts over.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import LOTTO, db_rows, run_main, tiny_args, tiny_config
from lotto_engine import devices
from lotto_engine.events import EpochFinished, JobStarted, Notice
from lotto_engine.plan import build_plan
from lotto_engine.protocol import JobSpec
from lotto_engine.runner import JobGraph, Runner
from lotto_engine.store import DB_NAME, Store

# one dense job long enough to be caught mid-way, and one pruned job of it
LONG = ("model.width=8", "model.hidden=32", "train.dense_epochs=8", "train.pruned_epochs=3",
        'train.lr_schedule="cosine"', "train.momentum=0.9", "train.weight_decay=0.0005")


def numbers(store: Store, experiment_id: int) -> dict[str, tuple]:
    """Every number a run records (not its wall times), by job key."""
    return {
        r.job_key: (r.status, r.val_acc, r.best_val_acc, r.test_acc, r.stability, r.actual_sparsity, r.flags,
                    [(m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in store.curve(r.id)])
        for r in store.runs(experiment_id)
    }


def artifacts(root: Path) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    return {(p.parent.name, p.stem): load_file(str(p)) for p in sorted((root / "artifacts").glob("*/*.safetensors"))}


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in ((a[n], b[n]) for n in a)
    )


def uninterrupted(tmp_path: Path, *extra: str):
    config = tiny_config(*LONG, *extra)
    with Store(tmp_path / "straight") as store:
        summary = Runner(config, store).run()
        assert summary.ok
        return numbers(store, summary.experiment_id), artifacts(tmp_path / "straight")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory):
    """:func:`uninterrupted` for the LONG grid, run once for the module: (numbers,
    tensors) that every interrupted and resumed run of it must end with. Only read."""
    return uninterrupted(tmp_path_factory.mktemp("straight"))


# ---------------------------------------------------------------------- the graph


def test_jobs_wait_for_their_parents_along_chains_and_fail_with_them():
    from lotto_engine.plan import Job

    def job(key, parent=None):
        return Job(key, "dense" if parent is None else "pruned", "relu", 0, "m", 0.5, parent)

    # a pruned -> pruned chain (iterative pruning), with a parent outside this call ("x")
    graph = JobGraph([job("a"), job("b", "a"), job("c", "b"), job("d", "a"), job("e", "x")])
    assert [graph.ready().key, graph.ready().key] == ["a", "e"]  # b, c, d wait for a
    assert graph.ready() is None
    graph.finish("a", ok=True)
    assert graph.ready().key == "b"
    assert graph.ready().key == "d"
    assert graph.ready() is None  # c waits for b
    graph.finish("b", ok=False)
    c = graph.ready()
    assert c.key == "c" and graph.parent_failed(c)  # it runs only to be recorded failed
    graph.finish("c", ok=False)
    assert graph.failed == {"b", "c"} and graph.waiting == []


def test_the_runner_hands_ready_siblings_to_the_executor_together(tmp_path, monkeypatch):
    from lotto_engine.executors import LocalExecutor
    from lotto_engine.runner import grid

    groups = []

    class Recording(LocalExecutor):
        def submit(self, group):
            groups.append([(task.spec.job.kind, task.spec.job.method) for task in group])
            super().submit(group)

    monkeypatch.setattr(grid, "make_executor", lambda run, *, settings, **kw: Recording(**kw))
    config = tiny_config('grid.methods=["magnitude","random"]', "run.parallel=3")
    with Store(tmp_path / "runs") as store:
        assert Runner(config, store).run().ok
    # the dense job alone; then its two pruned jobs, ready at once, as one group
    assert groups == [[("dense", "dense")], [("pruned", "magnitude"), ("pruned", "random")]]


# ---------------------------------------------------------------------- anywhere


def _job_in_a_fresh_process(spec: JobSpec, parent):
    """What a worker on another machine does: set the numerics, load the data, run."""
    from lotto_engine.data import load_dataset
    from lotto_engine.protocol import run_job

    devices.configure(1, True)
    data = load_dataset(spec.data, torch.device("cpu"))
    out = run_job(spec, data, parent=parent)
    return out.result, out.artifacts


@pytest.mark.slow
def test_a_job_run_in_a_spawned_process_from_plain_inputs_gives_the_runners_numbers(tmp_path):
    config = tiny_config()
    with Store(tmp_path / "runs") as store:
        summary = Runner(config, store).run()
        expected = {r.job_key: r for r in store.runs(summary.experiment_id)}
        curves = {r.job_key: store.curve(r.id) for r in expected.values()}
    saved = artifacts(tmp_path / "runs")
    fast = devices.execution(config.run).fast
    dense, pruned = build_plan(config).jobs
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        d_result, d_tensors = pool.apply(_job_in_a_fresh_process, (JobSpec.of(dense, config, fast), None))
        parent = {name: d_tensors[name] for name in ("theta0", "dense")}
        p_result, p_tensors = pool.apply(_job_in_a_fresh_process, (JobSpec.of(pruned, config, fast), parent))
    for job, result, tensors in ((dense, d_result, d_tensors), (pruned, p_result, p_tensors)):
        row = expected[job.key]
        assert (result.status, result.val_acc, result.test_acc, result.stability, result.actual_sparsity) == (
            row.status, row.val_acc, row.test_acc, row.stability, row.actual_sparsity)
        assert [(m.train_loss, m.val_acc) for m in result.curve] == [(m.train_loss, m.val_acc) for m in curves[job.key]]
        assert same_tensors(tensors, {name: t for (key, name), t in saved.items() if key == job.key})


# ---------------------------------------------------------------------- resume


def _cancel_after(epoch: int, kind: str, cancel: threading.Event, seen: list):
    def on_event(event):
        seen.append(event)
        if isinstance(event, EpochFinished) and event.job.kind == kind and event.metrics.epoch == epoch:
            cancel.set()

    return on_event


@pytest.mark.parametrize("kind", ["dense", pytest.param("pruned", marks=pytest.mark.slow)])
def test_a_cancelled_job_continues_in_its_run_row_and_ends_bit_for_bit_as_if_never_stopped(
    tmp_path, kind, straight
):
    expected, expected_tensors = straight
    config = tiny_config(*LONG)
    with Store(tmp_path / "runs") as store:
        cancel, seen = threading.Event(), []
        first = Runner(config, store, cancel=cancel, on_event=_cancel_after(2, kind, cancel, seen)).run()
        assert first.cancelled
        (stopped,) = [r for r in store.runs(first.experiment_id) if r.kind == kind]
        assert stopped.status == "cancelled"
        assert store.has_checkpoint(stopped.job_key)

        seen = []
        second = Runner(config, store, on_event=seen.append).run()
        assert second.ok and second.counts == {"done": 2}
        (started,) = [e for e in seen if isinstance(e, JobStarted) and e.job.kind == kind]
        assert started.resumed_from == 2 and started.run_id == stopped.id  # the same row, from epoch 3
        trained = [e.metrics.epoch for e in seen if isinstance(e, EpochFinished) and e.job.kind == kind]
        assert trained[0] == 3
        assert [r.attempt for r in store.runs(second.experiment_id, history=True)] == [1, 1]
        assert numbers(store, second.experiment_id) == expected
        assert not any((tmp_path / "runs" / "checkpoints").iterdir())  # gone once their jobs ended
    assert same_tensors(artifacts(tmp_path / "runs"), expected_tensors)


@pytest.mark.slow
def test_a_rerun_starts_over_and_rerun_failed_continues_a_cancelled_job(tmp_path):
    config = tiny_config(*LONG, 'grid.methods=["magnitude"]')
    with Store(tmp_path / "runs") as store:
        cancel = threading.Event()
        first = Runner(config, store, cancel=cancel, on_event=_cancel_after(2, "dense", cancel, [])).run()
        (dense,) = [r for r in store.runs(first.experiment_id) if r.kind == "dense"]
        seen = []
        summary = Runner(config, store, on_event=seen.append).rerun_failed()  # `f` in the explorer
        assert summary.ok
        assert [e.resumed_from for e in seen if isinstance(e, JobStarted)] == [2, 0]
        assert [r.attempt for r in store.runs(summary.experiment_id)] == [1, 1]
        seen = []
        Runner(config, store, on_event=seen.append).rerun(dense.job_key)  # `s`: a new attempt, from scratch
        assert [e.resumed_from for e in seen if isinstance(e, JobStarted)] == [0, 0]
        assert [r.attempt for r in store.runs(summary.experiment_id)] == [2, 2]


@pytest.mark.slow
@pytest.mark.skipif(devices.available_cores() < 2, reason="needs 2 cores for a second thread count")
def test_a_checkpoint_made_under_other_numerics_settings_is_not_continued(tmp_path):
    config = tiny_config(*LONG, 'grid.methods=["magnitude"]')
    with Store(tmp_path / "runs") as store:
        cancel = threading.Event()
        Runner(config, store, cancel=cancel, on_event=_cancel_after(2, "dense", cancel, [])).run()
        seen = []
        summary = Runner(tiny_config(*LONG, 'grid.methods=["magnitude"]', "run.threads=2"), store,
                         on_event=seen.append).run()
        (note,) = [e.message for e in seen if isinstance(e, Notice) and "checkpoint" in e.message]
        assert "1 thread(s)" in note and "2 thread(s)" in note and "starts over" in note
        assert summary.ok
        (dense,) = [r for r in store.runs(summary.experiment_id) if r.kind == "dense"]
        assert dense.numerics["threads"] == 2 and len(store.curve(dense.id)) == 8


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_named_in_one_line_and_its_job_starts_over(tmp_path, straight):
    expected, _ = straight
    config = tiny_config(*LONG)
    with Store(tmp_path / "runs") as store:
        cancel = threading.Event()
        first = Runner(config, store, cancel=cancel, on_event=_cancel_after(3, "dense", cancel, [])).run()
        (dense,) = [r for r in store.runs(first.experiment_id) if r.kind == "dense"]
        path = store.checkpoint_path(dense.job_key)
        path.write_bytes(path.read_bytes()[:200])  # cut short, as a full disk or a bad copy leaves it

        seen = []
        summary = Runner(config, store, on_event=seen.append).run()
        notes = [e.message for e in seen if isinstance(e, Notice)]
        (note,) = [n for n in notes if "checkpoint" in n]
        assert str(path) in note and "starts over" in note and "\n" not in note
        assert [e.resumed_from for e in seen if isinstance(e, JobStarted)] == [0, 0]
        assert summary.ok
        assert numbers(store, summary.experiment_id) == expected


@pytest.mark.slow
def test_kill_9_mid_job_loses_at_most_one_epoch_and_the_job_ends_as_if_never_killed(tmp_path, straight):
    expected, expected_tensors = straight
    store_dir = tmp_path / "runs"
    db = store_dir / DB_NAME
    cmd = [str(LOTTO), "--batch", *tiny_args(*LONG), "--store", str(store_dir)]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_after = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)  # look at a frozen process: what we see is what it dies with
            rows = db_rows(db, "SELECT r.id, COUNT(e.epoch) FROM runs r LEFT JOIN epochs e ON e.run_id = r.id "
                               "WHERE r.kind = 'dense' AND r.status = 'running' GROUP BY r.id", timeout=0.05)
            checkpoints = list((store_dir / "checkpoints").glob("*.pt"))
            if rows and rows[0][1] >= 2 and checkpoints:
                os.kill(proc.pid, signal.SIGKILL)
                killed_after = rows[0][1]
                break
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.02)
        assert killed_after is not None, f"never saw the dense job mid-way (rc={proc.poll()})"
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    # the same command again, in this process (the kill was of a real one; a second
    # interpreter would only add its start-up)
    again = run_main(*cmd[1:], cwd=tmp_path)
    assert again.rc == 0, again.stderr
    dense_epochs = [line for line in again.stdout.splitlines() if " dense seed=0 epoch " in line]
    # it continued from its checkpoint: the epochs trained before the kill, less at most one, are not trained again
    assert 8 - killed_after <= len(dense_epochs) <= 8 - killed_after + 1, again.stdout
    with Store(store_dir) as store:
        (experiment,) = store.experiments()
        runs = store.runs(experiment.id, history=True)
        assert [(r.kind, r.attempt, r.status) for r in runs] == [("dense", 1, "done"), ("pruned", 1, "done")]
        assert numbers(store, experiment.id) == expected
    assert same_tensors(artifacts(store_dir), expected_tensors)
    assert list((store_dir / "checkpoints").glob("*")) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_a_cancelled_job_continues_and_ends_as_if_never_stopped(tmp_path):
    # the CUDA defaults: bf16 autocast, channels_last, the captured SGD step
    extra = ('run.device="cuda:0"',)
    expected, expected_tensors = uninterrupted(tmp_path, *extra)
    config = tiny_config(*LONG, *extra)
    with Store(tmp_path / "runs") as store:
        cancel = threading.Event()
        Runner(config, store, cancel=cancel, on_event=_cancel_after(2, "dense", cancel, [])).run()
        seen = []
        summary = Runner(config, store, on_event=seen.append).run()
        assert summary.ok
        assert [e.resumed_from for e in seen if isinstance(e, JobStarted)] == [2, 0]
        assert not [e for e in seen if isinstance(e, Notice)]  # every capture worked
        assert numbers(store, summary.experiment_id) == expected
    assert same_tensors(artifacts(tmp_path / "runs"), expected_tensors)
