"""The reviewer's baselines as runs of a grid: iterative magnitude pruning (imp) level
by level, the sanity-check variants, late rewinding, and job keys that never reuse
runs made under the old tie rule.

Each expectation is computed here, from the saved tensors, by code of the test's own
(a sort, a comparison), not by the engine's pruning functions.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from lotto_engine import plan as plan_module
from lotto_engine.events import JobFinished
from lotto_engine.models import build_model
from lotto_engine.plan import build_plan, imp_levels
from lotto_engine.protocol.jobs import variant_seed
from lotto_engine.runner import Runner
from lotto_engine.store import Store

IMP = ('grid.methods=["imp"]', "grid.sparsities=[0.5, 0.8]", "prune.fraction_per_level=0.5")


def run(tmp_path: Path, *extra: str, name: str = "store", cancel_after: str | None = None):
    """Run a tiny grid; returns (store root, experiment id, the latest run per job label)."""
    config = tiny_config(*extra)
    cancel = threading.Event()

    def on_event(event):
        if cancel_after is not None and isinstance(event, JobFinished) and event.job.label == cancel_after:
            cancel.set()

    root = tmp_path / name
    with Store(root) as store:
        runner = Runner(config, store, on_event=on_event, cancel=cancel)
        summary = runner.run()
        labels = {job.key: job.label for job in runner.plan}
        runs = {labels[r.job_key]: r for r in store.runs(summary.experiment_id) if r.job_key in labels}
    return root, summary, runs, runner.plan


def tensors(root: Path, key: str, name: str) -> dict[str, torch.Tensor]:
    with Store(root, create=False) as store:
        return store.load_tensors(key, name)


def keep_largest(weights: dict[str, torch.Tensor], allowed: dict[str, torch.Tensor], n_remove: int) -> dict[str, torch.Tensor]:
    """The test's own magnitude cut: among the allowed weights keep the largest |w| so
    that ``n_remove`` of all weights are removed (the disallowed ones count)."""
    names = list(weights)
    flat = torch.cat([weights[n].abs().reshape(-1).double() for n in names])
    ok = torch.cat([allowed[n].reshape(-1) for n in names])
    n_keep = flat.numel() - n_remove
    candidates = [i for i in range(flat.numel()) if ok[i]]
    candidates.sort(key=lambda i: -float(flat[i]))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[candidates[:n_keep]] = True
    out, start = {}, 0
    for n in names:
        out[n] = keep[start : start + weights[n].numel()].view_as(weights[n])
        start += weights[n].numel()
    return out


# ------------------------------------------------------------------ imp


def test_imp_levels_follow_the_fraction_and_land_on_every_grid_sparsity():
    def own(grid, f):
        out, s = [], 0.0
        for target in sorted(grid):
            while 1 - (1 - s) * (1 - f) < target - 1e-12:
                s = 1 - (1 - s) * (1 - f)
                out.append(s)
            s = target
            out.append(s)
        return out

    for grid, f in (([0.5, 0.8, 0.9], 0.2), ([0.3], 0.5), ([0.9, 0.1], 0.2), ([0.5, 0.75], 0.5)):
        levels = imp_levels(grid, f)
        assert levels == own(grid, f)
        assert all(a < b for a, b in zip(levels, levels[1:]))
        assert [s for s in levels if s in grid] == sorted(grid)  # the grid's own floats, each once
    assert len(imp_levels([0.5, 0.8, 0.9], 0.2)) == 13
    # 0.5 -> 0.75 is exactly one level of 0.5, and lands on the grid's 0.75
    assert imp_levels([0.5, 0.75], 0.5) == [0.5, 0.75]


def test_imp_is_a_chain_of_jobs_whose_variants_sit_at_grid_sparsities():
    config = tiny_config(*IMP, 'grid.variants=["none", "shuffle"]')
    jobs = [job for job in build_plan(config) if job.kind == "pruned"]
    chain = [job for job in jobs if job.variant == "none"]
    assert [(job.level, job.sparsity) for job in chain] == [(1, 0.5), (2, 0.75), (3, 0.8)]
    dense = next(job for job in build_plan(config) if job.kind == "dense")
    assert [job.parent for job in chain] == [dense.key, chain[0].key, chain[1].key]
    assert {job.dense for job in jobs} == {dense.key}
    shuffles = [job for job in jobs if job.variant == "shuffle"]
    assert [(job.level, job.sparsity, job.parent) for job in shuffles] == [(1, 0.5, dense.key), (3, 0.8, chain[1].key)]
    assert not [job for job in jobs if job.variant == "invert"]  # not asked for


@pytest.mark.slow
def test_each_imp_level_removes_by_magnitude_of_the_previous_levels_trained_weights(tmp_path):
    root, summary, runs, plan = run(tmp_path, *IMP)
    assert summary.ok and summary.counts == {"done": 4}
    chain = [job for job in plan if job.kind == "pruned"]
    dense = next(job for job in plan if job.kind == "dense")
    previous_final = tensors(root, dense.key, "dense")
    previous_mask = None
    for job in chain:
        mask = tensors(root, job.key, "mask")
        weights = {n: previous_final[n] for n in mask}
        allowed = previous_mask or {n: torch.ones_like(m) for n, m in mask.items()}
        n = sum(m.numel() for m in mask.values())
        expected = keep_largest(weights, allowed, round(job.sparsity * n))
        assert all(torch.equal(mask[k], expected[k]) for k in mask), job.label
        removed = sum(int((~m).sum()) for m in mask.values())
        assert removed == round(job.sparsity * n)
        if previous_mask is not None:  # nested: a pruned weight stays pruned
            assert all(not bool((m & ~previous_mask[k]).any()) for k, m in mask.items())
        final = tensors(root, job.key, "final")
        assert all(not bool(final[k][~m].any()) for k, m in mask.items())  # survivors only
        record = runs[job.label]
        assert (record.level, record.variant, record.target_sparsity) == (job.level, "none", job.sparsity)
        assert record.actual_sparsity == pytest.approx(removed / n)
        previous_final, previous_mask = final, mask


@pytest.mark.slow
def test_an_interrupted_imp_chain_continues_and_a_lost_level_trains_again(tmp_path):
    _, _, straight, _ = run(tmp_path, *IMP, name="straight")
    root, summary, first, plan = run(tmp_path, *IMP, name="stopped", cancel_after="relu imp s=0.5 L1 seed=0")
    assert summary.cancelled and first["relu imp s=0.5 L1 seed=0"].status == "done"
    assert "relu imp s=0.8 L3 seed=0" not in first
    level1 = next(job for job in plan if job.level == 1)
    (root / "artifacts" / level1.key / "final.safetensors").unlink()  # level 2 needs it
    _, summary, again, _ = run(tmp_path, *IMP, name="stopped")
    assert summary.ok and summary.counts == {"done": 4}
    assert again["relu imp s=0.5 L1 seed=0"].attempt == 2
    for label, record in straight.items():
        assert (again[label].val_acc, again[label].test_acc, again[label].stability) == (
            record.val_acc, record.test_acc, record.stability), label


# ------------------------------------------------------------------ variants

VARIANTS = ('grid.variants=["none", "shuffle", "reinit", "invert"]',)


def test_variants_are_their_own_jobs_and_runs(tmp_path):
    root, summary, runs, plan = run(tmp_path, *VARIANTS)
    assert summary.ok and summary.counts == {"done": 5}
    pruned = {job.variant: job for job in plan if job.kind == "pruned"}
    assert len({job.key for job in pruned.values()}) == 4
    masks = {v: tensors(root, job.key, "mask") for v, job in pruned.items()}
    plain = masks["none"]
    n = sum(m.numel() for m in plain.values())
    assert n % 2 == 0
    # invert at 0.5 with even N and no ties: the exact complement of the method's mask
    assert all(torch.equal(masks["invert"][k], ~plain[k]) for k in plain)
    # shuffle: each layer keeps its count, but not its positions
    assert all(int(masks["shuffle"][k].sum()) == int(plain[k].sum()) for k in plain)
    assert any(not torch.equal(masks["shuffle"][k], plain[k]) for k in plain)
    # reinit: the method's own mask, on other weights
    assert all(torch.equal(masks["reinit"][k], plain[k]) for k in plain)
    for variant, job in pruned.items():
        record = runs[job.label]
        assert record.variant == variant and record.level is None and record.status == "done"


def test_reinit_trains_the_same_mask_from_weights_of_another_seed(tmp_path, monkeypatch):
    import lotto_engine.protocol.jobs as jobs

    starts = []
    real_train = jobs.train

    def recording_train(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(jobs, "train", recording_train)
    config = tiny_config(*VARIANTS)
    root, _, _, plan = run(tmp_path, *VARIANTS)
    dense = next(job for job in plan if job.kind == "dense")
    theta0 = tensors(root, dense.key, "theta0")
    order = [job for job in plan]  # one job at a time, in plan order
    reinit = next(i for i, job in enumerate(order) if job.variant == "reinit")
    start = starts[reinit]
    fresh_seed = variant_seed(0, "reinit")
    assert fresh_seed != 0
    fresh = build_model(config.model, (1, 8, 8), 10, "relu", fresh_seed).state_dict()
    plain = next(i for i, job in enumerate(order) if job.kind == "pruned" and job.variant == "none")
    assert all(torch.equal(starts[plain][k], theta0[k]) for k in theta0)  # the ticket: theta0
    for k, w in fresh.items():
        assert torch.equal(start[k], w), k  # masking happens inside train
        assert not torch.equal(start[k], theta0[k]) or not w.any(), k  # zero biases are alike


def test_imp_inverted_is_a_chain_that_removes_the_largest_magnitudes_at_every_level(tmp_path):
    root, summary, runs, plan = run(tmp_path, *IMP, 'grid.variants=["none", "invert", "reinit"]')
    assert summary.ok
    assert sorted((r.level, r.variant) for r in runs.values() if r.kind == "pruned") == [
        (1, "invert"), (1, "none"), (1, "reinit"), (2, "invert"), (2, "none"), (3, "invert"), (3, "none"),
        (3, "reinit")]
    dense = next(job for job in plan if job.kind == "dense")
    inverted = [job for job in plan if job.variant == "invert"]
    assert [job.parent for job in inverted] == [dense.key, inverted[0].key, inverted[1].key]
    previous_final = tensors(root, dense.key, "dense")
    previous_mask = None
    for job in inverted:
        mask = tensors(root, job.key, "mask")
        names = list(mask)
        n = sum(m.numel() for m in mask.values())
        flat = torch.cat([previous_final[k].abs().reshape(-1) for k in names])
        ok = torch.cat([(previous_mask[k] if previous_mask else torch.ones_like(mask[k])).reshape(-1) for k in names])
        kept = torch.cat([mask[k].reshape(-1) for k in names])
        assert int(kept.sum()) == n - round(job.sparsity * n), job.label
        assert not bool((kept & ~ok).any()), job.label  # nested in the inverted chain
        # the smallest magnitudes stay: every kept one is below every removed candidate
        assert float(flat[kept].max()) <= float(flat[ok & ~kept].min()), job.label
        previous_final, previous_mask = tensors(root, job.key, "final"), mask


# ------------------------------------------------------------------ late rewinding


def test_late_rewinding_goes_on_with_the_dense_runs_schedule_and_data_order(tmp_path):
    """A pruned run rewound to epoch 1 that removes no weight (0.0001 of ~1.7k rounds
    to 0), trained with plain SGD (no optimizer state to lose), is the dense run's
    epochs 2..3 again: same lr, same batches, same numbers."""
    extra = ("prune.rewind=\"epoch:1\"", "train.dense_epochs=3", "train.pruned_epochs=2", "train.momentum=0.0",
             'train.lr_schedule="cosine"', "grid.sparsities=[0.0001]")
    root, summary, runs, plan = run(tmp_path, *extra)
    assert summary.ok
    with Store(root, create=False) as store:
        dense_curve = store.curve(runs["relu dense seed=0"].id)
        pruned_curve = store.curve(runs["relu magnitude s=0.0001 seed=0"].id)
    config = tiny_config(*extra)
    lr = config.train.lr
    assert [m.lr for m in pruned_curve] == pytest.approx(
        [lr * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2)], rel=1e-12)
    assert [(m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in pruned_curve] == [
        (m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in dense_curve[1:]]
    assert [m.epoch for m in pruned_curve] == [1, 2]
    dense = next(job for job in plan if job.kind == "dense")
    final = tensors(root, next(job for job in plan if job.kind == "pruned").key, "final")
    trained = tensors(root, dense.key, "dense")
    assert all(torch.equal(final[k], trained[k]) for k in trained)


# ------------------------------------------------------------------ job keys


def test_runs_made_under_the_previous_engine_version_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_module, "ENGINE_VERSION", 1)
    _, _, old, _ = run(tmp_path)
    monkeypatch.undo()
    _, summary, runs, _ = run(tmp_path)
    assert summary.ok and runs.keys() == old.keys()
    # every job trained again, into its own new row
    assert all(r.reused_from is None and r.id not in {o.id for o in old.values()} for r in runs.values())


# ------------------------------------------------------------------ presets and defaults


def test_the_reviewer_preset_asks_for_every_method_variant_and_imp_level():
    from lotto_engine.config import load_config

    config = load_config(preset="reviewer")
    jobs = build_plan(config).jobs
    # per (activation, seed): 1 dense + 7 one-shot methods x 3 sparsities x 4 variants
    # + 13 imp levels + 13 inverted imp levels + 3 imp landings x (shuffle, reinit)
    assert len(jobs) == 9 * (1 + 7 * 3 * 4 + 13 + 13 + 3 * 2) == 1053
    assert {job.method for job in jobs} == {"dense", *config.grid.methods}
    assert {job.variant for job in jobs} == {"none", "shuffle", "reinit", "invert"}
    assert len({job.key for job in jobs}) == len(jobs)


def test_compute_masks_defaults_are_the_configs():
    import inspect

    from lotto_engine.config import PruneConfig
    from lotto_engine.pruning import compute_masks

    defaults = inspect.signature(compute_masks).parameters
    assert defaults["temperature"].default == PruneConfig().grasp_temperature == 200
    assert defaults["rounds"].default == PruneConfig().rounds == 100


def test_a_pruned_key_changes_only_with_what_its_method_reads():
    from lotto_engine.plan import pruned_key

    base = tiny_config()

    def key(method, *extra):
        return pruned_key(tiny_config(*extra), "parent", method, 0.5)

    assert key("synflow") != key("synflow", "prune.rounds=10")
    assert key("synflow") == key("synflow", "prune.grasp_temperature=50")
    assert key("grasp-hessian") != key("grasp-hessian", "prune.grasp_temperature=50")
    assert key("magnitude") == key("magnitude", "prune.rounds=10", "prune.score_samples=3")
    assert key("snip") != key("snip", "prune.score_samples=3")
    assert key("magnitude") != key("magnitude", 'prune.tie_mode="threshold"')
    assert pruned_key(base, "p", "magnitude", 0.5, variant="shuffle") != pruned_key(base, "p", "magnitude", 0.5)
