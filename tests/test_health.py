"""Run health: a run that did not really train is flagged, stored, exported and counted,
and flags never change a status or the grid's outcome."""

from __future__ import annotations

import json
import math
import re
import sqlite3

import pytest
import torch
from lotto_engine.export import export_experiment, to_csv, to_json
from lotto_engine.health import FLAGS, chance_bound, diagnose
from lotto_engine.metrics import mask_sparsity
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.views.results import numerics_in, summarize
from lotto_engine.runner import Runner
from lotto_engine.store import Store

from conftest import TINY, tiny_config


def _curve(*losses: float) -> list[EpochMetrics]:
    return [EpochMetrics(i + 1, loss, 0.5, loss, 0.5, 0.1, 0.01) for i, loss in enumerate(losses)]


def test_chance_bound_is_one_over_k_plus_three_binomial_standard_errors():
    # 10 classes over 1000 images: p = 0.1, SE = sqrt(0.1 * 0.9 / 1000)
    assert chance_bound(10, 1000) == pytest.approx(0.1 + 3 * (0.09 / 1000) ** 0.5)
    assert chance_bound(2, 100) == pytest.approx(0.5 + 3 * 0.05)


def test_chance_level_needs_both_final_accuracies_at_or_below_the_bound():
    bound = chance_bound(10, 360)
    at, above = bound, bound + 1e-6
    assert diagnose(num_classes=10, curve=_curve(2.3), val=(at, 360), test=(0.1, 360)) == ("chance_level",)
    assert diagnose(num_classes=10, curve=_curve(2.3), val=(at, 360), test=(above, 360)) == ()
    assert diagnose(num_classes=10, curve=_curve(2.3), val=(above, 360), test=(0.1, 360)) == ()
    # a run stopped before its test evaluation is judged on validation alone
    assert diagnose(num_classes=10, curve=_curve(2.3), val=(0.1, 360)) == ("chance_level",)
    assert diagnose(num_classes=10, curve=[]) == ()


def test_loss_exploded_is_an_epoch_mean_above_ten_ln_k():
    limit = 10 * math.log(10)
    ok = dict(num_classes=10, val=(0.9, 100), test=(0.9, 100))
    assert diagnose(curve=_curve(limit, 0.5), **ok) == ()
    assert diagnose(curve=_curve(limit * 1.001, 0.5), **ok) == ("loss_exploded",)
    assert diagnose(curve=_curve(0.5, math.inf), **ok) == ("loss_exploded",)
    assert diagnose(curve=_curve(0.5, math.nan), **ok) == ()  # NaN is the diverged status, not a flag


def test_layer_collapse_names_layers_that_keep_no_weight_and_flags_come_in_one_order():
    layers = [LayerSparsity("conv1.weight", 36, 0, 4, 4), LayerSparsity("fc.weight", 50, 10, 5, 1)]
    flags = diagnose(num_classes=10, curve=_curve(99.0), layers=layers, val=(0.1, 100), test=(0.1, 100))
    assert flags == ("chance_level", "loss_exploded", "layer_collapse") == tuple(FLAGS)
    assert diagnose(num_classes=10, curve=[], layers=layers[1:]) == ()


def test_mask_sparsity_counts_units_left_without_incoming_weights():
    conv = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    conv[1] = False  # filter 1 loses every weight
    conv[3, 0] = False  # filter 3 keeps its second input channel
    linear = torch.ones(3, 5, dtype=torch.bool)
    linear[:, 0] = False  # no row is empty
    _, (c, f) = mask_sparsity({"conv": conv, "fc": linear})
    assert (c.units, c.dead_units, c.kept) == (4, 1, 4 * 18 - 18 - 9)
    assert (f.units, f.dead_units) == (3, 0)


# --------------------------------------------------------------------------- a real grid


GRID = ('grid.activations=["relu", "sigmoid"]', 'grid.methods=["grasp"]', "grid.sparsities=[0.95]")


@pytest.fixture(scope="module")
def flagged_grid(tmp_path_factory, digits):
    """relu learns; sigmoid pruned by GraSP to 95% loses whole layers (measured: conv1-4)."""
    store = Store(tmp_path_factory.mktemp("health") / "store")
    summary = Runner(tiny_config(*GRID), store).run()
    yield store, summary, digits
    store.close()


