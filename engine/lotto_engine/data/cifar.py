"""CIFAR-10 from the official "python version" archive, read without torchvision.

The batches are pickles, and unpickling can run arbitrary code or build whatever
the file asks for, so they are read with :class:`RestrictedUnpickler`, which

- resolves only the few globals that numpy arrays (and Python 3 ``bytes``) need, each
  mapped to a checked stand-in, so no module is imported by name and nothing runs;
- reads no length field past the end of the file, and no file bigger than
  :data:`MAX_BATCH_BYTES` (a real batch is 31 MB);
- runs at most :data:`MAX_OPCODES` opcodes and builds at most twice the file's size
  in bytes and arrays, with no array larger than the file and only plain numeric
  dtypes (so no zero-stride or zero-itemsize views, no object arrays);
- refuses a second reference to a container or array (a real batch is a tree), so
  shared references cannot turn a few hundred bytes into an exponential structure.

A tampered, crafted or corrupt file fails with a DataError naming it, in memory
bounded by the file's size.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

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
#: images in each of the five training batches and in the test batch: exactly this many
#: (tests that write small batches in the real format replace it; nothing else should)
BATCH_IMAGES = 10_000
NUM_CLASSES = 10

#: a real batch is 31,035,704 bytes; twice that leaves room for other pickle protocols
MAX_BATCH_BYTES = 64 << 20
#: a real batch runs about 40,000 opcodes (10,000 labels and file names)
MAX_OPCODES = 250_000
#: dtypes an array in a batch may have: plain booleans, integers and floats
_PLAIN_DTYPE = re.compile(r"[<>|=]?[biuf][1248]")

# Everything a CIFAR batch pickle may reference, by the name it is pickled under. The
# real files (Python 2, numpy 1.x) use numpy.core.multiarray._reconstruct, numpy.ndarray
# and numpy.dtype; files written by Python 3 / numpy 2 use numpy._core.multiarray
# ._reconstruct and pickle bytes via _codecs.encode (empty bytes via builtins.bytes).
# Each maps to the name of a checked method of RestrictedUnpickler (or to ndarray,
# which may only be passed to _reconstruct, never called).
ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "_dtype",
    ("_codecs", "encode"): "_encode",
    ("__builtin__", "bytes"): "_bytes",
    ("builtins", "bytes"): "_bytes",
}
#: objects that may be referenced more than once (from the memo): immutable leaves
_ATOMS = (type(None), bool, int, float, str, bytes, np.dtype)


class Refused(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR batch never needs; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ForbiddenGlobal(Refused):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"
        super().__init__(f"refusing to unpickle {self.qualname}")


class _BoundedFile:
    """A file whose ``read(n)`` refuses to ask for more than is left, so a length field
    (BINBYTES8 of 2**40, say) never makes the unpickler allocate more than the file holds."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh, self._size = fh, size

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._fh.tell()
        if n < 0:
            n = left
        if n > left:
            raise Refused(f"truncated: a {n}-byte read with {left} bytes left")
        return self._fh.read(n)

    def readline(self) -> bytes:
        return self._fh.readline()

    def readinto(self, buf: Any) -> int:
        if len(buf) > self._size - self._fh.tell():
            raise Refused(f"truncated: a {len(buf)}-byte read past the end")
        return self._fh.readinto(buf)


def _plain(dtype: np.dtype) -> bool:
    """A dtype with fixed-size numeric items: no fields, subarrays, objects or zero size."""
    return (
        dtype.names is None
        and dtype.subdtype is None
        and not dtype.hasobject
        and dtype.kind in "biuf"
        and dtype.itemsize > 0
    )


def _refuse_opcode(name: str) -> Callable[[Any], None]:
    def refuse(self: Any) -> None:
        raise Refused(f"a CIFAR batch never uses the {name} opcode")

    return refuse


