"""The dataset layer: readers of the real on-disk formats, splits, normalisation, batches.

Every dataset file here is written by the test in its real format (CIFAR pickles
packed in a .tar.gz, IDX files built with struct), so nothing touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lotto_engine.config import DataConfig
from lotto_engine.data import (
    DATASETS,
    RawData,
    cifar,
    class_balanced_sample,
    epoch_batches,
    idx,
    load_dataset,
    stratified_split,
    stratified_subset,
)
from lotto_engine.data.batches import augment_batch
from lotto_engine.data.download import download, extract_tar
from lotto_engine.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    return text


# --------------------------------------------------------------------------- writers


def write_cifar_folder(folder: Path, per_batch: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """A cifar-10-batches-py folder as the real one: protocol-2 pickles with bytes keys."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        written[name] = data
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, protocol=2)
    )
    return written


def make_cifar_tarball(tmp: Path) -> tuple[Path, str]:
    src = tmp / "src"
    write_cifar_folder(src / cifar.FOLDER)
    archive = tmp / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / cifar.FOLDER, arcname=cifar.FOLDER)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        idx.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        idx.TRAIN_LABELS: (np.arange(n_train) % 10).astype(np.uint8),
        idx.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        idx.TEST_LABELS: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        blob = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)


def small_idx(monkeypatch: pytest.MonkeyPatch, n_train: int = 30, n_test: int = 10) -> None:
    """Let the IDX readers take the small sets :func:`write_idx_set` writes: by default they
    accept only the official sizes (60,000 training and 10,000 test images)."""
    for name, source in list(idx.SOURCES.items()):
        monkeypatch.setitem(idx.SOURCES, name, replace(source, n_train=n_train, n_test=n_test))


def small_cifar(monkeypatch: pytest.MonkeyPatch, per_batch: int = 10) -> None:
    """Let the CIFAR reader take batches of ``per_batch`` images (officially exactly 10,000)."""
    monkeypatch.setattr(cifar, "BATCH_IMAGES", per_batch)


# --------------------------------------------------------------------------- digits + load_dataset


def test_digits_loads_offline_with_fixed_test_split(tmp_path):
    ds = load_dataset(cfg(dataset="digits", root=str(tmp_path / "nowhere"), download=False))
    assert ds.name == "digits" and ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    assert len(ds.test) == 359 and len(ds.val) == 144 and len(ds.train) == 1797 - 359 - 144
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.device.type == "cpu"
        assert set(split.y.tolist()) == set(range(10))
    # The test split does not move with data.split_seed.
    other = load_dataset(cfg(dataset="digits", split_seed=5))
    assert torch.equal(ds.test.y, other.test.y)

    def unnormalised(d):
        return d.test.x * d.std[0] + d.mean[0]

    assert torch.allclose(unnormalised(ds), unnormalised(other), atol=1e-5)


def test_validation_split_is_deterministic_per_seed():
    a = load_dataset(cfg(split_seed=0))
    b = load_dataset(cfg(split_seed=0))
    c = load_dataset(cfg(split_seed=1))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.val.y, b.val.y)
    assert torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.y, c.val.y) or not torch.equal(a.val.x, c.val.x)
    # A count works as well as a fraction.
    assert len(load_dataset(cfg(val_size=100)).val) == 100


def test_stratified_subset_is_class_balanced():
    labels = np.repeat(np.arange(3), [600, 300, 100])
    sub = stratified_subset(labels, 100, seed=3)
    assert np.array_equal(np.bincount(labels[sub]), [60, 30, 10])
    assert np.array_equal(sub, np.sort(sub)) and np.array_equal(
        sub, stratified_subset(labels, 100, 3)
    )
    ds = load_dataset(cfg(subset=100))
    assert len(ds.train) == 100
    counts = torch.bincount(ds.train.y, minlength=10)
    assert int(counts.min()) >= 9 and int(counts.max()) <= 11


def test_stratified_split_partitions_with_largest_remainder():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    keep, hold = stratified_split(labels, 5, seed=0)
    assert np.array_equal(np.sort(np.concatenate([keep, hold])), np.arange(15))
    # quotas 7*5/15=2.33, 5/3=1.67, 1.0 -> 2, 2, 1
    assert np.array_equal(np.bincount(labels[hold], minlength=3), [2, 2, 1])
    assert np.array_equal(keep, np.sort(keep)) and np.array_equal(hold, np.sort(hold))
    k2, h2 = stratified_split(labels, 5, seed=0)
    assert np.array_equal(hold, h2) and np.array_equal(keep, k2)


