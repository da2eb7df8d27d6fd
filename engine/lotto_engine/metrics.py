"""Measurements of masks and weights (no training here).

- :func:`stability`: the write-up's ``D = ||W_dense - W_pruned||_2 / ||W_dense||_2``
  over the prunable weights, all tensors flattened into one vector.
- :func:`stability_parts`: D with its two companions, which say what D is made of:
  the *floor* ``||W_dense * (1 - m)|| / ||W_dense||`` (what the mask alone removes:
  a ticket that kept its weights exactly would still have this D) and the *kept
  change* ``||(W_dense - W_pruned) * m|| / ||W_dense * m||`` (how far the weights the
  mask keeps moved in retraining, relative to their dense size). A retrained ticket
  is zero outside its mask, so ``D**2 = floor**2 + kept_change**2 * ||W_dense * m||**2
  / ||W_dense||**2``: a D near its floor means the kept weights barely moved; a D far
  above it (weights that blew up) shows as a large kept change.
- :func:`mask_sparsity`: the actual sparsity of a mask, global and per layer, with
  the units (filters, rows) each layer left without any incoming weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .records import LayerSparsity


def stability(dense: Mapping[str, torch.Tensor], pruned: Mapping[str, torch.Tensor]) -> float:
    """Relative L2 distance of the pruned net's weights from the dense net's.

    Both arguments map parameter name -> tensor and must hold the same names (pass
    the prunable weights only). Computed in float64 on the CPU.
    """
    diff2, norm2, _, _, _ = _sums(dense, pruned, None)
    return (diff2 / norm2) ** 0.5


def stability_parts(
    dense: Mapping[str, torch.Tensor],
    pruned: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
) -> tuple[float, float, float | None]:
    """``(D, floor, kept_change)`` over the prunable weights flattened into one vector
    (float64, on the CPU); ``masks`` hold True (or 1) for a kept weight.

    - ``D = ||W_dense - W_pruned|| / ||W_dense||`` (as :func:`stability`);
    - ``floor = ||W_dense * (1 - m)|| / ||W_dense||``: what the mask alone removes;
    - ``kept_change = ||(W_dense - W_pruned) * m|| / ||W_dense * m||``: how far the
      kept weights moved; None when the mask keeps no weight at all, or keeps only
      weights that are zero in the dense net (nothing to be relative to).

    The three mappings must hold the same names and shapes; ValueError otherwise, or
    when the dense weights are all zero.
    """
    diff2, norm2, removed2, kept_diff2, kept2 = _sums(dense, pruned, masks)
    kept_change = (kept_diff2 / kept2) ** 0.5 if kept2 > 0.0 else None
    return (diff2 / norm2) ** 0.5, (removed2 / norm2) ** 0.5, kept_change


def _sums(
    dense: Mapping[str, torch.Tensor],
    pruned: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
) -> tuple[float, float, float, float, float]:
    """Squared norms in float64: ||Wd - Wp||, ||Wd||, ||Wd (1-m)||, ||(Wd - Wp) m||, ||Wd m||
    (the last three 0 without masks)."""
    if set(dense) != set(pruned):
        missing = sorted(set(dense) ^ set(pruned))
        raise ValueError(f"dense and pruned weights differ in names: {missing}")
    if masks is not None and set(masks) != set(dense):
        missing = sorted(set(dense) ^ set(masks))
        raise ValueError(f"weights and masks differ in names: {missing}")
    if not dense:
        raise ValueError("no weights given")
    diff2 = norm2 = removed2 = kept_diff2 = kept2 = 0.0
    for name, d in dense.items():
        d64 = d.detach().to("cpu", torch.float64)
        p64 = pruned[name].detach().to("cpu", torch.float64)
        if d64.shape != p64.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(d64.shape)} vs {tuple(p64.shape)}")
        delta = d64 - p64
        diff2 += float(delta.pow(2).sum())
        norm2 += float(d64.pow(2).sum())
        if masks is not None:
            m = masks[name].detach().to("cpu")
            if tuple(m.shape) != tuple(d64.shape):
                raise ValueError(f"{name}: mask shape {tuple(m.shape)} differs from the weights' {tuple(d64.shape)}")
            m64 = (m != 0).to(torch.float64)
            removed2 += float((d64 * (1.0 - m64)).pow(2).sum())
            kept_diff2 += float((delta * m64).pow(2).sum())
            kept2 += float((d64 * m64).pow(2).sum())
    if norm2 == 0.0:
        raise ValueError("dense weights are all zero")
    return diff2, norm2, removed2, kept_diff2, kept2


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> tuple[float, list[LayerSparsity]]:
    """(global fraction removed, per-layer detail) of masks with True = kept."""
    layers = [
        LayerSparsity(
            name=name,
            numel=int(m.numel()),
            kept=int(m.sum().item()),
            units=int(m.shape[0]) if m.dim() else 1,
            dead_units=_dead_units(m),
        )
        for name, m in masks.items()
    ]
    total = sum(layer.numel for layer in layers)
    kept = sum(layer.kept for layer in layers)
    return (1.0 - kept / total if total else 0.0), layers


def _dead_units(mask: torch.Tensor) -> int:
    """Output units (first axis: a conv filter, a linear row) left with no incoming weight."""
    if mask.dim() == 0:
        return int(not bool(mask))
    return int((mask.reshape(mask.shape[0], -1).sum(dim=1) == 0).sum().item())
