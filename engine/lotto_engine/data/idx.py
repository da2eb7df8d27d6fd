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

A header is also never trusted to say what the dataset is: MNIST and Fashion-MNIST
are exactly 60,000 training and 10,000 test uint8 28x28 images with as many uint8
labels, so all four headers must declare exactly that (:class:`IdxSource` holds the
shapes) before any payload is read. A file whose header honestly describes 1.9
million blank images, or twenty 8000x8000 ones, is refused on its header, naming it.
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
NUM_CLASSES = 10  # labels are 0..9 in both datasets


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


def _check_expected(path: Path, header: IdxHeader, expect: Expected | None) -> None:
    """Refuse a header that is not the uint8 array of ``expect.dims`` (``what`` says which)."""
    if expect is not None and (header.dtype != np.uint8 or header.dims != expect.dims):
        raise DataError(
            f"{path}: expected {expect.what}, uint8 {expect.dims}, but its header declares "
            f"{header.dtype.name} {header.dims}; delete it and download again"
        )


def _open_checked(
    path: Path, read: bool, expect: Expected | None = None
) -> tuple[IdxHeader, np.ndarray | None]:
    """The header of ``path``, checked against the file's size (and ``expect``), and the
    payload if ``read``.

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
            _check_expected(path, header, expect)
            if not read:
                return header, None
            if not gz:
                return header, _read_payload(path, fh, header)
            _check_gzip_payload(path, stream, header)
        fh.seek(0)
        with gzip.GzipFile(fileobj=fh, mode="rb") as again:
            _parse_header(path, again)
            return header, _read_payload(path, again, header)


def _guarded(
    path: Path, read: bool, expect: Expected | None = None
) -> tuple[IdxHeader, np.ndarray | None]:
    try:
        return _open_checked(Path(path), read, expect)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{path}: cannot read ({one_line(err)}); delete it and download again"
        ) from None


def read_idx_header(path: Path, expect: Expected | None = None) -> IdxHeader:
    """The header of an IDX file (gzipped or plain), checked against the file's size
    (and, if given, ``expect``); cheap: no payload is decompressed."""
    return _guarded(Path(path), read=False, expect=expect)[0]


def read_idx(path: Path, expect: Expected | None = None) -> np.ndarray:
    """An IDX file (gzipped or plain) as a numpy array in native byte order.

    The header, the payload length and (if given) ``expect`` are checked before the
    payload is read; a bad file raises DataError naming it.
    """
    array = _guarded(Path(path), read=True, expect=expect)[1]
    assert array is not None
    return array


@dataclass(frozen=True)
class Expected:
    """What one IDX file of a known dataset must hold: uint8 ``dims``; ``what`` names it."""

    what: str  # "the mnist training images", ...
    dims: tuple[int, ...]


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives locally and online, and what its files hold.

    The sizes are the official ones and are enforced exactly: a file declaring any
    other shape is refused before its payload is read. (Tests that write small files
    in the real format replace them; nothing else should.)
    """

    name: str
    folders: tuple[str, ...]  # relative to data.root, searched in order
    base_url: str  # + "<file>.gz"
    md5: dict[str, str]  # file stem -> MD5 of "<file>.gz"
    n_train: int = 60_000  # images (and labels) in the training files
    n_test: int = 10_000  # images (and labels) in the test files
    image_shape: tuple[int, int] = (28, 28)  # H, W of every uint8 image

    def expected(self, stem: str) -> Expected:
        """What the file ``stem`` must declare (all four files are uint8)."""
        train = stem in (TRAIN_IMAGES, TRAIN_LABELS)
        images = stem in (TRAIN_IMAGES, TEST_IMAGES)
        n = self.n_train if train else self.n_test
        return Expected(
            f"the {self.name} {'training' if train else 'test'} {'images' if images else 'labels'}",
            (n, *self.image_shape) if images else (n,),
        )


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


def _check_headers(source: IdxSource, files: dict[str, Path]) -> None:
    """All four headers declare exactly the official shapes (uint8 images ``(N, 28, 28)``,
    N uint8 labels): checked before any payload is read, so a file that asks for more
    memory than the real dataset needs, or a mismatched pair, costs nothing."""
    for stem in FILES:
        read_idx_header(files[stem], expect=source.expected(stem))


def _images_and_labels(
    source: IdxSource, files: dict[str, Path], images: str, labels: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels first (small, range-checked), then the images they describe."""
    y = read_idx(files[labels], expect=source.expected(labels)).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(
            f"{files[labels]}: labels must be in 0..{NUM_CLASSES - 1}, found "
            f"{int(y.min())}..{int(y.max())}; delete it and download again"
        )
    x = read_idx(files[images], expect=source.expected(images))
    return x[:, None, :, :], y


def load_idx_dataset(name: str, root: Path, download: bool) -> RawData:
    """A 10-class IDX dataset (``mnist`` or ``fashion-mnist``) as uint8 ``(N, 1, 28, 28)``.

    All four headers are checked against the official shapes before any payload is read.
    """
    source = SOURCES[name]
    files = find_or_fetch_idx(source, root, download)
    _check_headers(source, files)
    x_train, y_train = _images_and_labels(source, files, TRAIN_IMAGES, TRAIN_LABELS)
    x_test, y_test = _images_and_labels(source, files, TEST_IMAGES, TEST_LABELS)
    return RawData(name, x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES, pixel_max=255.0)


def load_mnist(root: Path, download: bool) -> RawData:
    """MNIST: 60,000 train and 10,000 test 28x28 handwritten digits."""
    return load_idx_dataset("mnist", root, download)


def load_fashion_mnist(root: Path, download: bool) -> RawData:
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 clothing images."""
    return load_idx_dataset("fashion-mnist", root, download)
