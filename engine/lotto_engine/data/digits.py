"""scikit-learn's bundled 8x8 digits: the offline default dataset.

Pixels are integers 0..16 (so ``pixel_max`` is 16). Digits ships as one set of
1,797 images with no official test split, so a fixed stratified 20% is held out as
the test split with seed :data:`TEST_SEED` (0). That seed is deliberately
independent of ``data.split_seed``: changing the validation split or subset never
changes which images are tested on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .raw import RawData
from .splits import stratified_split

TEST_FRACTION = 0.2
TEST_SEED = 0
PIXEL_MAX = 16.0


def load_digits(root: Path, download: bool) -> RawData:
    """The digits as uint8 ``(N, 1, 8, 8)``; ``root`` and ``download`` are unused (bundled)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.asarray(bunch.images, dtype=np.uint8)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(y, round(TEST_FRACTION * len(y)), TEST_SEED)
    return RawData(
        "digits", x[train], y[train], x[test], y[test], num_classes=10, pixel_max=PIXEL_MAX
    )
