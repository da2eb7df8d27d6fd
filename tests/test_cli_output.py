"""What the batch CLI and the small commands print and write: run health, tables that
read at 80 columns, escaped control characters, ``experiments`` totals against the plan,
``export --out`` on links (dangling ones too), FIFOs, stdout and full disks, the mode
of a replaced file, escaped CSV, readers that go away from every command (at once or
mid-write: exit 141), Ctrl-C during the report, no empty progress bar for a finished
grid, failed starts that make no store, and damaged stores.

Every store here is made by a real (tiny) run; subprocesses are the real console script,
kept wherever the process matters (pipes, signals, terminals); what a command prints,
returns and stores is checked in-process (``conftest.run_main``), without a new
interpreter's 3-4 s start-up.
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

from conftest import LOTTO, run_cli, run_main, run_on_terminal, tiny_args, tiny_config
from lotto_engine.plan import build_plan
from lotto_engine.records import RunRecord
from lotto_engine.stats import Stat
from lotto_engine.views.results import Cell, summarize
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
    """Rows as wide as real ones get: the longest names, all three flags, mixed statuses
    and numerics, a 95% CI on every number, ten seeds and a four-digit stability D."""
    stats = {"val_acc": Stat(0.8612, 0.0172, 0.0123, 10), "best_val_acc": Stat(0.9001, 0.0101, 0.0072, 10),
             "test_acc": Stat(0.8537, 0.0166, 0.0119, 10), "stability_floor": Stat(0.6989, 0.0011, 0.0008, 10),
             "kept_change": Stat(12.3456, 4.5678, 3.2676, 10)}
    common = dict(runs=10, done=10, val_acc=0.8612, best_val_acc=0.9001, test_acc=0.8537,
                  statuses=("cancelled", "done"), flags=("chance_level", "loss_exploded", "layer_collapse"),
                  flagged=3, mixed_numerics=True)
    return [
        Cell("leaky_relu", "dense", 0.0, actual_sparsity=0.0, stability=None,
             stats={**stats, "actual_sparsity": Stat(0.0, 0.0, 0.0, 10)}, **common),
        Cell("leaky_relu", "magnitude", 0.5, actual_sparsity=0.4999, stability=0.1234,
             stats={**stats, "actual_sparsity": Stat(0.4999, 0.0001, 0.0001, 10),
                    "stability": Stat(0.1234, 0.0123, 0.0088, 10)}, **common),
        Cell("leaky_relu", "grasp", 0.99, actual_sparsity=0.9876, stability=247.3121,
             stats={**stats, "actual_sparsity": Stat(0.9876, 0.0, 0.0, 10),
                    "stability": Stat(247.3121, 101.1, 72.3215, 10)}, **common),
        Cell("sigmoid", "random", 0.8, runs=1, done=1, val_acc=0.1, best_val_acc=0.1,
             test_acc=0.1, actual_sparsity=0.8, stability=1234.5678, statuses=("done",)),
    ]


#: Columns every form of the table keeps; the others only where their header is shown.
KEPT = ("target", "val %", "test %", "D", "n")
#: Header of each droppable column in the wide and the narrow form.
SHOWN_AS = {"actual": ("actual", "act.sp"), "best val %": ("best val %", "best %"), "floor": ("floor",),
            "kept Δ": ("kept Δ",)}


def _numbers(cell: Cell, text: str) -> list[str]:
    """Every number a results row shows in ``text`` (the ± spread as its own number)."""
    values = cell_values(cell)
    header = next(line for line in text.splitlines() if "method" in line.split())
    columns = [*KEPT, *(c for c, headers in SHOWN_AS.items() if any(h in header for h in headers))]
    return [n for c in columns for n in re.findall(r"±?\d+(?:\.\d+)?(?:/\d+)?~?", values[c])]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_results_table_keeps_every_number_whole_at_80_columns(store_dir: Path, width: int) -> None:
    for cells in (_worst_cells(), summarize(_runs(store_dir))):
        text = _render(results_table(cells, title="Experiment 1", width=width), width)
        assert "…" not in text, text
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, text
        tokens = set(re.findall(r"[^\s│┃]+", text))
        for cell in cells:
            for number in _numbers(cell, text):
                assert number in tokens, (number, text)
        flagged = [c for c in cells if c.flags]
        for cell in flagged:  # the health column says it in words, not only in colour
            assert health_text(cell.flags).split(",")[0] in text
        legend = " ".join(text.split())
        assert "mean ±95% CI over seeds (Student t)" in legend
        if "act.sp" in text:  # the narrow form
            assert "act.sp actual mask sparsity" in legend


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
    proc = run_main("--batch", *tiny_args('grid.activations=["relu","sigmoid"]'), "--store", str(root), cwd=tmp_path)
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
    proc = run_main(*args, cwd=tmp_path)
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
    again = run_main(*args, cwd=tmp_path)
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
        # the report fills the pipe and waits for a reader that does not come
        deadline = time.monotonic() + 30
        while not _blocked_writing(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the report was expected to be blocked on the full pipe"
        assert _blocked_writing(proc.pid), "the report was expected to be blocked on the full pipe"
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
    proc = run_main("--batch", *tiny_args('data.dataset="cifar10"', f'data.root="{data_root}"', "data.download=false"),
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


# --------------------------------------------------------------------------- readers that go away

OUTPUT_CLOSED = "lotto-tui: standard output was closed (the reader went away)"


def _fill_one_page_pipe(fd: int) -> None:
    """Shrink the pipe whose write end is ``fd`` to one page and fill that page: the
    next write to it blocks until a reader takes the whole page, or leaves."""
    assert fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096) == 4096
    assert os.write(fd, b"." * 4096) == 4096


def _blocked_writing(pid: int) -> bool:
    """Whether process ``pid`` sleeps in a write to a pipe (Linux /proc)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return wchan.endswith("pipe_write") or (fields[:2] in (["1", "0x1"], ["64", "0x1"]))