def test_split_size_errors_name_the_key():
    with pytest.raises(DataError, match=r"^data\.subset: ") as err:
        load_dataset(cfg(subset=5000))
    assert_one_line(err)
    with pytest.raises(DataError, match=r"^data\.val_size: ") as err:
        load_dataset(cfg(val_size=5000))
    assert_one_line(err)


def test_normalisation_uses_training_statistics_only(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.arange(200, dtype=np.int64) % 4
    x_train = rng.integers(0, 100, (200, 3, 5, 5), dtype=np.uint8)
    x_train[:, 2] = 7  # a constant channel must not divide by zero
    x_test = np.full((40, 3, 5, 5), 255, dtype=np.uint8)  # far from the training data
    fake = RawData("fake", x_train, y, x_test, np.arange(40, dtype=np.int64) % 4, 4, 255.0)
    monkeypatch.setitem(DATASETS, "digits", lambda root, download: fake)
    ds = load_dataset(cfg(val_size=0.2))
    assert ds.input_shape == (3, 5, 5) and len(ds.val) == 40 and len(ds.train) == 160
    per_channel_mean = ds.train.x.mean(dim=(0, 2, 3))
    per_channel_std = ds.train.x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(per_channel_mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel_std[:2], torch.ones(2), atol=1e-4)
    assert ds.std[2] == 1.0 and ds.mean[2] == pytest.approx(7 / 255, rel=1e-5)
    assert ds.test.x.mean() > 3  # test images were not used for the statistics
    train_raw = x_train[np.sort(stratified_split(y, 40, 0)[0])] / 255.0
    assert ds.mean[0] == pytest.approx(train_raw[:, 0].mean(), rel=1e-5)


def test_val_size_must_leave_every_class_in_training(monkeypatch):
    y = np.array([0] * 20 + [1], dtype=np.int64)
    x = np.zeros((21, 1, 2, 2), dtype=np.uint8)
    fake = RawData("fake", x, y, x, y, 2, 255.0)
    monkeypatch.setitem(DATASETS, "digits", lambda root, download: fake)
    with pytest.raises(DataError, match="leaves no training image of class 1") as err:
        load_dataset(cfg(val_size=0.9))
    assert_one_line(err)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_reader_reads_written_batches(tmp_path, monkeypatch):
    small_cifar(monkeypatch, per_batch=10)
    written = write_cifar_folder(tmp_path / cifar.FOLDER)
    x_train, y_train, x_test, y_test = cifar.read_cifar10(tmp_path / cifar.FOLDER)
    assert x_train.shape == (50, 3, 32, 32) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_train.shape == (50,)
    assert np.array_equal(x_train[:10].reshape(10, -1), written["data_batch_1"])
    assert np.array_equal(x_test.reshape(10, -1), written["test_batch"])
    # Channel-major layout: the first 1024 bytes of a row are the red plane.
    assert np.array_equal(x_test[3, 0].reshape(-1), written["test_batch"][3, :1024])
    ds = load_dataset(cfg(dataset="cifar10", root=str(tmp_path), download=False, val_size=10))
    assert ds.input_shape == (3, 32, 32) and len(ds.train) == 40 and len(ds.test) == 10
    assert len(ds.mean) == 3


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), like the real CIFAR files."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes


def test_cifar_reader_accepts_python2_numpy1_pickles(tmp_path, monkeypatch):
    small_cifar(monkeypatch, per_batch=2)
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({b"data": data, b"labels": [3, 4]})
    blob = buf.getvalue().replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )  # numpy 1.x name
    assert b"_codecs" not in blob
    (tmp_path / "data_batch_1").write_bytes(blob)
    x, y = cifar.load_batch(tmp_path / "data_batch_1")
    assert np.array_equal(x.reshape(2, -1), data) and y.tolist() == [3, 4]


def test_cifar_download_verifies_md5_and_extracts(tmp_path, monkeypatch):
    archive, md5 = make_cifar_tarball(tmp_path)
    root = tmp_path / "root"
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", md5)
    folder = cifar.find_or_fetch_cifar10(root, download=True)
    assert folder == root.resolve() / cifar.FOLDER
    assert (folder / "data_batch_5").is_file() and (root / cifar.ARCHIVE).is_file()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [cifar.ARCHIVE, cifar.FOLDER]
    )  # no temp files


def test_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = make_cifar_tarball(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="MD5 mismatch"):
        download(archive.as_uri(), root / "a.tar.gz", "0" * 32)
    assert not root.exists()  # nothing left behind, not even the folder it made
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", "0" * 32)
    with pytest.raises(DataError, match="the download failed") as err:
        cifar.find_or_fetch_cifar10(root, download=True)
    assert "MD5 mismatch" in assert_one_line(err)
    assert not root.exists()


