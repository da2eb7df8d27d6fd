"""The executor interface: where ready jobs run, and what comes back while they do.

The runner hands an executor :class:`Task` groups (siblings that may train
together; an executor may run them one by one) and gets :data:`Message` values
back through :meth:`Executor.wait`, always in the runner's own thread: progress
while a job trains, its checkpoints, and finally its :class:`Finished` outcome. Tasks and messages are plain, picklable
data (tensors on CPU), so a backend may run jobs in other processes or machines.
The executor never writes the store: the runner does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..protocol import JobCheckpoint, JobOutput, JobSpec
from ..records import EpochMetrics, LayerSparsity


@dataclass(frozen=True)
class Task:
    """A ready job with all its inputs."""

    spec: JobSpec
    #: the parent's saved tensors by artifact name (None for a dense job)
    parent: Mapping[str, Mapping[str, torch.Tensor]] | None = None
    #: continue from this checkpoint instead of starting over
    resume: JobCheckpoint | None = None

    @property
    def key(self) -> str:
        return self.spec.job.key


@dataclass(frozen=True)
class Started:
    key: str
    epochs: int
    batches: int
    resumed_from: int  # epochs trained before a resume; 0 = fresh
    device: str


@dataclass(frozen=True)
class Masked:
    key: str
    actual_sparsity: float
    layers: list[LayerSparsity]


@dataclass(frozen=True)
class BatchDone:
    key: str
    epoch: int
    batch: int
    batches: int


@dataclass(frozen=True)
class EpochDone:
    key: str
    metrics: EpochMetrics


@dataclass(frozen=True)
class Checkpointed:
    key: str
    checkpoint: JobCheckpoint


@dataclass(frozen=True)
class Finished:
    """A job ended: with an output (done, diverged or cancelled), or with an error."""

    key: str
    output: JobOutput | None
    error: str | None = None  # one line, "Type: message"
    wall_time: float = 0.0
    #: stopped by Ctrl-C before it could return an output (recorded cancelled, not failed)
    cancelled: bool = False


Message = Started | Masked | BatchDone | EpochDone | Checkpointed | Finished


class Executor(Protocol):
    """Runs tasks; one instance serves one call of the runner."""

    #: how many tasks can run at once (the runner submits no more than that)
    capacity: int

    def submit(self, group: Sequence[Task]) -> None:
        """Queue ``group`` (siblings of one parent, or single jobs) to run."""

    def wait(self, on_message: Callable[[Message], None], timeout: float) -> None:
        """Hand messages of running tasks to ``on_message`` in the calling thread, as
        they come, for up to ``timeout`` seconds or until a task has finished. An
        executor may run a task in the calling thread during this call (the local one
        with one slot does). An exception raised by ``on_message`` propagates."""

    @property
    def busy(self) -> int:
        """Tasks submitted whose Finished has not been handed over yet."""

    def cancel(self) -> None:
        """Ask every running task to stop at its next batch (each still finishes)."""

    def close(self) -> None:
        """Stop accepting tasks and release workers; call after the last Finished."""