def _counted(handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: RestrictedUnpickler) -> None:
        self._ops += 1
        if self._ops > MAX_OPCODES:
            raise Refused(f"more than {MAX_OPCODES} opcodes (a real batch needs about 40,000)")
        handler(self)

    return run


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """An unpickler that only builds plain containers and numpy arrays, in bounded memory.

    The pure-Python unpickler is used (and not the C one) because every opcode must
    be checked before it allocates: the C one allocates a BINBYTES8 length before
    reading it. A real batch is a few tens of thousands of opcodes, so this costs
    milliseconds.
    """

    def __init__(self, file: BinaryIO, size: int, **kw: Any) -> None:
        super().__init__(_BoundedFile(file, size), **kw)
        self._size = size
        self._budget = 2 * size + 4096  # bytes this pickle may build (payload + its array)
        self._ops = 0
        self._globals: dict[str, Any] = {
            "_reconstruct": self._reconstruct,
            "ndarray": np.ndarray,
            "_dtype": self._dtype,
            "_encode": self._encode,
            "_bytes": self._bytes,
        }

    # -- globals: checked stand-ins ------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[ALLOWED_GLOBALS[(module, name)]]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None

    def _spend(self, nbytes: int, what: str) -> None:
        self._budget -= nbytes
        if self._budget < 0:
            raise Refused(f"{what} would build more bytes than a {self._size}-byte file can hold")

    def _reconstruct(self, cls: Any, shape: Any, typecode: Any) -> np.ndarray:
        """numpy's empty placeholder array, filled by BUILD: it must be empty."""
        if cls is not np.ndarray or not isinstance(shape, tuple) or typecode not in ("b", b"b"):
            raise Refused("_reconstruct called with arguments numpy never pickles")
        if not all(type(d) is int and d >= 0 for d in shape) or math.prod(shape) != 0:
            raise Refused(f"_reconstruct asked for a non-empty placeholder of shape {shape}")
        return _reconstruct(np.ndarray, shape, typecode)

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec):
            raise Refused(f"dtype {str(spec)[:40]!r} is not a plain numeric type")
        return np.dtype(spec)

    def _encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        """``_codecs.encode``, as Python 3 pickles bytes: only str in latin1."""
        if type(text) is not str or encoding not in ("latin1", "latin-1"):
            raise Refused(f"_codecs.encode with codec {str(encoding)[:40]!r} (only latin1 is used)")
        self._spend(len(text), "_codecs.encode")
        return text.encode("latin1")

    def _bytes(self, *args: Any) -> bytes:
        if args:
            raise Refused("bytes() called with arguments (only empty bytes are pickled so)")
        return b""

    # -- opcodes that build or share objects ---------------------------------------

    def load_reduce(self) -> None:
        func = self.stack[-2]
        if not any(func is ok for ok in self._globals.values() if ok is not np.ndarray):
            raise Refused(f"calling a {type(func).__name__} (only numpy's constructors may be called)")
        super().load_reduce()

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray):
            self._check_array_state(state)
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            if not _plain(inst):
                raise Refused(f"dtype {inst} is not a plain numeric type")
        else:
            raise Refused(f"setting the state of a {type(inst).__name__}")
        self.stack.pop()

    def _check_array_state(self, state: Any) -> None:
        """An ndarray's pickled state: a plain dtype, a shape no bigger than the file,
        and exactly the bytes that shape needs."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise Refused("an ndarray state that is not numpy's (version, shape, dtype, order, data)")
        shape, dtype, _, raw = state[-4:]
        if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            type(d) is int and d >= 0 for d in shape
        ):
            raise Refused(f"an ndarray shape that is not a tuple of sizes: {str(shape)[:60]}")
        if not isinstance(dtype, np.dtype) or not _plain(dtype):
            raise Refused(f"an ndarray of dtype {str(dtype)[:40]} (only plain numeric types)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self._size:
            raise Refused(f"an ndarray of {nbytes} bytes {shape} in a {self._size}-byte file")
        if not isinstance(raw, (bytes, str)) or len(raw) != nbytes:
            raise Refused(f"an ndarray {shape} whose data is not its {nbytes} bytes")
        self._spend(nbytes, "an ndarray")

    def _fetch(self, idx: int) -> None:
        try:
            obj = self.memo[idx]
        except KeyError:
            raise Refused(f"memo entry {idx} is read before it is written") from None
        if not isinstance(obj, _ATOMS) and not any(obj is g for g in self._globals.values()):
            raise Refused(
                f"a second reference to a {type(obj).__name__} (a CIFAR batch is a tree; shared "
                "references can make a few bytes expand without bound)"
            )
        self.append(obj)

    def load_get(self) -> None:
        self._fetch(int(self.readline()[:-1]))

    def load_binget(self) -> None:
        self._fetch(self.read(1)[0])

    def load_long_binget(self) -> None:
        self._fetch(int.from_bytes(self.read(4), "little"))

    # -- opcodes that fill containers: lists get items, dicts get str/bytes/int keys --

    def _target(self, kind: type, below_mark: bool, depth: int = 1) -> None:
        stack = self.metastack[-1] if below_mark else self.stack
        target = stack[-depth]
        if type(target) is not kind:
            raise Refused(f"adding items to a {type(target).__name__}")

    def _keys(self, keys: Any) -> None:
        for key in keys:
            if not isinstance(key, (str, bytes, int)):
                raise Refused(f"a dict key that is a {type(key).__name__}")

    def load_append(self) -> None:
        self._target(list, below_mark=False, depth=2)
        super().load_append()

    def load_appends(self) -> None:
        self._target(list, below_mark=True)
        super().load_appends()

    def load_setitem(self) -> None:
        self._target(dict, below_mark=False, depth=3)
        self._keys([self.stack[-2]])
        super().load_setitem()

    def load_setitems(self) -> None:
        self._target(dict, below_mark=True)
        self._keys(self.stack[::2])
        super().load_setitems()

    def load_dict(self) -> None:
        self._keys(self.stack[::2])
        super().load_dict()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    for _name in ("append", "appends", "setitem", "setitems", "dict"):
        dispatch[getattr(pickle, _name.upper())[0]] = locals()[f"load_{_name}"]
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.GET[0]] = load_get
    dispatch[pickle.BINGET[0]] = load_binget
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget
    for _name in (
        "DUP", "PERSID", "BINPERSID", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2",
        "EXT4", "EMPTY_SET", "ADDITEMS", "FROZENSET", "BYTEARRAY8", "NEXT_BUFFER",
        "READONLY_BUFFER",
    ):
        dispatch[getattr(pickle, _name)[0]] = _refuse_opcode(_name)
    for _code in range(256):
        dispatch[_code] = _counted(dispatch.get(_code, _refuse_opcode(f"unknown {_code:#04x}")))
    del _name, _code


def _get(batch: dict[Any, Any], key: str) -> Any:
    """``batch[key]`` whether the pickle's keys are str (Python 2 + latin1) or bytes."""
    if key in batch:
        return batch[key]
    return batch[key.encode("latin1")]