def test_extract_tar_refuses_paths_outside_the_target(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError):
        extract_tar(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("via", ["os.system", "eval"])
def test_unpickler_refuses_code_and_runs_nothing(tmp_path, via):
    marker = tmp_path / "pwned"
    if via == "os.system":
        payload = _Payload(os.system, f"touch {marker}")
    else:
        payload = _Payload(eval, f"open({str(marker)!r}, 'w').close()")
    blob = pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(blob)
    with pytest.raises(DataError, match="refusing to unpickle") as err:
        cifar.load_batch(folder / "data_batch_1")
    text = assert_one_line(err)
    assert (
        ("system" in text) if via == "os.system" else ("eval" in text)
    )  # __builtin__.eval at protocol 2
    assert not marker.exists()
    if via == "eval":  # the payload is live: a plain unpickler would have run it
        pickle.loads(blob)
        assert marker.exists()


def test_missing_cifar_without_download_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(cfg(dataset="cifar10", root=str(tmp_path / "data"), download=False))
    text = assert_one_line(err)
    assert str((tmp_path / "data").resolve()) in text and "cifar-10-batches-py" in text


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "URL", (tmp_path / "no-such.tar.gz").as_uri())
    with pytest.raises(DataError, match="the download failed") as err:
        cifar.find_or_fetch_cifar10(tmp_path / "root", download=True)
    assert "set data.root" in assert_one_line(err)


# --------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_plain_and_gzipped(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([1, -2, 300000], dtype=">i4")
    for name, arr in (("a", array), ("b", ints)):
        blob = idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(blob) if gz else blob)
    assert np.array_equal(idx.read_idx(tmp_path / "a"), array)
    got = idx.read_idx(tmp_path / "b")
    assert got.dtype == np.int32 and got.dtype.isnative and got.tolist() == [1, -2, 300000]


def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path):
    blob = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    truncated = tmp_path / "train-images-idx3-ubyte"
    truncated.write_bytes(blob[:-10])
    with pytest.raises(DataError, match="payload") as err:
        idx.read_idx(truncated)
    assert str(truncated) in assert_one_line(err)
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02" + blob[2:])
    with pytest.raises(DataError, match="bad header"):
        idx.read_idx(bad_magic)
    not_gzip = tmp_path / "x.gz"
    not_gzip.write_bytes(b"garbage!")
    with pytest.raises(DataError, match="x.gz"):
        idx.read_idx(not_gzip)


def test_mnist_found_in_torchvision_raw_folder(tmp_path, monkeypatch):
    small_idx(monkeypatch)
    write_idx_set(tmp_path / "MNIST" / "raw", gz=True)
    ds = load_dataset(cfg(dataset="mnist", root=str(tmp_path), download=False))
    assert ds.input_shape == (1, 28, 28) and len(ds.train) == 27 and len(ds.val) == 3
    assert len(ds.test) == 10 and ds.train.x.shape == (27, 1, 28, 28)


def test_fashion_mnist_downloads_gz_files_with_md5(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_idx_set(served, gz=True)
    md5 = {s: hashlib.md5((served / f"{s}.gz").read_bytes()).hexdigest() for s in idx.FILES}
    source = replace(idx.SOURCES["fashion-mnist"], base_url=served.as_uri() + "/", md5=md5)
    monkeypatch.setitem(idx.SOURCES, "fashion-mnist", source)
    small_idx(monkeypatch)
    root = tmp_path / "root"
    ds = load_dataset(cfg(dataset="fashion-mnist", root=str(root), download=True))
    assert len(ds.test) == 10 and ds.input_shape == (1, 28, 28)
    assert sorted(p.name for p in (root / "fashion-mnist").iterdir()) == sorted(
        f"{s}.gz" for s in idx.FILES
    )


def test_missing_mnist_without_download_lists_folders(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(cfg(dataset="mnist", root=str(tmp_path), download=False))
    text = assert_one_line(err)
    assert str(tmp_path.resolve() / "MNIST" / "raw") in text and "data.download" in text


# --------------------------------------------------------------------------- batches


def test_batches_cover_every_index_once_and_repeat_per_seed():
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    y = torch.arange(10)
    batches = list(epoch_batches(x, y, 4, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(bx.view(-1), by.float()) for bx, by in batches)  # pairs stay together
    again = torch.cat([b[1] for b in epoch_batches(x, y, 4, torch.Generator().manual_seed(0))])
    other = torch.cat([b[1] for b in epoch_batches(x, y, 4, torch.Generator().manual_seed(1))])
    assert torch.equal(seen, again) and not torch.equal(seen, other)


def test_augmented_batches_repeat_per_seed():
    x = torch.randn(20, 3, 6, 6)
    y = torch.arange(20)

    def run():
        gen = torch.Generator().manual_seed(3)
        return list(epoch_batches(x, y, 8, gen, augment=True, padding=2))

    a, b = run(), run()
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert all(p[0].shape[1:] == (3, 6, 6) for p in a)


def _per_batch_epoch(x, y, batch_size, generator, padding):
    """The epoch as batches were drawn before the draws moved in one copy: the order,
    then per batch its rows, a padded copy, its crop offsets and flips."""
    perm = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], batch_size):
        idx = perm[start : start + batch_size]
        xb = x.index_select(0, idx)
        b, c, h, w = xb.shape
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
        flip = torch.rand(b, generator=generator) < 0.5
        padded = torch.nn.functional.pad(xb, (padding,) * 4)
        rows = offsets[0, :, None] + torch.arange(h)
        cols = offsets[1, :, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        yield padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]], y.index_select(0, idx)


