"""What the explorer keeps beside a store, and reads from it besides the database.

- ``<store>/explorer-state.json`` remembers the experiment last opened or run in that
  store, so a plain ``lotto-tui`` reopens it. Losing the file loses nothing but that:
  a missing, unreadable or stale one is ignored.
- Follow mode names the process that runs the grid it shows: the store's lock holder
  (:func:`lotto_engine.store.lock_holder`) and its command line from ``/proc``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lotto_engine.errors import escape_controls
from lotto_engine.files import write_text_atomic
from lotto_engine.store import lock_holder

STATE_NAME = "explorer-state.json"
#: Longest command line a status line shows (the rest is cut with an ellipsis).
COMMAND_LIMIT = 120


@dataclass(frozen=True)
class Remembered:
    """The experiment last worked on in a store."""

    experiment_id: int
    identity: str  # the experiment's identity hash: a rebuilt store's id 3 is another experiment


def remembered(store: str | Path) -> Remembered | None:
    """The store's remembered experiment; None when there is none or the file is not
    a regular file holding what :func:`remember` writes."""
    path = Path(store) / STATE_NAME
    try:
        if not path.is_file():  # never open a FIFO or a device: that could block
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        experiment_id, identity = data["experiment_id"], data["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if type(experiment_id) is not int or not isinstance(identity, str):
        return None
    return Remembered(experiment_id, identity)


def remember(store: str | Path, experiment_id: int, identity: str) -> bool:
    """Write the store's remembered experiment atomically; False when it cannot be
    written (a read-only store, a full disk, something that is not a file there)."""
    path = Path(store) / STATE_NAME
    if not Path(store).is_dir() or (path.exists() and not path.is_file()) or path.is_symlink():
        return False
    text = json.dumps({"experiment_id": experiment_id, "identity": identity}) + "\n"
    try:
        write_text_atomic(path, text)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class GridWriter:
    """A process that holds an experiment's lock: it runs that grid."""

    pid: int
    command: str  # its command line, printable ("" when /proc does not say)

    def describe(self) -> str:
        return f"pid {self.pid}" + (f" ({self.command})" if self.command else "")


def grid_writer(store: str | Path, experiment_id: int) -> GridWriter | None:
    """The live process (not this one) that runs ``experiment_id`` now, or None
    (:func:`lotto_engine.store.lock_holder`), with its command line."""
    pid = lock_holder(store, experiment_id)
    if pid is None or pid == os.getpid():
        return None
    return GridWriter(pid, command_line(pid))


def command_line(pid: int) -> str:
    """``pid``'s command line from /proc, printable and at most :data:`COMMAND_LIMIT`
    characters (the program as its file name only); "" where /proc does not say."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return ""
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    if not args:
        return ""
    args[0] = os.path.basename(args[0])
    text = escape_controls(" ".join(args))
    return text if len(text) <= COMMAND_LIMIT else text[: COMMAND_LIMIT - 1] + "…"


__all__ = ["GridWriter", "Remembered", "command_line", "grid_writer", "remember", "remembered"]
