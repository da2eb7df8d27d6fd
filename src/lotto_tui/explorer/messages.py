"""Messages from the engine worker thread to the UI (``post_message`` is thread-safe).

Every field is typed: the UI never has to guess what a message carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

from lotto_engine.events import Event

if TYPE_CHECKING:  # the runner imports torch: the app loads it in a worker, not at import
    from lotto_engine.runner import GridSummary


class EngineEvent(Message):
    """One typed event of :mod:`lotto_engine.events`, as the runner emitted it."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event: Event = event


class RunEnded(Message):
    """The worker stopped: ``summary`` when the runner returned, ``error`` (one line)
    when it raised."""

    def __init__(self, summary: GridSummary | None = None, error: str | None = None) -> None:
        super().__init__()
        self.summary: GridSummary | None = summary
        self.error: str | None = error


class EngineReady(Message):
    """torch is imported; ``device`` and ``precision`` resolved for the current config
    (``error`` says why not, e.g. CUDA asked for but absent)."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error: str | None = error


class ReuseCounted(Message):
    """How many of a plan's jobs the store has finished (``None``: the store could not
    say); ``token`` names the plan it was counted for (older counts are dropped)."""

    def __init__(self, token: int, finished: int | None) -> None:
        super().__init__()
        self.token: int = token
        self.finished: int | None = finished


class ReportWritten(Message):
    """The report worker ended: the files it wrote (``report.md`` first), or ``error``
    (one line)."""

    def __init__(self, paths: tuple[Path, ...] = (), error: str | None = None) -> None:
        super().__init__()
        self.paths: tuple[Path, ...] = paths
        self.error: str | None = error
