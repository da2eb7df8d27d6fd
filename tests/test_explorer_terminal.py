"""The real ``lotto-tui`` explorer in a pseudo-terminal, as over SSH: keys go in as
bytes, a dropped connection (SIGHUP) must leave the store consistent, and the screen
is drawn on whichever standard stream is the terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

LOTTO = Path(sys.executable).with_name("lotto-tui")
TINY = [
    "--set", "data.subset=240", "--set", "model.width=4", "--set", "model.hidden=16",
    "--set", "train.dense_epochs=400", "--set", "train.pruned_epochs=1",
    "--set", "grid.activations=['relu']", "--set", "grid.methods=['magnitude']",
    "--set", "grid.sparsities=[0.5]", "--set", "run.device='cpu'", "--set", "run.threads=1",
]


class Terminal:
    """A child process on a pty of a fixed size, its output drained in a thread."""

    def __init__(
        self, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24), *, stderr: Path | None = None
    ) -> None:
        """``stderr``: a file the child's stderr goes to instead of the terminal."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        env.update(TERM="xterm-256color", COLORTERM="")  # no true colour assumed
        with open(stderr, "wb") if stderr else open(os.devnull, "wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=cwd, stdin=slave, stdout=slave, stderr=log if stderr else slave, env=env,
                start_new_session=True, close_fds=True,
            )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output.extend(chunk)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def running_rows(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT method, status FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the runner is creating the schema right now
        return []
    finally:
        con.close()


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
def test_hangup_mid_run_cancels_the_job_and_leaves_a_resumable_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    term = Terminal([str(LOTTO), "--store", str(store), *TINY], cwd=tmp_path)
    try:
        wait_for(lambda: b"pending" in term.output, timeout=60)  # the plan is on screen
        term.send(b"r")
        db = store / "lotto.db"
        wait_for(lambda: ("dense", "running") in running_rows(db), timeout=60)
        time.sleep(0.5)
        term.proc.send_signal(signal.SIGHUP)
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    assert running_rows(db) == [("dense", "cancelled")]  # not left "running"
    lock = store / "locks" / "experiment-1.lock"
    assert lock.read_text() == ""  # the runner let go of the experiment


@pytest.mark.slow
def test_q_mid_run_stops_the_job_then_quits_and_the_next_start_shows_it_cancelled(tmp_path: Path) -> None:
    """The next start runs as ``lotto-tui 2>err.log``: the screen goes to the terminal
    (stdout), not into the log (one app start serves both checks)."""
    store = tmp_path / "store"
    db = store / "lotto.db"
    term = Terminal([str(LOTTO), "--store", str(store), *TINY], cwd=tmp_path)
    try:
        wait_for(lambda: b"pending" in term.output, timeout=60)
        assert not store.exists()  # a start alone creates nothing: the run does
        term.send(b"r")
        wait_for(lambda: ("dense", "running") in running_rows(db), timeout=60)
        started = time.monotonic()
        term.send(b"q")
        assert term.proc.wait(timeout=30) == 0
        took = time.monotonic() - started
    finally:
        term.close()
    assert took < 30
    assert running_rows(db) == [("dense", "cancelled")]
    log = tmp_path / "err.log"
    again = Terminal([str(LOTTO), "--store", str(store), *TINY], cwd=tmp_path, stderr=log)
    try:
        wait_for(lambda: b"4 History" in again.output, timeout=60)  # the panel tabs are drawn
        wait_for(lambda: b"cancelled" in again.output, timeout=60)  # the jobs table shows it
        again.send(b"q")
        assert again.proc.wait(timeout=30) == 0
    finally:
        again.close()
    assert b"\x1b[" in again.output  # drawn with escape sequences, on the pty
    assert b"History" not in log.read_bytes() and b"\x1b[" not in log.read_bytes()


def test_without_a_terminal_on_stdout_or_stderr_it_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    master, slave = pty.openpty()  # keys could come in: only the screen is missing
    try:
        done = subprocess.run(
            [str(LOTTO), "--store", str(tmp_path / "store")], cwd=tmp_path, stdin=slave,
            capture_output=True, timeout=60,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "lotto-tui: the explorer needs a terminal; use --batch for scripts and pipes"
    ]
    assert not (tmp_path / "store").exists()
