"""Seed statistics a researcher publishes: mean, sample std and the 95% CI half-width
(Student t, n-1) per grid point, checked against SciPy and NumPy (an independent
computation), in the results views and in the JSON export's ``"cells"``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import tiny_config
from lotto_engine.export import CELL_METRICS, export_experiment, to_json
from lotto_engine.runner import Runner
from lotto_engine.stats import EMPTY, seed_stat, t_cdf, t_quantile
from lotto_engine.store import Store
from lotto_engine.views.results import load_results, run_key


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 29, 30, 31, 100, 1000])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.025])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 6, 9])
def test_t_cdf_matches_scipy(df: int) -> None:
    for t in (-8.0, -1.3, 0.0, 0.4, 2.5, 40.0):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-13)


def test_textbook_t_values() -> None:
    """The 95% two-sided t values every statistics table prints."""
    for df, value in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert round(t_quantile(0.975, df), 3) == value


@pytest.mark.parametrize("values", [[0.9, 0.92, 0.95], [0.1, 0.1], [1.0, 3.0, 2.0, 7.5, 4.0], [5.0, 5.0, 5.0]])
def test_seed_stat_matches_numpy(values: list[float]) -> None:
    stat = seed_stat(values)
    n = len(values)
    std = float(np.std(values, ddof=1))
    assert stat.n == n
    assert stat.mean == pytest.approx(float(np.mean(values)), rel=1e-15)
    assert stat.std == pytest.approx(std, rel=1e-12, abs=1e-15)
    assert stat.ci95 == pytest.approx(scipy_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n), rel=1e-10, abs=1e-15)
    assert stat.lo == pytest.approx(stat.mean - stat.ci95)
    assert stat.hi == pytest.approx(stat.mean + stat.ci95)


def test_one_value_has_no_spread_and_none_values_are_skipped() -> None:
    one = seed_stat([0.5, None])
    assert (one.mean, one.std, one.ci95, one.n) == (0.5, None, None, 1)
    assert one.lo == one.hi == 0.5
    assert seed_stat([]) == seed_stat([None]) == EMPTY
    assert EMPTY.lo is None and EMPTY.hi is None


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished grid: relu, magnitude at 0.5, three seeds."""
    root = tmp_path_factory.mktemp("seeds")
    config = tiny_config("grid.seeds=[0,1,2]", f'run.store="{root}"')
    with Store(root) as store:
        summary = Runner(config, store).run()
    assert summary.ok
    return root


def test_cells_match_an_independent_computation(three_seeds: Path) -> None:
    """Every cell statistic equals NumPy/SciPy over the store's own run rows."""
    with Store(three_seeds, create=False) as store:
        exp = store.experiment()
        runs = store.runs(exp.id)
        data = load_results(store, exp.id, include_running=False)
    cells = {c.key: c for c in (*data.cells, *data.intermediate)}
    assert len(cells) == 2  # dense and magnitude 0.5
    for key, cell in cells.items():
        members = [r for r in runs if run_key(r) == key and r.status == "done"]
        assert cell.n == len(members) == 3
        for name in ("val_acc", "best_val_acc", "test_acc", "stability", "actual_sparsity"):
            values = [getattr(r, name) for r in members]
            stat = cell.stat(name)
            if values[0] is None:  # dense runs have no stability D
                assert stat == EMPTY
                continue
            std = float(np.std(values, ddof=1))
            assert stat.mean == pytest.approx(float(np.mean(values)), rel=1e-12)
            assert stat.std == pytest.approx(std, rel=1e-9, abs=1e-15)
            assert stat.ci95 == pytest.approx(scipy_stats.t.ppf(0.975, 2) * std / math.sqrt(3), rel=1e-9, abs=1e-15)
    pruned = cells[("relu", "magnitude", "none", 0.5)]
    assert data.is_best(pruned)  # the only pruned point at its sparsity
    assert not data.is_best(cells[("relu", "dense", "none", 0.0)])
    assert data.chance == pytest.approx(0.1)
    assert not pruned.mixed_numerics


def test_curve_bands_are_the_ci_around_the_mean(three_seeds: Path) -> None:
    with Store(three_seeds, create=False) as store:
        exp = store.experiment()
        data = load_results(store, exp.id, include_running=False)
        runs = [r for r in store.runs(exp.id) if r.kind == "dense"]
        curves = [store.curve(r.id) for r in runs]
    key = ("relu", "dense", "none", 0.0)
    band = data.bands["val_acc"][key]
    mean = data.curves["val_acc"][key]
    assert [e for e, _, _ in band] == [e for e, _ in mean] == [m.epoch for m in curves[0]]
    for i, (epoch, lo, hi) in enumerate(band):
        values = [c[i].val_acc for c in curves]
        half = scipy_stats.t.ppf(0.975, 2) * float(np.std(values, ddof=1)) / math.sqrt(3)
        assert mean[i][1] == pytest.approx(float(np.mean(values)), rel=1e-12)
        assert (lo, hi) == pytest.approx((mean[i][1] - half, mean[i][1] + half), rel=1e-9, abs=1e-12)


