"""Crafted dataset files that ask for far more memory than they hold: each must fail
with one DataError line naming the file, in memory bounded by the file's size.

Every file is written in its real on-disk format: gzipped IDX files (multi-member
gzip, which ``gunzip`` reads as one stream) and CIFAR-10 "python version" batches
(pickles, mostly written by :mod:`pickle` itself from objects that reduce the way
numpy arrays do). In-process tests bound the memory with :mod:`tracemalloc` (which
sees Python objects and numpy buffers alike); a few real ``lotto-tui`` subprocesses
check the peak RSS and exit code a user gets, against a normal failed start.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import os
import pickle
import struct
import subprocess
import time
import tracemalloc
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LOTTO
from lotto_engine.config import DataConfig
from lotto_engine.data import cifar, idx, load_dataset
from lotto_engine.errors import DataError
from test_data import idx_bytes, small_cifar, small_idx, write_cifar_folder, write_idx_set

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

MB = 1 << 20
#: what a rejected file may cost in-process, as tracemalloc sees it
SMALL = 16 * MB


def peak_while(fn: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """(the exception ``fn`` raised or None, the peak of traced memory meanwhile)."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as err:  # noqa: BLE001 - handed back to the test
        raised = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def assert_rejected(fn: Callable[[], Any], path: Path, *needles: str, limit: int = SMALL) -> str:
    """``fn`` raises a one-line DataError naming ``path`` and every needle, within ``limit`` bytes."""
    err, peak = peak_while(fn)
    assert isinstance(err, DataError), repr(err)
    text = str(err)
    assert "\n" not in text and str(path) in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    assert peak < limit, f"peak {peak / MB:.1f} MiB while rejecting {path.name}"
    return text


# --------------------------------------------------------------------------- gzip IDX bombs


@functools.cache
def _zero_member() -> bytes:
    """One gzip member holding 16 MiB of zeros (about 16 KB compressed)."""
    return gzip.compress(bytes(16 * MB), compresslevel=9)


def gzip_zeros(n: int, head: bytes = b"", noise: int = 0) -> bytes:
    """``head``, ``n`` zero bytes, then ``noise`` random ones, as a multi-member gzip file
    (~1 KB per MB of zeros; the noise does not compress)."""
    whole, rest = divmod(n, 16 * MB)
    tail = np.random.default_rng(0).integers(0, 256, noise, dtype=np.uint8).tobytes()
    return (
        gzip.compress(head) + _zero_member() * whole + gzip.compress(bytes(rest)) + gzip.compress(tail)
    )


def idx_header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_a_gzip_of_zeros_fails_on_its_header_without_decompressing(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_zeros(1536 * MB))  # the 1.5 MB file of 1.5 GB of zeros
    assert bomb.stat().st_size < 2 * MB
    started = time.monotonic()
    assert_rejected(lambda: idx.read_idx(bomb), bomb, "bad header")
    assert time.monotonic() - started < 1  # nothing past the 4 header bytes was inflated


def test_a_header_bigger_than_the_gzip_can_hold_is_refused_before_decompressing(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_zeros(MB, head=idx_header(0x08, 60_000_000, 28, 28)))
    assert_rejected(lambda: idx.read_idx(bomb), bomb, "declares 47040000000 bytes", "gzip file can hold")
    assert_rejected(lambda: idx.read_idx_header(bomb), bomb, "gzip file can hold")


def test_a_gzip_payload_shorter_than_its_header_is_rejected_in_constant_memory(tmp_path):
    # 240 MB declared, 200 MB there (a 0.5 MB file: gzip could hold that much): the old
    # reader inflated all of it before checking
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_zeros(200 * MB, head=idx_header(0x08, 306_000, 28, 28), noise=MB // 4))
    assert_rejected(
        lambda: idx.read_idx(bomb), bomb, f"payload is {200 * MB + MB // 4} bytes", "needs 239904000"
    )


def test_a_gzip_payload_with_trailing_data_is_rejected(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 6) + bytes(6) + b"extra"))
    assert_rejected(lambda: idx.read_idx(path), path, "data past the 6 bytes")
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(idx_header(0x08, 6) + bytes(7))
    assert_rejected(lambda: idx.read_idx(plain), plain, "payload is 7 bytes")


