"""MNIST and Fashion-MNIST from their IDX files, read without torchvision.

The four files are looked for in the folder layouts other tools leave behind
(plain ``mnist/``, torchvision's ``MNIST/raw``, ...), gzipped or not, so existing
copies are reused instead of downloaded again.

A file is never trusted to say how much memory it needs: its header is read and
checked first (against the file's size, and against what a gzip stream of that
size can hold at all), a gzip stream is decompressed once without keeping anything
to check that it holds exactly what the header declares, and only then is the
payload read into memory. A crafted or corrupt file fails with a DataError naming
it, in constant memory.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
#: deflate cannot turn one compressed byte into more than this many (1032:1 at best)
MAX_GZIP_RATIO = 1032
_CHUNK = 1 << 20

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares: element type, dimensions, and where the payload starts."""

    dtype: np.dtype
    dims: tuple[int, ...]
    start: int  # bytes before the payload

    @property
    def payload(self) -> int:
        """Bytes of payload the header asks for (exact: Python ints do not overflow)."""
        return math.prod(self.dims) * self.dtype.itemsize


def _bad(path: Path, why: str) -> DataError:
    return DataError(f"{path}: not a valid IDX file ({why}); delete it and download again")


def _is_gzip(path: Path, fh: BinaryIO) -> bool:
    magic = fh.read(2)
    fh.seek(0)
    return magic == _GZIP_MAGIC or path.suffix == ".gz"


def _parse_header(path: Path, stream: BinaryIO) -> IdxHeader:
    """Read and check the header only: magic, type code, rank and dimensions."""
    head = stream.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES or head[3] == 0:
        raise _bad(path, "bad header")
    ndim = head[3]
    packed = stream.read(4 * ndim)
    if len(packed) < 4 * ndim:
        raise _bad(path, "truncated header")
    dims = struct.unpack(f">{ndim}I", packed)
    return IdxHeader(np.dtype(IDX_DTYPES[head[2]]), dims, 4 + 4 * ndim)


def _short_or_long(path: Path, header: IdxHeader, got: int) -> DataError:
    return _bad(path, f"payload is {got} bytes, header {header.dims} needs {header.payload}")


def _check_declared_size(path: Path, header: IdxHeader, size: int, gz: bool) -> None:
    """Refuse a header whose payload the file cannot hold, before decompressing anything."""
    if not gz and size - header.start != header.payload:
        raise _short_or_long(path, header, size - header.start)
    if gz and header.payload > MAX_GZIP_RATIO * size:
        raise _bad(
            path,
            f"header {header.dims} declares {header.payload} bytes, more than a "
            f"{size}-byte gzip file can hold",
        )


def _check_gzip_payload(path: Path, stream: BinaryIO, header: IdxHeader) -> None:
    """Decompress the rest once, keeping nothing, to check it is exactly the declared payload."""
    got = 0
    while got < header.payload:
        chunk = stream.read(min(_CHUNK, header.payload - got))
        if not chunk:
            raise _short_or_long(path, header, got)
        got += len(chunk)
    if stream.read(1):
        raise _bad(path, f"data past the {header.payload} bytes its header {header.dims} declares")


def _read_payload(path: Path, stream: BinaryIO, header: IdxHeader) -> np.ndarray:
    """Exactly ``header.payload`` bytes from ``stream`` (positioned after the header) as an array."""
    buf = bytearray(header.payload)
    view = memoryview(buf)
    got = 0
    while got < header.payload:
        n = stream.readinto(view[got:])
        if not n:
            raise _short_or_long(path, header, got)
        got += n
    try:
        array = np.frombuffer(buf, dtype=header.dtype).reshape(header.dims)
    except ValueError as err:
        raise _bad(path, one_line(err)) from None
    return array.astype(header.dtype.newbyteorder("="), copy=False)


def _open_checked(path: Path, read: bool) -> tuple[IdxHeader, np.ndarray | None]:
    """The header of ``path``, checked against the file's size, and the payload if ``read``.

    A gzip stream is decompressed twice when read: once to check it, keeping nothing,
    and once into memory, so a file that is rejected never costs its declared size.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        gz = _is_gzip(path, fh)
        stream: BinaryIO = gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh
        with stream:
            header = _parse_header(path, stream)
            _check_declared_size(path, header, size, gz)
            if not read:
                return header, None
            if not gz:
                return header, _read_payload(path, fh, header)
            _check_gzip_payload(path, stream, header)
        fh.seek(0)
        with gzip.GzipFile(fileobj=fh, mode="rb") as again:
            _parse_header(path, again)
            return header, _read_payload(path, again, header)


def _guarded(path: Path, read: bool) -> tuple[IdxHeader, np.ndarray | None]:
    try:
        return _open_checked(Path(path), read)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{path}: cannot read ({one_line(err)}); delete it and download again"
        ) from None


def read_idx_header(path: Path) -> IdxHeader:
    """The header of an IDX file (gzipped or plain), checked against the file's size;
    cheap: no payload is decompressed."""
    return _guarded(Path(path), read=False)[0]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or plain) as a numpy array in native byte order.

    The header and the payload length are checked before the payload is read; a
    bad file raises DataError naming it.
    """
    array = _guarded(Path(path), read=True)[1]
    assert array is not None
    return array


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


def _check_pair(images: Path, labels: Path) -> None:
    """Both headers describe N uint8 images (N, H, W) and N integer labels: checked before
    any payload is read, so a mismatched pair costs nothing."""
    x, y = read_idx_header(images), read_idx_header(labels)
    if x.dtype != np.uint8 or len(x.dims) != 3 or 0 in x.dims:
        raise DataError(f"{images}: expected uint8 images (N, H, W), got {x.dtype} {x.dims}")
    if y.dtype.kind not in "iu" or len(y.dims) != 1 or y.dims[0] != x.dims[0]:
        raise DataError(f"{labels}: {y.dims} labels do not match the {x.dims[0]} images in {images}")


def _images_and_labels(
    images: Path, labels: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels first (small, range-checked), then the images they describe."""
    y = read_idx(labels).astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"{labels}: labels must be in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}; "
            "delete it and download again"
        )
    x = read_idx(images)
    return x[:, None, :, :], y


def load_idx_dataset(name: str, root: Path, download: bool) -> RawData:
    """A 10-class IDX dataset (``mnist`` or ``fashion-mnist``) as uint8 ``(N, 1, 28, 28)``.

    All four headers are checked before any payload is read.
    """
    files = find_or_fetch_idx(SOURCES[name], root, download)
    _check_pair(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    _check_pair(files[TEST_IMAGES], files[TEST_LABELS])
    x_train, y_train = _images_and_labels(files[TRAIN_IMAGES], files[TRAIN_LABELS], 10)
    x_test, y_test = _images_and_labels(files[TEST_IMAGES], files[TEST_LABELS], 10)
    return RawData(name, x_train, y_train, x_test, y_test, num_classes=10, pixel_max=255.0)


def load_mnist(root: Path, download: bool) -> RawData:
    """MNIST: 60,000 train and 10,000 test 28x28 handwritten digits."""
    return load_idx_dataset("mnist", root, download)


def load_fashion_mnist(root: Path, download: bool) -> RawData:
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 clothing images."""
    return load_idx_dataset("fashion-mnist", root, download)
