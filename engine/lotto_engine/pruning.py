"""Pruning masks: which weights a method removes at a given sparsity.

Conventions (the science must be exact):

- Prunable: the ``.weight`` of every ``Conv2d`` and ``Linear``, the classifier
  included unless ``exclude_classifier``; biases never.
- ``sparsity`` is the fraction of prunable weights set to zero. The number removed is
  ``round(sparsity * N)`` with Python's ``round`` (the rule of
  ``torch.nn.utils.prune``), so global magnitude masks equal
  ``prune.global_unstructured(..., L1Unstructured, amount=sparsity)`` on tie-free
  weights. ``N`` is all prunable weights (``scope="global"``) or one tensor's
  (``"layerwise"``).
- ``tie_mode="exact"`` removes exactly that many: weights are ranked by a stable sort
  on (keep score, flat index), lowest first, so ties fall the same way on CPU and GPU.
  ``"threshold"`` applies the write-up's literal rule ``m = 1(score >= tau_k)`` with
  ``tau_k`` the k-th largest keep score: every weight tied at ``tau_k`` is kept, and
  the actual sparsity can fall far below the target (GraSP on ReLU nets, where many
  gradients are exactly zero).
- Masks are bool tensors shaped like their parameter, True = kept, keyed by
  ``model.named_parameters()`` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .models import classifier_name
from .scores import METHODS

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
    **_shim: object,
) -> Masks:
    """Masks that remove ``sparsity`` of the prunable weights of ``model`` by ``method``.

    Scores use the model's current weights: pass the trained dense net for
    ``magnitude`` and the initial net for ``grasp`` (whose gradient ``g`` is that of
    the mean cross-entropy over all of ``data``, an iterable of ``(inputs, targets)``
    batches). The model's weights, gradients and train/eval mode are left untouched.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scorer = METHODS.get(method)
    names = prunable_names(model, exclude_classifier=exclude_classifier)
    params = dict(model.named_parameters())
    weights = {name: params[name].detach() for name in names}
    grads = None
    if scorer.needs_gradients:
        if data is None:
            raise ValueError(f"{method} needs data to compute gradients")
        grads = loss_gradients(model, names, data)
    scores = scorer.fn(weights, grads, seed)
    if invert:
        scores = {n: -v for n, v in scores.items()}
    if within is not None:
        scores = {n: v.float().masked_fill(~within[n], float("-inf")) for n, v in scores.items()}
    return masks_from_scores(scores, sparsity, scope=scope, tie_mode=tie_mode)


def masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: Scope = "global",
    tie_mode: TieMode = "exact",
) -> Masks:
    """Cut keep scores (higher = keep) into masks; see the module doc for the rules."""
    if scope == "layerwise":
        return {name: _keep(s.reshape(-1), sparsity, tie_mode).view_as(s) for name, s in scores.items()}
    if scope != "global":
        raise ValueError(f"unknown scope {scope!r}")
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = _keep(flat, sparsity, tie_mode)
    masks, start = {}, 0
    for name in names:
        n = scores[name].numel()
        masks[name] = keep[start : start + n].view_as(scores[name])
        start += n
    return masks


def _keep(flat: torch.Tensor, sparsity: float, tie_mode: TieMode) -> torch.Tensor:
    n = flat.numel()
    n_prune = round(sparsity * n)
    if tie_mode == "exact":
        # Stable ascending sort: equal scores keep index order, so ties break by index.
        order = torch.sort(flat, stable=True).indices
        keep = torch.ones(n, dtype=torch.bool, device=flat.device)
        keep[order[:n_prune]] = False
        return keep
    if tie_mode == "threshold":
        n_keep = n - n_prune
        if n_keep == 0:
            return torch.zeros(n, dtype=torch.bool, device=flat.device)
        tau = torch.sort(flat, descending=True, stable=True).values[n_keep - 1]
        return flat >= tau
    raise ValueError(f"unknown tie_mode {tie_mode!r}")


def loss_gradients(
    model: nn.Module, names: list[str], data: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over all batches of ``data``, per name.

    Uses ``torch.autograd.grad``, so ``.grad`` of the parameters is not touched.
    """
    params = dict(model.named_parameters())
    targets = [params[n] for n in names]
    device = targets[0].device
    batches = [(x.to(device), y.to(device)) for x, y in data]
    total = sum(int(y.numel()) for _, y in batches)
    if total == 0:
        raise ValueError("no samples to compute gradients on")
    acc = [torch.zeros_like(p) for p in targets]
    with torch.enable_grad():
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            for a, g in zip(acc, torch.autograd.grad(loss, targets)):
                a.add_(g)
    return dict(zip(names, acc))


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the removed weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int) -> Masks:
    """TEMP shim."""
    gen = torch.Generator().manual_seed(seed)
    return {n: m.reshape(-1)[torch.randperm(m.numel(), generator=gen).to(m.device)].view_as(m) for n, m in masks.items()}