def _reader_leaves(args: list[str], cwd: Path, *, after: int | None, fill: bool = False,
                   unbuffered: bool = True) -> tuple[int, bytes, str]:
    """Run ``lotto-tui ARGS`` into a pipe whose reader goes away: at once (``after=None``:
    closed before the command starts, as ``| true`` often is), or after reading ``after``
    bytes. ``fill``: the pipe is shrunk to one page and filled first, so that even a
    short output blocks, and the reader leaves while the command waits in its write.
    Returns (exit code, bytes read, stderr)."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"  # stdout writes straight to the pipe: a partial write is visible
    read_end, write_end = os.pipe()
    if fill:
        _fill_one_page_pipe(write_end)
    if after is None:
        os.close(read_end)
    proc = subprocess.Popen([str(LOTTO), *args], cwd=cwd, stdout=write_end, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(write_end)
    got = b""
    try:
        if after is not None:
            while len(got) < after:
                chunk = os.read(read_end, after - len(got))
                if not chunk:
                    break
                got += chunk
            if fill:  # the reader leaves while the command waits in its write
                deadline = time.monotonic() + 60
                while not _blocked_writing(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert proc.poll() is None, "the command was expected to block on the full pipe"
            os.close(read_end)
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, got, err


def _closed_output(code: int, err: str) -> None:
    assert code == 141, (code, err)
    assert "Traceback" not in err and "Exception ignored" not in err and "internal error" not in err, err
    assert err.splitlines() == [f"{OUTPUT_CLOSED}; the output is incomplete"], err


@pytest.fixture(scope="module")
def many_experiments(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real store with 80 experiments (the rows copied under new
    identities): ``experiments`` prints more than a page."""
    root = tmp_path_factory.mktemp("many") / "runs"
    shutil.copytree(store_dir, root)
    with sqlite3.connect(root / "lotto.db") as con:
        for n in range(2, 81):
            con.execute("INSERT INTO experiments (identity, name, created_at, config) "
                        "SELECT identity || ?, name, created_at, config FROM experiments WHERE id = 1", (f"-{n}",))
    return root


@pytest.mark.parametrize("args", [["config", "--preset", "demo"], ["config", "--reference"], ["experiments"],
                                  ["export", "--format", "csv"], ["export", "--format", "json", "--out", "-"]])
@pytest.mark.parametrize("after", [None, 1000])
def test_every_command_exits_141_with_one_line_when_the_reader_goes_away(
    many_experiments: Path, tmp_path: Path, args: list[str], after: int | None
) -> None:
    """``lotto-tui config | true``, ``experiments | head -c 1000``: exit 141 and one line,
    never exit 70 with "internal error: BrokenPipeError", never exit 0 with the rest lost."""
    if args[0] in ("experiments", "export"):
        args = [*args, "--store", str(many_experiments)]
    code, got, err = _reader_leaves(args, tmp_path, after=after, fill=after is not None)
    _closed_output(code, err)
    assert after is None or len(got) == after


