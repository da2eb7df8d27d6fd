"""CIFAR-10 from the official "python version" archive, read without torchvision.

The batches are pickles, and unpickling can run arbitrary code, so they are read
with :class:`RestrictedUnpickler`, which resolves only the few globals that numpy
arrays (and Python 3 ``bytes``) need. A tampered file fails with a DataError
instead of executing anything.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .download import cause, extract_tar, one_line
from .download import download as fetch
from .raw import RawData

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# Everything a CIFAR batch pickle may reference. The real files (Python 2, numpy 1.x)
# use numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype; files written
# by Python 3 / numpy 2 use numpy._core.multiarray._reconstruct and pickle bytes via
# _codecs.encode. The names are mapped to objects here, so no module is imported by name.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"
        super().__init__(f"refusing to unpickle {self.qualname}")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None


def _get(batch: dict[Any, Any], key: str) -> Any:
    """``batch[key]`` whether the pickle's keys are str (Python 2 + latin1) or bytes."""
    if key in batch:
        return batch[key]
    return batch[key.encode("latin1")]


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``."""
    try:
        with path.open("rb") as fh:
            batch = RestrictedUnpickler(fh, encoding="latin1").load()
    except ForbiddenGlobal as err:
        raise DataError(
            f"cifar10: {path}: refusing to unpickle {err.qualname} (a CIFAR batch holds only "
            "numpy arrays); the file is corrupt or tampered with, delete it and download again"
        ) from None
    except FileNotFoundError:
        raise DataError(
            f"cifar10: {path} is missing; delete {path.parent} to download and extract it again"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, OSError) as err:
        raise DataError(
            f"cifar10: cannot read {path} ({one_line(err)}); delete it and download again"
        ) from None
    try:
        data = np.asarray(_get(batch, "data"))
        labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(
            f"cifar10: {path} is not a CIFAR-10 batch (no data/labels); "
            "delete it and download again"
        ) from None
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or labels.shape != (data.shape[0],)
    ):
        raise DataError(
            f"cifar10: {path}: expected uint8 data (N, 3072) and N labels, got {data.dtype} "
            f"{data.shape} and {labels.shape[0] if labels.ndim else 0} labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from an extracted ``cifar-10-batches-py``."""
    train = [load_batch(folder / name) for name in TRAIN_BATCHES]
    x_test, y_test = load_batch(folder / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def find_or_fetch_cifar10(root: Path, download: bool) -> Path:
    """The ``cifar-10-batches-py`` folder under ``root``, downloading it if allowed."""
    root = Path(root).expanduser().resolve()
    folder = root / FOLDER
    if folder.is_dir():
        return folder
    where = f"cifar10: no {FOLDER} folder under {root}"
    fix = f"put the extracted folder there (from {URL}) or set data.root"
    if not download:
        raise DataError(f"{where} and data.download is false; {fix}, or set data.download = true")
    try:
        archive = fetch(URL, root / ARCHIVE, MD5)
        extract_tar(archive, root)
    except DataError as err:
        raise DataError(f"{where} and the download failed ({cause(err)}); {fix}") from None
    if not folder.is_dir():
        raise DataError(
            f"cifar10: {root / ARCHIVE} holds no {FOLDER} folder; delete it and retry, or {fix}"
        )
    return folder


def load_cifar10(root: Path, download: bool) -> RawData:
    """CIFAR-10: 50,000 train and 10,000 test 32x32 RGB images in 10 classes."""
    x_train, y_train, x_test, y_test = read_cifar10(find_or_fetch_cifar10(root, download))
    return RawData("cifar10", x_train, y_train, x_test, y_test, num_classes=10, pixel_max=255.0)
