"""SVG snapshots of the explorer's panels (pytest-textual-snapshot), over a store the
test writes itself: fixed, plausible numbers for the `demo` grid, no training.

Every value that could differ between runs is pinned: the run and experiment
timestamps, every wall and epoch time, and the store path (relative, from a fixed
working directory, because the config panel shows it). Nothing runs while the
snapshot is taken, so the event log holds only its hint line.

    .venv/bin/python -m pytest tests/test_explorer_snapshots.py                     # compare
    .venv/bin/python -m pytest tests/test_explorer_snapshots.py --snapshot-update   # accept new output

Snapshots live in tests/__snapshots__/test_explorer_snapshots/; a mismatch writes
snapshot_report.html (side-by-side diff) in the working directory.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import textual.constants

from lotto_engine.config import load_config
from lotto_engine.plan import Job, build_plan
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.store import DB_NAME, Store
from lotto_tui.explorer import create_app

STORE = "lotto-runs"  # relative to the working directory the tests chdir to
CONFIG = ["run.device='cpu'", f"run.store='{STORE}'"]
STAMP = "2026-01-01T00:00:00+00:00"
FINISHED = "2026-01-01T00:00:30+00:00"
OLDER = "2025-12-30T09:15:00+00:00"

# The demo model's prunable weights (shallow-cnn, width 16, hidden 128, 1x8x8 digits).
LAYERS = (("conv1.weight", 144), ("conv2.weight", 2304), ("conv3.weight", 4608),
          ("conv4.weight", 9216), ("fc1.weight", 16384), ("classifier.weight", 1280))
# How much more (> 1) or less than the global keep fraction each layer keeps.
KEEP_BIAS = {
    "magnitude": (2.2, 1.3, 1.1, 0.95, 0.85, 1.8),
    "grasp": (1.5, 1.2, 1.0, 1.0, 0.9, 1.3),
}
DENSE_VAL = {"relu": 0.9567, "tanh": 0.9444, "sigmoid": 0.1028}  # sigmoid: at chance, as in the demo
DROP = {  # val accuracy lost by pruning, at 0.5 / 0.8 / 0.9 sparsity
    "magnitude": {0.5: 0.0028, 0.8: 0.0111, 0.9: 0.0306},
    "grasp": {0.5: 0.0083, 0.8: 0.0250, 0.9: 0.0583},
}
STABILITY = {"magnitude": {0.5: 0.62, 0.8: 0.81, 0.9: 0.89}, "grasp": {0.5: 0.71, 0.8: 0.87, 0.9: 0.93}}
ACT_SHIFT = {"relu": 0.0, "tanh": 0.02, "sigmoid": 0.04}

FAILED = ("tanh", "grasp", 0.9)
DIVERGED = ("sigmoid", "magnitude", 0.9)
PENDING = {("tanh", "magnitude", 0.8), ("tanh", "magnitude", 0.9)}
# Health flags as the demo shows them: sigmoid never leaves chance; relu/grasp 0.5 blows
# up first; sigmoid/grasp at 0.8 and 0.9 removes every weight of conv1 and conv2.
EXPLODED = ("relu", "grasp", 0.5)
COLLAPSED = {("sigmoid", "grasp", 0.8), ("sigmoid", "grasp", 0.9)}
# Two thread counts in one experiment: the results panel says the numerics are mixed.
NUMERICS = {"relu": {"device": "cpu", "precision": "fp32", "threads": 1}}
DEFAULT_NUMERICS = {"device": "cpu", "precision": "fp32", "threads": 2}


def curve(final_val: float, epochs: int, seconds: float, *, diverge_at: int | None = None) -> list[EpochMetrics]:
    out = []
    for e in range(1, epochs + 1):
        val = round(final_val * (1 - 0.55 * 0.5 ** (e - 1)) if e < epochs else final_val, 4)
        train = round(min(1.0, final_val + 0.03) * (1 - 0.7 * 0.5**e), 4)
        loss = round(2.3 * 0.6**e + 0.05, 4)
        out.append(EpochMetrics(e, loss, train, round(2.3 * 0.62**e + 0.12, 4), val, 0.05,
                                round(seconds + 0.002 * (e % 3), 3)))
        if diverge_at == e:
            out[-1] = EpochMetrics(e, math.inf, 0.1021, math.inf, 0.0972, 0.05, seconds)
            break
    return out


def mask_layers(method: str, sparsity: float, *, collapse: bool = False) -> list[LayerSparsity]:
    total = sum(n for _, n in LAYERS)
    keep = 1 - sparsity
    kept = [min(n, round(n * keep * bias)) for (_, n), bias in zip(LAYERS, KEEP_BIAS[method])]
    if collapse:  # conv1 and conv2 lose every weight
        kept[0] = kept[1] = 0
    kept[4] += round(total * keep) - sum(kept)  # fc1 takes up the rounding: the cut is exact
    return [LayerSparsity(name, n, k) for (name, n), k in zip(LAYERS, kept)]


def flags_for(job: Job, val: float | None) -> tuple[str, ...]:
    """The flags the engine would give this made-up run (the numbers agree with them)."""
    point = (job.activation, job.method, job.sparsity)
    flags = []
    if val is not None and val < 0.2:
        flags.append("chance_level")
    if point == EXPLODED:
        flags.append("loss_exploded")
    if point in COLLAPSED:
        flags.append("layer_collapse")
    return tuple(flags)


def result_for(job: Job, config) -> RunResult:
    result = made_up_result(job, config)
    if result.status in ("done", "diverged"):
        result.flags = flags_for(job, result.val_acc)
    result.numerics = NUMERICS.get(job.activation, DEFAULT_NUMERICS)
    return result


def made_up_result(job: Job, config) -> RunResult:
    point = (job.activation, job.method, job.sparsity)
    if job.kind == "dense":
        val = DENSE_VAL[job.activation]
        points = curve(val, config.train.dense_epochs, 0.14)
        return RunResult(
            status="done", curve=points, val_acc=val, best_val_acc=max(p.val_acc for p in points),
            test_acc=round(val - 0.0061, 4), actual_sparsity=0.0,
            layers=[LayerSparsity(name, n, n) for name, n in LAYERS], wall_time=2.31,
        )
    layers = mask_layers(job.method, job.sparsity, collapse=point in COLLAPSED)
    actual = 1 - sum(layer.kept for layer in layers) / sum(layer.numel for layer in layers)
    if point == FAILED:
        return RunResult(status="failed", error="FloatingPointError: grasp scores are not finite for conv1.weight",
                         wall_time=0.42)
    if point == DIVERGED:
        points = curve(0.5, config.train.pruned_epochs, 0.11, diverge_at=3)
        return RunResult(
            status="diverged", curve=points, val_acc=points[-1].val_acc,
            best_val_acc=max(p.val_acc for p in points), actual_sparsity=actual, layers=layers,
            wall_time=0.58, error="loss became NaN or infinite",
        )
    if job.activation == "sigmoid" or point == EXPLODED:  # at chance: 0.0972 to 0.1028
        val = round(0.0972 + 0.0028 * (job.sparsity * 10 % 3), 4)
    else:
        val = round(DENSE_VAL[job.activation] - DROP[job.method][job.sparsity], 4)
    points = curve(val, config.train.pruned_epochs, 0.11)
    if point == EXPLODED:  # the first epoch's loss far above 10 x ln 10, as measured in the demo
        points[0] = replace(points[0], train_loss=74.6)
    return RunResult(
        status="done", curve=points, val_acc=val, best_val_acc=max(p.val_acc for p in points),
        test_acc=round(val - 0.0083, 4), actual_sparsity=actual, layers=layers,
        stability=round(STABILITY[job.method][job.sparsity] + ACT_SHIFT[job.activation], 4), wall_time=1.27,
    )


def write_store(root: Path) -> None:
    """Two experiments: an older, smaller one (for the history; its lr differs, so no
    job key is shared) and the demo grid the app opens, with done, failed, diverged
    and pending jobs."""
    older = load_config(preset="demo", overrides=[*CONFIG, "run.name='relu lr 0.1'", "train.lr=0.1",
                                                  "grid.activations=['relu']", "grid.methods=['magnitude']"])
    demo = load_config(preset="demo", overrides=CONFIG)
    with Store(root) as store:
        for config, skip in ((older, set()), (demo, PENDING)):
            exp = store.experiment_for(config, precision="fp32")
            for job in build_plan(config, precision="fp32"):
                if (job.activation, job.method, job.sparsity) in skip:
                    continue
                run_id = store.start_run(exp.id, job)
                store.finish_run(run_id, result_for(job, config))
    db = sqlite3.connect(root / DB_NAME)
    with db:
        db.execute("UPDATE runs SET started_at = ?, finished_at = ?", (STAMP, FINISHED))
        db.execute("UPDATE experiments SET created_at = ?", (STAMP,))
        db.execute("UPDATE experiments SET created_at = ? WHERE id = 1", (OLDER,))
    db.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explorer-snapshots")
    write_store(root / STORE)
    return root


async def wait_until(pilot, predicate, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"the explorer did not get there within {timeout:g} s: {what}")
        await pilot.pause(0.05)


# panel -> (keys, the tab it shows, the widget the app focuses there: ExplorerApp.action_show_panel)
PANELS = {
    "config": (("1",), "config", "#config-fields"),
    "jobs": (("2",), "jobs", "#jobs-table"),
    "results-accuracy": (("3",), "results", "#result-tabs Tabs"),
    "results-table": (("3", "]", "]", "]", "]"), "results", "#result-tabs Tabs"),
    "history": (("4",), "history", "#history-table"),
}
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


async def show_panel(pilot, panel: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for the engine (torch loads in a worker thread) and the first redraw, press
    the panel's keys, and wait for that panel to be drawn from the store."""
    app = pilot.app
    keys, tab, focus = PANELS[panel]
    await wait_until(pilot, lambda: app._engine_ready and app.plan is not None, "the engine loaded")
    await wait_until(pilot, lambda: not app._dirty and app.jobs.table.row_count == len(app.plan),
                     "the jobs table filled")
    await pilot.press(*keys)
    await wait_until(pilot, lambda: app.panel == tab and tab not in app._stale, f"the {tab} panel drawn")
    if panel == "results-table":
        inner = app.results.query_one("#result-tabs")
        await wait_until(pilot, lambda: inner.active == "tab-table", "the results table tab shown")
    await pilot.pause(0.3)  # the Show/Hide events of the panel switch
    # The app settles focus on the panel's main widget after a switch (the panel it
    # leaves hides its own focused widget a moment later); keyboard users rely on it.
    target = app.query_one(focus)
    await wait_until(pilot, lambda: app.focused is target, f"{focus} focused")
    await pilot.wait_for_scheduled_animations()


def pin_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshots are in colour whatever the user's environment says: Textual reads
    NO_COLOR when the app is created (so clearing it here is enough) and its TEXTUAL_*
    settings when it is imported (so those are pinned on the module)."""
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(textual.constants, "FILTERS", "")
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "auto")


# 80x24 in the fast suite (the size that breaks first); 120x40 with the slow tests.
@pytest.mark.slow  # every snapshot: about 2-4 s each
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("panel", list(PANELS))
def test_panel_snapshot(panel: str, size: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, snap_compare) -> None:
    """One panel of the explorer over a fixed demo store: 19 of 21 jobs run (one failed,
    one diverged, eleven flagged), two pending; an older one-activation experiment in
    the history."""
    monkeypatch.chdir(workdir)
    pin_colours(monkeypatch)
    app = create_app(load_config(preset="demo", overrides=CONFIG))

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await show_panel(pilot, panel)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)
