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
from dataclasses import dataclass, field, replace
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
    #: where it runs, for people: "" in this process, "ray worker pid 123 on box2", "slurm job 77_1 on node1"
    worker: str = ""
    #: the process training it, and its machine (0 and "" in this process)
    pid: int = 0
    host: str = ""


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
    #: peak bytes per device in the worker that ran it (remote executors; see devices.peak_memory)
    peak_memory: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Retrying:
    """A remote job's worker or node died: the job runs again from its last checkpoint.

    The runner keeps the run's first ``resume_epoch`` epochs (the rest were trained
    after that checkpoint and will be trained again) and tells the user."""

    key: str
    reason: str  # one line: what happened to the worker
    attempt: int  # the attempt starting now (2 = the first retry)
    attempts: int  # attempts allowed in all (run.retries + 1); 0: no set limit (requeued by the cluster)
    resume_epoch: int  # epochs kept: the checkpoint it continues from (0 = from scratch)


Message = Started | Masked | BatchDone | EpochDone | Checkpointed | Finished | Retrying


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

    def notes(self) -> list[str]:
        """What the user should hear since the last call (a cluster's queue waits, how
        it was chosen), one line each; the runner shows them as notices."""

    def describe(self) -> str | None:
        """Where the jobs run, in one line (a cluster's address and size), for the
        header and provenance; None for this process."""


class Attempts:
    """Retry bookkeeping of a remote executor: each task's latest checkpoint (seen in
    the messages that pass through) and how many times it ran, so that a job whose
    worker died runs again from where it was, at most ``retries`` times."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self._checkpoints: dict[str, JobCheckpoint] = {}
        self._tries: dict[str, int] = {}

    def track(self, message: Message) -> None:
        """Remember a :class:`Checkpointed` message's checkpoint; forget a finished task."""
        if isinstance(message, Checkpointed):
            self._checkpoints[message.key] = message.checkpoint
        elif isinstance(message, Finished):
            self.forget(message.key)

    def retry(self, task: Task, reason: str) -> tuple[Task, Retrying] | None:
        """``task`` to submit again (continuing from its latest checkpoint, else from
        what it was given) with the message that says so; None once it has used up
        its retries (the caller records it failed with ``reason``)."""
        tried = self._tries.get(task.key, 1)
        if tried > self.retries:
            return None
        self._tries[task.key] = tried + 1
        resume = self._checkpoints.get(task.key, task.resume)
        again = replace(task, resume=resume)
        return again, Retrying(task.key, reason, tried + 1, self.retries + 1, 0 if resume is None else resume.epoch)

    def forget(self, key: str) -> None:
        self._checkpoints.pop(key, None)
        self._tries.pop(key, None)
