"""One task in a worker process: what a Ray task or a Slurm array task runs.

A remote worker gets a :class:`~.base.Task` (the job's spec, its parent's tensors,
maybe a checkpoint) and :class:`WorkerSettings`, sets up torch as the driver would
(threads, determinism, full fp32), loads the data itself from ``spec.data`` (kept
for the next task of the same process), runs the job, and reports through ``put``:
the same messages the local executor hands the runner, ending with
:class:`~.base.Finished`. The job's own errors become that Finished; nothing here
writes a store.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import devices
from ..config import DataConfig
from ..data import Dataset, load_dataset
from ..errors import one_line
from ..protocol import JobHooks, run_job
from ..training import CancelFlag
from .base import BatchDone, Checkpointed, EpochDone, Finished, Masked, Message, Started, Task

Put = Callable[[Message], None]


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker trains, besides the task itself (picklable, from ``run.*``)."""

    #: "cpu", or "cuda": the first GPU the cluster made visible to the worker
    device: str
    #: torch CPU threads per job
    threads: int
    deterministic: bool
    #: seconds between two batch-progress messages of a job
    progress_interval: float = 0.1


class PolledFlag:
    """A cancel flag read from elsewhere (a Ray actor, a file): :meth:`is_set` calls
    ``poll`` at most once every ``every`` seconds (the training loop asks before each
    batch) and stays set once it has been."""

    def __init__(self, poll: Callable[[], bool], every: float = 0.25) -> None:
        self._poll = poll
        self._every = every
        self._next = 0.0
        self._set = False

    def is_set(self) -> bool:
        if not self._set and (now := time.monotonic()) >= self._next:
            self._next = now + self._every
            self._set = bool(self._poll())
        return self._set


def job_hooks(
    task: Task, device: torch.device, put: Put, cancel: CancelFlag | None, interval: float, *, worker: str = "",
    pid: int = 0, host: str = "",
) -> JobHooks:
    """Hooks that turn a running job's reports into messages for ``put``; batch
    progress at most every ``interval`` seconds (and at each epoch's last batch)."""
    key = task.key
    last = [0.0]

    def on_batch(epoch: int, batch: int, batches: int) -> None:
        now = time.perf_counter()
        if batch == batches or now - last[0] >= interval:
            last[0] = now
            put(BatchDone(key, epoch, batch, batches))

    return JobHooks(
        cancel=cancel,
        on_start=lambda epochs, batches, done: put(Started(key, epochs, batches, done, str(device), worker, pid, host)),
        on_mask=lambda actual, layers: put(Masked(key, actual, layers)),
        on_batch=on_batch,
        on_epoch=lambda metrics: put(EpochDone(key, metrics)),
        on_checkpoint=lambda checkpoint: put(Checkpointed(key, checkpoint)),
    )


_data_lock = threading.Lock()
_data_cache: dict[tuple[str, str], Dataset] = {}


def worker_data(config: DataConfig, device: torch.device) -> Dataset:
    """The dataset of ``config`` on ``device``, loaded once per worker process (the
    last one only: a worker serves one experiment at a time)."""
    key = (config.model_dump_json(), str(device))
    with _data_lock:
        if key not in _data_cache:
            _data_cache.clear()
            _data_cache[key] = load_dataset(config, device)
        return _data_cache[key]


def worker_device(settings: WorkerSettings) -> torch.device:
    """The device a worker trains on: the first GPU visible to it, or the CPU."""
    if settings.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("this worker was given no GPU (CUDA is not available here)")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def run_task(task: Task, settings: WorkerSettings, put: Put, cancel: CancelFlag | None = None, *, worker: str = "") -> Finished:
    """Run ``task`` in this process and return how it ended; its messages go to
    ``put`` as they happen. A job that raises (or a worker without the device or the
    data) ends as a Finished with the error; Ctrl-C (SIGINT) as cancelled."""
    started = time.perf_counter()
    try:
        devices.configure(settings.threads, settings.deterministic)
        device = worker_device(settings)
        devices.reset_peak_memory([device])
        data = worker_data(task.spec.data, device)
        hooks = job_hooks(task, device, put, cancel, settings.progress_interval, worker=worker, pid=os.getpid(),
                          host=socket.gethostname())
        with devices.on_device(device):
            output = run_job(task.spec, data, parent=task.parent, resume=task.resume, hooks=hooks)
    except KeyboardInterrupt:
        return Finished(task.key, None, "cancelled", time.perf_counter() - started, cancelled=True)
    except Exception as err:  # the job's (or this worker's) error: recorded, the grid goes on
        return Finished(task.key, None, f"{type(err).__name__}: {one_line(err)}", time.perf_counter() - started)
    return Finished(task.key, output, None, time.perf_counter() - started, peak_memory=devices.peak_memory([device]))
