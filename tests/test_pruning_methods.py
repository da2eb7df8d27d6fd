"""Each pruning method against an independent computation written here.

Exact mask comparisons use float64 models, so the engine's and the reference's
different summation orders cannot flip a rank at the cut.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lotto_engine.config import ModelConfig
from lotto_engine.models import build_model, classifier_name
from lotto_engine.pruning import compute_masks, masks_from_scores, prunable_names, shuffle_masks
from lotto_engine.scores import METHODS, Scorer, ScoreInputs

SHAPE = (1, 8, 8)


def small_cnn(activation: str = "relu", seed: int = 0) -> nn.Module:
    return build_model(ModelConfig(width=4, hidden=16), SHAPE, 10, activation, seed)


def batch(n: int = 40, seed: int = 1, shape: tuple[int, ...] = SHAPE, classes: int = 10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.arange(n) % classes


def mlp(*sizes: int, act: type[nn.Module] = nn.Tanh, seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    """Linear layers with ``act`` between them; PyTorch's default init (nonzero biases)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b)] + ([act()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers).to(dtype)


def flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].flatten() for n in names])


def removed_set(masks: dict[str, torch.Tensor], names: list[str]) -> set[int]:
    return set((~flat(masks, names)).nonzero().flatten().tolist())


def lowest(keep_scores: torch.Tensor, k: int) -> set[int]:
    """Indices of the k lowest keep scores; the test asserts there are no ties."""
    values = keep_scores.tolist()
    assert len(set(values)) == len(values), "reference scores must be tie-free"
    return set(sorted(range(len(values)), key=values.__getitem__)[:k])


def n_removed(masks: dict[str, torch.Tensor]) -> int:
    return sum(int((~m).sum()) for m in masks.values())


def rank_cut(scores: list[float], allowed: list[bool], k: int, seed: int) -> set[int]:
    """The documented exact cut: rank by (allowed, score, tie rank), remove the first k."""
    perm = torch.randperm(len(scores), generator=torch.Generator().manual_seed(seed)).tolist()
    tie_rank = {i: j for j, i in enumerate(perm)}
    order = sorted(range(len(scores)), key=lambda i: (allowed[i], scores[i], tie_rank[i]))
    return set(order[:k])


# ---------------------------------------------------------------------- snip


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_snip_masks_equal_an_independent_functional_gradient(sparsity):
    model = small_cnn("tanh", seed=2).double()
    x, y = batch(30)
    x = x.double()
    names = prunable_names(model)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(weights):
        return F.cross_entropy(torch.func.functional_call(model, {**params, **weights}, (x,)), y)

    grads = torch.func.grad(loss)({n: params[n] for n in names})
    keep = flat({n: (grads[n] * params[n]).abs() for n in names}, names)
    masks = compute_masks(model, "snip", sparsity, data=[(x[:11], y[:11]), (x[11:], y[11:])])
    assert removed_set(masks, names) == lowest(keep, round(sparsity * keep.numel()))
    assert all(p.grad is None for p in model.parameters())


def test_gradient_methods_need_data():
    for method in ("snip", "grasp", "grasp-hessian"):
        with pytest.raises(ValueError, match="needs data"):
            compute_masks(small_cnn(), method, 0.5)


# ---------------------------------------------------------------------- grasp-hessian


def tiny_mlp_loss(sizes, flat_w, net, x, y, temperature):
    """The tempered mean cross-entropy of ``net`` as a function of its flattened weights."""
    w1 = flat_w[: sizes[0]].view_as(net[0].weight)
    w2 = flat_w[sizes[0] :].view_as(net[2].weight)
    h = torch.tanh(x @ w1.T + net[0].bias.detach())
    return F.cross_entropy((h @ w2.T + net[2].bias.detach()) / temperature, y)


