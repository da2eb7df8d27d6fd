"""MNIST and Fashion-MNIST from their IDX files, read without torchvision.

The four files are looked for in the folder layouts other tools leave behind
(plain ``mnist/``, torchvision's ``MNIST/raw``, ...), gzipped or not, so existing
copies are reused instead of downloaded again.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import cause, one_line
from .download import download as fetch
from .raw import RawData

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or plain) as a numpy array in native byte order.

    The header and the payload length are checked; a bad file raises DataError
    naming it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC or path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot read ({one_line(err)}); delete it and download again"
        ) from None
    bad = f"{path}: not a valid IDX file"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{bad} (bad header); delete it and download again")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{bad} (truncated header); delete it and download again")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - start != expected:
        raise DataError(
            f"{bad} (payload is {len(raw) - start} bytes, header {dims} needs {expected}); "
            "delete it and download again"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))
    )


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives locally and online."""

    name: str
    folders: tuple[str, ...]  # relative to data.root, searched in order
    base_url: str  # + "<file>.gz"
    md5: dict[str, str]  # file stem -> MD5 of "<file>.gz"


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        "mnist",
        ("mnist", "MNIST/raw", "MNIST", "."),
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
            TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
            TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": IdxSource(
        "fashion-mnist",
        ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST"),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
            TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
            TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


def _in_folder(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (plain preferred over ``.gz``), or None if any is missing."""
    found: dict[str, Path] = {}
    for stem in FILES:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def find_or_fetch_idx(source: IdxSource, root: Path, download: bool) -> dict[str, Path]:
    """Paths of the four IDX files of ``source``, downloading into ``root/<name>/`` if allowed."""
    root = Path(root).expanduser().resolve()
    folders = [(root / f).resolve() for f in source.folders]
    for folder in folders:
        found = _in_folder(folder)
        if found is not None:
            return found
    where = (
        f"{source.name}: the IDX files ({', '.join(FILES)}, optionally .gz) are not in any of "
        f"{', '.join(map(str, folders))}"
    )
    fix = "put them in one of those folders or set data.root"
    if not download:
        raise DataError(f"{where} and data.download is false; {fix}, or set data.download = true")
    target = root / source.name
    try:
        for stem in FILES:
            if not (target / stem).is_file():
                fetch(source.base_url + f"{stem}.gz", target / f"{stem}.gz", source.md5[stem])
    except DataError as err:
        raise DataError(f"{where} and the download failed ({cause(err)}); {fix}") from None
    found = _in_folder(target)
    assert found is not None
    return found


def _images_and_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images)
    y = read_idx(labels)
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(f"{images}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{labels}: {y.shape} labels do not match the {x.shape[0]} images in {images}"
        )
    return x[:, None, :, :], y.astype(np.int64)


def load_idx_dataset(name: str, root: Path, download: bool) -> RawData:
    """A 10-class IDX dataset (``mnist`` or ``fashion-mnist``) as uint8 ``(N, 1, 28, 28)``."""
    files = find_or_fetch_idx(SOURCES[name], root, download)
    x_train, y_train = _images_and_labels(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    x_test, y_test = _images_and_labels(files[TEST_IMAGES], files[TEST_LABELS])
    return RawData(name, x_train, y_train, x_test, y_test, num_classes=10, pixel_max=255.0)


def load_mnist(root: Path, download: bool) -> RawData:
    """MNIST: 60,000 train and 10,000 test 28x28 handwritten digits."""
    return load_idx_dataset("mnist", root, download)


def load_fashion_mnist(root: Path, download: bool) -> RawData:
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 clothing images."""
    return load_idx_dataset("fashion-mnist", root, download)
