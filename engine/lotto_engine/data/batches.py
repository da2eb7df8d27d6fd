"""Minibatches and augmentation on whole tensors, with no per-sample Python.

Datasets here fit in (device) memory, so a DataLoader's worker processes and
per-image transforms only cost time. All randomness is drawn from one CPU
``torch.Generator`` and then moved to the data's device, so a seed gives the same
batches and the same augmentations on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding of ``padding`` px) and horizontal flip (p=0.5) of a batch.

    Padding is zero in the data's units (for normalised data, the training mean).
    One gather does both, indexing the padded batch with per-sample row/column offsets.
    """
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    offsets, flip = offsets.to(x.device), flip.to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def epoch_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    augment: bool = False,
    padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled ``(x, y)`` batches; the last partial batch is kept.

    The order is ``torch.randperm(n, generator=generator)`` (a CPU generator), moved
    to ``x.device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        xb = x.index_select(0, idx)
        if augment:
            xb = augment_batch(xb, generator, padding)
        yield xb, y.index_select(0, idx)


def class_balanced_sample(
    x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of each class under a seeded permutation.

    Used for GraSP's gradient, which should not be dominated by frequent classes.
    A class with fewer images contributes all of them. Output is in permutation order.
    """
    n = y.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cls = y.detach().cpu().long()[perm]
    sorted_cls, order = torch.sort(cls, stable=True)
    counts = torch.bincount(cls, minlength=int(cls.max()) + 1 if n else 0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts[sorted_cls]
    idx = perm[rank < per_class].to(x.device)
    return x.index_select(0, idx), y.index_select(0, idx.to(y.device))
