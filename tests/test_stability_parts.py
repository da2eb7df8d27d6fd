"""Stability D and its two companions: the floor (what the mask alone removes) and the
change of the kept weights.

What a user relies on: the three numbers are the formulas the README gives, computed
over all prunable weights as one vector; D splits exactly into the other two for a
retrained ticket (zero outside its mask); and every finished pruned run of a real
grid stores all three, read back from the store, while dense runs have none.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from lotto_engine.metrics import stability, stability_parts
from lotto_engine.runner import Runner
from lotto_engine.store import Store


def _split(dense, masks):
    """||W_dense * m||^2 / ||W_dense||^2: the kept weights' share of the dense norm."""
    kept = sum(float((dense[n].double() * masks[n].double()).pow(2).sum()) for n in dense)
    total = sum(float(dense[n].double().pow(2).sum()) for n in dense)
    return kept / total


def test_hand_computed_parts_on_two_small_tensors():
    # ||W_dense|| = sqrt(9 + 16 + 0 + 144) = 13
    dense = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[0.0, 12.0]])}
    masks = {"a": torch.tensor([True, False]), "b": torch.tensor([[True, True]])}
    pruned = {"a": torch.tensor([6.0, 0.0]), "b": torch.tensor([[0.0, 8.0]])}
    d, floor, kept = stability_parts(dense, pruned, masks)
    assert d == pytest.approx(math.sqrt(9 + 16 + 16) / 13, rel=1e-12)  # diff (-3, 4, 0, 4)
    assert floor == pytest.approx(4 / 13, rel=1e-12)  # the mask removes the 4
    assert kept == pytest.approx(math.sqrt(9 + 16) / math.sqrt(9 + 144), rel=1e-12)  # kept (3, 0, 12) moved by (-3, 0, 4)


def test_a_ticket_whose_kept_weights_never_moved_sits_on_its_floor():
    dense = {"w": torch.tensor([1.0, -2.0, 2.0, 0.5])}
    masks = {"w": torch.tensor([0, 1, 1, 0], dtype=torch.uint8)}  # any 0/1 mask dtype works
    pruned = {"w": dense["w"] * masks["w"]}
    d, floor, kept = stability_parts(dense, pruned, masks)
    assert kept == 0.0
    assert d == pytest.approx(floor, rel=1e-12)
    assert floor == pytest.approx(math.sqrt(1 + 0.25) / math.sqrt(1 + 4 + 4 + 0.25), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_d_splits_into_floor_and_kept_change_for_a_retrained_ticket(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"conv.weight": (4, 3, 3, 3), "fc.weight": (10, 36), "out.weight": (3, 10)}
    dense = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    masks = {n: torch.rand(s, generator=gen) > 0.3 + 0.1 * seed for n, s in shapes.items()}
    pruned = {n: (dense[n] + torch.randn(s, generator=gen) * 0.5) * masks[n] for n, s in shapes.items()}
    d, floor, kept = stability_parts(dense, pruned, masks)
    assert d == pytest.approx(stability(dense, pruned), rel=1e-12)
    assert d**2 == pytest.approx(floor**2 + kept**2 * _split(dense, masks), rel=1e-10)
    assert 0 < floor < d


def test_a_mask_that_keeps_nothing_has_no_kept_change():
    dense = {"w": torch.tensor([1.0, 2.0]), "v": torch.tensor([3.0])}
    masks = {"w": torch.zeros(2, dtype=torch.bool), "v": torch.zeros(1, dtype=torch.bool)}
    pruned = {"w": torch.zeros(2), "v": torch.zeros(1)}
    assert stability_parts(dense, pruned, masks) == (1.0, 1.0, None)


def test_inputs_that_do_not_match_are_refused():
    w = {"w": torch.ones(3)}
    with pytest.raises(ValueError, match="masks differ in names"):
        stability_parts(w, w, {"v": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="mask shape"):
        stability_parts(w, w, {"w": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="all zero"):
        stability_parts({"w": torch.zeros(3)}, w, {"w": torch.ones(3, dtype=torch.bool)})


@pytest.mark.slow  # ~2 s: a real grid, one dense and two pruned runs
def test_a_real_grid_stores_d_with_its_floor_and_kept_change(tmp_path):
    config = tiny_config('grid.methods=["magnitude","random"]')
    with Store(tmp_path / "store") as store:
        summary = Runner(config, store).run()
        assert summary.counts == {"done": 3}
        runs = store.runs(summary.experiment_id)
        dense_run = next(r for r in runs if r.kind == "dense")
        assert (dense_run.stability, dense_run.stability_floor, dense_run.kept_change) == (None, None, None)
        pruned_runs = [r for r in runs if r.kind == "pruned"]
        assert len(pruned_runs) == 2
        dense = store.load_tensors(dense_run.job_key, "dense")
        for run in pruned_runs:
            mask = store.load_tensors(run.job_key, "mask")
            final = store.load_tensors(run.job_key, "final")
            weights = {n: dense[n] for n in mask}
            # the stored numbers are the formulas over the stored tensors
            expected = stability_parts(weights, {n: final[n] for n in mask}, mask)
            assert (run.stability, run.stability_floor, run.kept_change) == pytest.approx(expected, rel=1e-12)
            # the ticket is zero outside its mask, so D splits exactly
            assert run.stability**2 == pytest.approx(
                run.stability_floor**2 + run.kept_change**2 * _split(weights, mask), rel=1e-9
            )
            # half the weights are cut: the floor is well above 0, the kept weights moved
            assert 0.1 < run.stability_floor < run.stability and run.kept_change > 0
