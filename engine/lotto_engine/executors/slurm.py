"""The Slurm executor: the runner's tasks as Slurm job arrays, through submitit.

Why this shape: on Slurm the driver (this process, the only writer of the store)
cannot talk to its jobs, and nodes share a file system, not a network service.
So every wave of ready tasks (what the runner submits between two waits) becomes
one job array (submitit pickles each :class:`~.slurm_files.SlurmTask`); each task
writes its messages to events files in the shared ``run.slurm_folder`` that
:meth:`SlurmExecutor.wait` follows (:mod:`.slurm_files`), and reads a control file
for cancel. A preempted or timed-out task is requeued by submitit (its
``checkpoint`` hook) and continues from its last epoch checkpoint, kept in its
folder; the runner hears of it as a :class:`~.base.Retrying` and keeps only the
epochs before that checkpoint. A task whose job ended without a result (node
failure, scancel, out of memory) runs again from its last checkpoint, at most
``run.retries`` times (:class:`~.base.Attempts`), then is recorded failed with the
reason. Job states come from ``squeue`` (no ``sacct``: many clusters, and the test
cluster, keep no accounting).

``CLUSTER = "local"`` swaps in submitit's local executor (a process per task on
this machine, the same pickles, files and requeue path): the tests use it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..errors import DeviceError
from .base import Attempts, Finished, Message, Retrying, Task
from .slurm_files import Attempt, EventReader, SlurmTask, write_control
from .worker import WorkerSettings

#: submitit's cluster: "slurm", or "local" (processes on this machine; tests)
CLUSTER = "slurm"
#: seconds between two looks at the jobs' states (squeue)
STATE_INTERVAL = 5.0
#: seconds a task's job may have ended before its Finished arrives (a shared file
#: system may show the last bytes late) before the task counts as lost
LOST_AFTER = 10.0
#: times a task that runs out of time is requeued (submitit's max_num_timeout); preemptions are not counted
MAX_TIMEOUTS = 10
#: Slurm job states after which a job runs no more (without --requeue doing it again)
ENDED = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "REVOKED", "SPECIAL_EXIT", "TIMEOUT", "GONE",
})
_SQUEUE_ID = re.compile(r"(\d+)(?:_(\d+)|_\[([^\]]*)\])?$")


@dataclass
class _Tracked:
    """A submitted task: its folder and events, its submitit job, its ends."""

    task: Task
    folder: Path
    reader: EventReader
    job: Any = None  # submitit Job, once submitted
    starts: int = 0  # Attempt records read
    ended_at: float | None = None  # when its job was first seen ended without a Finished
    state: str = ""
    #: ended for sure (scancelled before it started, or never sent): no state can revive it
    final: bool = False


class SlurmExecutor:
    """Runs tasks as Slurm array jobs (see the module doc)."""

    def __init__(
        self, run: RunConfig, settings: WorkerSettings, *, cancel: threading.Event, progress_interval: float = 0.1,
    ) -> None:
        try:
            import submitit
        except ImportError:
            raise DeviceError('run.executor = "slurm" needs submitit: pip install "lotto-tui[slurm]"') from None
        self._cluster = CLUSTER
        if self._cluster == "slurm":
            _check_slurm(run.slurm_partition)
        if not run.slurm_folder:
            raise DeviceError('run.slurm_folder: required with run.executor = "slurm"')
        root = Path(run.slurm_folder).expanduser().absolute()
        self.folder = root / f"lotto-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        try:
            (self.folder / "tasks").mkdir(parents=True)
        except OSError as err:
            raise DeviceError(f"run.slurm_folder: cannot create {self.folder}: {err.strerror or err}") from None
        self._control = self.folder / "control"
        write_control(self._control, "run")
        self.capacity = run.parallel or run.slurm_array_parallelism
        self._settings = settings
        self._cancel = cancel
        self._poll = max(0.05, min(0.5, progress_interval))
        self._attempts = Attempts(run.retries)
        self._queued: list[_Tracked] = []  # submitted by the runner, not yet sent to Slurm
        self._tracked: dict[str, _Tracked] = {}  # sent, Finished not handed over
        self._numbers = itertools.count()
        self._inputs: dict[tuple[str, str], Path] = {}  # a parent's artifact -> its file, written once
        self._cancelling = False
        self._checked = 0.0
        self._executor = submitit.AutoExecutor(
            folder=self.folder / "jobs" / "%j", cluster=self._cluster, slurm_max_num_timeout=MAX_TIMEOUTS,
            local_max_num_timeout=MAX_TIMEOUTS,
            # a task's pickle is small (its parent's tensors go to files of their own)
            slurm_max_pickle_size_gb=64.0, local_max_pickle_size_gb=64.0,
        )
        signal_delay = int(min(90, max(10, run.slurm_time * 60 // 4)))  # the warning before the time limit
        parameters: dict[str, Any] = {
            "name": "lotto", "timeout_min": run.slurm_time, "cpus_per_task": run.cpus_per_job,
            "slurm_array_parallelism": run.slurm_array_parallelism, "slurm_signal_delay_s": signal_delay,
            # requeueable: `scontrol requeue` on a time limit, and Slurm's own requeue after a node failure
            "slurm_additional_parameters": {"requeue": True},
        }
        if run.gpus_per_job:
            parameters["gpus_per_node"] = int(run.gpus_per_job)
        if run.slurm_partition:
            parameters["slurm_partition"] = run.slurm_partition
        self._executor.update_parameters(**parameters)

    # ------------------------------------------------------------------ the protocol

    def submit(self, group: Sequence[Task]) -> None:
        for task in group:
            self._queue(task)

    @property
    def busy(self) -> int:
        return len(self._tracked) + len(self._queued)

    def wait(self, on_message: Callable[[Message], None], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._cancel.is_set() and not self._cancelling:
                self._stop()
            self._send()
            if self._read(on_message) | self._check(on_message):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self._poll, left))

    def cancel(self) -> None:
        self._cancel.set()
        self._stop()

    def close(self) -> None:
        """scancel what still runs or waits; delete the task folders of a clean end
        (the job logs stay, under ``jobs/``)."""
        left = [t for t in self._tracked.values() if t.job is not None]
        if left:
            with contextlib.suppress(OSError):
                write_control(self._control, "cancel")
            self._kill([t.job for t in left])
        self._queued.clear()
        if not left:
            shutil.rmtree(self.folder / "tasks", ignore_errors=True)
            shutil.rmtree(self.folder / "inputs", ignore_errors=True)
            for pickle in (self.folder / "jobs").glob("*/*.pkl"):  # inputs and results: big, and read
                with contextlib.suppress(OSError):
                    pickle.unlink()

    # ------------------------------------------------------------------ submitting

    def _queue(self, task: Task) -> None:
        folder = self.folder / "tasks" / f"{next(self._numbers):05d}"
        folder.mkdir()
        self._queued.append(_Tracked(task, folder, EventReader(folder, task.key)))

    def _send(self) -> None:
        """One job array for everything queued since the last wait."""
        if not self._queued:
            return
        wave, self._queued = self._queued, []
        if self._cancelling:  # never started: nothing to stop
            for tracked in wave:
                self._tracked[tracked.task.key] = tracked
                tracked.ended_at, tracked.state, tracked.final = time.monotonic() - LOST_AFTER, "never submitted", True
            return
        runs = [SlurmTask(*self._inputs_to_files(t.task), self._settings, str(t.folder), str(self._control))
                for t in wave]
        try:
            jobs = self._executor.submit_array(runs)
        except Exception as err:  # sbatch refused (limits, accounts...): the grid cannot go on
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            error = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else type(err).__name__)
            raise DeviceError(f"run.executor = \"slurm\": submitting {len(wave)} tasks failed: {error}") from None
        for tracked, job in zip(wave, jobs, strict=True):
            tracked.job = job
            self._tracked[tracked.task.key] = tracked

    def _inputs_to_files(self, task: Task) -> tuple[Task, dict[str, str]]:
        """``task`` without its parent's tensors, and the files that hold them: each
        artifact saved once, however many siblings (sparsities, methods) read it."""
        if task.parent is None:
            return task, {}
        files: dict[str, str] = {}
        for local, tensors in task.parent.items():
            source = task.spec.inputs.get(local, (task.key, local))
            path = self._inputs.get(source)
            if path is None:
                path = self.folder / "inputs" / f"{len(self._inputs):05d}.pt"
                path.parent.mkdir(exist_ok=True)
                torch.save(dict(tensors), path)
                self._inputs[source] = path
            files[local] = str(path)
        return replace(task, parent=None), files

    # ------------------------------------------------------------------ following

    def _read(self, on_message: Callable[[Message], None]) -> bool:
        """Hand over what the tasks wrote since the last look; whether a task finished."""
        finished = False
        for key, tracked in list(self._tracked.items()):
            for record in tracked.reader.read():
                if isinstance(record, Attempt):
                    tracked.starts += 1
                    tracked.ended_at = None
                    if tracked.starts > 1:  # requeued after a preemption or a time limit
                        on_message(Retrying(key, "preempted or out of time, requeued by Slurm", tracked.starts, 0,
                                            record.resume_epoch))
                    continue
                self._attempts.track(record)  # type: ignore[arg-type]
                if isinstance(record, Finished):
                    del self._tracked[key]
                    shutil.rmtree(tracked.folder, ignore_errors=True)
                    finished = True
                on_message(record)  # type: ignore[arg-type]
                if isinstance(record, Finished):
                    break
        return finished

    def _check(self, on_message: Callable[[Message], None]) -> bool:
        """Every STATE_INTERVAL: find the tasks whose job ended without a Finished;
        run them again (or record them failed, or cancelled). Whether one finished."""
        now = time.monotonic()
        if now - self._checked < STATE_INTERVAL and not any(t.ended_at is not None for t in self._tracked.values()):
            return False
        if now - self._checked >= STATE_INTERVAL:
            self._checked = now
            sent = [t for t in self._tracked.values() if t.job is not None]
            states = self._states([t.job for t in sent]) if sent else {}
            for tracked in sent:
                state = states.get(tracked.job.job_id)
                if state is None or tracked.final:
                    continue  # not known this time (squeue failed): ask again later
                if state in ENDED:
                    if tracked.ended_at is None:
                        tracked.ended_at = now
                    tracked.state = state
                else:
                    tracked.ended_at = None
        finished = False
        for key, tracked in list(self._tracked.items()):
            if tracked.ended_at is None or now - tracked.ended_at < LOST_AFTER:
                continue
            del self._tracked[key]
            finished |= self._lost(tracked, on_message)
        return finished

    def _lost(self, tracked: _Tracked, on_message: Callable[[Message], None]) -> bool:
        task, job = tracked.task, tracked.job
        where = f"slurm job {job.job_id}" if job is not None else "its job"
        if self._cancelling:
            on_message(Finished(task.key, None, "cancelled", cancelled=True))
            return True
        error = _job_error(job)
        if error is not None:  # the task raised outside the job (it would again): no retry
            on_message(Finished(task.key, None, f"{where} failed: {error}"))
            return True
        reason = f"{where} ended ({tracked.state}) without a result"
        again = self._attempts.retry(task, reason)
        if again is None:
            self._attempts.forget(task.key)
            on_message(Finished(task.key, None, f"{reason} (after {self._attempts.retries + 1} attempts)"))
            return True
        retried, message = again
        on_message(message)
        self._queue(retried)
        return False

    def _states(self, jobs: list[Any]) -> dict[str, str]:
        """Job id -> state; "GONE" for one the controller no longer knows."""
        if self._cluster != "slurm":
            local = {"RUNNING": "RUNNING", "FINISHED": "COMPLETED"}  # else INTERRUPTED (a signal)...
            return {job.job_id: local.get(job.state, "FAILED") for job in jobs}
        ids = sorted({job.job_id.split("_")[0] for job in jobs})
        try:
            out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if out.returncode and "Invalid job id" not in out.stderr:
            return {}
        states = parse_squeue(out.stdout if not out.returncode else "")
        return {job.job_id: states.get(job.job_id, "GONE") for job in jobs}

    # ------------------------------------------------------------------ stopping

    def _stop(self) -> None:
        """Cancel: tell the running tasks (they stop at their next batch and report),
        scancel the ones that have not started (a queue can hold them for hours)."""
        if self._cancelling:
            return
        self._cancelling = True
        write_control(self._control, "cancel")
        if self._cluster != "slurm":
            return
        waiting = [t for t in self._tracked.values() if t.job is not None and not t.reader.started]
        if waiting:
            self._kill([t.job for t in waiting])
        for tracked in waiting:  # ended now: their Finished (cancelled) comes next, nothing after it is read
            tracked.ended_at, tracked.state, tracked.final = time.monotonic() - LOST_AFTER, "CANCELLED", True

    def _kill(self, jobs: list[Any]) -> None:
        if self._cluster == "slurm":
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["scancel", *sorted({job.job_id for job in jobs})], capture_output=True, timeout=60)
        else:
            for job in jobs:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)


def parse_squeue(text: str) -> dict[str, str]:
    """``squeue -o "%i|%T"`` lines -> {"77_3": "RUNNING", "78": "PENDING", ...};
    a pending array range ("77_[4-9%2]") gives each of its tasks."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        ident, _, state = line.strip().partition("|")
        match = _SQUEUE_ID.match(ident)
        if not match or not state:
            continue
        base, index, ranges = match.groups()
        state = state.split()[0].rstrip("+")
        if ranges is not None:
            for part in ranges.split("%")[0].split(","):
                low, _, high = part.partition("-")
                with contextlib.suppress(ValueError):
                    for i in range(int(low), int(high or low) + 1):
                        states[f"{base}_{i}"] = state
        else:
            states[f"{base}_{index}" if index is not None else base] = state
    return states


