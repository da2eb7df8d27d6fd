"""Executors: where the runner's ready jobs run (``run.executor``).

- :mod:`.base`: the interface (:class:`Executor`, :class:`Task`, the messages);
- :mod:`.local`: ``local``, this process (one job at a time, or ``run.parallel`` slots);
- :mod:`.ray_executor`: ``ray``, tasks on a Ray cluster;
- :mod:`.slurm`: ``slurm``, job arrays on a Slurm cluster through submitit;
- :mod:`.worker`: what a remote worker runs for one task.

Ray and submitit are optional (``lotto-tui[ray]``, ``lotto-tui[slurm]``) and imported
only when their executor is made; :func:`make_executor` is the only place that picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from ..config import RunConfig
from .base import (
    Attempts, BatchDone, Checkpointed, EpochDone, Executor, Finished, Masked, Message, Retrying, Started, Task,
)
from .local import DataFor, LocalExecutor
from .worker import WorkerSettings

#: run.executor value -> what it is, for error messages and docs
EXECUTORS = {
    "local": "this process: one job at a time, or run.parallel slots over GPUs or CPU threads",
    "ray": "tasks on a Ray cluster (run.ray_address)",
    "slurm": "job arrays on a Slurm cluster, through submitit (run.slurm_*)",
}


def make_executor(
    run: RunConfig,
    *,
    slots: Sequence[torch.device],
    data_for: DataFor,
    threads: int,
    cancel: threading.Event,
    settings: WorkerSettings,
    progress_interval: float = 0.1,
) -> Executor:
    """The executor ``run.executor`` names, ready to take tasks (connected to its
    cluster). ``settings`` is what a remote worker needs to train as this process
    would. Raises :class:`~lotto_engine.errors.DeviceError` (one line) when the
    cluster cannot be reached or its package is not installed."""
    if run.executor == "local":
        return LocalExecutor(slots, data_for, threads=threads, cancel=cancel, progress_interval=progress_interval,
                             lockstep=run.lockstep)
    if run.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(run, settings, cancel=cancel, progress_interval=progress_interval)
    if run.executor == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(run, settings, cancel=cancel, progress_interval=progress_interval)
    raise ValueError(f"run.executor: unknown executor {run.executor!r} (known: {', '.join(EXECUTORS)})")


__all__ = [
    "EXECUTORS", "Attempts", "Retrying", "WorkerSettings", "BatchDone", "Checkpointed", "EpochDone", "Executor", "Finished", "Masked", "Message",
    "Started", "Task", "make_executor",
]
