"""Datasets as normalised tensors already on the training device.

:func:`load_dataset` reads a dataset's official train/test files (see
:data:`DATASETS`), carves a stratified validation split out of the official training
set, optionally takes a stratified training subset, and normalises every split with
per-channel statistics of the final training split only (no leakage from
validation or test). Batching and augmentation live in :mod:`.batches`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from .batches import augment_batch, class_balanced_sample, epoch_batches
from .raw import RawData
from .registry import DATASETS, Loader
from .splits import stratified_split, stratified_subset

__all__ = [
    "DATASETS",
    "Dataset",
    "Loader",
    "RawData",
    "Split",
    "augment_batch",
    "class_balanced_sample",
    "epoch_batches",
    "load_dataset",
    "stratified_split",
    "stratified_subset",
]


@dataclass(frozen=True, eq=False)
class Split:
    """Images and labels of one split."""

    x: torch.Tensor  # float32, normalised, (N, C, H, W), on the target device
    y: torch.Tensor  # int64, on the target device

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready to train on; ``mean``/``std`` are per channel, in [0, 1] pixel units."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _val_count(val_size: float, n_train: int) -> int:
    """``data.val_size`` as a count: a fraction (< 1, rounded, at least 1) or a count."""
    n = max(1, round(val_size * n_train)) if val_size < 1 else int(val_size)
    if n >= n_train:
        raise DataError(
            f"data.val_size: {val_size:g} asks for {n} validation images but the training set "
            f"has only {n_train}; lower data.val_size"
        )
    return n


def _carve(raw: RawData, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the official training set) of the final training and validation splits."""
    n_train = raw.y_train.shape[0]
    train_idx, val_idx = stratified_split(
        raw.y_train, _val_count(cfg.val_size, n_train), cfg.split_seed
    )
    present = np.unique(raw.y_train)
    left = np.bincount(raw.y_train[train_idx], minlength=raw.num_classes)[present]
    if (left == 0).any():
        empty = int(present[np.argmax(left == 0)])
        raise DataError(
            f"data.val_size: {cfg.val_size:g} leaves no training image of class {empty} in "
            f"{raw.name}; lower data.val_size"
        )
    if cfg.subset > 0:
        if cfg.subset > train_idx.shape[0]:
            raise DataError(
                f"data.subset: {cfg.subset} training images asked for but {raw.name} has only "
                f"{train_idx.shape[0]} after the validation split; lower data.subset (0 = all)"
            )
        train_idx = train_idx[stratified_subset(raw.y_train[train_idx], cfg.subset, cfg.split_seed)]
    return train_idx, val_idx


def _to_float(x: np.ndarray, pixel_max: float, device: torch.device) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] on ``device`` (moved as uint8: 4x less to copy)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).float().div_(pixel_max)


def load_dataset(cfg: DataConfig, device: str | torch.device = "cpu") -> Dataset:
    """Read, split, normalise and place ``cfg.dataset`` on ``device``.

    Raises :class:`DataError` (one line) if the files are missing and cannot be
    downloaded, are corrupt, or the split sizes are impossible.
    """
    device = torch.device(device)
    raw = DATASETS[cfg.dataset](Path(cfg.root), cfg.download)
    train_idx, val_idx = _carve(raw, cfg)
    x_train = _to_float(raw.x_train[train_idx], raw.pixel_max, device)
    x_val = _to_float(raw.x_train[val_idx], raw.pixel_max, device)
    x_test = _to_float(raw.x_test, raw.pixel_max, device)
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3), correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays put
    shape = (1, -1, 1, 1)
    for x in (x_train, x_val, x_test):
        x.sub_(mean.view(shape)).div_(std.view(shape))

    def split(x: torch.Tensor, y: np.ndarray) -> Split:
        return Split(x, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device))

    c, h, w = raw.x_train.shape[1:]
    return Dataset(
        name=raw.name,
        train=split(x_train, raw.y_train[train_idx]),
        val=split(x_val, raw.y_train[val_idx]),
        test=split(x_test, raw.y_test),
        num_classes=raw.num_classes,
        input_shape=(int(c), int(h), int(w)),
        mean=tuple(float(m) for m in mean.cpu()),
        std=tuple(float(s) for s in std.cpu()),
    )