@pytest.mark.parametrize("temperature", [200.0, 1.0])
@pytest.mark.parametrize("exclude_classifier", [False, True])
def test_grasp_hessian_equals_full_hessian_times_gradient(temperature, exclude_classifier):
    net = mlp(6, 5, 3, seed=4)
    assert classifier_name(net) == "2"
    names = prunable_names(net, exclude_classifier=exclude_classifier)
    assert names == (["0.weight"] if exclude_classifier else ["0.weight", "2.weight"])
    x, y = batch(24, seed=3, shape=(6,), classes=3)
    x = x.double()
    sizes = (net[0].weight.numel(), net[2].weight.numel())
    theta = torch.cat([net[0].weight.detach().flatten(), net[2].weight.detach().flatten()])

    def f(w):
        return tiny_mlp_loss(sizes, w, net, x, y, temperature)

    g = torch.autograd.functional.jacobian(f, theta)
    hessian = torch.autograd.functional.hessian(f, theta)
    assert hessian.shape == (45, 45)
    grasp = -theta * (hessian @ g)  # Wang et al.: remove the highest
    keep = -grasp[: sizes[0]] if exclude_classifier else -grasp

    data = [(x[:10], y[:10]), (x[10:], y[10:])]
    scores = METHODS.get("grasp-hessian").fn(
        ScoreInputs(model=net, names=tuple(names), data=data, temperature=temperature)
    )
    assert torch.allclose(flat(scores, names), keep, rtol=1e-9, atol=1e-12 * keep.abs().max().item())
    for sparsity in (0.2, 0.5, 0.9):
        masks = compute_masks(net, "grasp-hessian", sparsity, data=data, temperature=temperature,
                              exclude_classifier=exclude_classifier)
        assert removed_set(masks, names) == lowest(keep, round(sparsity * keep.numel()))


