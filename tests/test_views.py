"""The read side (lotto_engine.views) over a store written by hand: experiment summaries,
results read in one pass, and status groups defined in one place."""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.statuses import ORDER
from lotto_engine.store import DB_NAME, Store
from lotto_engine.views.experiments import experiment_summaries
from lotto_engine.views.results import CURVE_METRICS, load_results
from lotto_tui.formatting import STATUS_STYLE

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def point(epoch: int, acc: float) -> EpochMetrics:
    return EpochMetrics(epoch, 1.0 - acc, acc, 1.1 - acc, acc, 0.1, 0.5)


def written(tmp_path: Path):
    """A 1x1x2x1 grid: the dense job done (2 epochs), the first pruned job running (1 epoch,
    its mask cut), the second failed; then a second experiment, untouched."""
    config = tiny_config("grid.sparsities=[0.5, 0.8]")
    dense, first, second = build_plan(config).jobs
    store = Store(tmp_path)
    exp = store.experiment_for(config)
    run = store.start_run(exp.id, dense)
    store.finish_run(run, RunResult("done", [point(1, 0.5), point(2, 0.6)], val_acc=0.6, test_acc=0.55,
                                    wall_time=1.0, flags=("chance_level",)))
    live = store.start_run(exp.id, first)
    store.mark_started(live)
    store.record_mask(live, 0.5, [LayerSparsity("fc.weight", 100, 50)])
    store.record_epoch(live, point(1, 0.7))
    failed = store.start_run(exp.id, second)
    store.finish_run(failed, RunResult("failed", error="boom"))
    other = store.experiment_for(tiny_config("train.lr=0.05"))
    return store, exp.id, other.id


def test_experiment_summaries_count_the_latest_attempts_against_the_plan(tmp_path: Path) -> None:
    store, exp_id, other_id = written(tmp_path)
    first, second = experiment_summaries(store)  # oldest first
    assert (first.id, second.id) == (exp_id, other_id)
    assert first.counts == {"done": 1, "running": 1, "failed": 1}
    assert (first.done, first.to_rerun, first.jobs, first.planned) == (1, 1, 3, 3)
    assert (first.flagged, first.unchecked, first.grid, first.dataset) == (1, 0, "1x1x2x1", "digits")
    assert (second.counts, second.done, second.jobs, second.planned) == ({}, 0, 2, 2)
    assert experiment_summaries(None) == []


def _invalid_config(tmp_path: Path, **grid) -> None:
    """Rewrite the written experiment's stored config so today's validation refuses it
    (a negative lr), with ``grid`` keys changed."""
    store, exp_id, _ = written(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / DB_NAME) as con:
        (text,) = con.execute("SELECT config FROM experiments WHERE id = ?", (exp_id,)).fetchone()
        config = json.loads(text)
        config["train"]["lr"] = -1  # refused by today's validation
        config["grid"].update(grid)
        con.execute("UPDATE experiments SET config = ? WHERE id = ?", (json.dumps(config), exp_id))


def test_a_config_that_no_longer_validates_is_counted_from_its_grid(tmp_path: Path) -> None:
    _invalid_config(tmp_path, seeds=[0, 1])
    with Store(tmp_path, create=False) as reader:
        summary = experiment_summaries(reader)[0]
    assert summary.jobs is None  # the plan cannot be rebuilt: the history shows "?"
    assert summary.planned == 6  # 2 seeds x (dense + 2 sparsities): what `experiments` shows
    assert summary.counts == {"done": 1, "running": 1, "failed": 1}


def test_a_grid_with_variants_says_so_and_counts_them_when_its_config_no_longer_validates(tmp_path: Path) -> None:
    _invalid_config(tmp_path, variants=["none", "shuffle"])
    with Store(tmp_path, create=False) as reader:
        first, second = experiment_summaries(reader)
    assert (first.grid, first.jobs, first.planned) == ("1x1x2x1x2v", None, 5)  # dense + 2 sparsities x 2 variants
    assert second.grid == "1x1x1x1"  # variants ["none"]: the grid reads as before


def test_load_results_reads_live_or_finished_curves_and_masks_on_demand(tmp_path: Path) -> None:
    store, exp_id, _ = written(tmp_path)
    live = load_results(store, exp_id)
    assert set(live.curves) == set(CURVE_METRICS)
    assert live.curves["train_acc"] == {("relu", "dense", "none", 0.0): [(1, 0.5), (2, 0.6)],
                                        ("relu", "magnitude", "none", 0.5): [(1, 0.7)]}
    assert [(run.target_sparsity, [layer.name for layer in layers]) for run, layers in live.masks] == [
        (0.5, ["fc.weight"])]
    assert [(c.method, c.target_sparsity, c.done, c.runs) for c in live.cells] == [
        ("dense", 0.0, 1, 1), ("magnitude", 0.5, 0, 1), ("magnitude", 0.8, 0, 1)]
    assert live.any_done and live.activations == ["relu"]

    report = load_results(store, exp_id, metrics=("train_acc",), include_running=False, masks=False)
    assert report.curves == {"train_acc": {("relu", "dense", "none", 0.0): [(1, 0.5), (2, 0.6)]}}
    assert report.masks == [] and report.cells == live.cells and report.numerics == live.numerics
    assert load_results(None, exp_id).cells == [] and load_results(store, None).curves == {}


@pytest.mark.parametrize("module", ["views", "views.progress", "views.results", "views.experiments"])
def test_every_read_side_module_is_documented(module: str) -> None:
    doc = importlib.import_module(f"lotto_engine.{module}").__doc__
    assert doc and len(doc.strip()) > 40


def test_every_status_has_a_style() -> None:
    assert set(STATUS_STYLE) == set(ORDER)


#: Two or more status names in one literal tuple, list or set: a status group spelled out.
STATUS = r'"(?:done|running|queued|failed|diverged|cancelled|pending)"'
GROUP = re.compile(rf"[(\[{{]\s*{STATUS}\s*,\s*{STATUS}")


def test_status_groups_are_spelled_only_in_statuses_py() -> None:
    sources = [*(ROOT / "src" / "lotto_tui").rglob("*.py"), *(ROOT / "engine" / "lotto_engine" / "views").rglob("*.py"),
               *(ROOT / "engine" / "lotto_engine").glob("export.py")]
    assert len(sources) > 15
    spelled = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in sources for m in GROUP.finditer(path.read_text())]
    assert spelled == []
    assert GROUP.search((ROOT / "engine" / "lotto_engine" / "statuses.py").read_text())  # the pattern finds them
