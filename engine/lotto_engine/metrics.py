"""Measurements of masks and weights (no training here).

- :func:`stability`: the write-up's ``D = ||W_dense - W_pruned||_2 / ||W_dense||_2``
  over the prunable weights, all tensors flattened into one vector.
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
    if set(dense) != set(pruned):
        missing = sorted(set(dense) ^ set(pruned))
        raise ValueError(f"dense and pruned weights differ in names: {missing}")
    if not dense:
        raise ValueError("no weights given")
    diff2 = 0.0
    norm2 = 0.0
    for name, d in dense.items():
        d64 = d.detach().to("cpu", torch.float64)
        p64 = pruned[name].detach().to("cpu", torch.float64)
        if d64.shape != p64.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(d64.shape)} vs {tuple(p64.shape)}")
        diff2 += float((d64 - p64).pow(2).sum())
        norm2 += float(d64.pow(2).sum())
    if norm2 == 0.0:
        raise ValueError("dense weights are all zero")
    return (diff2 / norm2) ** 0.5


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
