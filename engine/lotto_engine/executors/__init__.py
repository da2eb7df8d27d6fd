"""Executors: where the runner's ready jobs run (``run.executor``).

- :mod:`.base`: the interface (:class:`Executor`, :class:`Task`, the messages);
- :mod:`.local`: ``local``, this process (one job at a time, or ``run.parallel`` slots).

Later backends register here; :func:`make_executor` is the only place that picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from .base import BatchDone, Checkpointed, EpochDone, Executor, Finished, Masked, Message, Started, Task
from .local import DataFor, LocalExecutor

#: run.executor value -> what it is, for error messages and docs
EXECUTORS = {"local": "this process: one job at a time, or run.parallel slots over GPUs or CPU threads"}


def make_executor(
    name: str,
    *,
    slots: Sequence[torch.device],
    data_for: DataFor,
    threads: int,
    cancel: threading.Event,
    progress_interval: float = 0.1,
) -> Executor:
    """The executor ``run.executor`` names, ready to take tasks."""
    if name == "local":
        return LocalExecutor(slots, data_for, threads=threads, cancel=cancel, progress_interval=progress_interval)
    raise ValueError(f"run.executor: unknown executor {name!r} (known: {', '.join(EXECUTORS)})")


__all__ = [
    "EXECUTORS", "BatchDone", "Checkpointed", "EpochDone", "Executor", "Finished", "Masked", "Message",
    "Started", "Task", "make_executor",
]
