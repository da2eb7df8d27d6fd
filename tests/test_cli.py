"""The ``lotto-tui`` command line, run as a user runs it: the real console script in a
subprocess, real stores on disk, real (tiny) training on the bundled digits.

What a user relies on: fast help, one clear line per input problem (never a
traceback), plain logs when piped, clean Ctrl-C and resume, honest exit codes, and
exports that other tools can read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from lotto_engine.config import SECTIONS, load_config
from lotto_tui.cli import main

from conftest import CliResult, db_rows, run_main, run_on_terminal

LOTTO = Path(sys.executable).with_name("lotto-tui")
REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")

TINY = [
    "--preset", "demo",
    "--set", 'grid.activations=["relu"]',
    "--set", 'grid.methods=["magnitude"]',
    "--set", "grid.sparsities=[0.5]",
    "--set", "train.dense_epochs=2",
    "--set", "train.pruned_epochs=1",
    "--set", "model.width=4",
    "--set", "model.hidden=16",
    "--set", "run.threads=1",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        env.pop(name, None)
    env.update(extra)
    return env


def lotto(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOTTO), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def in_process(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """:func:`lotto` run in this process (``conftest.run_main``): for tests of what a
    command prints, returns and stores, not of the process itself."""
    result: CliResult = run_main(*args, cwd=cwd, env=env)
    return subprocess.CompletedProcess(["lotto-tui", *args], result.rc, result.stdout, result.stderr)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one stderr line naming every needle, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


# --------------------------------------------------------------------------- help


def test_help_is_quick_and_exits_0(tmp_path):
    started = time.monotonic()
    proc = lotto("--help", cwd=tmp_path, timeout=30)
    assert proc.returncode == 0
    assert "--batch" in proc.stdout and "--preset" in proc.stdout and "130" in proc.stdout
    assert time.monotonic() - started < 10
    for command in ("config", "export", "experiments", "report"):
        sub = lotto(command, "--help", cwd=tmp_path, timeout=30)
        assert sub.returncode == 0 and "--help" in sub.stdout, command


def test_help_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from lotto_tui.cli import main\n"
        "for argv in (['--help'], ['config', '--help'], ['export', '--help'], ['experiments', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print('torch' in sys.modules, 'textual' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"


# --------------------------------------------------------------------------- config errors
# What a config problem prints and returns is the command's doing, not the process's:
# these run in-process (the console script's own exit paths are tested above and below).


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grid.colour=1", "grid.colour"),
        ("grid.sparsities=[0.5, 1.5]", "grid.sparsities"),
        ("grid.sparsities=[0.0]", "grid.sparsities"),
        ('grid.activations=["swish2"]', "grid.activations"),
        ('grid.methods=["snip2"]', "grid.methods"),
        ("grid.methods=[]", "grid.methods"),
        ("grid.activations=[]", "grid.activations"),
        ('train.dense_epochs="ten"', "train.dense_epochs"),
        ("train.lr=true", "train.lr"),
        ("train.lr=inf", "train.lr"),
        ("data.val_size=nan", "data.val_size"),
        ("grid.seeds=[9223372036854775808]", "grid.seeds"),
        ("run.threads=100000", "run.threads"),
        ('data.root="/unterminated', "data.root"),
        ("grid.sparsities=[0.5", "grid.sparsities"),
    ],
)
def test_each_config_problem_is_one_line_naming_its_key(tmp_path, override, key):
    proc = in_process("--batch", *TINY, "--set", override, "--store", "runs", cwd=tmp_path)
    line = assert_one_line_error(proc, f"{key}:")
    assert line.startswith("lotto-tui: config error:")
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was created


def test_several_config_problems_give_one_line_each(tmp_path):
    proc = in_process(
        "--batch", *TINY,
        "--set", "grid.sparsities=[1.5]",
        "--set", 'grid.activations=["nope"]',
        "--set", "model.depth=3",
        "--set", 'train.batch_size="big"',
        "--store", "runs", cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 4, proc.stderr
    for key in ("grid.sparsities:", "grid.activations:", "model.depth:", "train.batch_size:"):
        assert sum(key in line for line in lines) == 1, key


def test_missing_and_malformed_config_files_are_one_line(tmp_path):
    missing = in_process("--batch", "--config", "nope.toml", cwd=tmp_path)
    assert_one_line_error(missing, "nope.toml")

    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 0.1\n")
    malformed = in_process("--batch", "--config", str(bad), cwd=tmp_path)
    assert_one_line_error(malformed, "bad.toml", "invalid TOML")

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nlearning_rate = 0.1\n")
    assert_one_line_error(in_process("--batch", "--config", str(unknown), cwd=tmp_path),
                          "train.learning_rate")


def test_set_without_equals_is_bad_input(tmp_path):
    proc = in_process("--batch", *TINY, "--set", "train.lr", cwd=tmp_path)
    assert_one_line_error(proc, "train.lr", "KEY=VALUE")


# --------------------------------------------------------------------------- config command


def test_config_prints_complete_toml_that_round_trips(tmp_path):
    proc = lotto("config", "--preset", "demo", cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(proc.stdout)
    for section, model in SECTIONS.items():
        assert set(data[section]) == set(model.model_fields), section
    path = tmp_path / "demo.toml"
    path.write_text(proc.stdout)
    assert load_config(file=path) == load_config(preset="demo")

    # overrides are carried too, and the file is accepted by the CLI itself
    tweaked = lotto("config", "--config", str(path), "--set", "grid.sparsities=[0.25]",
                    "--set", 'run.name="my run"', cwd=tmp_path, timeout=30)
    assert tweaked.returncode == 0, tweaked.stderr
    path2 = tmp_path / "tweaked.toml"
    path2.write_text(tweaked.stdout)
    expected = load_config(preset="demo", overrides=["grid.sparsities=[0.25]", 'run.name="my run"'])
    assert load_config(file=path2) == expected


def test_config_with_non_ascii_name_is_still_valid_toml(tmp_path):
    proc = lotto("config", "--preset", "demo", "--set", 'run.name="caf\u00e9 \U0001f9ea"', cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(proc.stdout)["run"]["name"] == "caf\u00e9 \U0001f9ea"


def test_config_reference_lists_every_key(tmp_path):
    proc = lotto("config", "--reference", cwd=tmp_path, timeout=30)
    assert proc.returncode == 0
    keys = [f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields]
    assert len(keys) > 30
    for key in keys:
        assert f"`{key}`" in proc.stdout, key


def test_readme_documents_every_config_key():
    keys = [f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields]
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet")
    text = readme.read_text()
    missing = [key for key in keys if key not in text]
    assert not missing, f"README.md does not document: {', '.join(missing)}"


# --------------------------------------------------------------------------- batch


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """One finished tiny grid (dense + one pruned run), run as a piped batch."""
    cwd = tmp_path_factory.mktemp("tiny")
    proc = lotto("--batch", *TINY, "--store", "runs", cwd=cwd)
    return cwd, proc


@pytest.mark.slow
def test_batch_piped_prints_epoch_lines_table_and_charts_without_ansi(tiny_grid):
    cwd, proc = tiny_grid
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert not ANSI.search(out) and not ANSI.search(proc.stderr)
    epoch_lines = re.findall(r"^\[(\d+)/(\d+)\] (.+?) epoch (\d+)/(\d+) train_loss=\S+ .*val_acc=\S+", out, re.M)
    assert epoch_lines == [
        ("1", "2", "relu dense seed=0", "1", "2"),
        ("1", "2", "relu dense seed=0", "2", "2"),
        ("2", "2", "relu magnitude s=0.5 seed=0", "1", "1"),
    ]
    assert "Experiment 1" in out and "activation" in out and "magnitude" in out  # results table
    for title in ("Validation accuracy vs sparsity", "Mask sparsity vs target", "Stability D vs sparsity",
                  "Training curves"):
        assert title in out, title
    assert "2 done" in out
    assert not (cwd / "lotto-runs").exists()  # --store was honoured

    # the same command again: nothing to run, the report again, still plain with NO_COLOR
    again = in_process("--batch", *TINY, "--store", "runs", cwd=cwd, NO_COLOR="1")
    assert again.returncode == 0, again.stderr
    assert "2 already done, 0 to run" in again.stdout
    assert not re.search(r"^\[\d+/\d+\] .* epoch \d+/\d+ ", again.stdout, re.M)
    assert "Validation accuracy vs sparsity" in again.stdout
    assert not ANSI.search(again.stdout)


@pytest.mark.slow
def test_experiments_lists_the_experiment(tiny_grid):
    cwd, proc = tiny_grid
    assert proc.returncode == 0
    listed = lotto("experiments", "--store", "runs", cwd=cwd, timeout=30)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split()[:2] == ["id", "created"] and len(rows) == 1
    assert re.match(r"\s*1\s", rows[0]) and "digits" in rows[0] and "1x1x1x1" in rows[0]
    assert "2/2" in rows[0] and "done" in header.split()

    empty = lotto("experiments", "--store", "no-such-store", cwd=cwd, timeout=30)
    assert_one_line_error(empty, "no-such-store")


# --------------------------------------------------------------------------- export


def _strict_json(text: str):
    def no_constants(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.mark.slow
def test_export_json_has_every_run_with_its_metrics_and_curve(tiny_grid):
    cwd, proc = tiny_grid
    assert proc.returncode == 0
    out = lotto("export", "--store", "runs", "--format", "json", cwd=cwd, timeout=30)
    assert out.returncode == 0, out.stderr
    data = _strict_json(out.stdout)
    assert set(data) == {"experiment", "provenance", "cells", "runs"}
    assert data["experiment"]["id"] == 1
    assert data["experiment"]["config"]["grid"]["sparsities"] == [0.5]
    runs = data["runs"]
    assert len(runs) == 2
    dense, pruned = sorted(runs, key=lambda r: r["target_sparsity"])
    for run, epochs in ((dense, 2), (pruned, 1)):
        for field in ("activation", "method", "target_sparsity", "actual_sparsity", "seed", "status",
                      "val_acc", "best_val_acc", "test_acc", "stability", "curve"):
            assert field in run, field
        assert run["activation"] == "relu" and run["seed"] == 0 and run["status"] == "done"
        for acc in ("val_acc", "best_val_acc", "test_acc"):
            assert 0.0 <= run[acc] <= 1.0, (acc, run[acc])
        assert run["best_val_acc"] >= run["val_acc"]
        assert [p["epoch"] for p in run["curve"]] == list(range(1, epochs + 1))
        for point in run["curve"]:
            assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"} <= set(point)
            assert 0.0 <= point["train_acc"] <= 1.0 and 0.0 <= point["val_acc"] <= 1.0
        assert run["curve"][-1]["val_acc"] == run["val_acc"]
    assert dense["method"] == "dense" and dense["target_sparsity"] == 0
    assert dense["actual_sparsity"] == 0 and dense["stability"] is None
    assert pruned["method"] == "magnitude" and pruned["target_sparsity"] == 0.5
    assert abs(pruned["actual_sparsity"] - 0.5) < 0.01
    assert isinstance(pruned["stability"], float) and pruned["stability"] > 0


@pytest.mark.slow
def test_export_csv_to_file_and_bad_requests(tiny_grid):
    cwd, proc = tiny_grid
    assert proc.returncode == 0
    out = lotto("export", "--store", "runs", "--format", "csv", "--out", "out/results.csv", cwd=cwd, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    rows = list(csv.DictReader(io.StringIO((cwd / "out" / "results.csv").read_text())))
    assert len(rows) == 2
    assert {"activation", "method", "target_sparsity", "status", "test_acc", "stability"} <= set(rows[0])
    assert sorted(r["method"] for r in rows) == ["dense", "magnitude"]
    assert all(r["status"] == "done" for r in rows)
    assert [p.name for p in (cwd / "out").iterdir()] == ["results.csv"]  # no temp file left

    assert_one_line_error(
        lotto("export", "--store", "runs", "--experiment", "999", "--format", "json", cwd=cwd, timeout=30),
        "999",
    )
    nowhere = lotto("export", "--store", "empty", "--format", "json", cwd=cwd, timeout=30)
    assert_one_line_error(nowhere, "empty")
    assert nowhere.stdout == ""
    assert not (cwd / "empty").exists()  # export never creates a store


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_missing_dataset_offline_is_one_line_and_store_stays_usable(tmp_path):
    data_root = tmp_path / "no-data-here"
    data_root.mkdir()
    proc = in_process(
        "--batch", *TINY,
        "--set", 'data.dataset="cifar10"',
        "--set", f'data.root="{data_root}"',
        "--set", "data.download=false",
        "--store", "runs", cwd=tmp_path,
    )
    assert_one_line_error(proc, str(data_root))
    assert not (tmp_path / "runs").exists()  # the failed start made no store folder

    # an existing store stays usable and gains no empty experiment
    assert in_process("--batch", *TINY, "--store", "runs", cwd=tmp_path).returncode == 0
    again = in_process("--batch", *TINY, "--set", 'data.dataset="cifar10"', "--set", f'data.root="{data_root}"',
                       "--set", "data.download=false", "--store", "runs", cwd=tmp_path)
    assert_one_line_error(again, str(data_root))
    db = tmp_path / "runs" / "lotto.db"
    assert _integrity(db) == "ok"
    assert db_rows(db, "SELECT status FROM runs WHERE status = 'running'") == []
    assert db_rows(db, "SELECT id FROM experiments") == [(1,)]
    listed = lotto("experiments", "--store", "runs", cwd=tmp_path, timeout=30)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2


@pytest.mark.slow
def test_unavailable_device_is_one_line(tmp_path):
    if Path("/dev/nvidiactl").exists() or Path("/dev/dxg").exists():
        pytest.skip("this machine may have CUDA")
    proc = in_process("--batch", *TINY, "--device", "cuda", "--store", "runs", cwd=tmp_path)
    assert_one_line_error(proc, "cuda")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cuda_graphs_on_without_cuda_is_one_line_and_creates_nothing(tmp_path):
    if Path("/dev/nvidiactl").exists() or Path("/dev/dxg").exists():
        pytest.skip("this machine may have CUDA")
    proc = in_process("--batch", *TINY, "--device", "cpu", "--set", 'run.cuda_graphs="on"', "--store", "runs",
                      cwd=tmp_path)
    assert_one_line_error(proc, "run.cuda_graphs", "CUDA")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # the parallel scheduler itself is tested fast in test_fast_engine.py
def test_parallel_batch_run_reports_every_job_and_the_slots(tmp_path):
    proc = in_process("--batch", *TINY, "--set", 'grid.activations=["relu","tanh"]', "--set", "run.parallel=2",
                      "--store", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(2 jobs at once)" in proc.stdout
    finished = [line for line in proc.stdout.splitlines() if line.startswith("[") and "epoch" not in line]
    total = len(finished)
    # each job keeps its number (its place in start order) on every line, whichever ends first
    assert total == 4 and sorted(line[:5] for line in finished) == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    last = proc.stdout.strip().splitlines()[-1]
    assert "4 done" in last and re.search(r"peak memory \d+\.\d GiB \(process\)$", last), last


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hang-up"])
def test_ctrl_c_cancels_cleanly_and_the_same_command_resumes(tmp_path, sig):
    # a hang-up (the SSH session dropped) cancels like Ctrl-C: no run is left "running"
    # (and on a cluster the driver's jobs are cancelled, not left to run on)
    args = ["--batch", *TINY, "--set", "train.dense_epochs=8", "--store", "runs"]
    db = tmp_path / "runs" / "lotto.db"
    proc = subprocess.Popen([str(LOTTO), *args], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if db_rows(db, "SELECT id FROM runs WHERE status = 'running'"):
                break
            time.sleep(0.03)
        assert proc.poll() is None, "the batch ended before a run was seen running"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _integrity(db) == "ok"
    rows = db_rows(db, "SELECT status, error FROM runs ORDER BY id")
    assert ("cancelled", "cancelled") in rows, rows
    assert not [r for r in rows if r[0] in ("running", "queued")]
    if sig != signal.SIGINT:
        return

    again = in_process(*args, cwd=tmp_path)  # the same command (in this process: the signal was the real one)
    assert again.returncode == 0, again.stderr
    latest = db_rows(
        db,
        "SELECT job_key, status FROM runs r WHERE attempt = "
        "(SELECT MAX(attempt) FROM runs q WHERE q.job_key = r.job_key)",
    )
    assert len(latest) == 2 and all(status == "done" for _, status in latest)
    assert len(db_rows(db, "SELECT id FROM runs WHERE status = 'cancelled'")) == 1  # history kept


@pytest.mark.slow
def test_diverged_run_is_recorded_and_the_grid_goes_on(tmp_path):
    proc = in_process("--batch", *TINY, "--set", "train.lr=1e6", "--store", "runs", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "diverged" in proc.stdout
    db = tmp_path / "runs" / "lotto.db"
    rows = dict(db_rows(db, "SELECT kind, status FROM runs"))
    assert rows == {"dense": "diverged", "pruned": "failed"}  # the pruned job was still attempted and recorded
    (error,) = db_rows(db, "SELECT error FROM runs WHERE kind = 'pruned'")[0]
    assert "dense" in error

    export = lotto("export", "--store", "runs", "--format", "json", cwd=tmp_path, timeout=30)
    assert export.returncode == 0
    data = _strict_json(export.stdout)  # NaN losses never leak into the JSON
    dense = next(r for r in data["runs"] if r["method"] == "dense")
    assert dense["status"] == "diverged" and dense["test_acc"] is None


@pytest.mark.slow
def test_on_a_terminal_batch_shows_progress_bars_and_a_colour_table(tmp_path):
    code, screen = run_on_terminal(["--batch", *TINY, "--store", str(tmp_path / "store")], cwd=tmp_path)
    assert code == 0
    assert "relu dense seed=0" in screen and "━" in screen  # the job's progress bar
    assert "\x1b[" in screen  # colour on a terminal
    assert "epoch 1/2" not in screen  # no per-epoch log lines: the bars show progress
    assert "Validation accuracy vs sparsity" in screen


@pytest.mark.slow
def test_a_corrupt_store_file_is_one_line_not_a_traceback(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "lotto.db").write_bytes(b"this is not a database" * 100)
    proc = in_process("--batch", *TINY, "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "lotto.db" in lines[0], proc.stderr


def test_an_unexpected_internal_error_is_one_line_with_exit_70(monkeypatch, capsys):
    from lotto_tui import batch, cli

    def broken(opts):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(batch, "batch_command", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["--batch"]) == cli.EXIT_INTERNAL == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lotto-tui: internal error: RuntimeError: disk on fire "  # its first line only
                   f"(finished runs are saved; set {cli.DEBUG_ENV}=1 for the traceback)"]
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        cli.main(["--batch"])


def test_an_unreadable_config_file_is_one_line(tmp_path):
    bad = tmp_path / "binary.toml"
    bad.write_bytes(b"\xff\xfe\x00 not text")
    proc = in_process("--batch", "--config", str(bad), cwd=tmp_path)
    assert_one_line_error(proc, "not a UTF-8 text file")


def test_a_lock_folder_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    (store / "locks").write_text("in the way")
    monkeypatch.chdir(tmp_path)
    assert main(["--batch", *TINY, "--store", str(store)]) == 2  # in-process: no torch start-up to pay
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "lock" in err[0] and "Traceback" not in err[0], err


@pytest.mark.slow  # it needs the module's finished grid (a 3.6 s subprocess), as the other users do
def test_export_failure_leaves_no_temp_file_and_reads_without_writing(tiny_grid, tmp_path):
    cwd, proc = tiny_grid
    assert proc.returncode == 0
    store_dir = cwd / "runs"
    db = store_dir / "lotto.db"
    before = (db.stat().st_mtime_ns, db.stat().st_size)
    target = tmp_path / "a-folder"
    target.mkdir()
    proc = lotto("export", "--store", str(store_dir), "--format", "json", "--out", str(target), cwd=tmp_path)
    assert proc.returncode == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert lotto("experiments", "--store", str(store_dir), cwd=tmp_path).returncode == 0
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before  # read-only commands do not write


def test_store_and_device_flags_override_the_config_file(tmp_path):
    import argparse

    from lotto_tui.commands import config_from_options

    path = tmp_path / "c.toml"
    path.write_text('[run]\ndevice = "gpu"\nstore = "elsewhere"\n')
    opts = argparse.Namespace(preset=None, config=str(path), overrides=[], store="mine", device="cpu")
    config = config_from_options(opts)
    assert (config.run.device, config.run.store) == ("cpu", "mine")


@pytest.mark.slow
def test_export_to_a_path_under_a_file_is_one_line_exit_2(tiny_grid, tmp_path):
    cwd, proc = tiny_grid
    (tmp_path / "afile").write_text("x")
    out = lotto("export", "--store", str(cwd / "runs"), "--format", "csv", "--out",
                str(tmp_path / "afile" / "x.csv"), cwd=tmp_path)
    assert_one_line_error(out, "--out")


def test_without_batch_the_explorer_wants_a_terminal_and_checks_the_config_first(tmp_path: Path) -> None:
    proc = lotto(cwd=tmp_path)  # stdin/stdout are pipes here, as under nohup or cron
    line = assert_one_line_error(proc, "needs a terminal", "--batch")
    assert "Traceback" not in line
    bad = lotto("--set", "train.lr=abc", cwd=tmp_path)
    assert_one_line_error(bad, "train.lr")
    assert not (tmp_path / "lotto-runs").exists()