def test_a_truncated_gzip_stream_is_one_line(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((4, 28, 28), np.uint8)))[:-30])
    assert_rejected(lambda: idx.read_idx(path), path, "cannot read")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dims_whose_product_overflows_int64_are_refused(tmp_path, gz):
    # 65536**4 == 2**64 wraps to 0 in int64: the old reader accepted an empty payload
    # and then failed with "cannot reshape array of size 0" (exit 70)
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder)
    head = idx_header(0x08, 65536, 65536, 65536, 65536)
    name = idx.TRAIN_IMAGES + (".gz" if gz else "")
    (folder / idx.TRAIN_IMAGES).unlink()
    (folder / name).write_bytes(gzip.compress(head) if gz else head)
    assert_rejected(lambda: idx.read_idx(folder / name), folder / name, str(2**64))
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), download=False)
    assert_rejected(lambda: load_dataset(cfg), folder / name, "not a valid IDX file")


def test_mismatched_headers_fail_before_any_payload_is_read(tmp_path, monkeypatch):
    small_idx(monkeypatch, n_train=30)
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder, n_train=30)
    (folder / idx.TRAIN_LABELS).write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    read: list[Path] = []
    monkeypatch.setattr(idx, "read_idx", lambda path, **kw: read.append(path))
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), download=False)
    with pytest.raises(DataError, match=r"expected the mnist training labels, uint8 \(30,\)") as err:
        load_dataset(cfg)
    assert str(folder / idx.TRAIN_LABELS) in str(err.value) and "(29,)" in str(err.value) and read == []


def test_idx_labels_out_of_range_name_the_labels_file(tmp_path, monkeypatch):
    small_idx(monkeypatch)
    folder = tmp_path / "mnist"
    write_idx_set(folder)
    (folder / idx.TEST_LABELS).write_bytes(idx_bytes(np.full(10, 200, np.uint8)))
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), download=False)
    assert_rejected(lambda: load_dataset(cfg), folder / idx.TEST_LABELS, "labels must be in 0..9")


# --------------------------------------------------------------------------- honest IDX headers

# MNIST and Fashion-MNIST are exactly these: anything else is refused on its header
OFFICIAL_IDX = {
    idx.TRAIN_IMAGES: (60_000, 28, 28),
    idx.TRAIN_LABELS: (60_000,),
    idx.TEST_IMAGES: (10_000, 28, 28),
    idx.TEST_LABELS: (10_000,),
}


def gzip_idx(code: int, *dims: int) -> bytes:
    """A gzip IDX file whose header honestly describes its (all-zero) payload."""
    itemsize = {0x08: 1, 0x0C: 4}[code]
    return gzip_zeros(int(np.prod(dims, dtype=np.int64)) * itemsize, head=idx_header(code, *dims))


