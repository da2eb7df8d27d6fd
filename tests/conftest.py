"""Shared test fixtures: a pinned environment, the tiny config, digits, the CLI runner
and ``wait_until``.

Every test runs in the same environment whatever the user's shell holds, so that
``NO_COLOR=1 pytest`` (or a narrow terminal, or a ``TEXTUAL_THEME``) gives the result of
a plain ``pytest``. Tests about such a variable set it themselves (``monkeypatch.setenv``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import io
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from lotto_engine.config import ExperimentConfig, load_config

#: the ``lotto-tui`` console script of the environment the tests run in
LOTTO = Path(sys.executable).with_name("lotto-tui")

# Variables that change colour, size or behaviour of rich, textual or lotto-tui.
PINNED_OFF = (
    "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
    "COLUMNS", "LINES", "ROWS", "JUPYTER_COLUMNS", "JUPYTER_LINES", "COLORTERM", "TERM_PROGRAM",
    "LC_TERMINAL", "ESCDELAY", "PYTHONIOENCODING",
)
PINNED_PREFIXES = ("LOTTO_TUI_", "TEXTUAL_")
#: set by pytest-textual-snapshot itself for its reports: not the user's
PLUGIN_OWNED = ("TEXTUAL_SNAPSHOT_TEMPDIR",)
#: what the tests expect instead: an ordinary 256-colour terminal type (only used
#: where a test gives a subprocess a terminal; piped output is plain either way)
PINNED_ON = {"TERM": "xterm-256color"}

# The smallest digits grid that still trains: the dense and the pruned run end well
# above chance (val accuracy 0.4-0.7 over seeds 0-2 against 0.1) in about 0.2 s.
TINY_GRID = ('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]")
TINY_TRAIN = (
    "model.width=4", "model.hidden=16", "train.dense_epochs=2", "train.pruned_epochs=1",
    "train.batch_size=32", 'run.device="cpu"', "run.threads=1",
)
TINY = (*TINY_GRID, *TINY_TRAIN)
# A masked net that clearly learns in a few epochs (6 epochs: val accuracy 0.87-0.92
# over seeds 0-4, chance 0.1), for tests that compare two ways of training: where
# nothing is learned, any two ways look alike.
LEARNS = (*TINY, "model.width=8", "train.batch_size=64", "train.lr=0.05", 'train.lr_schedule="cosine"',
          "train.weight_decay=0.001")


class Flag:
    """A cancel flag that is not a threading.Event: train() needs only is_set()."""

    def __init__(self) -> None:
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def is_set(self) -> bool:
        return self.flag


def tiny_config(*extra: str) -> ExperimentConfig:
    """The demo preset shrunk to :data:`TINY`, then ``extra`` overrides (later wins)."""
    return load_config(preset="demo", overrides=[*TINY, *extra])


def tiny_args(*extra: str) -> list[str]:
    """:data:`TINY` and ``extra`` as ``lotto-tui`` arguments (``--preset demo --set ...``)."""
    args = ["--preset", "demo"]
    for item in (*TINY, *extra):
        args += ["--set", item]
    return args


def _pinned_environment(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(names to remove, names to set) so that ``environ`` reads as the tests expect."""
    drop = [k for k in environ if (k in PINNED_OFF or k.startswith(PINNED_PREFIXES)) and k not in PLUGIN_OWNED]
    return drop, PINNED_ON


def _clean_textual_constants() -> ModuleType | None:
    """A second copy of ``textual.constants`` evaluated in the pinned environment.

    textual reads its ``TEXTUAL_*`` switches once, when it is imported (a pytest plugin
    imports it before any fixture runs), so removing them from ``os.environ`` is not
    enough: the fixture also puts back the values a clean environment gives."""
    spec = importlib.util.find_spec("textual.constants")
    if spec is None or spec.loader is None:
        return None
    saved = dict(os.environ)
    drop, _ = _pinned_environment(os.environ)
    try:
        for name in drop:
            del os.environ[name]
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


_TEXTUAL_DEFAULTS = _clean_textual_constants()