@pytest.mark.parametrize("augment", [False, True])
def test_an_epochs_batches_are_those_drawn_batch_by_batch_bit_for_bit(augment):
    # a seed's batches and augmentations (and the generator's state after the epoch,
    # which checkpoints and late rewinding keep) do not change with how they are drawn
    x, y = torch.randn(37, 3, 6, 5), torch.arange(37)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    if augment:
        expected = list(_per_batch_epoch(x, y, 8, a, padding=3))
    else:
        perm = torch.randperm(37, generator=a)
        expected = [(x[perm[s : s + 8]], y[perm[s : s + 8]]) for s in range(0, 37, 8)]
    got = list(epoch_batches(x, y, 8, b, augment=augment, padding=3))
    assert len(got) == len(expected) == 5
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(gx, ex) and torch.equal(gy, ey)
        assert not torch.signbit(gx[gx == 0]).any()  # padding is +0.0, as a zero pad writes it
    assert torch.equal(a.get_state(), b.get_state())
    assert list(epoch_batches(x[:0], y[:0], 8, b, augment=augment)) == []  # no data: no batch


def _shifted(img: torch.Tensor, dy: int, dx: int, p: int, flip: bool) -> torch.Tensor:
    """The reference crop: pad with zeros, cut the window at (dy, dx), maybe mirror."""
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (p, p, p, p))
    out = padded[:, dy : dy + h, dx : dx + w]
    return out.flip(-1) if flip else out


def test_random_crop_shifts_content_within_padding():
    p = 2
    img = torch.arange(1, 2 * 5 * 5 + 1, dtype=torch.float32).view(
        2, 5, 5
    )  # all distinct, no zeros
    out = augment_batch(img.expand(64, -1, -1, -1), torch.Generator().manual_seed(0), padding=p)
    assert out.shape == (64, 2, 5, 5)
    used = set()
    for sample in out:
        matches = [
            (dy, dx, f)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for f in (False, True)
            if torch.equal(sample, _shifted(img, dy, dx, p, f))
        ]
        assert len(matches) == 1
        used.add(matches[0])
    shifts = {(dy, dx) for dy, dx, _ in used}
    assert len(shifts) > 5 and any(s != (p, p) for s in shifts)
    assert {f for _, _, f in used} == {False, True}


def test_flip_without_padding_mirrors_horizontally():
    img = torch.arange(12, dtype=torch.float32).view(1, 3, 4)
    out = augment_batch(img.expand(32, -1, -1, -1), torch.Generator().manual_seed(1), padding=0)
    flipped = [torch.equal(o, img.flip(-1)) for o in out]
    assert all(f or torch.equal(o, img) for f, o in zip(flipped, out, strict=True))
    assert 0 < sum(flipped) < 32


def test_class_balanced_sample():
    y = torch.tensor([0] * 8 + [1] * 2 + [2] * 5)
    x = torch.arange(15, dtype=torch.float32).view(15, 1)
    xs, ys = class_balanced_sample(x, y, per_class=3, seed=0)
    assert torch.bincount(ys, minlength=3).tolist() == [3, 2, 3]
    assert torch.equal(y[xs.view(-1).long()], ys)  # images stay with their labels
    xs2, _ = class_balanced_sample(x, y, per_class=3, seed=0)
    assert torch.equal(xs, xs2)