def _unpickle(path: Path) -> Any:
    """The object in ``path``, read by :class:`RestrictedUnpickler`; DataError naming the file."""
    fix = "the file is corrupt or tampered with, delete it and download again"
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_BATCH_BYTES:
                raise DataError(
                    f"cifar10: {path} is {size} bytes, more than a CIFAR-10 batch "
                    f"({MAX_BATCH_BYTES >> 20} MiB at most; a real one is 31 MB); {fix}"
                )
            return RestrictedUnpickler(fh, size, encoding="latin1").load()
    except ForbiddenGlobal as err:
        raise DataError(
            f"cifar10: {path}: refusing to unpickle {err.qualname} (a CIFAR batch holds only "
            f"numpy arrays); {fix}"
        ) from None
    except Refused as err:
        raise DataError(f"cifar10: {path}: refusing to unpickle: {one_line(err.reason)}; {fix}") from None
    except FileNotFoundError:
        raise DataError(
            f"cifar10: {path} is missing; delete {path.parent} to download and extract it again"
        ) from None
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
        AttributeError, OverflowError, MemoryError, RecursionError, OSError,
    ) as err:
        raise DataError(
            f"cifar10: cannot read {path} ({one_line(err)}); delete it and download again"
        ) from None


def _labels(value: Any) -> np.ndarray | None:
    """A batch's labels as int64 if they are a flat list of ints or an integer vector."""
    if isinstance(value, np.ndarray):
        return value.astype(np.int64) if value.dtype.kind in "iu" and value.ndim == 1 else None
    if isinstance(value, list) and all(type(v) is int and -(2**63) <= v < 2**63 for v in value):
        return np.asarray(value, dtype=np.int64).reshape(len(value))
    return None


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)`` in 0..9,
    with N exactly :data:`BATCH_IMAGES` (10,000), as in every real batch."""
    batch = _unpickle(path)
    not_batch = f"cifar10: {path} is not a CIFAR-10 batch"
    fix = "delete it and download again"
    if not isinstance(batch, dict):
        raise DataError(f"{not_batch} (it holds a {type(batch).__name__}, not a dict); {fix}")
    try:
        data, labels = _get(batch, "data"), _labels(_get(batch, "labels"))
    except (KeyError, TypeError):
        raise DataError(f"{not_batch} (no data/labels); {fix}") from None
    if labels is None:
        raise DataError(f"{not_batch} (its labels are not a list of integers); {fix}")
    if not isinstance(data, np.ndarray):
        raise DataError(f"{not_batch} (its data is a {type(data).__name__}, not an array); {fix}")
    n = BATCH_IMAGES
    if data.dtype != np.uint8 or data.shape != (n, 3 * 32 * 32) or labels.shape != (n,):
        raise DataError(
            f"cifar10: {path}: expected uint8 data ({n}, 3072) and {n} labels, got {data.dtype} "
            f"{data.shape} and {labels.shape[0]} labels; {fix}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"cifar10: {path}: labels must be in 0..{NUM_CLASSES - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}; {fix}"
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
    return RawData(
        "cifar10", x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES, pixel_max=255.0
    )
