"""The common shape every dataset reader returns, before splitting and normalising.

Keeping readers down to "uint8 arrays + labels + pixel scale" means splitting,
scaling and device placement are written once, in :func:`lotto_engine.data.load_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass(frozen=True, eq=False)
class RawData:
    """Official train/test images as uint8 ``(N, C, H, W)`` and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    pixel_max: float  # the value of a full-intensity pixel (255, or 16 for digits)

    def __post_init__(self) -> None:
        for part, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.dtype != np.uint8 or x.ndim != 4:
                raise DataError(
                    f"{self.name}: {part} images must be uint8 (N,C,H,W), got {x.dtype} {x.shape}"
                )
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name}: {part} labels do not match its {x.shape[0]} images")
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise DataError(
                    f"{self.name}: {part} labels must be in 0..{self.num_classes - 1}, "
                    f"found {int(y.min())}..{int(y.max())}; the files are corrupt"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in shape"
            )
