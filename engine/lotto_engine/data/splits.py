"""Deterministic stratified splits (validation carve-out, training subsets).

Stratifying keeps every class's share of a split equal to its share of the whole
(up to rounding), so small subsets and validation sets are not skewed by chance.
Pure numpy: the same labels and seed give the same indices on every machine.
"""

from __future__ import annotations

import numpy as np


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class quotas summing to ``n``, proportional to ``counts``.

    Largest-remainder (Hamilton) rounding with exact integer arithmetic; ties go to
    the lower class index. Never exceeds a class's count.
    """
    total = int(counts.sum())
    quota, rem = np.divmod(counts * n, total)
    leftover = n - int(quota.sum())
    if leftover:
        quota[np.argsort(-rem, kind="stable")[:leftover]] += 1
    return quota


def stratified_split(
    labels: np.ndarray, n_holdout: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(keep, holdout)`` with ``n_holdout`` held out, stratified by label.

    Each class contributes its proportional share (largest-remainder rounding); which
    samples are held out is decided by one seeded permutation. Both outputs are sorted.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 <= n_holdout <= n:
        raise ValueError(f"n_holdout must be in 0..{n}, got {n_holdout}")
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = _allocate(counts.astype(np.int64), n_holdout)
    perm = np.random.default_rng(seed).permutation(n)
    cls = inverse.reshape(-1)[perm]
    # Rank of each permuted sample within its class: the first `quota` of each class go.
    order = np.argsort(cls, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[cls[order]]
    held = rank < quota[cls]
    return np.sort(perm[~held]), np.sort(perm[held])


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``n`` samples."""
    return stratified_split(labels, n, seed)[1]