def test_a_grid_stores_each_runs_flags_and_numerics_and_counts_them(flagged_grid):
    store, summary, data = flagged_grid
    runs = {(r.activation, r.method): r for r in store.runs(summary.experiment_id)}
    assert runs["relu", "dense"].flags == ()  # it learned (about 0.4 on digits after 2 epochs)
    collapsed = runs["sigmoid", "grasp"]
    empty = [layer.name for layer in store.layers(collapsed.id) if layer.kept == 0]
    assert empty and "layer_collapse" in collapsed.flags
    for run in runs.values():  # flags agree with the stored layer rows and the accuracies
        assert ("layer_collapse" in run.flags) == any(l.kept == 0 for l in store.layers(run.id))
        val_bound = 0.1 + 3 * (0.09 / len(data.val)) ** 0.5
        test_bound = 0.1 + 3 * (0.09 / len(data.test)) ** 0.5
        assert ("chance_level" in run.flags) == (run.val_acc <= val_bound and run.test_acc <= test_bound)
        assert run.numerics == {"device": "cpu", "precision": "fp32", "threads": 1}
    # flags inform: every run is still done and the grid is ok
    assert summary.counts == {"done": 4} and summary.ok
    expected: dict[str, int] = {}
    for run in runs.values():
        for flag in run.flags:
            expected[flag] = expected.get(flag, 0) + 1
    assert summary.flags == expected and summary.flagged == sum(1 for r in runs.values() if r.flags)
    assert numerics_in(runs.values()) == [{"device": "cpu", "precision": "fp32", "threads": 1}]
    cells = {(c.activation, c.method): c for c in summarize(runs.values())}
    assert cells["sigmoid", "grasp"].flagged == 1 and "layer_collapse" in cells["sigmoid", "grasp"].flags


def test_export_carries_flags_numerics_and_dead_units(flagged_grid):
    store, summary, _ = flagged_grid
    data = json.loads(to_json(export_experiment(store, summary.experiment_id)))
    by_point = {(r["activation"], r["method"]): r for r in data["runs"]}
    sig = by_point["sigmoid", "grasp"]
    assert "layer_collapse" in sig["flags"] and sig["numerics"]["threads"] == 1
    collapsed = [layer for layer in sig["layers"] if layer["collapsed"]]
    assert collapsed and all(l["kept"] == 0 and l["dead_units"] == l["units"] > 0 for l in collapsed)
    assert by_point["relu", "dense"]["flags"] == []
    rows = to_csv(export_experiment(store, summary.experiment_id)).splitlines()
    header = rows[0].split(",")
    assert {"flags", "device", "precision", "threads"} <= set(header)
    flags_col = header.index("flags")
    csv_flags = {row.split(",")[flags_col] for row in rows[1:]}
    assert ";".join(sig["flags"]) in csv_flags and "" in csv_flags


def test_flags_survive_adoption_into_a_new_experiment(flagged_grid, tmp_path):
    store, summary, _ = flagged_grid
    sig = next(r for r in store.runs(summary.experiment_id) if r.activation == "sigmoid" and r.method == "grasp")
    config = tiny_config(*GRID, 'grid.activations=["sigmoid"]')
    experiment = store.experiment_for(config)
    adopted = store.adopt_runs(experiment.id, [sig.job_key])
    copy = next(r for r in store.runs(experiment.id) if r.id == adopted[sig.job_key])
    assert copy.flags == sig.flags and copy.numerics == sig.numerics
    assert [l.dead_units for l in store.layers(copy.id)] == [l.dead_units for l in store.layers(sig.id)]


# --------------------------------------------------------------------------- older stores