def test_json_export_has_one_cell_per_grid_point(three_seeds: Path) -> None:
    with Store(three_seeds, create=False) as store:
        data = json.loads(to_json(export_experiment(store)))
    cells = {(c["activation"], c["method"], c["variant"], c["target_sparsity"]): c for c in data["cells"]}
    assert set(cells) == {("relu", "dense", "none", 0.0), ("relu", "magnitude", "none", 0.5)}
    runs = data["runs"]
    for (activation, method, variant, target), cell in cells.items():
        members = [r for r in runs if (r["activation"], r["method"], r["variant"], r["target_sparsity"])
                   == (activation, method, variant, target) and r["status"] == "done"]
        assert cell["n"] == len(members) == 3
        for name in CELL_METRICS:
            assert set(cell[name]) == {"mean", "std", "ci95"}
        values = [r["test_acc"] for r in members]
        assert cell["test_acc"]["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
        assert cell["test_acc"]["std"] == pytest.approx(float(np.std(values, ddof=1)), rel=1e-9, abs=1e-15)
    assert cells[("relu", "dense", "none", 0.0)]["stability"] == {"mean": None, "std": None, "ci95": None}


def test_json_export_single_seed_has_null_spread(tmp_path: Path) -> None:
    config = tiny_config(f'run.store="{tmp_path}"')
    with Store(tmp_path) as store:
        assert Runner(config, store).run().ok
        data = json.loads(to_json(export_experiment(store)))
    for cell in data["cells"]:
        assert cell["n"] == 1
        assert cell["val_acc"]["std"] is None and cell["val_acc"]["ci95"] is None
        assert isinstance(cell["val_acc"]["mean"], float)


def test_layer_stats_average_each_layer_over_seeds(three_seeds: Path) -> None:
    with Store(three_seeds, create=False) as store:
        exp = store.experiment()
        data = load_results(store, exp.id, include_running=False)
        per_run = [store.layers(r.id) for r in store.runs(exp.id) if r.kind == "pruned"]
    stats = data.layer_stats[("relu", "magnitude", "none", 0.5)]
    assert list(stats) == [layer.name for layer in per_run[0]]
    for i, name in enumerate(stats):
        values = [layers[i].sparsity for layers in per_run]
        assert stats[name].n == 3
        assert stats[name].mean == pytest.approx(float(np.mean(values)), rel=1e-12)


def test_json_export_says_where_the_numbers_came_from(three_seeds: Path) -> None:
    """The experiment's provenance (one record per invocation) and each run's."""
    with Store(three_seeds, create=False) as store:
        data = json.loads(to_json(export_experiment(store)))
    assert len(data["provenance"]) == 1
    record = data["provenance"][0]
    assert record["dataset"] == "digits" and record["data_files"] and record["torch"]
    for run in data["runs"]:
        assert run["provenance"]["torch"] == record["torch"]
        assert run["provenance"]["threads"] == run["numerics"]["threads"] == 1
        if run["method"] == "dense":
            assert run["stability_floor"] is None and run["kept_change"] is None
        else:
            assert 0 < run["stability_floor"] <= run["stability"]


def test_the_best_point_is_chosen_on_validation_and_never_among_nets_that_did_not_train() -> None:
    from lotto_engine.views.results import Cell, best_points

    def cell(method: str, val: float, test: float, flagged: int = 0, sparsity: float = 0.5) -> Cell:
        return Cell("relu", method, sparsity, runs=3, done=3, val_acc=val, best_val_acc=val, test_acc=test,
                    actual_sparsity=sparsity, stability=0.5, statuses=("done",), flagged=flagged)

    cells = [cell("dense", 0.99, 0.99, sparsity=0.0), cell("magnitude", 0.90, 0.80), cell("grasp", 0.85, 0.95),
             cell("random", 0.90, 0.70),  # a tie on validation: both marked
             cell("magnitude", 0.11, 0.1, flagged=3, sparsity=0.9), cell("grasp", 0.10, 0.1, flagged=3, sparsity=0.9),
             cell("random", 0.30, 0.3, flagged=1, sparsity=0.9)]
    assert best_points(cells) == {("relu", "magnitude", "none", 0.5), ("relu", "random", "none", 0.5),
                                  ("relu", "random", "none", 0.9)}
    assert best_points(cells[4:6]) == frozenset()  # every net at chance: no best


def test_two_experiments_are_compared_point_by_point_as_b_minus_a() -> None:
    from lotto_engine.views.results import Cell, ResultsData, compare_results, summarize

    def run(i: int, method: str, sparsity: float, val: float):  # type: ignore[no-untyped-def]
        from lotto_engine.records import RunRecord

        return RunRecord(i, 1, f"k{i}", "pruned", "relu", method, sparsity, 0, "done", 1, val, val, val,
                         sparsity, 0.5, 1.0, None, "t", "t")

    a = ResultsData(1, cells=summarize([run(1, "magnitude", 0.5, 0.9), run(2, "grasp", 0.5, 0.8)]))
    b = ResultsData(2, cells=summarize([run(3, "grasp", 0.5, 0.85), run(4, "random", 0.5, 0.7)]))
    points = compare_results(a, b)
    assert [(p.key[1], p.a is not None, p.b is not None) for p in points] == [
        ("magnitude", True, False), ("grasp", True, True), ("random", False, True)]
    assert points[1].difference("val_acc") == pytest.approx(0.05)
    assert points[0].difference("val_acc") is None and points[2].difference("test_acc") is None
    assert isinstance(points[0].a, Cell)