@pytest.fixture(scope="module")
def large_store(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real store whose four runs have 40 earlier attempts each (rows
    copied): ``export --history`` is over 100 KB of JSON, more than a pipe holds."""
    root = tmp_path_factory.mktemp("large") / "runs"
    shutil.copytree(store_dir, root)
    with sqlite3.connect(root / "lotto.db") as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(runs)") if row[1] != "id"]
        picked = ", ".join("attempt + ?" if c == "attempt" else c for c in columns)
        for n in range(1, 41):
            con.execute(f"INSERT INTO runs ({', '.join(columns)}) SELECT {picked} FROM runs WHERE attempt = 1", (n,))
    return root


@pytest.mark.parametrize("unbuffered", [True, False])
def test_an_export_cut_short_is_exit_141_never_0(large_store: Path, tmp_path: Path, unbuffered: bool) -> None:
    """The reader takes 1,000 bytes of a large export and leaves: the command must not
    report success with the rest silently lost (a partial write to the pipe)."""
    whole = run_cli("export", "--store", str(large_store), "--format", "json", "--history", cwd=tmp_path)
    assert whole.rc == 0 and len(whole.stdout) > 100_000, (whole.rc, len(whole.stdout))
    for out in ([], ["--out", "-"]):
        code, got, err = _reader_leaves(["export", "--store", str(large_store), "--format", "json", "--history",
                                         *out], tmp_path, after=1000, unbuffered=unbuffered)
        _closed_output(code, err)
        assert got == whole.stdout.encode()[:1000]


def test_a_broken_pipe_anywhere_in_a_command_is_exit_141(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last guard: a BrokenPipeError from any command is exit 141 and one line, not 70."""
    from lotto_tui import commands

    def gone(opts: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(commands, "experiments_command", gone)
    assert cli.main(["experiments"]) == 141
    assert capsys.readouterr().err.splitlines() == [f"{OUTPUT_CLOSED}; the output is incomplete"]


# --------------------------------------------------------------------------- export --out keeps the file's mode


@pytest.mark.parametrize("through_link", [False, True])
def test_export_keeps_the_mode_and_owner_of_the_file_it_replaces(
    store_dir: Path, tmp_path: Path, through_link: bool
) -> None:
    target = tmp_path / "secret" / "results.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o600)
    owner = (os.getuid() + 1, os.getgid() + 1) if os.geteuid() == 0 else None
    if owner:
        os.chown(target, *owner)
    out = target
    if through_link:
        out = tmp_path / "link.json"
        out.symlink_to(target)
    assert _export("--store", str(store_dir), "--out", str(out)) == 0
    st = target.stat()
    assert oct(st.st_mode & 0o7777) == oct(0o600)
    if owner:
        assert (st.st_uid, st.st_gid) == owner
    assert len(json.loads(target.read_text())["runs"]) == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_export_gives_a_new_file_the_usual_mode(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "new.json"
    umask = os.umask(0o022)
    try:
        assert _export("--store", str(store_dir), "--out", str(out)) == 0
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_export_through_a_dangling_symlink_creates_no_folders(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "deeper" / "results.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert _export("--store", str(store_dir), "--out", str(link)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lotto-tui: --out: ") and "missing/deeper" in err[0], err
    assert not (tmp_path / "missing").exists() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json"]


def test_export_through_a_dangling_symlink_into_an_existing_folder_writes_the_target(
    store_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "results.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert _export("--store", str(store_dir), "--out", str(link)) == 0
    assert link.is_symlink() and len(json.loads(target.read_text())["runs"]) == 4


# --------------------------------------------------------------------------- CSV escapes control characters


def test_csv_export_escapes_control_characters_in_names_and_errors(store_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(store_dir, root)
    with sqlite3.connect(root / "lotto.db") as con:
        con.execute("UPDATE runs SET error = ? WHERE id = 1", (INJECTION + "\u202e",))
        con.execute("UPDATE runs SET job_key = ? WHERE id = 2", ("key\x9b2J",))
    proc = run_cli("export", "--store", str(root), "--format", "csv", cwd=tmp_path)
    assert proc.rc == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\x9b" not in proc.stdout
    assert "\u202e" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 5, lines  # the newline in the error is escaped too: one row per run
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x0afake row\\u202e" in lines[1] and "key\\x9b2J" in lines[2]
    data = json.loads(run_cli("export", "--store", str(root), "--format", "json", cwd=tmp_path).stdout)
    assert data["runs"][0]["error"] == INJECTION + "\u202e"  # JSON keeps the text (escaped by JSON itself)


# --------------------------------------------------------------------------- batch on a terminal, nothing to run


@pytest.mark.slow  # a real pty and a second batch process
def test_batch_on_a_finished_store_draws_no_empty_progress_bar(store_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(store_dir, root)
    code, screen = run_on_terminal(["--batch", *tiny_args('grid.activations=["relu","sigmoid"]'),
                                   "--store", str(root)], tmp_path)
    assert code == 0, screen
    assert "4 already done" in screen and "0 to run" in screen, screen
    assert "0/0" not in screen and "0:00:00" not in screen and "starting" not in screen, screen
    assert "Experiment 1" in screen  # the report still comes
