"""The store trusts nothing it did not write: another program's database, a damaged
file, a full disk and bad artifacts each give one clear error, never a wrong result."""

from __future__ import annotations

import math
import sqlite3
import subprocess

import pytest
import torch
from lotto_engine.errors import StoreError
from lotto_engine.events import EpochFinished, Notice
from lotto_engine.runner import Runner
from lotto_engine.store import Store, StoreWriteError
from lotto_tui.cli import main

from conftest import tiny_config as _config


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_database_of_another_program_is_refused_and_left_untouched(tmp_path, capsys):
    folder = tmp_path / "theirs"
    folder.mkdir()
    with sqlite3.connect(folder / "lotto.db") as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.close()
    before = (folder / "lotto.db").read_bytes()
    with pytest.raises(StoreError, match="not a lotto-tui store"):
        Store(folder)
    with pytest.raises(StoreError, match="not a lotto-tui store"):
        Store(folder, create=False)
    assert (folder / "lotto.db").read_bytes() == before  # no lotto tables, no WAL switch
    assert main(["experiments", "--store", str(folder)]) == 2
    assert "not a lotto-tui store" in _one_error_line(capsys)


def _store_with_pages(folder) -> None:
    """A real store with enough rows to span many pages."""
    with Store(folder) as store:
        exp = store.experiment_for(_config())
        with store._conn:
            store._conn.executemany(
                "INSERT INTO runs (experiment_id, job_key, kind, activation, method, target_sparsity, seed, "
                "status, attempt, error, started_at) VALUES (?, ?, 'dense', 'relu', 'dense', 0, 0, 'done', 1, ?, 'x')",
                [(exp.id, f"key{i}", "e" * 200) for i in range(400)],
            )
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_damaged_store_is_one_line_and_exit_2_for_every_command(tmp_path, capsys):
    folder = tmp_path / "store"
    _store_with_pages(folder)
    db = folder / "lotto.db"
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for offset in range(2 * page, len(data) - page, page):  # keep the header page, ruin the rest
        data[offset : offset + page] = b"\xa5" * page
    db.write_bytes(bytes(data))

    with pytest.raises(StoreError, match="damaged"):
        with Store(folder, create=False) as store:
            store.runs(1)
    assert main(["experiments", "--store", str(folder)]) == 2
    assert "damaged" in _one_error_line(capsys)
    assert main(["export", "--store", str(folder), "--format", "json"]) == 2
    assert "damaged" in _one_error_line(capsys)


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), so writes meet a real ENOSPC; skips where
    this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder) -> None:
    """Take every free byte of the file system that holds ``folder``."""
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def test_a_disk_that_fills_mid_grid_stops_it_with_one_store_error_and_no_run_left_running(small_disk):
    with Store(small_disk / "store") as store:
        filled: list[bool] = []

        def on_event(event) -> None:
            if isinstance(event, EpochFinished) and not filled:
                filled.append(True)
                _fill(small_disk)

        with pytest.raises(StoreWriteError, match="full|No space") as err:
            Runner(_config(), store, on_event=on_event).run()
        assert "\n" not in str(err.value)
        statuses = [row[0] for row in store._conn.execute("SELECT status FROM runs")]
    assert statuses and "running" not in statuses


@pytest.fixture
def trained(tmp_path):
    store = Store(tmp_path / "store")
    config = _config()
    summary = Runner(config, store).run()
    assert summary.counts == {"done": 2}
    yield store, config
    store.close()


def _keys(store, config):
    runs = store.runs(store.find_experiment(config).id)
    return next(r.job_key for r in runs if r.kind == "dense"), next(r.job_key for r in runs if r.kind == "pruned")


@pytest.mark.parametrize("damage", ["nan", "garbage", "shape"])
def test_a_bad_parent_artifact_is_named_and_its_dense_job_retrains(trained, damage):
    store, config = trained
    dense_key, pruned_key = _keys(store, config)
    path = store.artifact_path(dense_key, "dense")
    weights = store.load_tensors(dense_key, "dense")
    if damage == "nan":
        first = next(k for k, v in weights.items() if v.is_floating_point())
        weights[first] = torch.full_like(weights[first], math.nan)
        store.save_tensors(dense_key, "dense", weights)
    elif damage == "garbage":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}" + b"\x00" * 64)
    else:
        first = next(iter(weights))
        weights[first] = torch.zeros(3)
        store.save_tensors(dense_key, "dense", weights)

    failed = Runner(config, store).run([pruned_key])
    assert failed.counts.get("failed") == 1
    (run,) = [r for r in store.runs(store.find_experiment(config).id) if r.job_key == pruned_key]
    assert run.status == "failed" and str(path) in run.error

    notes: list[str] = []
    resumed = Runner(config, store, on_event=lambda e: notes.append(e.message) if isinstance(e, Notice) else None)
    summary = resumed.run()
    assert summary.counts == {"done": 2}
    assert any(str(path) in note and "trains again" in note for note in notes)
    runs = {r.job_key: r for r in store.runs(summary.experiment_id)}
    assert runs[dense_key].attempt == 2 and math.isfinite(runs[pruned_key].stability)
    assert store.check_tensors(dense_key, "dense") is None
