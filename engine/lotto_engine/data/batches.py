"""Minibatches and augmentation on whole tensors, with no per-sample Python.

Datasets here fit in (device) memory, so a DataLoader's worker processes and
per-image transforms only cost time. All randomness is drawn from one CPU
``torch.Generator`` and then moved to the data's device, so a seed gives the same
batches and the same augmentations on CPU and GPU; an epoch's draws move in one copy.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding of ``padding`` px) and horizontal flip (p=0.5) of a batch.

    Padding is zero in the data's units (for normalised data, the training mean).
    """
    b = x.shape[0]
    offsets, flip = _crop_draws(b, generator, padding)
    return _crop_flip(x, torch.arange(b, device=x.device), offsets.to(x.device), flip.to(x.device), padding)


def _crop_draws(b: int, generator: torch.Generator, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's crop offsets ``(2, b)`` and flips ``(b,)``, drawn from ``generator``
    in this order (what fixes a seed's augmentations)."""
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    return offsets, torch.rand(b, generator=generator) < 0.5


def _crop_flip(
    x: torch.Tensor, idx: torch.Tensor, offsets: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Images ``x[idx]`` cropped at ``offsets`` from their zero-padded selves and
    mirrored where ``flip``: one gather from ``x`` (no padded copy, no batch copy
    first), pixels outside the image set to zero."""
    _, c, h, w = x.shape
    rows = offsets[0, :, None] + torch.arange(-padding, h - padding, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(-padding, w - padding, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
    pixels = x[
        idx[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows.clamp(0, h - 1)[:, None, :, None],
        cols.clamp(0, w - 1)[:, None, None, :],
    ]
    return torch.where(inside, pixels, torch.zeros((), dtype=x.dtype, device=x.device))


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

    The order is ``torch.randperm(n, generator=generator)`` (a CPU generator), then
    each batch's crop and flip draws in batch order. All of it is drawn up front and
    reaches ``x.device`` in one copy (from pinned memory on CUDA), not two small
    copies a step. Without augmentation the epoch's images are gathered in one go and
    each batch is a slice of them; with it each batch is one gather from ``x``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = x.shape[0]
    rows = [torch.randperm(n, generator=generator)[None]]
    if augment and n:
        draws = [_crop_draws(min(batch_size, n - start), generator, padding) for start in range(0, n, batch_size)]
        rows += [torch.cat([offsets for offsets, _ in draws], 1), torch.cat([flip for _, flip in draws]).long()[None]]
    drawn = torch.cat(rows) if n else torch.zeros((1 + 3 * augment, 0), dtype=torch.long)
    if x.device.type == "cuda":
        drawn = drawn.pin_memory().to(x.device, non_blocking=True)
    else:
        drawn = drawn.to(x.device)
    perm = drawn[0]
    if not augment:
        xs, ys = x[perm], y[perm]
        for start in range(0, n, batch_size):
            yield xs[start : start + batch_size], ys[start : start + batch_size]
        return
    offsets, flip = drawn[1:3], drawn[3].bool()
    for start in range(0, n, batch_size):
        idx = slice(start, start + batch_size)
        yield _crop_flip(x, perm[idx], offsets[:, idx], flip[idx], padding), y[perm[idx]]


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
