"""The results store and resume: a real SQLite file, real artifacts, real (tiny) training.

What a user relies on: the same config always maps to the same experiment, finished
runs are never redone, a run's record is all-or-nothing, two runners never work on
one experiment at once, and ``kill -9`` at any moment loses at most the epoch in flight.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import db_rows, run_main
from lotto_engine.config import load_config
from lotto_engine.errors import StoreError
from lotto_engine.events import EpochFinished, GridFinished, GridStarted, JobStarted
from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.runner import Runner
from lotto_engine.store import DB_NAME, Store

LOTTO = Path(sys.executable).with_name("lotto-tui")

# A grid that trains in well under a second per job on one thread.
TINY = [
    'grid.activations=["relu"]',
    'grid.methods=["magnitude"]',
    "grid.sparsities=[0.5]",
    "train.dense_epochs=2",
    "train.pruned_epochs=1",
    "model.width=4",
    "model.hidden=16",
    "run.threads=1",
]


def tiny_config(*extra: str):
    return load_config(preset="demo", overrides=[*TINY, *extra])


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store") as s:
        yield s


def _curve(n: int) -> list[EpochMetrics]:
    return [EpochMetrics(e, 1.0 / e, 0.5, 1.1 / e, 0.4, 0.05, 0.01) for e in range(1, n + 1)]


# --------------------------------------------------------------------------- experiments


def test_experiment_for_is_keyed_by_science_not_by_run_settings(store):
    base = tiny_config()
    first = store.experiment_for(base)
    assert store.experiment_for(tiny_config()).id == first.id  # idempotent
    assert len(store.experiments()) == 1

    for science in ("train.lr=0.02", "grid.sparsities=[0.6]", "model.width=5", "data.split_seed=1",
                    "prune.scope=\"layerwise\""):
        assert store.experiment_for(tiny_config(science)).id != first.id, science

    for run_only in ('run.name="renamed"', "run.threads=2", 'run.device="cpu"', 'run.store="elsewhere"',
                     "run.deterministic=false"):
        assert store.experiment_for(tiny_config(run_only)).id == first.id, run_only
    # a new name relabels the same experiment instead of creating one
    assert store.experiment(first.id).name == "renamed"
    assert len(store.experiments()) == 1 + 5


def test_store_is_in_wal_mode_on_disk(store):
    store.experiment_for(tiny_config())
    with sqlite3.connect(store.db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_opening_a_missing_store_without_create_fails_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "nothing-here", create=False)
    assert not (tmp_path / "nothing-here").exists()


# --------------------------------------------------------------------------- runs


def test_finish_run_commits_status_curve_and_layers_together(store):
    config = tiny_config()
    exp = store.experiment_for(config)
    dense, pruned = build_plan(config).jobs
    run_id = store.start_run(exp.id, dense)

    with sqlite3.connect(store.db_path) as other:
        assert other.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone() == ("queued",)

    result = RunResult(
        status="done", curve=_curve(3), val_acc=0.4, best_val_acc=0.45, test_acc=0.41,
        actual_sparsity=0.0, layers=[LayerSparsity("a.weight", 10, 10), LayerSparsity("b.weight", 4, 4)],
        wall_time=1.5,
    )
    store.finish_run(run_id, result)
    with sqlite3.connect(store.db_path) as other:  # visible to another connection: committed
        assert other.execute("SELECT status, test_acc FROM runs WHERE id = ?", (run_id,)).fetchone() == ("done", 0.41)
        assert other.execute("SELECT COUNT(*) FROM epochs WHERE run_id = ?", (run_id,)).fetchone() == (3,)
        assert other.execute("SELECT COUNT(*) FROM layer_sparsity WHERE run_id = ?", (run_id,)).fetchone() == (2,)
    assert [m.epoch for m in store.curve(run_id)] == [1, 2, 3]
    assert [(layer.name, layer.kept) for layer in store.layers(run_id)] == [("a.weight", 10), ("b.weight", 4)]

    # All or nothing: a failure while writing the layer rows leaves the run as it was.
    run2 = store.start_run(exp.id, pruned)
    broken = RunResult(status="done", curve=_curve(2), val_acc=0.3,
                       layers=[LayerSparsity("same", 4, 2), LayerSparsity("same", 4, 2)])
    with pytest.raises(sqlite3.IntegrityError):
        store.finish_run(run2, broken)
    with sqlite3.connect(store.db_path) as other:
        assert other.execute("SELECT status, val_acc FROM runs WHERE id = ?", (run2,)).fetchone() == ("queued", None)
        assert other.execute("SELECT COUNT(*) FROM epochs WHERE run_id = ?", (run2,)).fetchone() == (0,)
        assert other.execute("SELECT COUNT(*) FROM layer_sparsity WHERE run_id = ?", (run2,)).fetchone() == (0,)


def test_runs_gives_latest_attempt_per_job_or_full_history(store):
    config = tiny_config()
    exp = store.experiment_for(config)
    dense, pruned = build_plan(config).jobs

    a1 = store.start_run(exp.id, dense)
    store.finish_run(a1, RunResult(status="cancelled", error="cancelled"))
    a2 = store.start_run(exp.id, dense)
    store.finish_run(a2, RunResult(status="done", curve=_curve(2), val_acc=0.5))
    p1 = store.start_run(exp.id, pruned)
    store.finish_run(p1, RunResult(status="done", curve=_curve(1), val_acc=0.3))

    latest = store.runs(exp.id)
    assert [(r.id, r.job_key, r.attempt, r.status) for r in latest] == [
        (a2, dense.key, 2, "done"),
        (p1, pruned.key, 1, "done"),
    ]
    history = store.runs(exp.id, history=True)
    assert [(r.id, r.attempt, r.status) for r in history] == [(a1, 1, "cancelled"), (a2, 2, "done"), (p1, 1, "done")]
    assert set(store.final_keys(exp.id)) == {dense.key, pruned.key}


# --------------------------------------------------------------------------- artifacts


def test_tensors_round_trip_atomically(store):
    weights = {"conv.weight": torch.randn(4, 1, 3, 3), "fc.bias": torch.arange(5, dtype=torch.float64)}
    masks = {"conv.weight": torch.rand(4, 1, 3, 3) > 0.5, "fc.weight": torch.zeros(2, 3, dtype=torch.bool)}
    path_w = store.save_tensors("job1", "dense", weights)
    path_m = store.save_tensors("job1", "mask", masks)

    assert store.has_tensors("job1", "dense") and store.has_tensors("job1", "mask")
    assert not store.has_tensors("job1", "final")
    loaded_w = store.load_tensors("job1", "dense")
    loaded_m = store.load_tensors("job1", "mask")
    assert loaded_w.keys() == weights.keys() and loaded_m.keys() == masks.keys()
    for name, t in weights.items():
        assert loaded_w[name].dtype == t.dtype and torch.equal(loaded_w[name], t)
    for name, m in masks.items():
        assert loaded_m[name].dtype == torch.bool and torch.equal(loaded_m[name], m)

    # overwriting replaces the file; no temporary file is ever left behind
    store.save_tensors("job1", "dense", {"conv.weight": torch.ones(2)})
    assert torch.equal(store.load_tensors("job1", "dense")["conv.weight"], torch.ones(2))
    assert sorted(p.name for p in path_w.parent.iterdir()) == sorted({path_w.name, path_m.name})

    with pytest.raises(StoreError, match="missing artifact"):
        store.load_tensors("job1", "final")


# --------------------------------------------------------------------------- runner resume


def _run(config, store, **kw):
    events = []
    summary = Runner(config, store, on_event=events.append, **kw).run()
    return summary, events


def test_fresh_runner_resumes_without_redoing_finished_jobs(store):
    config = tiny_config()
    plan = build_plan(config)
    summary, events = _run(config, store)
    assert summary.ok and summary.counts == {"done": len(plan)}
    first = store.runs(summary.experiment_id, history=True)
    assert [r.status for r in first] == ["done"] * len(plan)
    assert events[0].skipped == frozenset()

    # a new process would build a new Runner; same config, same store -> nothing to do
    summary2, events2 = _run(tiny_config(), store)
    started = [e for e in events2 if isinstance(e, GridStarted)]
    assert len(started) == 1 and started[0].skipped == frozenset(j.key for j in plan)
    assert not [e for e in events2 if isinstance(e, JobStarted)]
    assert isinstance(events2[-1], GridFinished) and events2[-1].counts == {"done": len(plan)}
    assert summary2.experiment_id == summary.experiment_id
    assert store.runs(summary.experiment_id, history=True) == first  # no new rows


def test_rerun_of_a_dense_job_makes_new_attempts_and_keeps_history(store):
    config = tiny_config("grid.sparsities=[0.5, 0.8]")
    plan = build_plan(config)
    dense = plan.jobs[0]
    assert dense.kind == "dense"
    summary, _ = _run(config, store)
    before = {r.job_key: r for r in store.runs(summary.experiment_id)}

    events = []
    Runner(config, store, on_event=events.append).rerun(dense.key)
    assert {e.job.key for e in events if isinstance(e, JobStarted)} == {j.key for j in plan}

    latest = store.runs(summary.experiment_id)
    assert {r.job_key: (r.attempt, r.status) for r in latest} == {j.key: (2, "done") for j in plan}
    history = store.runs(summary.experiment_id, history=True)
    assert len(history) == 2 * len(plan)
    for key, old in before.items():
        assert [r.attempt for r in history if r.job_key == key] == [1, 2]
        assert old in history  # attempt 1 untouched
    # deterministic: the redone dense run reproduces its numbers
    new_dense = next(r for r in latest if r.job_key == dense.key)
    assert new_dense.test_acc == before[dense.key].test_acc


def test_resume_completes_a_job_whose_rerun_was_interrupted(store):
    config = tiny_config()
    dense = build_plan(config).jobs[0]
    summary, _ = _run(config, store)
    assert summary.counts == {"done": 2}

    # Rerun the dense job and stop it after its first epoch (Ctrl-C in a client).
    cancel = threading.Event()

    def stop_after_an_epoch(event):
        if isinstance(event, EpochFinished):
            cancel.set()

    interrupted = Runner(config, store, cancel=cancel, on_event=stop_after_an_epoch).rerun(dense.key)
    assert interrupted.cancelled
    latest = {r.job_key: r.status for r in store.runs(summary.experiment_id)}
    assert latest[dense.key] == "cancelled"

    # Running the same grid again must leave every job with a finished latest result.
    resumed, _ = _run(config, store)
    assert resumed.counts == {"done": 2}
    assert all(r.status == "done" and r.test_acc is not None for r in store.runs(summary.experiment_id))


# --------------------------------------------------------------------------- lock


def test_second_runner_on_the_same_experiment_is_refused(tmp_path):
    config = tiny_config()
    with Store(tmp_path / "store") as a, Store(tmp_path / "store") as b:
        exp = a.experiment_for(config)
        with a.lock_experiment(exp.id):
            with pytest.raises(StoreError) as info:
                with b.lock_experiment(exp.id):
                    pass
            message = str(info.value)
            assert f"experiment {exp.id}" in message and "already running" in message
            assert f"pid {os.getpid()}" in message
            # a whole Runner is refused the same way, before it records anything
            with pytest.raises(StoreError, match=f"experiment {exp.id} is already running"):
                Runner(config, b).run()
            assert b.runs(exp.id, history=True) == []
        # released: the second store can take it now
        with b.lock_experiment(exp.id):
            pass


# --------------------------------------------------------------------------- kill -9


KILL_GRID = [
    "--preset", "demo",
    "--set", 'grid.activations=["relu"]',
    "--set", 'grid.methods=["magnitude"]',
    "--set", "grid.sparsities=[0.3, 0.5, 0.7]",
    "--set", "train.dense_epochs=3",
    "--set", "train.pruned_epochs=8",
    "--set", "model.width=4",
    "--set", "model.hidden=16",
    "--set", "run.threads=1",
]
DENSE_EPOCHS, PRUNED_EPOCHS = 3, 8


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    return env


def _statuses(db: Path) -> list[tuple[str, str]]:
    """(job_key, status) of every run; a short timeout: the writer may be frozen (SIGSTOP)."""
    return db_rows(db, "SELECT job_key, status FROM runs ORDER BY id", timeout=0.05)


@pytest.mark.slow
def test_kill_9_mid_grid_loses_only_the_job_in_flight(tmp_path):
    """Finished jobs stay done; the job in flight runs again, or continues from its
    checkpoint when it had finished an epoch (tests/test_job_resume.py covers that)."""
    store_dir = tmp_path / "runs"
    db = store_dir / DB_NAME
    cmd = [str(LOTTO), "--batch", *KILL_GRID, "--store", str(store_dir)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        killed = False
        while time.monotonic() < deadline and proc.poll() is None:
            # Freeze the process while looking, so what we see is what it dies with.
            os.kill(proc.pid, signal.SIGSTOP)
            rows = _statuses(db)
            done = sum(s == "done" for _, s in rows)
            if done >= 2 and any(s == "running" for _, s in rows):
                checkpointed = {p.stem for p in (store_dir / "checkpoints").glob("*.pt")}
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.03)
        assert killed, f"never saw a done and a running run (rc={proc.poll()}): {_statuses(db)}"
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = con.execute("SELECT id, job_key, kind, status, attempt FROM runs ORDER BY id").fetchall()
        in_flight = [r for r in rows if r[3] == "running"]
        assert len(in_flight) == 1, rows
        killed_key = in_flight[0][1]
        done_before = {r[1] for r in rows if r[3] == "done"}
        assert len(done_before) >= 2
        for run_id, job_key, kind, status, _ in rows:
            if status != "done":
                continue
            (n,) = con.execute("SELECT COUNT(*) FROM epochs WHERE run_id = ?", (run_id,)).fetchone()
            assert n == (DENSE_EPOCHS if kind == "dense" else PRUNED_EPOCHS), (kind, n)
            names = ("theta0", "dense") if kind == "dense" else ("mask", "final")
            for name in names:
                assert (store_dir / "artifacts" / job_key / f"{name}.safetensors").is_file(), (kind, name)

    # The same command again finishes the grid without redoing finished jobs (in this
    # process: the kill was of a real one; a second interpreter would only add its start-up).
    rerun = run_main(*cmd[1:], cwd=tmp_path)
    assert rerun.rc == 0, rerun.stderr
    assert f"{len(done_before)} already done" in rerun.stdout

    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = con.execute("SELECT job_key, status, attempt, error FROM runs ORDER BY id").fetchall()
    config = load_config(preset="demo", overrides=[a for a in KILL_GRID[2:] if a != "--set"])
    plan_keys = {job.key for job in build_plan(config)}
    assert {key for key, *_ in rows} == plan_keys
    assert {key for key, status, *_ in rows if status == "done"} == plan_keys
    for key in done_before:
        assert [(s, a) for k, s, a, _ in rows if k == key] == [("done", 1)], key
    attempts = [(s, a, e) for k, s, a, e in rows if k == killed_key]
    if killed_key in checkpointed:  # it had finished an epoch: it continued in its row
        assert [(s, a) for s, a, _ in attempts] == [("done", 1)], attempts
    else:
        assert len(attempts) == 2, attempts
        (old_status, old_attempt, old_error), (new_status, new_attempt, _) = attempts
        assert (old_status, old_attempt) == ("cancelled", 1)
        assert "interrupted" in old_error
        assert (new_status, new_attempt) == ("done", 2)
    assert not any(s == "running" for _, s, *_ in rows)


SCHEMA_1_RUNS = """CREATE TABLE runs (
    id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    job_key TEXT NOT NULL, kind TEXT NOT NULL, activation TEXT NOT NULL, method TEXT NOT NULL,
    target_sparsity REAL NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    val_acc REAL, best_val_acc REAL, test_acc REAL, actual_sparsity REAL, stability REAL, wall_time REAL,
    error TEXT, pid INTEGER, started_at TEXT NOT NULL, finished_at TEXT)"""


def _schema_1_store(folder):
    folder.mkdir()
    conn = sqlite3.connect(folder / "lotto.db")
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE experiments (id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, config TEXT NOT NULL);"
        "INSERT INTO experiments VALUES (1, 'abc', '', '2026-01-01', '{}');"
        + SCHEMA_1_RUNS + ";"
        "INSERT INTO runs VALUES (1, 1, 'k', 'dense', 'relu', 'dense', 0.0, 0, 'done', 1,"
        " 0.9, 0.9, 0.9, 0.0, NULL, 1.0, NULL, 1, '2026-01-01', '2026-01-01');"
    )
    conn.commit()
    conn.close()


def test_a_store_from_the_previous_schema_opens_read_only_and_migrates(tmp_path):
    _schema_1_store(tmp_path / "old")
    with Store(tmp_path / "old", create=False) as store:  # read-only: no migration, still readable
        (run,) = store.runs(1)
        assert run.status == "done" and run.reused_from is None
    with Store(tmp_path / "old") as store:  # a writer migrates it
        (run,) = store.runs(1)
        assert run.reused_from is None
        version = store._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) >= 2


def test_adoption_never_undoes_an_interrupted_rerun(tmp_path):
    import threading

    from lotto_engine.config import load_config
    from lotto_engine.runner import Runner

    base = ["model.width=4", "model.hidden=16", "run.threads=1", "train.dense_epochs=1",
            "train.pruned_epochs=2", 'grid.activations=["relu"]', 'grid.methods=["magnitude"]']
    one = load_config(preset="demo", overrides=[*base, "grid.sparsities=[0.5]"])
    two = load_config(preset="demo", overrides=[*base, "grid.sparsities=[0.5,0.8]"])
    with Store(tmp_path) as store:
        first = Runner(one, store).run()
        pruned = next(r for r in store.runs(first.experiment_id) if r.method == "magnitude")
        cancel = threading.Event()

        def stop(event):
            if type(event).__name__ == "BatchProgress":
                cancel.set()

        Runner(one, store, on_event=stop, cancel=cancel, progress_interval=0).rerun(pruned.job_key)
        Runner(two, store).run()  # adopts the pruned job's finished attempt 1 into experiment 2
        events = []
        resumed = Runner(one, store, on_event=events.append).run()
        ran = [e.job.key for e in events if type(e).__name__ == "JobStarted"]
        assert ran == [pruned.job_key]  # the interrupted rerun is run again, not adopted back
        latest = {r.job_key: r for r in store.runs(resumed.experiment_id)}
        assert latest[pruned.job_key].status == "done" and latest[pruned.job_key].reused_from is None


def test_children_of_a_diverged_dense_run_are_failed_not_pending_after_adoption(tmp_path):
    from lotto_engine.config import load_config
    from lotto_engine.runner import Runner

    base = ["model.width=4", "model.hidden=16", "run.threads=1", "train.dense_epochs=1",
            "train.pruned_epochs=1", 'grid.activations=["relu"]', 'grid.methods=["magnitude"]',
            "train.lr=1e30", "train.momentum=0.0"]
    with Store(tmp_path) as store:
        Runner(load_config(preset="demo", overrides=[*base, "grid.sparsities=[0.5]"]), store).run()
        events = []
        wider = Runner(load_config(preset="demo", overrides=[*base, "grid.sparsities=[0.5,0.8]"]), store,
                       on_event=events.append).run()
        assert wider.counts == {"diverged": 1, "failed": 2}
        started = events[0]
        assert started.reused <= started.skipped and len(started.reused) == 1


def test_lock_holder_names_the_live_runner_and_nothing_else(tmp_path):
    import os

    from lotto_engine.store import lock_holder, lock_path

    with Store(tmp_path) as store:
        assert lock_holder(tmp_path, 1) is None  # never locked
        with store.lock_experiment(1):
            assert lock_holder(tmp_path, 1) == os.getpid()
        assert lock_holder(tmp_path, 1) is None  # let go: the file is empty
    lock_path(tmp_path, 2).write_text("pid 99999999")  # a runner that no longer exists
    assert lock_holder(tmp_path, 2) is None
    lock_path(tmp_path, 3).write_text("garbage")
    assert lock_holder(tmp_path, 3) is None