def write_official_idx_set(folder: Path, **replace: bytes) -> dict[str, Path]:
    """The four gzip IDX files at their official shapes (all zeros, about 60 KB in all),
    with ``replace``'s stems written as given; stem -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, dims in OFFICIAL_IDX.items():
        paths[stem] = folder / f"{stem}.gz"
        paths[stem].write_bytes(replace.get(stem) or gzip_idx(0x08, *dims))
    return paths


def _labels_for(n: int) -> Callable[[], bytes]:
    return lambda: gzip_idx(0x08, n)


#: name -> (the file that must be named, stem -> its bytes, what it declares, what was expected);
#: the other files are written at their official shapes
HONEST_IDX_BOMBS: dict[str, tuple[str, dict[str, Callable[[], bytes]], str, str]] = {
    # the review's 1.45 MB file of 1.9 million blank images, with labels to match
    # (7.8 GB RSS before)
    "1.9M-images": (
        idx.TRAIN_IMAGES,
        {idx.TRAIN_IMAGES: lambda: gzip_idx(0x08, 1_900_000, 28, 28), idx.TRAIN_LABELS: _labels_for(1_900_000)},
        "(1900000, 28, 28)", "the {} training images, uint8 (60000, 28, 28)",
    ),
    # the review's 1.2 MB file of twenty 8000x8000 images (7.6 GB peak, then an
    # allocator error that never named the file)
    "8000x8000": (
        idx.TEST_IMAGES,
        {idx.TEST_IMAGES: lambda: gzip_idx(0x08, 20, 8000, 8000), idx.TEST_LABELS: _labels_for(20)},
        "(20, 8000, 8000)", "the {} test images, uint8 (10000, 28, 28)",
    ),
    "one-image-too-many": (
        idx.TRAIN_IMAGES,
        {idx.TRAIN_IMAGES: lambda: gzip_idx(0x08, 60_001, 28, 28), idx.TRAIN_LABELS: _labels_for(60_001)},
        "(60001, 28, 28)", "the {} training images, uint8 (60000, 28, 28)",
    ),
    "one-image-too-few": (
        idx.TEST_IMAGES,
        {idx.TEST_IMAGES: lambda: gzip_idx(0x08, 9_999, 28, 28), idx.TEST_LABELS: _labels_for(9_999)},
        "(9999, 28, 28)", "the {} test images, uint8 (10000, 28, 28)",
    ),
    "1.9M-labels": (
        idx.TRAIN_LABELS, {idx.TRAIN_LABELS: _labels_for(1_900_000)},
        "(1900000,)", "the {} training labels, uint8 (60000,)",
    ),
    "int32-labels": (
        idx.TEST_LABELS, {idx.TEST_LABELS: lambda: gzip_idx(0x0C, 10_000)},
        "int32 (10000,)", "the {} test labels, uint8 (10000,)",
    ),
    "images-as-labels": (
        idx.TRAIN_LABELS, {idx.TRAIN_LABELS: lambda: gzip_idx(0x08, 60_000, 28, 28)},
        "(60000, 28, 28)", "the {} training labels, uint8 (60000,)",
    ),
}


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("name", HONEST_IDX_BOMBS)
def test_idx_files_not_of_the_official_shape_are_refused_on_their_header(
    tmp_path, monkeypatch, dataset, name
):
    stem, makers, declared, expected = HONEST_IDX_BOMBS[name]
    folder = tmp_path / idx.SOURCES[dataset].folders[0]
    paths = write_official_idx_set(folder, **{s: make() for s, make in makers.items()})
    bomb = paths[stem]
    assert bomb.stat().st_size < 2 * MB
    read: list[Path] = []

    def no_payload(path: Path, **kw: Any) -> None:
        read.append(path)
        raise AssertionError(f"the payload of {path} was read")

    monkeypatch.setattr(idx, "read_idx", no_payload)
    cfg = DataConfig(dataset=dataset, root=str(tmp_path), download=False)
    text = assert_rejected(lambda: load_dataset(cfg), bomb, expected.format(dataset), declared)
    assert read == [] and text.endswith("delete it and download again"), text


def test_the_official_idx_shapes_pass_the_header_check(tmp_path):
    for name, source in idx.SOURCES.items():
        assert (source.n_train, source.n_test, source.image_shape) == (60_000, 10_000, (28, 28))
        paths = write_official_idx_set(tmp_path / name)
        idx._check_headers(source, paths)  # no payload is read; a wrong shape raises


def test_read_idx_checks_the_expected_shape_before_the_payload(tmp_path):
    # the readers pass what they expect down to the read itself, so a file swapped
    # after the header check still cannot ask for more
    bomb = tmp_path / f"{idx.TEST_IMAGES}.gz"
    bomb.write_bytes(gzip_idx(0x08, 20, 8000, 8000))
    want = idx.SOURCES["mnist"].expected(idx.TEST_IMAGES)
    started = time.monotonic()
    assert_rejected(lambda: idx.read_idx(bomb, expect=want), bomb, "(10000, 28, 28)", "(20, 8000, 8000)")
    assert time.monotonic() - started < 1  # the 1.28 GB payload was never inflated


# --------------------------------------------------------------------------- CIFAR pickle bombs


class _Array:
    """Pickles exactly as numpy pickles an ndarray, with a state of the test's choosing."""

    def __init__(self, state: tuple, shape: tuple = (0,)) -> None:
        self.state, self.shape = state, shape

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, self.shape, b"b"), self.state)