def test_grasp_hessian_leaves_model_untouched_and_runs_on_a_cnn():
    model = small_cnn("relu", seed=1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(16)
    masks = compute_masks(model, "grasp-hessian", 0.7, data=[(x, y)])
    assert n_removed(masks) == round(0.7 * sum(m.numel() for m in masks.values()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training


# ---------------------------------------------------------------------- synflow


def relu_mlp_synflow_scores(net: nn.Sequential, masks: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Closed form: with |params| and a ones input every pre-activation is > 0, ReLU is
    the identity, so dS/dW_l = outer(backward vector, forward vector)."""
    linears = [(i, m) for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    ws, bs = [], []
    for i, m in linears:
        w = m.weight.detach().double().abs()
        if masks is not None:
            w = w * masks[f"{i}.weight"].double()
        ws.append(w)
        bs.append(m.bias.detach().double().abs())
    forward = [torch.ones(ws[0].shape[1], dtype=torch.float64)]
    for w, b in zip(ws, bs):
        forward.append(w @ forward[-1] + b)
    assert all(bool((a > 0).all()) for a in forward[1:])  # the closed form's premise
    backward = [torch.ones(ws[-1].shape[0], dtype=torch.float64)]
    for w in reversed(ws[1:]):
        backward.insert(0, w.T @ backward[0])
    return {
        f"{i}.weight": (w * torch.outer(v, a)).abs()
        for (i, _), w, v, a in zip(linears, ws, backward, forward[:-1])
    }


def reference_synflow(score_fn, names, sparsity, rounds, seed=0, invert=False):
    """My own iterative loop: nested masks at density d**(t/T), exact counts."""
    masks = None
    d = 1.0 - sparsity
    for t in range(1, rounds + 1):
        s_t = sparsity if t == rounds else 1.0 - d ** (t / rounds)
        scores = score_fn(masks)
        values = flat(scores, names)
        values = (-values if invert else values).tolist()
        allowed = [True] * len(values) if masks is None else flat(masks, names).tolist()
        k = max(round(s_t * len(values)), allowed.count(False))
        removed = rank_cut(values, allowed, k, seed)
        keep = torch.tensor([i not in removed for i in range(len(values))])
        masks, start = {}, 0
        for n in names:
            size = scores[n].numel()
            masks[n] = keep[start : start + size].view(scores[n].shape)
            start += size
    return masks


@pytest.mark.parametrize("sparsity,rounds", [(0.5, 1), (0.8, 4), (0.95, 10), (0.9, 100)])
def test_synflow_equals_closed_form_on_a_relu_mlp(sparsity, rounds):
    net = mlp(5, 7, 6, 3, act=nn.ReLU, seed=1, dtype=torch.float32)
    names = prunable_names(net)
    expected = reference_synflow(lambda m: relu_mlp_synflow_scores(net, m), names, sparsity, rounds)
    masks = compute_masks(net, "synflow", sparsity, input_shape=(5,), rounds=rounds)
    for n in names:
        assert torch.equal(masks[n], expected[n]), n
    assert n_removed(masks) == round(sparsity * sum(m.numel() for m in masks.values()))


def autograd_synflow_scores(model: nn.Module, names, shape, masks) -> dict[str, torch.Tensor]:
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs())
        if masks is not None:
            for n in names:
                params[n].mul_(masks[n].double())
    out = net(torch.ones(1, *shape, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(out, [params[n] for n in names])
    return {n: (params[n] * g).abs().detach() for n, g in zip(names, grads)}


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid])
def test_synflow_single_round_equals_autograd_on_smooth_nets(act):
    net = mlp(6, 8, 4, act=act, seed=2, dtype=torch.float32)
    names = prunable_names(net)
    reference = autograd_synflow_scores(net, names, (6,), None)
    scores = METHODS.get("synflow").fn(ScoreInputs(model=net, names=tuple(names), input_shape=(6,)))
    assert all(scores[n].dtype == torch.float64 for n in names)
    assert torch.allclose(flat(scores, names), flat(reference, names), rtol=1e-12, atol=0)
    masks = compute_masks(net, "synflow", 0.6, input_shape=(6,), rounds=1)
    assert removed_set(masks, names) == lowest(flat(reference, names), round(0.6 * 80))


def test_synflow_on_the_cnn_equals_an_autograd_loop_and_takes_the_shape_from_data():
    model = small_cnn("relu", seed=6)
    names = prunable_names(model)
    expected = reference_synflow(lambda m: autograd_synflow_scores(model, names, SHAPE, m), names, 0.9, 5, seed=3)
    masks = compute_masks(model, "synflow", 0.9, input_shape=SHAPE, rounds=5, seed=3)
    from_data = compute_masks(model, "synflow", 0.9, data=[batch(4)], rounds=5, seed=3)
    for n in names:
        assert torch.equal(masks[n], expected[n]), n
        assert torch.equal(from_data[n], expected[n]), n


def test_synflow_without_a_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="input_shape"):
        compute_masks(small_cnn(), "synflow", 0.5, rounds=2)


@pytest.mark.parametrize("invert", [False, True])
def test_synflow_rounds_are_nested_with_exact_counts(monkeypatch, invert):
    net = mlp(5, 9, 7, 3, act=nn.ReLU, seed=5, dtype=torch.float32)
    names = prunable_names(net)
    seen: list[tuple[dict | None, dict]] = []
    real = METHODS.get("synflow")

    def recording(inputs: ScoreInputs):
        scores = real.fn(inputs)
        seen.append((inputs.masks, scores))
        return scores

    monkeypatch.setitem(METHODS._items, "synflow", Scorer(recording, rounds=True))
    sparsity, rounds = 0.9, 6
    final = compute_masks(net, "synflow", sparsity, input_shape=(5,), rounds=rounds, invert=invert)
    n = sum(m.numel() for m in final.values())
    masks = [m for m, _ in seen[1:]] + [final]
    assert seen[0][0] is None and len(seen) == rounds
    for t, (m, (before, scores)) in enumerate(zip(masks, seen), start=1):
        target = sparsity if t == rounds else 1 - (1 - sparsity) ** (t / rounds)
        assert n_removed(m) == round(target * n)
        if before is not None:  # nested
            assert all(bool((m[k] <= before[k]).all()) for k in names)
        # this round removed the lowest keep scores (the highest if inverted) among those left
        allowed = flat(before, names) if before is not None else torch.ones(n, dtype=torch.bool)
        new = allowed & ~flat(m, names)
        stay = flat(m, names)
        values = -flat(scores, names) if invert else flat(scores, names)
        if bool(new.any()):
            assert values[new].max() <= values[stay].min()
        assert all(scores[k].dtype == torch.float64 for k in names)


def test_synflow_ranks_in_float64_where_float32_overflows():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(16, 16) for _ in range(20)])
    with torch.no_grad():
        for m in net:
            m.weight.mul_(60.0)
    names = prunable_names(net)
    ones = torch.ones(1, 16)
    abs_net = copy.deepcopy(net)
    with torch.no_grad():
        for p in abs_net.parameters():
            p.abs_()
    assert not torch.isfinite(abs_net(ones)).all()  # float32 would overflow: the test means something
    reference = flat(autograd_synflow_scores(net, names, (16,), None), names)
    assert torch.isfinite(reference).all()
    masks = compute_masks(net, "synflow", 0.5, input_shape=(16,), rounds=1)
    assert removed_set(masks, names) == lowest(reference, round(0.5 * reference.numel()))


def test_synflow_uses_eval_mode_and_leaves_the_model_untouched():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    plain.load_state_dict({k.replace("3.", "2."): v for k, v in before.items()})
    names = prunable_names(plain)
    expected = reference_synflow(lambda m: relu_mlp_synflow_scores(plain, m), names, 0.7, 3)
    masks = compute_masks(net, "synflow", 0.7, input_shape=(5,), rounds=3)
    assert torch.equal(masks["0.weight"], expected["0.weight"])
    assert torch.equal(masks["3.weight"], expected["2.weight"])
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in net.state_dict().items())


# ---------------------------------------------------------------------- magnitude-init, imp


def test_magnitude_init_ranks_theta0_magnitudes():
    model = small_cnn(seed=8)
    names = prunable_names(model)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = compute_masks(model, "magnitude-init", 0.75)
    keep = flat({n: theta0[n].abs() for n in names}, names)
    assert removed_set(masks, names) == lowest(keep, round(0.75 * keep.numel()))
    assert METHODS.get("magnitude-init").scores_at == "init"
    assert METHODS.get("magnitude").scores_at == "trained"
    imp = METHODS.get("imp")
    assert imp.scores_at == "trained" and imp.chain and not METHODS.get("magnitude").chain
    assert METHODS.get("synflow").rounds and not METHODS.get("synflow").needs_data
    assert METHODS.names() == ["magnitude", "grasp", "random", "snip", "grasp-hessian", "synflow",
                               "magnitude-init", "imp"]


def test_imp_levels_are_nested_and_prune_the_smallest_survivors():
    model = small_cnn(seed=9)
    names = prunable_names(model)
    magnitudes = flat({n: p.detach().abs() for n, p in model.named_parameters()}, names)
    level1 = compute_masks(model, "imp", 0.5)
    with torch.no_grad():  # "retrain": move the surviving weights
        for n, p in model.named_parameters():
            if n in names:
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=torch.Generator().manual_seed(1)))
    level2 = compute_masks(model, "imp", 0.8, within=level1)
    n = magnitudes.numel()
    assert n_removed(level2) == round(0.8 * n)
    assert all(bool((level2[k] <= level1[k]).all()) for k in names)
    survivors = flat(level1, names)
    new_mag = flat({k: p.detach().abs() for k, p in model.named_parameters()}, names)
    newly = survivors & ~flat(level2, names)
    assert int(newly.sum()) == round(0.8 * n) - round(0.5 * n)
    assert new_mag[newly].max() <= new_mag[flat(level2, names)].min()

    # within outranks the scores: keep only the smallest half, then cut by magnitude inside it
    small = compute_masks(model, "imp", 0.5, invert=True)  # the largest magnitudes are out
    for tie_mode in ("exact", "threshold"):
        inner = compute_masks(model, "imp", 0.7, within=small, tie_mode=tie_mode)
        assert n_removed(inner) == round(0.7 * n)
        assert all(bool((inner[k] <= small[k]).all()) for k in names)
        assert new_mag[flat(small, names) & ~flat(inner, names)].max() <= new_mag[flat(inner, names)].min()

    layerwise = compute_masks(model, "imp", 0.8, within=level1, scope="layerwise")
    assert all(bool((layerwise[k] <= level1[k]).all()) for k in names)
    loose = compute_masks(model, "imp", 0.8, within=level1, tie_mode="threshold")
    assert all(bool((loose[k] <= level1[k]).all()) for k in names)


def test_within_cannot_unprune():
    model = small_cnn(seed=9)
    level = compute_masks(model, "imp", 0.5)
    with pytest.raises(ValueError, match="un-prune"):
        compute_masks(model, "imp", 0.3, within=level)
    with pytest.raises(ValueError, match="un-prune"):
        compute_masks(model, "synflow", 0.3, within=level, input_shape=SHAPE, rounds=3)
    # synflow behind a within early in its schedule: the rounds keep within, the last lands exactly
    masks = compute_masks(model, "synflow", 0.6, within=level, input_shape=SHAPE, rounds=3)
    assert n_removed(masks) == round(0.6 * sum(m.numel() for m in masks.values()))
    assert all(bool((masks[k] <= level[k]).all()) for k in masks)


# ---------------------------------------------------------------------- invert


def test_inverted_mask_is_the_complement_at_half_sparsity():
    model = small_cnn(seed=4)
    names = prunable_names(model)
    assert sum(dict(model.named_parameters())[n].numel() for n in names) % 2 == 0
    normal = compute_masks(model, "magnitude", 0.5)
    inverted = compute_masks(model, "magnitude", 0.5, invert=True)
    assert all(torch.equal(inverted[n], ~normal[n]) for n in names)
    net = mlp(6, 8, 4, seed=2, dtype=torch.float32)  # 80 weights
    sf = compute_masks(net, "synflow", 0.5, input_shape=(6,), rounds=1)
    sf_inv = compute_masks(net, "synflow", 0.5, input_shape=(6,), rounds=1, invert=True)
    assert all(torch.equal(sf_inv[n], ~sf[n]) for n in sf)


def test_inverted_grasp_removes_the_highest_keep_scores():
    model = small_cnn("tanh", seed=5).double()
    names = prunable_names(model)
    x, y = batch(20)
    x = x.double()
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [params[n] for n in names])
    keep = torch.cat([(params[n].detach() * g.pow(2)).flatten() for n, g in zip(names, grads)])
    assert bool((keep < 0).any()) and bool((keep > 0).any())  # a signed score
    masks = compute_masks(model, "grasp", 0.3, data=[(x, y)], invert=True)
    assert removed_set(masks, names) == lowest(-keep, round(0.3 * keep.numel()))


# ---------------------------------------------------------------------- shuffle


def test_shuffle_masks_permutes_each_layer_with_a_seeded_cpu_generator():
    masks = compute_masks(small_cnn(seed=2), "magnitude", 0.8, scope="layerwise")
    a = shuffle_masks(masks, seed=1)
    b = shuffle_masks(masks, seed=1)
    c = shuffle_masks(masks, seed=2)
    gen = torch.Generator().manual_seed(1)
    for n, m in masks.items():
        assert a[n].shape == m.shape and a[n].dtype == torch.bool and a[n].device == m.device
        assert int(a[n].sum()) == int(m.sum())
        assert torch.equal(a[n], b[n])
        perm = torch.randperm(m.numel(), generator=gen)
        assert torch.equal(a[n].flatten(), m.flatten()[perm])
        assert not torch.equal(a[n], m)
    assert any(not torch.equal(a[n], c[n]) for n in masks)


# ---------------------------------------------------------------------- ties


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_every_method_removes_exactly_round_sparsity_n_in_exact_mode(method, scope):
    model = small_cnn("relu", seed=0)
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # dead fc1 units: many exactly tied scores
    x, y = batch(16)
    for sparsity in (0.5, 0.93):
        masks = compute_masks(model, method, sparsity, data=[(x, y)], scope=scope, input_shape=SHAPE,
                              rounds=3, seed=4)
        sizes = [m.numel() for m in masks.values()]
        if scope == "global":
            assert n_removed(masks) == round(sparsity * sum(sizes))
        else:
            assert [int((~m).sum()) for m in masks.values()] == [round(sparsity * s) for s in sizes]


def test_float64_scores_are_ranked_in_float64():
    scores = {"w": torch.tensor([1.0 + 1e-12, 1.0, 1.0 + 3e-12, 1.0 + 2e-12], dtype=torch.float64)}
    assert len(set(scores["w"].float().tolist())) == 1  # all tied in float32
    for seed in range(6):
        assert masks_from_scores(scores, 0.5, seed=seed)["w"].tolist() == [False, False, True, True]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
def test_tied_masks_are_the_same_on_cuda_and_cpu():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randint(0, 3, (50, 7), generator=g).float(), "b": torch.randint(0, 3, (300,), generator=g).float()}
    cuda = {k: v.cuda() for k, v in scores.items()}
    for scope in ("global", "layerwise"):
        cpu_masks = masks_from_scores(scores, 0.6, scope=scope, seed=3)
        gpu_masks = masks_from_scores(cuda, 0.6, scope=scope, seed=3)
        assert all(gpu_masks[k].is_cuda and torch.equal(gpu_masks[k].cpu(), cpu_masks[k]) for k in scores)
    shuffled = shuffle_masks({k: v.cuda() for k, v in cpu_masks.items()}, 5)
    assert all(torch.equal(shuffled[k].cpu(), shuffle_masks(cpu_masks, 5)[k]) for k in scores)