@pytest.fixture(autouse=True)
def _pin_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour, terminal size and tool switches of the user's shell never reach a test.

    Subprocesses inherit ``os.environ``, so this covers them too."""
    drop, pinned = _pinned_environment(os.environ)
    for name in drop:
        monkeypatch.delenv(name, raising=False)
    for name, value in pinned.items():
        monkeypatch.setenv(name, value)
    current = sys.modules.get("textual.constants")
    if current is not None and _TEXTUAL_DEFAULTS is not None:
        for name, value in vars(_TEXTUAL_DEFAULTS).items():
            if name.isupper() and getattr(current, name, value) != value:
                monkeypatch.setattr(current, name, value)
        app = sys.modules.get("textual.app")
        theme = vars(app.App).get("theme") if app is not None else None
        if theme is not None and getattr(theme, "_default", None) != _TEXTUAL_DEFAULTS.DEFAULT_THEME:
            # the one switch textual copies at import: the theme reactive's default
            monkeypatch.setattr(theme, "_default", _TEXTUAL_DEFAULTS.DEFAULT_THEME)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once every test module is imported (torch, textual, the engine, the clients and
    the tests: a few hundred thousand objects that live as long as the process), take
    them out of the garbage collector's full passes (:func:`gc.freeze`). Each full
    collection walked all of them again, over and over while the apps and runs of the
    tests made garbage. Objects the tests make are collected as before."""
    gc.collect()
    gc.freeze()


# In-process training runs on one thread, as the tiny config's run.threads=1 has the
# CLI do: a thread count changes a run's numbers, and on a shared 2-core machine two
# threads per test only wait for each other. A test may set more; it is put back.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """The runner sets torch's thread count and determinism process-wide; put them back
    after every test, so no test depends on which ran before it."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # its first call costs ~1 s
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def tiny() -> Callable[..., ExperimentConfig]:
    """:func:`tiny_config`, for tests that prefer a fixture to an import."""
    return tiny_config


@pytest.fixture(scope="session")
def digits() -> Any:
    """scikit-learn's digits as the demo preset splits them, loaded once per session."""
    from lotto_engine.data import load_dataset

    return load_dataset(load_config(preset="demo").data)


@dataclass(frozen=True)
class CliResult:
    """What one ``lotto-tui`` process gave back."""

    rc: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> CliResult:
    """``lotto-tui ARGS`` as a real subprocess in ``cwd``, output piped (so plain), with
    ``env`` added to the (pinned) environment; a hang fails the test after ``timeout``."""
    proc = subprocess.run(
        [str(LOTTO), *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_main(*args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """``lotto-tui ARGS`` in this process (``lotto_tui.cli.main``): in ``cwd``, output
    captured (so plain, as when piped), ``env`` added to the environment for the call.

    The same command and exit code as :func:`run_cli` without a new interpreter's
    start-up (torch and scikit-learn take 3-4 s there), for tests of what a command
    prints, returns and stores. Tests of the process itself (signals, pipes, terminals,
    memory, start-up) keep the real console script."""
    from lotto_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    try:
        os.chdir(cwd)
        os.environ.update(env or {})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(rc, out.getvalue(), err.getvalue())


def run_on_terminal(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run ``lotto-tui ARGS`` on a pseudo-terminal (100x40, colour allowed);
    (exit code, everything it drew)."""
    import pty

    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([str(LOTTO), *args], cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal,
                            env=env, close_fds=True)
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """:func:`run_cli`, working in the test's ``tmp_path`` unless given ``cwd``."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 120, **env: str) -> CliResult:
        return run_cli(*args, cwd=cwd or tmp_path, timeout=timeout, env=env)

    return run


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """:func:`wait_until` inside an event loop (a Textual pilot): sleeps without blocking
    the app, and without ``pilot.pause``, which pings every widget and starves a run."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    """:func:`wait_until` as a fixture."""
    return wait_until


def db_rows(db: Path, query: str, timeout: float = 0.5) -> list[tuple]:
    """``query`` on a store's database through a separate read-only connection, as
    another process would read it; [] while the file or its schema is not there yet
    or the writer holds a lock longer than ``timeout`` (say, frozen with SIGSTOP)."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return []
