"""What the batch CLI and the small commands print and write: run health, tables that
read at 80 columns, escaped control characters, ``experiments`` totals against the plan,
``export --out`` on links, FIFOs, stdout and full disks, readers that go away, Ctrl-C
during the report, failed starts that make no store, and damaged stores.

Every store here is made by a real (tiny) run; subprocesses are the real console script.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from conftest import LOTTO, run_cli, tiny_args, tiny_config
from lotto_engine.plan import build_plan
from lotto_engine.records import RunRecord
from lotto_engine.results import Cell, summarize
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_tui import cli
from lotto_tui.commands import print_error
from lotto_tui.formatting import cell_values, health_text, printable
from lotto_tui.report import results_table

INJECTION = "\x1b]0;pwned\x07\x1b[2J\nfake row"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store from one tiny grid run in-process (relu and sigmoid, dense and
    magnitude 0.5: four runs; the sigmoid ones stay at chance in two epochs)."""
    root = tmp_path_factory.mktemp("store") / "runs"
    config = tiny_config('grid.activations=["relu","sigmoid"]', f'run.store="{root}"')
    with Store(root) as store:
        summary = Runner(config, store).run()
    assert summary.counts == {"done": 4}
    return root


def _runs(root: Path) -> list[RunRecord]:
    with Store(root, create=False) as store:
        return store.runs(store.experiment().id)


def _render(table: object, width: int) -> str:
    console = Console(width=width, record=True, no_color=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text()


# --------------------------------------------------------------------------- text helpers


def test_printable_and_print_error_escape_every_control_character(capsys: pytest.CaptureFixture[str]) -> None:
    assert printable(INJECTION) == "\\x1b]0;pwned\\x07\\x1b[2J\\x0afake row"
    print_error(f"config error: run.name: bad {INJECTION}\nconfig error: second problem \x9b2J")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("lotto-tui: ") for line in lines), err
    assert "\x1b" not in err and "\x07" not in err and "\x9b" not in err
    assert "fake row" in lines[1] and "\\x9b2J" in lines[2]


# --------------------------------------------------------------------------- results table


def _worst_cells() -> list[Cell]:
    """Rows as wide as real ones get: the longest names, all three flags, mixed statuses,
    a seed std, ten seeds and a four-digit stability D."""
    common = dict(runs=10, done=10, val_acc=0.8612, val_acc_std=0.0123, best_val_acc=0.9001, test_acc=0.8537,
                  statuses=("cancelled", "done"), flags=("chance_level", "loss_exploded", "layer_collapse"),
                  flagged=3)
    return [
        Cell("leaky_relu", "dense", 0.0, actual_sparsity=0.0, stability=None, **common),
        Cell("leaky_relu", "magnitude", 0.5, actual_sparsity=0.4999, stability=0.1234, **common),
        Cell("leaky_relu", "grasp", 0.99, actual_sparsity=0.9876, stability=247.3121, **common),
        Cell("sigmoid", "random", 0.8, runs=1, done=1, val_acc=0.1, val_acc_std=None, best_val_acc=0.1,
             test_acc=0.1, actual_sparsity=0.8, stability=1234.5678, statuses=("done",)),
    ]


def _numbers(cell: Cell) -> list[str]:
    """Every number a results row shows (the ± std as its own number)."""
    values = cell_values(cell)[2:9]
    return [n for v in values for n in re.findall(r"±?\d+(?:\.\d+)?(?:/\d+)?", v)]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_results_table_keeps_every_number_whole_at_80_columns(store_dir: Path, width: int) -> None:
    for cells in (_worst_cells(), summarize(_runs(store_dir))):
        text = _render(results_table(cells, title="Experiment 1", width=width), width)
        assert "…" not in text, text
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, text
        tokens = set(re.findall(r"[^\s│┃]+", text))
        for cell in cells:
            for number in _numbers(cell):
                assert number in tokens, (number, text)
        flagged = [c for c in cells if c.flags]
        for cell in flagged:  # the health column says it in words, not only in colour
            assert health_text(cell.flags).split(",")[0] in text
        if "act.sp" in text:  # the narrow form
            assert "act.sp actual mask sparsity" in " ".join(text.split())  # the legend


