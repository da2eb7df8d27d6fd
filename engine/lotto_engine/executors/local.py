"""The local executor: jobs in this process, one per job slot.

One worker thread per slot (a GPU, or a share of the CPU threads); a slot takes the
next submitted task when free. With one slot jobs run one at a time in submission
order, which is the sequential grid. Numbers do not depend on the slot count: each
job seeds itself, and CPU slots share the threads set by the runner.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

import torch

from .. import devices
from ..data import Dataset
from ..errors import one_line
from ..protocol import JobHooks, run_job
from .base import BatchDone, Checkpointed, EpochDone, Finished, Masked, Message, Started, Task

DataFor = Callable[[torch.device], Dataset]


class LocalExecutor:
    """Runs tasks in worker threads over ``slots``; see the module doc."""

    def __init__(
        self,
        slots: Sequence[torch.device],
        data_for: DataFor,
        *,
        threads: int,
        cancel: threading.Event,
        progress_interval: float = 0.1,
    ) -> None:
        self.slots = list(slots)
        self.capacity = len(self.slots)
        self._data_for = data_for
        self._threads = threads
        self._cancel = cancel
        self._interval = progress_interval
        self._inbox: queue.Queue[Task | None] = queue.Queue()
        self._outbox: queue.Queue[Message] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, args=(d,), name=f"lotto-job-{i}", daemon=True)
            for i, d in enumerate(self.slots)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, group: Sequence[Task]) -> None:
        for task in group:
            self._inbox.put(task)

    def next_message(self, timeout: float) -> Message | None:
        try:
            return self._outbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Let the workers go and wait for them, even through Ctrl-C (a running job
        stops at its next batch once cancelled)."""
        for _ in self._workers:
            self._inbox.put(None)
        for worker in self._workers:
            while worker.is_alive():
                try:
                    worker.join(0.2)
                except KeyboardInterrupt:
                    self._cancel.set()

    # ------------------------------------------------------------------ workers

    def _work(self, device: torch.device) -> None:
        torch.set_num_threads(self._threads)  # per thread under OpenMP: set it where jobs run
        with devices.on_device(device):
            while (task := self._inbox.get()) is not None:
                self._outbox.put(self._run(task, device))

    def _run(self, task: Task, device: torch.device) -> Finished:
        started = time.perf_counter()
        try:
            data = self._data_for(device)
            output = run_job(task.spec, data, parent=task.parent, resume=task.resume, hooks=self._hooks(task, device))
        except Exception as err:  # the job raised: its error is recorded, the grid goes on
            return Finished(task.key, None, f"{type(err).__name__}: {one_line(err)}", time.perf_counter() - started)
        return Finished(task.key, output, None, time.perf_counter() - started)

    def _hooks(self, task: Task, device: torch.device) -> JobHooks:
        key, put, interval = task.key, self._outbox.put, self._interval
        last = [0.0]

        def on_batch(epoch: int, batch: int, batches: int) -> None:
            now = time.perf_counter()
            if batch == batches or now - last[0] >= interval:
                last[0] = now
                put(BatchDone(key, epoch, batch, batches))

        return JobHooks(
            cancel=self._cancel,
            on_start=lambda epochs, batches, done: put(Started(key, epochs, batches, done, str(device))),
            on_mask=lambda actual, layers: put(Masked(key, actual, layers)),
            on_batch=on_batch,
            on_epoch=lambda metrics: put(EpochDone(key, metrics)),
            on_checkpoint=lambda checkpoint: put(Checkpointed(key, checkpoint)),
        )
