"""Pruning masks: which weights a method removes at a given sparsity.

Conventions (the science must be exact):

- Prunable: the ``.weight`` of every ``Conv2d`` and ``Linear``, the classifier
  included unless ``exclude_classifier``; biases never.
- Keep scores (:mod:`lotto_engine.scores`): higher = keep; masks remove the lowest.
  With ``invert`` the keep scores are negated before the cut, so the mask removes
  what the method would keep most.
- ``sparsity`` is the fraction of prunable weights set to zero. The number removed is
  ``k = round(sparsity * N)`` with Python's ``round`` (the rule of
  ``torch.nn.utils.prune``), so global magnitude masks equal
  ``prune.global_unstructured(..., L1Unstructured, amount=sparsity)`` on tie-free
  weights. ``N`` is all prunable weights (``scope="global"``: the scores are
  concatenated in the mapping's order, for ``compute_masks`` ``named_parameters``
  order) or one tensor's (``"layerwise"``: each tensor is cut on its own).
- Scores are compared in their own precision: float64 scores (``synflow``) are
  ranked in float64; any lower precision is promoted to float32.
- ``within`` (a mask, True = may be kept): weights False in it rank below every
  other weight whatever their scores, so they are among the ``k`` removed and the
  result is nested in ``within``. If ``k`` is smaller than the number ``within``
  already removes (per tensor for ``"layerwise"``), the cut would un-prune:
  ValueError.
- ``tie_mode="exact"`` removes exactly ``k``: weights are ranked by (allowed by
  ``within``, keep score, tie rank), lowest first, and the first ``k`` are removed.
  The tie rank is a seeded random order drawn on the CPU from
  ``torch.Generator().manual_seed(seed)``: one ``torch.randperm(N)`` over all
  weights for ``"global"``; for ``"layerwise"`` one ``randperm(n)`` per tensor,
  drawn in the mapping's order from that one generator. Weight ``perm[j]`` has tie
  rank ``j``. The permutation is moved to the scores' device, so masks agree on
  every device; ties fall at random but reproducibly (not by layer order), and
  tie-free masks do not depend on the seed.
- ``tie_mode="threshold"`` applies the write-up's literal rule
  ``m = 1(score >= tau_k)`` with ``tau_k`` the ``(N - k)``-th largest keep score
  among the weights ``within`` allows (``m`` is False where ``within`` is): every
  weight tied at ``tau_k`` is kept, and the actual sparsity can fall far below the
  target (GraSP on ReLU nets, where many gradients are exactly zero).
- Iterative scorers (``Scorer.rounds``, i.e. ``synflow``): ``T = rounds`` rounds,
  ``d = 1 - sparsity``. Round ``t = 1..T`` scores the net under the masks of round
  ``t - 1`` (round 0: ``within``, or nothing pruned) and cuts to sparsity
  ``1 - d**(t/T)`` (``sparsity`` itself at ``t = T``, so the last round removes
  exactly ``round(sparsity * N)``) with the previous round's mask as ``within``:
  masks are nested, a pruned weight stays pruned. A round before the last never
  removes fewer than are already removed (a caller's ``within`` may be ahead of the
  schedule). ``invert`` and ``tie_mode`` apply in every round; every round uses the
  same tie seed.
- Level chains (``Scorer.chain``, i.e. ``imp``): one call is one level; the caller
  passes the previous level's mask as ``within``.
- Masks are bool tensors shaped like their parameter, True = kept, keyed by
  ``model.named_parameters()`` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from .models import classifier_name
from .scores import METHODS, ScoreInputs, loss_gradients

__all__ = [
    "Masks", "Scope", "TieMode", "apply_masks", "compute_masks", "loss_gradients",
    "masks_from_scores", "prunable_names", "shuffle_masks",
]

Scope = Literal["global", "layerwise"]
TieMode = Literal["exact", "threshold"]
Masks = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, *, exclude_classifier: bool = False) -> list[str]:
    """Parameter names of the prunable weights, in ``named_parameters`` order."""
    skip = f"{classifier_name(model)}.weight" if exclude_classifier else None
    layers = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    return [name for name, _ in model.named_parameters() if name in layers and name != skip]


def compute_masks(
    model: nn.Module,
    method: str,
    sparsity: float,
    *,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    scope: Scope = "global",
    tie_mode: TieMode = "exact",
    exclude_classifier: bool = False,
    seed: int = 0,
    invert: bool = False,
    within: Mapping[str, torch.Tensor] | None = None,
    input_shape: tuple[int, ...] | None = None,
    temperature: float = 200.0,
    rounds: int = 100,
) -> Masks:
    """Masks that remove ``sparsity`` of the prunable weights of ``model`` by ``method``.

    Scores use the model's current weights: pass the trained dense net for
    ``scores_at == "trained"`` methods (``magnitude``, ``imp``) and theta0 for the
    others. Gradient methods (``grasp``, ``snip``, ``grasp-hessian``) use the mean
    cross-entropy over all of ``data``, an iterable of ``(inputs, targets)`` batches.
    ``seed`` seeds both the ``random`` scores and the tie-break order of the cut.
    ``invert`` negates the keep scores (in every round for ``synflow``); ``within``
    is a mask the result is nested in (the previous ``imp`` level); ``input_shape``
    (else ``data``'s first batch) shapes ``synflow``'s all-ones input;
    ``temperature`` divides ``grasp-hessian``'s logits; ``rounds`` is ``synflow``'s
    number of rounds. See the module doc for the rules. The model's weights,
    gradients and train/eval mode are left untouched.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scorer = METHODS.get(method)
    names = prunable_names(model, exclude_classifier=exclude_classifier)
    batches = None if data is None else list(data)
    if scorer.needs_data and not batches:
        raise ValueError(f"{method} needs data to compute gradients")
    current = None if within is None else _check_within(within, model, names)

    def inputs(masks: Masks | None) -> ScoreInputs:
        return ScoreInputs(
            model=model, names=tuple(names), data=batches, seed=seed,
            temperature=temperature, input_shape=input_shape, masks=masks,
        )

    def cut(scores: Mapping[str, torch.Tensor], s: float, last: bool) -> Masks:
        if invert:
            scores = {n: -v for n, v in scores.items()}
        return _cut(scores, s, scope=scope, tie_mode=tie_mode, seed=seed, within=current, last=last)

    if not scorer.rounds:
        return cut(scorer.fn(inputs(current)), sparsity, True)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if current is not None:  # a within ahead of the target fails now, not after T rounds
        cpu = {n: m.cpu() for n, m in current.items()}
        _cut({n: torch.zeros(m.shape) for n, m in cpu.items()}, sparsity, scope=scope,
             tie_mode="exact", seed=seed, within=cpu)
    density = 1.0 - sparsity
    for t in range(1, rounds + 1):
        s_t = sparsity if t == rounds else 1.0 - density ** (t / rounds)
        current = cut(scorer.fn(inputs(current)), s_t, t == rounds)
    assert current is not None
    return current


def masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: Scope = "global",
    tie_mode: TieMode = "exact",
    seed: int = 0,
    within: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """Cut keep scores (higher = keep) into masks; see the module doc for the rules.

    ``seed`` seeds the tie-break order of ``"exact"`` mode; ``within`` is a mask the
    result is nested in (weights False in it are removed first).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return _cut(scores, sparsity, scope=scope, tie_mode=tie_mode, seed=seed, within=within)


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int) -> Masks:
    """Each tensor's mask randomly permuted within the tensor (layer sparsities kept).

    One CPU generator ``torch.Generator().manual_seed(seed)`` draws a
    ``torch.randperm(n)`` per tensor in the mapping's order; the new flat mask is
    ``old_flat[perm]``. The results are on the masks' devices and the same on every
    device.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        perm = torch.randperm(mask.numel(), generator=gen)
        out[name] = mask.detach().cpu().reshape(-1)[perm].view(mask.shape).to(mask.device)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the removed weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


# ---------------------------------------------------------------------- the cut


def _check_within(within: Mapping[str, torch.Tensor], model: nn.Module, names: list[str]) -> Masks:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in within]
    if missing:
        raise ValueError(f"within has no mask for {', '.join(missing)}")
    out = {}
    for n in names:
        mask = within[n]
        if tuple(mask.shape) != tuple(params[n].shape):
            raise ValueError(
                f"within[{n!r}] has shape {tuple(mask.shape)}, the weight {tuple(params[n].shape)}"
            )
        out[n] = mask.to(params[n].device, torch.bool)
    return out