def _job_error(job: Any) -> str | None:
    """The last line of the error a job's task raised outside run_task (submitit's
    result pickle), or None."""
    if job is None:
        return None
    with contextlib.suppress(Exception):
        from submitit.core.utils import pickle_load

        outcome, payload = pickle_load(job.paths.result_pickle)
        if outcome == "error":
            lines = [line for line in str(payload).strip().splitlines() if line.strip()]
            return lines[-1].strip() if lines else "an error"
    return None


def _check_slurm(partition: str) -> None:
    """DeviceError (one line) unless Slurm's commands are here, its controller answers
    and knows ``partition`` (when one is asked for)."""
    missing = [name for name in ("sbatch", "squeue", "scancel", "srun") if shutil.which(name) is None]
    if missing:
        raise DeviceError(f'run.executor = "slurm": {", ".join(missing)} not found (run this on a Slurm login node)')
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceError(f'run.executor = "slurm": sinfo did not answer: {err}') from None
    if out.returncode:
        line = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").splitlines()[-1]
        raise DeviceError(f'run.executor = "slurm": the Slurm controller does not answer: {line}')
    known = [name.rstrip("*") for name in out.stdout.split()]
    if partition and partition not in known:
        raise DeviceError(f"run.slurm_partition: no partition {partition!r} on this cluster (it has {', '.join(known)})")
