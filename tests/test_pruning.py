"""Pruning masks must be exactly the science the write-up describes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lotto_engine.config import ModelConfig
from lotto_engine.metrics import mask_sparsity, stability
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks, masks_from_scores, prunable_names

SHAPE = (1, 8, 8)


def small_cnn(activation: str = "relu", seed: int = 0) -> nn.Module:
    return build_model(ModelConfig(width=4, hidden=16), SHAPE, 10, activation, seed)


def batch(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.arange(n) % 10


def test_prunable_weights_are_conv_and_linear_weights_only():
    model = small_cnn()
    names = prunable_names(model)
    assert names == ["conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "fc1.weight", "classifier.weight"]
    assert "classifier.weight" not in prunable_names(model, exclude_classifier=True)
    masks = compute_masks(model, "magnitude", 0.5)
    assert set(masks) == set(names)
    assert all(m.dtype == torch.bool and m.shape == dict(model.named_parameters())[n].shape for n, m in masks.items())


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.333, 0.07])
def test_global_magnitude_masks_equal_torch_prune_global_unstructured(sparsity):
    model = small_cnn(seed=3)
    masks = compute_masks(model, "magnitude", sparsity)

    reference = small_cnn(seed=3)
    modules = dict(reference.named_modules())
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in prunable_names(reference)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    for name in prunable_names(reference):
        expected = getattr(modules[name.rsplit(".", 1)[0]], "weight_mask").bool()
        assert torch.equal(masks[name], expected), name


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_layerwise_magnitude_masks_equal_torch_prune_per_layer(sparsity):
    model = small_cnn(seed=4)
    masks = compute_masks(model, "magnitude", sparsity, scope="layerwise")
    reference = small_cnn(seed=4)
    modules = dict(reference.named_modules())
    for name in prunable_names(reference):
        module = modules[name.rsplit(".", 1)[0]]
        prune.l1_unstructured(module, "weight", amount=sparsity)
        assert torch.equal(masks[name], module.weight_mask.bool()), name


def test_pruned_count_is_python_round_of_sparsity_times_n():
    model = small_cnn()
    n = sum(p.numel() for name, p in model.named_parameters() if name in prunable_names(model))
    for sparsity in (0.5, 0.8, 0.9, 0.123):
        masks = compute_masks(model, "magnitude", sparsity)
        removed = sum(int((~m).sum()) for m in masks.values())
        assert removed == round(sparsity * n)


def _tie_rule(scores: dict[str, torch.Tensor], k: int, seed: int) -> set[int]:
    """The documented rule, written out: rank by (score, tie rank), weight perm[j] has rank j."""
    flat = torch.cat([s.flatten() for s in scores.values()]).tolist()
    perm = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed)).tolist()
    rank = {i: j for j, i in enumerate(perm)}
    return set(sorted(range(len(flat)), key=lambda i: (flat[i], rank[i]))[:k])


def test_exact_mode_breaks_ties_by_a_seeded_random_order():
    scores = {"a.weight": torch.tensor([1.0, 0.0, 0.0, 3.0]), "b.weight": torch.tensor([[0.0, 2.0], [0.0, 0.0]])}
    seen = set()
    for seed in range(12):
        masks = masks_from_scores(scores, 0.5, seed=seed)  # remove 4 of the five tied zeros
        removed = torch.cat([(~m).flatten() for m in masks.values()])
        assert int(removed.sum()) == 4
        assert set(removed.nonzero().flatten().tolist()) == _tie_rule(scores, 4, seed)
        assert all(torch.equal(masks[n], masks_from_scores(scores, 0.5, seed=seed)[n]) for n in masks)
        seen.add(tuple(removed.tolist()))
    assert len(seen) > 1  # which zero survives depends on the seed, not on the layer order

    # layerwise: one permutation per tensor, drawn in the mapping's order from one generator
    masks = masks_from_scores(scores, 0.5, scope="layerwise", seed=5)
    gen = torch.Generator().manual_seed(5)
    for name, s in scores.items():
        perm = torch.randperm(s.numel(), generator=gen).tolist()
        flat = s.flatten().tolist()
        k = round(0.5 * s.numel())
        expected = sorted(range(len(flat)), key=lambda i: (flat[i], perm.index(i)))[:k]
        assert sorted((~masks[name]).flatten().nonzero().flatten().tolist()) == sorted(expected), name


@pytest.mark.parametrize("seed", [0, 1, 9])
def test_tie_free_masks_do_not_depend_on_the_tie_seed(seed):
    model = small_cnn(seed=3)
    masks = compute_masks(model, "magnitude", 0.6, seed=seed)
    reference = small_cnn(seed=3)
    modules = dict(reference.named_modules())
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in prunable_names(reference)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.6)
    for name in prunable_names(reference):
        assert torch.equal(masks[name], modules[name.rsplit(".", 1)[0]].weight_mask.bool()), name


def test_threshold_mode_keeps_every_weight_tied_at_tau():
    scores = {"w": torch.tensor([0.0] * 8 + [1.0, 2.0])}
    exact = masks_from_scores(scores, 0.8, tie_mode="exact")
    threshold = masks_from_scores(scores, 0.8, tie_mode="threshold")
    assert int((~exact["w"]).sum()) == 8
    # tau_k is the 2nd largest score (1.0): nothing tied there, same result
    assert torch.equal(exact["w"], threshold["w"])
    # keep 3 -> tau_k = 0.0, and all eight zeros tie with it: nothing is removed
    loose = masks_from_scores(scores, 0.7, tie_mode="threshold")
    assert bool(loose["w"].all())
    assert mask_sparsity(loose)[0] == 0.0


def test_grasp_score_matches_a_direct_autograd_computation():
    model = small_cnn("tanh", seed=5)
    x, y = batch(40)
    names = prunable_names(model)
    params = dict(model.named_parameters())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    grasp = {n: -params[n].detach() * g.pow(2) for n, g in zip(names, grads)}
    # Wang et al.: remove the HIGHEST -w*g^2, i.e. keep score = w*g^2.
    expected = masks_from_scores({n: -s for n, s in grasp.items()}, 0.8)

    # The data may come in several batches: the gradient is of the mean over all of them.
    masks = compute_masks(model, "grasp", 0.8, data=[(x[:15], y[:15]), (x[15:], y[15:])])
    for n in names:
        assert torch.equal(masks[n], expected[n]), n
    flat = torch.cat([grasp[n].flatten() for n in names])
    removed = torch.cat([(~masks[n]).flatten() for n in names])
    assert flat[removed].min() >= flat[~removed].max()


def test_compute_masks_leaves_weights_gradients_and_mode_untouched():
    model = small_cnn()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(20)
    for method in ("magnitude", "grasp", "random"):
        compute_masks(model, method, 0.5, data=[(x, y)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_grasp_on_relu_ties_show_up_in_threshold_mode_only():
    # A ReLU net whose hidden units are dead for this data has many zero gradients:
    # -w*g^2 is exactly 0 there, so the literal rule keeps all of them.
    model = small_cnn("relu", seed=0)
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # every fc1 unit dead -> fc1 and classifier gradients zero
    x, y = batch(30)
    exact = compute_masks(model, "grasp", 0.9, data=[(x, y)], tie_mode="exact")
    loose = compute_masks(model, "grasp", 0.9, data=[(x, y)], tie_mode="threshold")
    n = sum(m.numel() for m in exact.values())
    assert sum(int((~m).sum()) for m in exact.values()) == round(0.9 * n)
    assert mask_sparsity(loose)[0] < 0.5


def test_random_masks_are_seeded():
    model = small_cnn()
    a = compute_masks(model, "random", 0.5, seed=1)
    b = compute_masks(model, "random", 0.5, seed=1)
    c = compute_masks(model, "random", 0.5, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_stability_is_relative_l2_distance_over_all_given_weights():
    dense = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 4.0]])}
    pruned = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[0.0, 4.0]])}
    assert stability(dense, pruned) == pytest.approx(3.0 / 5.0)
    assert stability(dense, dense) == 0.0
    with pytest.raises(ValueError):
        stability(dense, {"a": pruned["a"]})


def test_mask_sparsity_reports_global_and_per_layer():
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True])}
    total, layers = mask_sparsity(masks)
    assert total == pytest.approx(0.5)
    assert [(layer.name, layer.numel, layer.kept, layer.sparsity) for layer in layers] == [
        ("a", 4, 1, 0.75), ("b", 2, 2, 0.0)
    ]