# --------------------------------------------------------------------------- experiments


def test_experiments_has_a_header_counts_planned_jobs_and_escapes_names(tmp_path: Path) -> None:
    """An interrupted 7-job grid (one job recorded, still running) reads 0/7, not 0/1;
    a name full of terminal escapes is shown escaped on its own row."""
    root = tmp_path / "store"
    config = tiny_config('grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.5,0.8,0.9]")
    plan = build_plan(config)
    assert len(plan) == 7
    with Store(root) as store:
        experiment = store.experiment_for(config)
        store.start_run(experiment.id, plan.jobs[0])
    with sqlite3.connect(root / "lotto.db") as con:  # validation refuses such a name: write it directly
        con.execute("UPDATE experiments SET name = ?", (INJECTION,))
    proc = run_cli("experiments", "--store", str(root), cwd=tmp_path)
    assert proc.rc == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["id", "created", "dataset", "grid", "done", "flagged", "name"]
    assert len(rows) == 1, proc.stdout
    assert re.search(r"\s0/7\s+0\s", rows[0]) and "1x2x3x1" in rows[0], rows[0]
    assert rows[0].endswith("\\x1b]0;pwned\\x07\\x1b[2J\\x0afake row")


def test_experiments_counts_done_and_flagged_jobs_of_a_real_run(store_dir: Path, tmp_path: Path) -> None:
    runs = _runs(store_dir)
    flagged = sum(1 for r in runs if r.flags)
    proc = run_cli("experiments", "--store", str(store_dir), cwd=tmp_path)
    assert proc.rc == 0, proc.stderr
    row = proc.stdout.splitlines()[1]
    assert re.search(rf"\s4/4\s+{flagged}(\s|$)", row), (row, [r.flags for r in runs])
    assert flagged, "the tiny sigmoid runs were expected at chance"


# --------------------------------------------------------------------------- export --out


def _export(*args: str) -> int:
    return cli.main(["export", "--format", "json", *args])


def test_export_follows_a_symlink_and_keeps_it(store_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "real" / "results.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert _export("--store", str(store_dir), "--out", str(link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(json.loads(target.read_text())["runs"]) == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]  # no temp file left


def test_export_writes_into_a_fifo_directly(store_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert _export("--store", str(store_dir), "--out", str(fifo)) == 0
    reader.join(10)
    assert fifo.exists() and not fifo.is_file()  # still the FIFO, not replaced by a file
    assert len(json.loads(got[0])["runs"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_export_out_dash_writes_to_stdout(store_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("export", "--store", str(store_dir), "--format", "csv", "--out", "-", cwd=tmp_path)
    assert proc.rc == 0, proc.stderr
    assert proc.stdout.startswith("run_id,") and len(proc.stdout.splitlines()) == 5
    assert not (tmp_path / "-").exists()


def test_export_removes_temp_files_of_dead_writers_and_keeps_live_ones(store_dir: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".results.json.lotto-tmp{dead.pid}", tmp_path / f".other.csv.lotto-tmp{dead.pid}",
             tmp_path / f".results.json.tmp{dead.pid}"]  # the last as older releases named it
    for path in stale:
        path.write_bytes(b"x" * 1000)
    live = tmp_path / f".other.csv.lotto-tmp{os.getpid()}"  # a writer that is still running
    live.write_bytes(b"y")
    unrelated = tmp_path / f".notes.tmp{dead.pid}"  # not ours: left alone
    unrelated.write_bytes(b"z")
    assert _export("--store", str(store_dir), "--out", str(tmp_path / "results.json")) == 0
    assert not any(p.exists() for p in stale)
    assert live.exists() and unrelated.exists() and (tmp_path / "results.json").is_file()


def test_a_full_disk_during_export_is_one_line_exit_2_and_leaves_nothing(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: Path, *args: object, **kwargs: object) -> int:
        with open(self, "w") as half:  # a part is written, then the device is full
            half.write("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "results.json"
    assert _export("--store", str(store_dir), "--out", str(out)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--out" in err[0] and "No space left on device" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_an_export_write_removes_its_temp_file(tmp_path: Path) -> None:
    """A real process is held between writing its temp file and renaming it, then
    gets SIGTERM: it dies of the signal and its temp file is gone."""
    out = tmp_path / "out.json"
    code = (
        "import os, sys, time\n"
        "from lotto_engine import files\n"
        "def held(src, dst):\n"
        "    print('written', flush=True)\n"
        "    time.sleep(60)\n"
        "files.os.replace = held\n"
        f"files.write_text_atomic({str(out)!r}, 'x' * 100000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
        assert [p.name for p in tmp_path.iterdir()] == [f".out.json.lotto-tmp{proc.pid}"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- damaged store


def _corrupt_copy(store_dir: Path, tmp_path: Path) -> Path:
    """A copy of the real store whose middle pages are overwritten with garbage."""
    root = tmp_path / "damaged"
    root.mkdir()
    db = root / "lotto.db"
    shutil.copyfile(store_dir / "lotto.db", db)
    page = 4096
    pages = db.stat().st_size // page
    assert pages >= 4, pages
    with open(db, "r+b") as f:
        for number in range(1, pages - 1):  # keep the header page and the last one
            f.seek(number * page)
            f.write(bytes((number * 37 + i * 11) % 256 for i in range(page)))
    return root


def test_a_damaged_store_is_one_line_exit_2_for_experiments_and_export(store_dir: Path, tmp_path: Path) -> None:
    root = _corrupt_copy(store_dir, tmp_path)
    for args in (("experiments",), ("export", "--format", "json"), ("export", "--format", "csv", "--out", "x.csv")):
        proc = run_cli(*args, "--store", str(root), cwd=tmp_path)
        assert proc.rc == 2, (args, proc.rc, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "lotto.db" in lines[0] and ("malformed" in lines[0] or "damaged" in lines[0]), lines[0]
        assert proc.stdout == ""
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_a_damaged_store_is_one_line_exit_2_for_batch(store_dir: Path, tmp_path: Path) -> None:
    root = _corrupt_copy(store_dir, tmp_path)
    proc = run_cli("--batch", *tiny_args('grid.activations=["relu","sigmoid"]'), "--store", str(root), cwd=tmp_path)
    assert proc.rc == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "lotto.db" in lines[0], proc.stderr


# --------------------------------------------------------------------------- batch output


def _lines_until(stream: object, needle: Callable[[str], bool], timeout: float) -> list[str]:
    """Lines read from a text pipe until one satisfies ``needle`` (fails after ``timeout``)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            break
        lines.append(line)
        if needle(line):
            return lines
    raise AssertionError(f"not seen within {timeout} s; got {lines}")


@pytest.mark.slow
def test_batch_marks_flagged_runs_counts_them_last_and_notes_mixed_numerics(tmp_path: Path) -> None:
    store = "runs-" + "in-a-folder-with-a-long-name-" * 3  # the last line exceeds 120 columns
    args = ["--batch", *tiny_args('grid.activations=["relu","sigmoid"]'), "--store", store]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.rc == 0, proc.stderr  # flags never change the exit code
    runs = {(r.activation, r.method): r for r in _runs(tmp_path / store)}
    flagged = [r for r in runs.values() if r.flags]
    assert flagged, "the tiny sigmoid runs were expected at chance"
    finished = [line for line in proc.stdout.splitlines() if re.match(r"\[\d+/4\] done ", line)]
    assert len(finished) == 4
    for line in finished:
        _, _, activation, method, *_ = line.split()
        run = runs[(activation, method)]
        assert (f"flagged {health_text(run.flags)}" in line) == bool(run.flags), line
    counts: dict[str, int] = {}
    for run in flagged:
        for flag in run.flags:
            counts[flag] = counts.get(flag, 0) + 1
    last = proc.stdout.strip().splitlines()[-1]
    named = ", ".join(f"{n} {flag}" for flag, n in counts.items())
    assert last.startswith(f"experiment 1: 4 done, {len(flagged)} flagged: {named} ("), last
    # one line however long: a log reader greps it whole (counts, store, memory)
    assert len(last) > 120 and re.search(rf"\); store {store}; peak memory \d+\.\d GiB \(process\)$", last), last
    table = proc.stdout[proc.stdout.index("Experiment 1"):]
    assert "health" in table and "!chance" in table
    assert "note:" not in proc.stdout

    # the same runs made under other settings: the table says they mix
    with sqlite3.connect(tmp_path / store / "lotto.db") as con:
        con.execute("UPDATE runs SET numerics = ? WHERE id = 1",
                    (json.dumps({"device": "cpu", "precision": "fp32", "threads": 2}),))
    again = run_cli(*args, cwd=tmp_path)
    assert again.rc == 0, again.stderr
    out = again.stdout.splitlines()
    note = next(i for i, line in enumerate(out) if line.startswith("note: these runs mix threads"))
    assert out[note + 1].startswith("Experiment 1"), out[note:note + 2]
    assert "1 thread" in out[note] and "2 threads" in out[note]


@pytest.mark.slow
def test_a_reader_going_away_cancels_the_job_in_flight(tmp_path: Path) -> None:
    """``lotto-tui --batch | head -1``: the job in flight is cancelled (not failed), the
    exit code is 141, one line says why, and the same command resumes."""
    args = ["--batch", *tiny_args("train.dense_epochs=30"), "--store", "runs"]
    proc = subprocess.Popen([str(LOTTO), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("experiment 1: 2 jobs")
        proc.stdout.close()  # the reader goes away while the dense job trains
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.splitlines()[-1].startswith("lotto-tui: standard output was closed"), err
    db = tmp_path / "runs" / "lotto.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT kind, status FROM runs ORDER BY id").fetchall()
    assert rows == [("dense", "cancelled")], rows


@pytest.mark.slow
def test_ctrl_c_during_the_final_report_exits_130(tmp_path: Path) -> None:
    """The report blocks on a one-page pipe the test stops reading once the grid is done,
    so SIGINT lands while the report prints, whatever the machine's speed."""
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("no F_SETPIPE_SZ on this platform")
    args = ["--batch", *tiny_args(), "--store", "runs"]
    proc = subprocess.Popen([str(LOTTO), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        _lines_until(proc.stdout, lambda line: line.startswith("[2/2] done"), timeout=60)
        time.sleep(1.0)  # the report fills the pipe and waits for a reader that does not come
        assert proc.poll() is None, "the report was expected to be blocked on the full pipe"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines() == ["lotto-tui: interrupted during the report; every run is saved "
                                "(lotto-tui export shows them)"], err
    assert not re.search(r"^experiment 1: 2 done", out, re.M)  # the summary line never came
    with sqlite3.connect(tmp_path / "runs" / "lotto.db") as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("done",), ("done",)]


@pytest.mark.slow
def test_a_failed_start_creates_no_store_folder(tmp_path: Path) -> None:
    """No CIFAR-10 under data.root and downloads off: one line, exit 2, no store, and
    nothing under data.root either (the network is never asked)."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    proc = run_cli("--batch", *tiny_args('data.dataset="cifar10"', f'data.root="{data_root}"', "data.download=false"),
                   "--store", "runs", cwd=tmp_path)
    assert proc.rc == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "cifar10" in lines[0] and str(data_root) in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()
    assert list(data_root.iterdir()) == []


def test_export_to_a_full_standard_output_is_one_line_exit_2(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Standard output on a full device: the write fails with ENOSPC (injected)."""
    import io

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sys, "stdout", Full())
    assert _export("--store", str(store_dir)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["lotto-tui: cannot write to standard output: No space left on device"], err