class _Call:
    """Pickles as a call of an allowed global (``func(*args)``)."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _shared_lists(depth: int) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested, nested]  # 2**depth leaves, depth distinct lists
    return nested


def batch(data: Any = None, labels: Any = None, protocol: int = 2) -> bytes:
    """A CIFAR batch pickle (bytes keys, as the real files load), with the given fields."""
    return pickle.dumps(
        {
            b"batch_label": b"training batch 1 of 5",
            b"labels": [0, 1] if labels is None else labels,
            b"data": np.zeros((2, 3072), np.uint8) if data is None else data,
        },
        protocol=protocol,
    )


def _hand(*parts: bytes) -> bytes:
    return b"".join(parts)


def _shared_string_encoded(times: int) -> bytes:
    """A batch whose file names are one 1 MB string, pickled once and turned into
    bytes ``times`` times (each call fetches the string from the memo)."""
    text = "x" * MB
    names = [_Call(codecs.encode, text, "latin1") for _ in range(times)]
    return pickle.dumps(
        {b"labels": [0, 1], b"data": np.zeros((2, 3072), np.uint8), b"filenames": names}, protocol=2
    )


PICKLE_BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    # a few hundred bytes whose data is 2**40 shared lists: 1.7 GB and 10 s before
    "shared-lists": (lambda: batch(data=_shared_lists(40)), "second reference to a list"),
    # labels of 3.84e9 zero-size items (strides 0): 28.6 GiB once cast to int64
    "zero-stride": (
        lambda: batch(labels=_Array((1, (3_840_000_000,), np.dtype("V0"), False, b""))),
        "not a plain numeric type",
    ),
    # a BINBYTES8 length of 2**40 with 4 bytes behind it: MemoryError in the C unpickler
    "binbytes8": (
        lambda: _hand(
            b"\x80\x04}\x8c\x04data\x8e", struct.pack("<Q", 1 << 40), b"abcd", b"s."
        ),
        "truncated: a 1099511627776-byte read",
    ),
    # numpy's placeholder asked to be 16 GiB before BUILD fills it
    "placeholder": (
        lambda: batch(data=_Array((1, (2, 3072), np.dtype("u1"), False, bytes(6144)), (1 << 34,))),
        "non-empty placeholder",
    ),
    # ndarray.__new__ with a 16 GiB shape
    "newobj": (
        lambda: _hand(
            b"\x80\x02}X\x04\x00\x00\x00data", b"cnumpy\nndarray\n",
            b"\x8a\x05\x00\x00\x00\x00\x04\x85\x85\x81",  # (2**34,) -> ((2**34,),) -> NEWOBJ
            b"s.",
        ),
        "NEWOBJ opcode",
    ),
    # an array whose shape is 3 GB in a file of a few hundred bytes
    "array-bigger-than-file": (
        lambda: batch(data=_Array((1, (1_000_000, 3072), np.dtype("u1"), False, b""))),
        "an ndarray of 3072000000 bytes",
    ),
    # one 1 MB string turned into bytes 300 times (each call fetches it from the memo)
    "shared-string": (lambda: _shared_string_encoded(300), "_codecs.encode would build more"),
    # a dict key nested 100,000 tuples deep: hashing it recurses in C
    "deep-key": (lambda: _hand(b"\x80\x02})", b"\x85" * 100_000, b"Ns."), "a dict key that is a tuple"),
    # a million empty lists in a 1 MB file
    "many-objects": (lambda: _hand(b"\x80\x02", b"]" * 1_000_000, b"."), "more than 250000 opcodes"),
}


@pytest.mark.parametrize("name", PICKLE_BOMBS)
def test_pickle_bombs_are_refused_in_bounded_memory(tmp_path, name):
    make, needle = PICKLE_BOMBS[name]
    path = tmp_path / cifar.FOLDER / "data_batch_1"
    path.parent.mkdir()
    path.write_bytes(make())
    if name == "shared-lists":
        assert path.stat().st_size < 600
    assert_rejected(lambda: cifar.load_batch(path), path, "refusing to unpickle", needle)


def test_a_batch_file_bigger_than_any_real_one_is_refused_unread(tmp_path):
    path = tmp_path / "data_batch_1"
    with path.open("wb") as fh:
        fh.truncate(cifar.MAX_BATCH_BYTES + 1)  # sparse: costs no disk
    assert_rejected(lambda: cifar.load_batch(path), path, "more than a CIFAR-10 batch")


def test_a_memo_index_of_four_billion_costs_nothing(tmp_path, monkeypatch):
    small_cifar(monkeypatch, per_batch=2)
    # the C unpickler sizes its memo table by the index: 2**33 slots, a MemoryError
    blob = batch()
    assert blob.startswith(b"\x80\x02}q\x00")
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob.replace(b"}q\x00", b"}r\xff\xff\xff\xff", 1))
    err, peak = peak_while(lambda: cifar.load_batch(path))
    assert err is None and peak < SMALL
    x, y = cifar.load_batch(path)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 1]


def test_real_batches_still_load_at_every_protocol_and_in_python2_form(tmp_path, monkeypatch):
    small_cifar(monkeypatch, per_batch=4)
    data = np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072)
    for protocol in (0, 1, 2, 3, 4):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(batch(data=data, labels=[9, 0, 3, 3], protocol=protocol))
        x, y = cifar.load_batch(path)
        assert np.array_equal(x.reshape(4, -1), data) and y.tolist() == [9, 0, 3, 3], protocol
    small_cifar(monkeypatch, per_batch=10)
    write_cifar_folder(tmp_path / cifar.FOLDER, per_batch=10)
    assert cifar.read_cifar10(tmp_path / cifar.FOLDER)[0].shape == (50, 3, 32, 32)


def test_a_batch_must_hold_exactly_10000_images_with_labels_0_to_9(tmp_path):
    assert cifar.BATCH_IMAGES == 10_000
    path = tmp_path / "data_batch_1"
    labels = [i % 10 for i in range(10_000)]
    path.write_bytes(batch(data=np.zeros((10_000, 3072), np.uint8), labels=labels))
    x, y = cifar.load_batch(path)  # the real size loads
    assert x.shape == (10_000, 3, 32, 32) and y.tolist() == labels
    for n in (2, 9_999, 10_001):
        path.write_bytes(batch(data=np.zeros((n, 3072), np.uint8), labels=[0] * n))
        assert_rejected(
            lambda: cifar.load_batch(path), path, "expected uint8 data (10000, 3072) and 10000 labels",
            f"({n}, 3072) and {n} labels", limit=128 * MB,
        )
    path.write_bytes(batch(data=np.zeros((10_000, 3), np.uint8), labels=labels))
    assert_rejected(lambda: cifar.load_batch(path), path, "got uint8 (10000, 3)")
    path.write_bytes(batch(data=np.zeros((10_000, 3072), np.uint8), labels=labels[:-1]))
    assert_rejected(lambda: cifar.load_batch(path), path, "and 9999 labels", limit=128 * MB)


@pytest.mark.parametrize("bad", [10, -1, 255])
def test_batch_labels_outside_0_to_9_name_the_batch(tmp_path, monkeypatch, bad):
    small_cifar(monkeypatch, per_batch=2)
    path = tmp_path / "test_batch"
    path.write_bytes(batch(labels=[0, bad]))
    assert_rejected(lambda: cifar.load_batch(path), path, "labels must be in 0..9", f"{min(0, bad)}..{max(0, bad)}")


def test_small_batches_are_refused_unless_a_test_allows_them(tmp_path):
    write_cifar_folder(tmp_path / cifar.FOLDER, per_batch=10)
    first = tmp_path / cifar.FOLDER / "data_batch_1"
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path), download=False)
    assert_rejected(lambda: load_dataset(cfg), first, "expected uint8 data (10000, 3072)")


# --------------------------------------------------------------------------- exit 70 -> one line


NOT_BATCHES: dict[str, tuple[Callable[[], bytes], str]] = {
    "bare-ndarray": (lambda: pickle.dumps(np.zeros((2, 3072), np.uint8), protocol=2), "holds a ndarray"),
    "no-data": (lambda: pickle.dumps({b"labels": [0]}, protocol=2), "no data/labels"),
    "str-keys-no-data": (lambda: pickle.dumps({"batch_label": "x"}, protocol=2), "no data/labels"),
    "list": (lambda: pickle.dumps([1, 2], protocol=2), "holds a list"),
    "data-is-a-list": (lambda: batch(data=[[0] * 3072 for _ in range(2)]), "its data is a list"),
    "labels-are-strings": (lambda: batch(labels=["a", "b"]), "labels are not a list of integers"),
    "labels-too-big": (lambda: batch(labels=[2**70, 0]), "labels are not a list of integers"),
    "unknown-codec": (
        lambda: batch(data=_Call(codecs.encode, "abc", "no-such-codec")), "codec 'no-such-codec'"
    ),
    "zlib-codec": (lambda: batch(data=_Call(codecs.encode, "abc", "zlib")), "codec 'zlib'"),
    "stack-global": (lambda: batch(data=_Call(os.getcwd), protocol=4), "refusing to unpickle posix.getcwd"),
    "object-dtype": (lambda: batch(data=_Array((1, (1,), np.dtype("O"), False, [0]))), "not a plain numeric"),
}


@pytest.mark.parametrize("name", NOT_BATCHES)
def test_pickles_that_are_not_batches_are_one_line(tmp_path, name):
    make, needle = NOT_BATCHES[name]
    path = tmp_path / "data_batch_1"
    path.write_bytes(make())
    assert_rejected(lambda: cifar.load_batch(path), path, needle)


# --------------------------------------------------------------------------- no empty data/ folder


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download fail as with no network; returns the URLs that were tried."""
    tried: list[str] = []

    def urlopen(url: str, *args: Any, **kw: Any) -> Any:
        tried.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("lotto_engine.data.download.urllib.request.urlopen", urlopen)
    return tried


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist"])
def test_a_failed_download_leaves_no_folder_it_created(tmp_path, monkeypatch, dataset):
    tried = _offline(monkeypatch)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match="the download failed") as err:
        load_dataset(DataConfig(dataset=dataset, root=str(root), download=True))
    assert "name resolution" in str(err.value) and len(tried) == 1
    assert list(tmp_path.iterdir()) == []  # neither data/ nor deep/
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(DataError):
        load_dataset(DataConfig(dataset=dataset, root=str(existing), download=True))
    assert existing.is_dir() and list(existing.iterdir()) == []  # the user's folder stays


