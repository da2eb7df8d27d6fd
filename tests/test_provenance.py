"""Provenance: where every number came from.

What a user relies on: every finished run records the settings and versions it was
made with (device and its name, precision, threads, torch, CUDA and cuDNN where used,
Python, lotto-tui); every grid invocation that runs or adopts jobs records, once, its
command line, versions, the project's git commit and the SHA-256 of the dataset files
read; none of it ever changes a job key or an experiment; older stores open, read
None for all of it, and migrate; runs adopted from another experiment keep it.
Real SQLite store, real tiny training, real git.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sklearn.datasets
import torch
from conftest import tiny_config
from lotto_engine import provenance
from lotto_engine.config import load_config
from lotto_engine.events import JobStarted
from lotto_engine.plan import build_plan
from lotto_engine.provenance import command_line, data_files, experiment_provenance, git_commit, git_dirty, sha256_file
from lotto_engine.records import RunResult
from lotto_engine.runner import Runner
from lotto_engine.store import SCHEMA_VERSION, Store

RUN_KEYS = {"device", "precision", "threads", "device_name", "torch", "cuda", "cudnn", "python", "lotto_tui"}
EXPERIMENT_KEYS = {"recorded_at", "command", "lotto_tui", "torch", "python", "platform", "git_commit",
                   "git_dirty", "dataset", "data_files", "device"}
DIGITS_FILE = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished tiny grid (one dense, one pruned run): (store folder, experiment id, config)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("provenance") / "store"
    config = tiny_config()
    with Store(root) as store:
        summary = Runner(config, store).run()
    assert summary.counts == {"done": 2}
    return root, summary.experiment_id, config


# --------------------------------------------------------------------------- per run


def test_every_finished_run_records_its_provenance_beside_its_numerics(grid):
    root, experiment_id, _ = grid
    with Store(root, create=False) as store:
        runs = store.runs(experiment_id)
    assert len(runs) == 2
    for run in runs:
        prov = run.provenance
        assert prov is not None and RUN_KEYS <= set(prov), prov
        # the numerics-changing settings, exactly as `numerics` (which other code reads) holds them
        assert {k: prov[k] for k in ("device", "precision", "threads")} == run.numerics
        assert run.numerics == {"device": "cpu", "precision": "fp32", "threads": 1}
        assert prov["torch"] == torch.__version__ and prov["python"] == platform.python_version()
        assert prov["cuda"] is None and prov["cudnn"] is None and prov["tf32"] is None  # CPU run
        assert isinstance(prov["device_name"], str) and prov["device_name"]
        assert isinstance(prov["lotto_tui"], str) and prov["lotto_tui"] != "unknown"
        assert isinstance(prov["deterministic"], bool)


def test_a_field_that_cannot_be_found_is_none_and_never_fails_the_run(monkeypatch):
    def broken() -> str:
        raise RuntimeError("no cpuinfo here")

    monkeypatch.setattr(provenance, "cpu_name", broken)
    monkeypatch.setattr(provenance, "lotto_version", broken)
    prov = provenance.run_provenance("cpu", "fp32", 3)
    assert prov["device_name"] is None and prov["lotto_tui"] is None
    assert (prov["device"], prov["precision"], prov["threads"]) == ("cpu", "fp32", 3)

    monkeypatch.setattr(provenance, "git_commit", broken)
    monkeypatch.setattr(provenance, "data_files", broken)
    record = experiment_provenance(tiny_config(), argv=["lotto-tui"])
    assert record["git_commit"] is None and record["data_files"] is None and record["command"] == "lotto-tui"


# --------------------------------------------------------------------------- per experiment


def test_each_invocation_that_runs_jobs_records_its_provenance_once(grid, monkeypatch):
    root, experiment_id, config = grid
    with Store(root) as store:
        (first,) = store.provenance(experiment_id)
        assert EXPERIMENT_KEYS <= set(first), first
        assert (first["action"], first["jobs"], first["reused"]) == ("start", 2, 0)
        assert first["dataset"] == "digits" and first["device"] == "cpu" and first["execution"] == "cpu fp32"
        # the checksum is of the file scikit-learn's digits loader reads
        assert first["data_files"] == {"sklearn/datasets/data/digits.csv.gz": _sha256(DIGITS_FILE)}
        assert first["torch"] == torch.__version__ and first["platform"] == platform.platform()

        Runner(config, store).run()  # nothing to run: nothing recorded
        assert len(store.provenance(experiment_id)) == 1

        monkeypatch.setattr("sys.argv", ["/opt/env/bin/lotto-tui", "--batch", "--set", 'grid.methods=["magnitude"]'])
        pruned = next(r for r in store.runs(experiment_id) if r.kind == "pruned")
        Runner(config, store).rerun(pruned.job_key)
        records = store.provenance(experiment_id)
    assert len(records) == 2 and records[0] == first
    second = records[1]
    assert (second["action"], second["jobs"]) == ("rerun", 1)
    assert second["command"] == "lotto-tui --batch --set 'grid.methods=[\"magnitude\"]'"
    assert second["recorded_at"] >= first["recorded_at"]


def test_provenance_names_no_host():
    record = experiment_provenance(tiny_config(), argv=["lotto-tui"])
    assert not any("host" in key for key in record)
    host = socket.gethostname()
    if len(host) >= 4 and host not in platform.platform():
        assert host not in json.dumps(record)


def test_command_line_is_shell_quoted_with_the_program_by_name():
    line = command_line(["/usr/local/bin/lotto-tui", "--set", "run.name='a b'", "x"])
    assert line.startswith("lotto-tui --set ") and "/usr/local" not in line
    assert shlex.split(line) == ["lotto-tui", "--set", "run.name='a b'", "x"]  # pastes back into a shell
    assert command_line([]) == ""


def test_provenance_never_changes_a_job_key_or_the_experiment(grid, tmp_path, monkeypatch):
    root, experiment_id, config = grid
    monkeypatch.setattr(provenance, "lotto_version", lambda: "9.9.9-other")
    monkeypatch.setattr(provenance, "git_commit", lambda start=None: "0" * 40)
    monkeypatch.setattr("sys.argv", ["elsewhere", "--other-command"])
    started: list[JobStarted] = []
    with Store(root) as store:
        before = {r.job_key for r in store.runs(experiment_id)}
        summary = Runner(config, store, on_event=started.append).run()
        assert summary.experiment_id == experiment_id and summary.counts == {"done": 2}
        assert not [e for e in started if isinstance(e, JobStarted)]  # nothing ran again
    # a fresh store under other provenance: the same jobs, by the same keys
    with Store(tmp_path / "fresh") as fresh:
        other = Runner(config, fresh).run()
        runs = fresh.runs(other.experiment_id)
        assert {r.job_key for r in runs} == before == {job.key for job in build_plan(config)}
        assert fresh.experiment(other.experiment_id).identity == config.identity("fp32")
        assert {r.provenance["lotto_tui"] for r in runs} == {"9.9.9-other"}
        (record,) = fresh.provenance(other.experiment_id)
        assert record["git_commit"] == "0" * 40 and record["command"] == "elsewhere --other-command"


# --------------------------------------------------------------------------- dataset files


def test_the_files_of_a_downloaded_dataset_are_checksummed_where_the_loader_finds_them(tmp_path):
    from lotto_engine.data.idx import FILES

    folder = tmp_path / "data" / "MNIST" / "raw"  # torchvision's layout, one the loader searches
    folder.mkdir(parents=True)
    for i, stem in enumerate(FILES):
        (folder / f"{stem}.gz").write_bytes(bytes([i]) * (100 + i))
    cfg = load_config(preset="demo", overrides=['data.dataset="mnist"', f"data.root='{tmp_path / 'data'}'"]).data
    sums = data_files(cfg)
    assert sums == {f"MNIST/raw/{stem}.gz": _sha256(folder / f"{stem}.gz") for stem in FILES}

    first = folder / f"{FILES[0]}.gz"
    first.write_bytes(b"changed, and longer than before")
    assert data_files(cfg)[f"MNIST/raw/{FILES[0]}.gz"] == _sha256(first)  # never a stale checksum

    missing = load_config(preset="demo", overrides=['data.dataset="cifar10"', f"data.root='{tmp_path / 'none'}'",
                                                    "data.download=false"]).data
    assert data_files(missing) == {}  # nothing there yet (and nothing is downloaded)


def test_cifar_batches_are_checksummed(tmp_path):
    from lotto_engine.data.cifar import FOLDER, TEST_BATCH, TRAIN_BATCHES

    folder = tmp_path / FOLDER
    folder.mkdir()
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        (folder / name).write_bytes(name.encode())
    cfg = load_config(preset="demo", overrides=['data.dataset="cifar10"', f"data.root='{tmp_path}'"]).data
    assert data_files(cfg) == {f"{FOLDER}/{n}": _sha256(folder / n) for n in sorted((*TRAIN_BATCHES, TEST_BATCH))}


def test_a_checksum_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    expected = _sha256(path)
    assert sha256_file(path) == expected
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert sha256_file(path) == expected and reads == []  # the same file is not read again
    stat = path.stat()
    path.write_bytes(b"y" * 1000)  # same size, new content and time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert sha256_file(path) == hashlib.sha256(b"y" * 1000).hexdigest() and len(reads) == 1


# --------------------------------------------------------------------------- git


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": str(cwd / ".no-global-config")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_of_the_clone_holding_the_code_is_found(tmp_path):
    repo = tmp_path / "clone"
    source = repo / "engine" / "lotto_engine" / "provenance.py"
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(source) == head  # a loose ref
    assert git_dirty(source) is False

    source.write_text("x = 2\n")
    (repo / "untracked-store").mkdir()  # a results store in the clone is not a change to the code
    assert git_dirty(source) is True
    _git(repo, "commit", "-q", "-am", "two")
    _git(repo, "pack-refs", "--all")  # the ref now lives in packed-refs only
    second = _git(repo, "rev-parse", "HEAD")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_commit(source) == second != head

    _git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), head)  # a worktree: .git is a file, HEAD detached
    assert git_commit(tmp_path / "wt" / "engine" / "lotto_engine" / "provenance.py") == head
    _git(tmp_path / "wt", "switch", "-q", "-c", "side")
    assert git_commit(tmp_path / "wt" / "engine") == head  # a branch whose loose ref is in the common dir


def test_code_outside_a_clone_or_installed_into_site_packages_has_no_commit(tmp_path):
    plain = tmp_path / "plain" / "lotto_engine" / "provenance.py"
    plain.parent.mkdir(parents=True)
    plain.write_text("")
    (tmp_path / "plain" / ".git").mkdir()
    installed = tmp_path / "plain" / ".venv" / "lib" / "site-packages" / "lotto_engine" / "provenance.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    assert git_commit(installed) is None and git_dirty(installed) is None  # the venv's clone is not the code's
    lonely = tmp_path / "elsewhere.py"
    lonely.write_text("")
    if git_commit(tmp_path) is None:  # tmp_path itself is not inside some clone
        assert git_commit(lonely) is None and git_dirty(lonely) is None


# --------------------------------------------------------------------------- the store


def _downgrade_to_schema_4(db: Path) -> None:
    """Make a store look written by the release before provenance (schema 4)."""
    with sqlite3.connect(db) as conn:
        for column in ("stability_floor", "kept_change", "provenance"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute("DROP TABLE provenance")
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.close()


def test_a_schema_4_store_reads_none_for_provenance_and_migrates_when_written(grid, tmp_path):
    root, experiment_id, _ = grid
    old = tmp_path / "old"
    shutil.copytree(root, old, ignore=shutil.ignore_patterns("locks"))
    with Store(old) as store:  # checkpoint the WAL into the file before it is altered
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _downgrade_to_schema_4(old / "lotto.db")

    with Store(old, create=False) as ro:  # read-only: nothing migrated, still readable
        runs = ro.runs(experiment_id)
        assert len(runs) == 2 and all(r.status == "done" and r.numerics for r in runs)
        assert all((r.stability_floor, r.kept_change, r.provenance) == (None, None, None) for r in runs)
        assert ro.provenance(experiment_id) == []
        assert next(r for r in runs if r.kind == "pruned").stability is not None
    with Store(old) as rw:  # a writer migrates it
        version = rw._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION == 5
        runs = rw.runs(experiment_id)
        assert all((r.stability_floor, r.kept_change, r.provenance) == (None, None, None) for r in runs)
        assert rw.provenance(experiment_id) == []
        rw.record_provenance(experiment_id, {"command": "lotto-tui", "recorded_at": "2026-01-01T00:00:00+00:00"})
        assert rw.provenance(experiment_id) == [{"command": "lotto-tui", "recorded_at": "2026-01-01T00:00:00+00:00"}]
        rw.finish_run(runs[0].id, RunResult(status="done", stability=0.5, stability_floor=0.3, kept_change=0.4,
                                            provenance={"torch": "x"}))
        again = next(r for r in rw.runs(experiment_id) if r.id == runs[0].id)
        assert (again.stability_floor, again.kept_change, again.provenance) == (0.3, 0.4, {"torch": "x"})


def test_provenance_records_come_back_oldest_first_per_experiment(tmp_path):
    with Store(tmp_path / "s") as store:
        one = store.experiment_for(tiny_config()).id
        two = store.experiment_for(tiny_config("grid.sparsities=[0.8]")).id
        store.record_provenance(one, {"n": 1})
        store.record_provenance(two, {"n": 2})
        store.record_provenance(one, {"n": 3, "recorded_at": "2020-01-01T00:00:00+00:00"})
        assert [r["n"] for r in store.provenance(one)] == [1, 3]  # in the order recorded
        assert [r["n"] for r in store.provenance(two)] == [2]
        assert all(r["recorded_at"] for r in store.provenance(one))
        assert store.provenance(99) == []


def test_adopted_runs_keep_d_companions_and_provenance(grid, tmp_path):
    root, experiment_id, config = grid
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("locks"))
    wider = tiny_config("grid.sparsities=[0.5, 0.8]")
    with Store(copy) as store:
        source = {r.job_key: r for r in store.runs(experiment_id)}
        summary = Runner(wider, store).run()  # adopts the dense and the 0.5 run, trains 0.8
        assert summary.experiment_id != experiment_id
        runs = {r.job_key: r for r in store.runs(summary.experiment_id)}
        adopted = [r for r in runs.values() if r.reused_from is not None]
        assert len(adopted) == 2
        for run in adopted:
            src = source[run.job_key]
            assert run.reused_from == src.id
            assert (run.stability, run.stability_floor, run.kept_change) == (
                src.stability, src.stability_floor, src.kept_change)
            assert run.provenance == src.provenance and run.provenance is not None
        assert next(r for r in adopted if r.kind == "pruned").stability_floor is not None
        (record,) = store.provenance(summary.experiment_id)
        assert (record["jobs"], record["reused"]) == (1, 2)