def _cut(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: Scope,
    tie_mode: TieMode,
    seed: int,
    within: Mapping[str, torch.Tensor] | None,
    last: bool = True,
) -> Masks:
    if tie_mode not in ("exact", "threshold"):
        raise ValueError(f"unknown tie_mode {tie_mode!r}")
    if scope not in ("global", "layerwise"):
        raise ValueError(f"unknown scope {scope!r}")
    names = list(scores)
    if within is not None:
        missing = [n for n in names if n not in within]
        if missing:
            raise ValueError(f"within has no mask for {', '.join(missing)}")
    gen = torch.Generator().manual_seed(seed)

    def allowed(name: str) -> torch.Tensor | None:
        if within is None:
            return None
        mask, s = within[name], scores[name]
        if mask.numel() != s.numel():
            raise ValueError(f"within[{name!r}] has {mask.numel()} entries, the scores {s.numel()}")
        return mask.reshape(-1).to(s.device, torch.bool)

    if scope == "layerwise":
        out = {}
        for name in names:
            s = scores[name]
            flat = s.reshape(-1).to(_ranked_dtype([s]))
            out[name] = _keep(flat, sparsity, tie_mode, gen, allowed(name), last, name).view(s.shape)
        return out
    dtype = _ranked_dtype(scores.values())
    flat = torch.cat([scores[n].reshape(-1).to(dtype) for n in names])
    allow = None
    if within is not None:
        allow = torch.cat([allowed(n) for n in names])  # type: ignore[misc]
    keep = _keep(flat, sparsity, tie_mode, gen, allow, last, None)
    masks, start = {}, 0
    for name in names:
        n = scores[name].numel()
        masks[name] = keep[start : start + n].view(scores[name].shape)
        start += n
    return masks