# --------------------------------------------------------------------------- what the user sees


def _spawn(args: list[str], cwd: Path, tag: str, env: dict[str, str] | None) -> subprocess.Popen:
    out = (cwd / f"{tag}.out").open("w")
    err = (cwd / f"{tag}.err").open("w")
    with out, err:
        return subprocess.Popen(
            [str(LOTTO), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env={**os.environ, **(env or {})},
        )


def run_measured(
    runs: dict[str, list[str]], cwd: Path, timeout: float = 120, env: dict[str, str] | None = None,
    at_once: int = 3,
) -> dict[str, tuple[int, str, int]]:
    """Run ``lotto-tui`` once per entry, ``at_once`` at a time; tag -> (exit code, stderr,
    peak RSS in KiB), the peak of each process alone (``wait4``, not RUSAGE_CHILDREN,
    which would mix in every earlier child of the test process)."""
    waiting = list(runs)
    procs: dict[str, subprocess.Popen] = {}
    done: dict[str, tuple[int, str, int]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(done) < len(runs):
            while waiting and len(procs) - len(done) < at_once:
                tag = waiting.pop(0)
                procs[tag] = _spawn(runs[tag], cwd, tag, env)
            for tag, proc in procs.items():
                if tag in done:
                    continue
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    done[tag] = (proc.returncode, (cwd / f"{tag}.err").read_text(), usage.ru_maxrss)
            assert time.monotonic() < deadline, f"timed out: {sorted(set(runs) - set(done))}"
            time.sleep(0.05)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return done


def _batch_args(store: Path, dataset: str, root: Path) -> list[str]:
    return [
        "--batch", "--preset", "demo", "--store", str(store), "--set", f'data.dataset="{dataset}"',
        "--set", f'data.root="{root}"', "--set", "data.download=false",
    ]


def _cifar_root(tmp_path: Path, tag: str, blob: bytes) -> Path:
    root = tmp_path / tag
    write_cifar_folder(root / cifar.FOLDER, per_batch=2)
    (root / cifar.FOLDER / "data_batch_1").write_bytes(blob)
    return root


def _idx_root(tmp_path: Path, tag: str, images: bytes, n_train: int) -> Path:
    root = tmp_path / tag
    folder = root / "mnist"
    write_idx_set(folder, n_train=2)
    (folder / idx.TRAIN_IMAGES).unlink()
    (folder / f"{idx.TRAIN_IMAGES}.gz").write_bytes(images)
    (folder / idx.TRAIN_LABELS).write_bytes(idx_bytes(np.zeros(n_train, np.uint8)))
    return root


def _check_bombs(tmp_path: Path, roots: dict[str, tuple[str, Path, Path]]) -> None:
    """Each bomb run: exit 2, one line naming its file, peak RSS within 300 MB of a
    normal failed start (the same command with no dataset there)."""
    runs = {"baseline": _batch_args(tmp_path / "store-0", "mnist", tmp_path / "empty")}
    for tag, (dataset, root, _) in roots.items():
        runs[tag] = _batch_args(tmp_path / f"store-{tag}", dataset, root)
    results = run_measured(runs, tmp_path)
    rc, err, base = results.pop("baseline")
    assert rc == 2 and "are not in any of" in err, err
    for tag, (rc, err, peak) in results.items():
        bad_file = roots[tag][2]
        assert rc == 2 and "Traceback" not in err, (tag, rc, err)
        assert len(err.splitlines()) == 1 and str(bad_file) in err, (tag, err)
        assert peak - base < 300 * 1024, f"{tag}: peak {peak // 1024} MiB, normal start {base // 1024} MiB"


@pytest.mark.slow  # eleven real processes (one a normal failed start); the in-process bomb tests above stay fast
def test_every_bomb_and_non_batch_through_the_cli_exit_2_in_bounded_memory(tmp_path):
    """Every bomb and non-batch file, each through its own lotto-tui process, measured
    against one normal failed start."""
    roots: dict[str, tuple[str, Path, Path]] = {}
    images = gzip_zeros(200 * MB, head=idx_header(0x08, 306_000, 28, 28), noise=MB // 4)  # 240 MB declared
    gz = _idx_root(tmp_path, "gzip", images, n_train=306_000)
    roots["gzip"] = ("mnist", gz, gz / "mnist" / f"{idx.TRAIN_IMAGES}.gz")
    lists = _cifar_root(tmp_path, "lists", PICKLE_BOMBS["shared-lists"][0]())
    roots["lists"] = ("cifar10", lists, lists / cifar.FOLDER / "data_batch_1")
    zeros = _idx_root(tmp_path, "zeros", gzip_zeros(1536 * MB), n_train=2)
    roots["zeros"] = ("mnist", zeros, zeros / "mnist" / f"{idx.TRAIN_IMAGES}.gz")
    overflow = _idx_root(tmp_path, "overflow", gzip.compress(idx_header(0x08, *[65536] * 4)), 2)
    roots["overflow"] = ("mnist", overflow, overflow / "mnist" / f"{idx.TRAIN_IMAGES}.gz")
    # honest headers, not the official shape: 7.8 GB RSS and a 7.6 GB peak (then an
    # allocator error naming no file) before the readers checked the shapes
    for tag, dims in (("honest-1.9M", (1_900_000, 28, 28)), ("honest-8000x8000", (20, 8000, 8000))):
        root = _idx_root(tmp_path, tag, gzip_idx(0x08, *dims), n_train=dims[0])
        roots[tag] = ("mnist", root, root / "mnist" / f"{idx.TRAIN_IMAGES}.gz")
    for tag in ("zero-stride", "binbytes8"):
        root = _cifar_root(tmp_path, tag, PICKLE_BOMBS[tag][0]())
        roots[tag] = ("cifar10", root, root / cifar.FOLDER / "data_batch_1")
    for tag in ("bare-ndarray", "no-data", "unknown-codec"):
        root = _cifar_root(tmp_path, tag, NOT_BATCHES[tag][0]())
        roots[tag] = ("cifar10", root, root / cifar.FOLDER / "data_batch_1")
    _check_bombs(tmp_path, roots)


@pytest.mark.slow
def test_a_failed_first_start_offline_leaves_no_data_folder(tmp_path):
    # no network: every HTTPS request goes to a proxy on a closed local port
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}
    args = ["--batch", "--preset", "demo", "--store", str(tmp_path / "store"), "--set", 'data.dataset="cifar10"']
    rc, err, _ = run_measured({"offline": args}, tmp_path, env=offline)["offline"]
    assert rc == 2 and "the download failed" in err and len(err.splitlines()) == 1, err
    assert "127.0.0.1" in err or "refused" in err, err  # it tried, and only the dead proxy
    assert not (tmp_path / "data").exists()
