"""Messages from the engine worker thread to the UI (``post_message`` is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvent(Message):
    """One typed event of :mod:`lotto_engine.events`, as the runner emitted it."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class RunEnded(Message):
    """The worker stopped: ``summary`` when the runner returned, ``error`` (one line)
    when it raised."""

    def __init__(self, summary: Any = None, error: str | None = None) -> None:
        super().__init__()
        self.summary = summary
        self.error = error


class EngineReady(Message):
    """torch is imported; ``device`` and ``precision`` resolved for the current config
    (``error`` says why not, e.g. CUDA asked for but absent)."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error = error