_SCHEMA_2_RUNS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiments (id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL, job_key TEXT NOT NULL,
    kind TEXT NOT NULL, activation TEXT NOT NULL, method TEXT NOT NULL, target_sparsity REAL NOT NULL,
    seed INTEGER NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL, val_acc REAL, best_val_acc REAL,
    test_acc REAL, actual_sparsity REAL, stability REAL, wall_time REAL, error TEXT, reused_from INTEGER,
    pid INTEGER, started_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE epochs (run_id INTEGER NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL,
    val_loss REAL, val_acc REAL, lr REAL, seconds REAL, PRIMARY KEY (run_id, epoch));
CREATE TABLE layer_sparsity (run_id INTEGER NOT NULL, layer TEXT NOT NULL, numel INTEGER NOT NULL,
    kept INTEGER NOT NULL, PRIMARY KEY (run_id, layer));
INSERT INTO meta VALUES ('schema_version', '2');
INSERT INTO experiments VALUES (1, 'abc', 'old', '2026-01-01T00:00:00+00:00', '{}');
INSERT INTO runs (id, experiment_id, job_key, kind, activation, method, target_sparsity, seed, status, attempt,
    val_acc, started_at) VALUES (1, 1, 'k', 'pruned', 'relu', 'grasp', 0.5, 0, 'done', 1, 0.5, 'now');
INSERT INTO layer_sparsity VALUES (1, 'conv1.weight', 10, 0);
"""


def _old_store(folder):
    folder.mkdir()
    with sqlite3.connect(folder / "lotto.db") as conn:
        conn.executescript(_SCHEMA_2_RUNS)
    return folder


def test_a_schema_2_store_reads_without_flags_read_only_and_migrates_when_written(tmp_path):
    folder = _old_store(tmp_path / "old")
    with Store(folder, create=False) as ro:
        (run,) = ro.runs(1)
        # never "ok": a run made before health checks is unchecked, its flags unknown
        assert run.flags == () and not run.checked and run.numerics is None and run.val_acc == 0.5
        assert ro.layers(1) == [LayerSparsity("conv1.weight", 10, 0, None, None)]
    with Store(folder) as rw:
        (run,) = rw.runs(1)
        assert not run.checked and rw.layers(1)[0].units is None
        rw.finish_run(1, RunResult(status="done", flags=("chance_level",), numerics={"threads": 2}))
        (run,) = rw.runs(1)
        assert run.checked and run.flags == ("chance_level",) and run.numerics == {"threads": 2}


def _downgrade(db) -> None:
    """Make a store look written by the release before health checks (schema 2)."""
    with sqlite3.connect(db) as conn:
        for table, column in (("runs", "flags"), ("runs", "numerics"), ("layer_sparsity", "units"),
                              ("layer_sparsity", "dead_units")):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()


def test_runs_of_an_older_release_show_as_unchecked_everywhere_never_ok(tmp_path, capsys, monkeypatch):
    store_dir = tmp_path / "store"
    config = tiny_config(*GRID, f"run.store='{store_dir}'")
    with Store(store_dir) as store:
        Runner(config, store).run()
    _downgrade(store_dir / "lotto.db")

    with Store(store_dir) as store:  # migrates: the old runs stay unchecked
        summary = Runner(config, store).run()  # nothing to train: every job is done
        assert summary.unchecked == 4 and summary.flagged == 0
        cells = summarize(store.runs(summary.experiment_id))
        assert all(cell.unchecked == 1 and not cell.flags for cell in cells)
        data = export_experiment(store, summary.experiment_id)
    assert all(run["flags"] is None for run in data["runs"])
    rows = to_csv(data).splitlines()
    assert {row.split(",")[rows[0].split(",").index("flags")] for row in rows[1:]} == {"?"}
    assert all(layer["units"] is None for run in data["runs"] for layer in run["layers"])

    from lotto_tui.cli import main

    monkeypatch.chdir(tmp_path)
    sets = [a for item in (*TINY, *GRID) for a in ("--set", item)]
    assert main(["--batch", "--preset", "demo", *sets, "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert "4 unchecked" in last and "flagged" not in last, last
    table = out[out.index("Experiment"):]
    assert " ok" not in table and "?" in table

    from lotto_tui.explorer.history import flagged_text
    from lotto_engine.views.experiments import experiment_summaries

    with Store(store_dir, create=False) as reader:
        (old, *_) = [exp for exp in experiment_summaries(reader) if exp.counts.get("done") == 4]
    assert old.unchecked == 4 and flagged_text(old) == "?"
    assert main(["experiments", "--store", str(store_dir)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows and all(re.search(r"\s0\+\?(\s|$)", row) for row in rows), rows



def test_a_stopped_run_is_not_judged_on_its_partial_curve(digits):
    # a run cancelled after one epoch of a net still at chance is no result: flagging
    # it "chance level" (and counting it among the grid's flagged runs) would mislead
    import threading

    from conftest import tiny_config
    from lotto_engine.devices import FastPath
    from lotto_engine.plan import build_plan
    from lotto_engine.protocol import JobSpec
    from lotto_engine.protocol.jobs import JobHooks, run_job

    config = tiny_config('grid.activations=["sigmoid"]', "train.dense_epochs=2", "train.lr=1e-9")
    spec = JobSpec.of(build_plan(config).jobs[0], config, FastPath())
    stop = threading.Event()
    stopped = run_job(spec, digits, hooks=JobHooks(cancel=stop, on_epoch=lambda metrics: stop.set()))
    assert stopped.result.status == "cancelled" and len(stopped.result.curve) == 1
    assert not stopped.result.flags
    whole = run_job(spec, digits)  # the same net left to finish is judged
    assert whole.result.status == "done" and "chance_level" in whole.result.flags