def _ranked_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype:
    """float64 if any score is float64, else float32."""
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _keep(
    flat: torch.Tensor,
    sparsity: float,
    tie_mode: TieMode,
    gen: torch.Generator,
    allowed: torch.Tensor | None,
    last: bool,
    name: str | None,
) -> torch.Tensor:
    n = flat.numel()
    n_prune = round(sparsity * n)
    already = 0 if allowed is None else n - int(allowed.sum())
    if n_prune < already:
        if last:
            where = f" of {name}" if name else ""
            raise ValueError(
                f"within already removes {already} of the {n} weights{where}, sparsity "
                f"{sparsity} removes {n_prune}: a mask cannot un-prune"
            )
        n_prune = already  # an early round behind a caller's within: keep within
    if tie_mode == "exact":
        # Rank by (allowed, score, tie rank): stable sorts, least significant key first.
        order = torch.randperm(n, generator=gen).to(flat.device)
        order = order[torch.sort(flat[order], stable=True).indices]
        if allowed is not None:
            order = order[torch.sort(allowed[order].to(torch.uint8), stable=True).indices]
        keep = torch.ones(n, dtype=torch.bool, device=flat.device)
        keep[order[:n_prune]] = False
        return keep
    n_keep = n - n_prune
    if n_keep == 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    pool = flat if allowed is None else flat[allowed]
    tau = torch.sort(pool, descending=True, stable=True).values[n_keep - 1]
    keep = flat >= tau
    return keep if allowed is None else keep & allowed
