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

What Slurm would never start fails at once instead of waiting in silence: before
anything is written, a job larger than every node of the partition (CPUs, GPUs) or
longer than its time limit (``sinfo``); while following, a task pending for a reason
Slurm never clears by itself (:data:`NEVER`; or every node that could take it down or
drained) is scancelled and recorded failed with that reason. Tasks that wait in the
queue for a while are told in :meth:`SlurmExecutor.notes` ("3 jobs wait in the Slurm
queue (Resources)"). Every job is named :data:`JOB_NAME`; the driver's folder holds
its array ids (``jobs.txt``) and a heartbeat: the first wave of a later driver scancels
the jobs of a driver that is gone (its jobs would only duplicate the new ones). The
logs of a task that succeeded are deleted once its job has ended; a failure keeps
them and names them in its reason.

``CLUSTER = "local"`` swaps in submitit's local executor (a process per task on
this machine, the same pickles, files and requeue path): the tests use it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
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
#: every node of every partition (hidden ones too), one line each: see parse_sinfo
SINFO = ("sinfo", "-h", "-a", "-N", "-o", "%P|%c|%G|%l|%T")
#: the name of every job this executor submits: ``squeue --me --name=lotto``
JOB_NAME = "lotto"
#: pending reasons Slurm never clears by itself: the job asks for more than its partition,
#: account or QOS ever allows, or names something invalid (``man squeue``, JOB REASON CODES;
#: Slurm's job_state_reason.c). Group limits (AssocGrp*, QOSGrp*, *PerUser, *PerAccount)
#: clear when other jobs end; held, reserved, down partitions wait for a person: they wait.
NEVER = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "BadConstraints", "Constraints", "InvalidAccount", "InvalidQOS",
    "QOSNotAllowed", "AccountNotAllowed", "DependencyNeverSatisfied", "ReservationDeleted", "ReservationInvalid",
    "MaxMemPerLimit", "JobHoldMaxRequeue",
})
#: per-job limits of an association or a QOS (AssocMaxCpuPerJobLimit, QOSMaxGRESPerNode,
#: QOSMinCpuNotSatisfied...): a job over them never starts
_NEVER_LIMIT = re.compile(r"^(?:(?:Assoc|QOS)Max\w*Per(?:Job|Node)|QOSMin)")
#: pending reasons that last while the nodes that could take the job are unavailable: they
#: never clear when every such node of the partition is down or drained (checked with sinfo)
NODES = frozenset({"ReqNodeNotAvail", "PartitionNodeLimit", "NodeDown"})
#: how squeue words some reasons (``%r`` prints a job's description when it has one)
_REASON_TEXT = {
    "nodes required for job are down, drained": "ReqNodeNotAvail",
    "launch failed requeued held": "JobHoldMaxRequeue",
    "none": "WaitingForScheduling",  # no reason set yet
}
#: node states (sinfo %T, without its flag suffix) in which a node takes no new job
_UNUSABLE = frozenset({"down", "drained", "draining", "drain", "fail", "failing", "inval", "future"})
#: seconds a task waits in the queue before the wait is told (:meth:`SlurmExecutor.notes`)
WAIT_NOTICE_AFTER = 30.0
#: seconds between two touches of a driver's heartbeat file
HEARTBEAT = 15.0
#: a driver on another machine whose heartbeat is older than this is gone (on this
#: machine: its process is gone)
STALE_AFTER = 120.0
#: seconds close() waits for the jobs of succeeded tasks to end, to delete their logs
LOG_WAIT = 10.0


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
    #: why it is pending (squeue), while it is
    reason: str = ""
    #: ended for sure (scancelled before it started, or never sent): no state can revive it
    final: bool = False
    #: when it was sent to Slurm
    sent_at: float = 0.0
    #: scancelled because Slurm would never start it: the failure, told as is
    never: str | None = None


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
        if not run.slurm_folder:
            raise DeviceError('run.slurm_folder: required with run.executor = "slurm"')
        self._partition = ""
        if self._cluster == "slurm":
            self._partition = _check_slurm(run)
        root = Path(run.slurm_folder).expanduser().absolute()
        self.folder = root / f"lotto-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        try:
            (self.folder / "tasks").mkdir(parents=True)
        except OSError as err:
            raise DeviceError(f"run.slurm_folder: cannot create {self.folder}: {err.strerror or err}") from None
        self._control = self.folder / "control"
        write_control(self._control, "run")
        self._root = root
        self._run = run
        self._orphans_checked = False
        self._notes: list[str] = []
        #: pending reason -> tasks waiting for it (those queued for WAIT_NOTICE_AFTER or more)
        self.waiting: dict[str, int] = {}
        self._done_jobs: list[Any] = []  # jobs of tasks that succeeded: their logs go once they ended
        self._failed_logs = False
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
        parameters: dict[str, Any] = {
            "name": JOB_NAME, "timeout_min": run.slurm_time, "cpus_per_task": run.cpus_per_job,
            "slurm_array_parallelism": run.slurm_array_parallelism,
            "slurm_signal_delay_s": signal_delay(run.slurm_time),
            # requeueable: `scontrol requeue` on a time limit, and Slurm's own requeue after a node failure
            "slurm_additional_parameters": {"requeue": True},
        }
        if run.gpus_per_job:
            parameters["gpus_per_node"] = int(run.gpus_per_job)
        if run.slurm_partition:
            parameters["slurm_partition"] = run.slurm_partition
        self._executor.update_parameters(**parameters)
        if run.slurm_time <= 2:
            self._notes.append(
                f"run.slurm_time = {run.slurm_time}: Slurm warns a task up to a minute before its time limit, "
                "so each start of a task runs about half a minute before it is requeued; an epoch that takes "
                "longer never finishes (give run.slurm_time several minutes)")
        # who runs these jobs, for a later driver (see _cancel_orphans)
        (self.folder / "driver").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                        "pids": _pid_space()}))
        self._alive = threading.Event()
        threading.Thread(target=self._beat, name="lotto-slurm-heartbeat", daemon=True).start()

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
        """scancel what still runs or waits. After a clean end, delete the task folders
        and the logs of the tasks that succeeded (waiting up to LOG_WAIT seconds for
        their jobs to end); with no failure's log to keep, the whole folder goes."""
        left = [t for t in self._tracked.values() if t.job is not None]
        if left:
            with contextlib.suppress(OSError):
                write_control(self._control, "cancel")
            self._kill([t.job for t in left])
        self._queued.clear()
        self._alive.set()
        if not left:
            deadline = time.monotonic() + LOG_WAIT
            while self._done_jobs and time.monotonic() < deadline:
                self._delete_logs()
                if self._done_jobs:
                    time.sleep(0.5 if self._cluster == "slurm" else 0.1)
            shutil.rmtree(self.folder / "tasks", ignore_errors=True)
            shutil.rmtree(self.folder / "inputs", ignore_errors=True)
            for pickle in (self.folder / "jobs").glob("*/*.pkl"):  # inputs and results: big, and read
                with contextlib.suppress(OSError):
                    pickle.unlink()
            if not self._done_jobs and not self._failed_logs:
                shutil.rmtree(self.folder, ignore_errors=True)
                return
        with contextlib.suppress(OSError):
            (self.folder / "ended").touch()

    def describe(self) -> str | None:
        """The cluster in one line, for the run's header and provenance: ``slurm
        partition 'debug' (2 nodes, 4 CPUs, 0 GPUs), job files in <folder>``; None
        on submitit's local stand-in (tests)."""
        if not self._partition:
            return None
        nodes = [n for n in (_nodes() or []) if n.partition.rstrip("*") == self._partition]
        count = lambda n, thing: f"{n} {thing}{'' if n == 1 else 's'}"  # noqa: E731
        size = (f" ({count(len(nodes), 'node')}, {count(sum(n.cpus for n in nodes), 'CPU')}, "
                f"{count(sum(n.gpus for n in nodes), 'GPU')})") if nodes else ""
        return f"slurm partition {self._partition!r}{size}, job files in {self.folder}"

    def notes(self) -> list[str]:
        """What the user should hear since the last call, one line each: tasks waiting in
        the queue (once per change of why), jobs of a gone driver scancelled, a time
        limit too short to be useful. The runner shows them as notices."""
        notes, self._notes = self._notes, []
        return notes

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
        if not self._orphans_checked:  # the runner holds the experiment's lock by now
            self._orphans_checked = True
            self._cancel_orphans()
        runs = [SlurmTask(*self._inputs_to_files(t.task), self._settings, str(t.folder), str(self._control))
                for t in wave]
        try:
            jobs = self._executor.submit_array(runs)
        except Exception as err:  # sbatch refused (limits, accounts...): the grid cannot go on
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            error = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else type(err).__name__)
            raise DeviceError(f"run.executor = \"slurm\": submitting {len(wave)} tasks failed: {error}") from None
        now = time.monotonic()
        for tracked, job in zip(wave, jobs, strict=True):
            tracked.job, tracked.sent_at = job, now
            self._tracked[tracked.task.key] = tracked
        arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        with contextlib.suppress(OSError), open(self.folder / "jobs.txt", "a") as f:  # for a later driver
            f.write("".join(f"{ident}\n" for ident in arrays))

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
                    if record.output is None and not record.cancelled:  # its log stays, named
                        record = replace(record, error=f"{record.error}{self._log(tracked.job)}")
                    elif tracked.job is not None:
                        self._done_jobs.append(tracked.job)
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
            jobs = [t.job for t in sent] + self._done_jobs
            states = self._states(jobs) if jobs else {}
            for tracked in sent:
                got = states.get(tracked.job.job_id)
                if got is None or tracked.final:
                    continue  # not known this time (squeue failed): ask again later
                state, reason = got
                if state in ENDED:
                    if tracked.ended_at is None:
                        tracked.ended_at = now
                    tracked.state = state
                else:
                    tracked.ended_at = None
                    tracked.state, tracked.reason = state, reason if state == "PENDING" else ""
            self._pending(now)
            self._delete_logs(states)
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
        error = None if tracked.never is not None or self._cancelling else _job_error(job)
        if tracked.never is not None or self._cancelling or error is not None:  # no retry
            self._attempts.forget(task.key)  # (its latest checkpoint goes too)
        if tracked.never is not None:
            on_message(Finished(task.key, None, tracked.never))
            return True
        if self._cancelling:
            on_message(Finished(task.key, None, "cancelled", cancelled=True))
            return True
        if error is not None:  # the task raised outside the job (it would again): no retry
            on_message(Finished(task.key, None, f"{where} failed: {error}{self._log(job)}"))
            return True
        reason = f"{where} ended ({tracked.state}) without a result"
        again = self._attempts.retry(task, reason)
        if again is None:
            self._attempts.forget(task.key)
            on_message(Finished(task.key, None,
                                f"{reason} (after {self._attempts.retries + 1} attempts){self._log(job)}"))
            return True
        retried, message = again
        on_message(message)
        self._queue(retried)
        return False

    def _states(self, jobs: list[Any]) -> dict[str, tuple[str, str]]:
        """Job id -> (state, pending reason); "GONE" for one the controller no longer knows."""
        if self._cluster != "slurm":
            local = {"RUNNING": "RUNNING", "FINISHED": "COMPLETED"}  # else INTERRUPTED (a signal)...
            return {job.job_id: (local.get(job.state, "FAILED"), "") for job in jobs}
        states = squeue([job.job_id for job in jobs])
        if states is None:
            return {}
        return {job.job_id: states.get(job.job_id, ("GONE", "")) for job in jobs}

    # ------------------------------------------------------------------ waiting in the queue

    def _pending(self, now: float) -> None:
        """Fail the pending tasks Slurm will never start; tell the ones waiting long."""
        pending = [t for t in self._tracked.values()
                   if t.job is not None and t.state == "PENDING" and not t.final and t.reason]
        nodes: list[_Node] | None = None
        never: list[_Tracked] = []
        for tracked in pending:
            why = never_reason(tracked.reason)
            if why is None and short_reason(tracked.reason) in NODES and self._cluster == "slurm":
                if nodes is None:
                    nodes = _nodes() or []
                if nodes and not _usable(nodes, self._partition, self._run):
                    why = (f"{short_reason(tracked.reason)} (every node of partition {self._partition!r} "
                           "that could take it is down or drained)")
            if why is not None:
                tracked.never = f"slurm will not start it: {why}"
                never.append(tracked)
        if never:
            self._kill([t.job for t in never])
            for tracked in never:  # ended now: recorded failed next
                tracked.ended_at, tracked.state, tracked.final = now - LOST_AFTER, "CANCELLED", True
        waiting = Counter(short_reason(t.reason) for t in pending
                          if t.never is None and now - t.sent_at >= WAIT_NOTICE_AFTER)
        if set(waiting) - set(self.waiting):  # a new reason to wait: told once
            total = sum(waiting.values())
            why = ", ".join(f"{n} {r}" if len(waiting) > 1 else r for r, n in waiting.most_common())
            self._notes.append(f"{total} {'job waits' if total == 1 else 'jobs wait'} in the Slurm queue ({why})")
        self.waiting = dict(waiting)

    # ------------------------------------------------------------------ logs, other drivers

    def _log(self, job: Any) -> str:
        """" (log: PATH)" for a failure's reason: its job's log, which stays."""
        if job is None:
            return ""
        self._failed_logs = True
        return f" (log: {job.paths.stderr})"

    def _delete_logs(self, states: dict[str, tuple[str, str]] | None = None) -> None:
        """Delete the job folders (logs, pickles) of the tasks that succeeded, once their
        jobs have ended (a job still writes its log after its Finished)."""
        if not self._done_jobs:
            return
        if states is None:
            states = self._states(self._done_jobs)
        keep = []
        for job in self._done_jobs:
            state = states.get(job.job_id, ("", ""))[0]
            if state in ENDED:
                shutil.rmtree(job.paths.folder, ignore_errors=True)
            else:
                keep.append(job)
        self._done_jobs = keep

    def _beat(self) -> None:
        """Touch the heartbeat file until close(): a later driver on another machine
        tells from it whether this one is gone."""
        beat = self.folder / "alive"
        while True:
            with contextlib.suppress(OSError):
                beat.touch()
            if self._alive.wait(HEARTBEAT):
                return

    def _cancel_orphans(self) -> None:
        """scancel the jobs of earlier drivers of ``run.slurm_folder`` that are gone
        (their process ended; on another machine: no heartbeat for STALE_AFTER): nothing
        reads them any more, and this driver trains those jobs again (from the store's
        checkpoints)."""
        if self._cluster != "slurm":
            return
        with contextlib.suppress(OSError):
            (self.folder / "alive").touch()
        try:
            now = (self.folder / "alive").stat().st_mtime  # the shared file system's clock
            others = [p for p in self._root.glob("lotto-*") if p != self.folder and (p / "jobs.txt").exists()
                      and not (p / "ended").exists()]
        except OSError:
            return
        for other in others:
            gone = _gone(other, now)
            if gone is None:
                continue
            with contextlib.suppress(OSError):
                write_control(other / "control", "cancel")
            try:
                ids = sorted(set((other / "jobs.txt").read_text().split()))
            except OSError:
                continue
            states = squeue(ids) or {}
            live = sorted({ident.split("_")[0] for ident, (state, _) in states.items() if state not in ENDED})
            if live:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(["scancel", *live], capture_output=True, timeout=60)
                tasks = sum(1 for state, _ in states.values() if state not in ENDED)
                self._notes.append(
                    f"scancelled {tasks} Slurm {'task' if tasks == 1 else 'tasks'} (job {', '.join(live)}) left by "
                    f"an earlier driver that is gone ({gone}; {other}): this run trains their jobs again, "
                    "from the store's checkpoints")
            with contextlib.suppress(OSError):
                (other / "ended").touch()

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


def signal_delay(minutes: int) -> int:
    """Seconds before the time limit at which Slurm is asked to warn a task (submitit's
    ``slurm_signal_delay_s``): a tenth of the limit, 10 to 90 s. Slurm looks at time
    limits about every 30 s and so sends the warning up to a minute earlier than asked
    (``man sbatch``, --signal; a 1-minute limit is warned after 27-28 s whether 5 or 15 s
    are asked). The warning needs little: the task's state is on disk already (epoch
    checkpoints), so a longer delay only takes time from every start."""
    return int(min(90, max(10, minutes * 6)))


def squeue(ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, pending reason)} for the arrays of ``ids``; None when squeue
    does not answer (ask again later)."""
    arrays = sorted({str(ident).split("_")[0] for ident in ids})
    if not arrays:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode and "Invalid job id" not in out.stderr:
        return None
    return parse_squeue(out.stdout if not out.returncode else "")


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """``squeue -o "%i|%T|%r"`` lines -> {"77_3": ("RUNNING", "None"), "78": ("PENDING",
    "Resources"), ...}; a pending array range ("77_[4-9%2]") gives each of its tasks."""
    states: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        ident, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        match = _SQUEUE_ID.match(ident)
        if not match or not state.strip():
            continue
        base, index, ranges = match.groups()
        got = (state.split()[0].rstrip("+"), reason.strip())
        if ranges is not None:
            for part in ranges.split("%")[0].split(","):
                low, _, high = part.partition("-")
                with contextlib.suppress(ValueError):
                    for i in range(int(low), int(high or low) + 1):
                        states[f"{base}_{i}"] = got
        else:
            states[f"{base}_{index}" if index is not None else base] = got
    return states


def short_reason(reason: str) -> str:
    """A pending reason as its code: "ReqNodeNotAvail, UnavailableNodes:n1" and squeue's
    "Nodes required for job are DOWN, DRAINED..." -> "ReqNodeNotAvail"."""
    text = reason.strip().strip("()")
    for words, code in _REASON_TEXT.items():
        if text.lower().startswith(words) and (words != "none" or text.lower() == "none"):
            return code
    return text.split(",")[0].strip()


def never_reason(reason: str) -> str | None:
    """The pending reason if Slurm never clears it by itself (:data:`NEVER`), else None."""
    code = short_reason(reason)
    return code if code in NEVER or _NEVER_LIMIT.match(code) else None


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


@dataclass(frozen=True)
class _Node:
    """One node of one partition, as sinfo tells it."""

    partition: str  # "debug*": the default partition
    cpus: int
    gpus: int
    time_limit: float | None  # the partition's, minutes (None: no limit)
    state: str


def _nodes() -> list[_Node] | None:
    """Every node of every partition (``sinfo -N``); None when sinfo fails."""
    try:
        out = subprocess.run(SINFO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_sinfo(out.stdout) if not out.returncode else None


def parse_sinfo(text: str) -> list[_Node]:
    """``sinfo -h -N -o "%P|%c|%G|%l|%T"`` lines -> nodes."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        partition, cpus, gres, limit, state = fields
        with contextlib.suppress(ValueError):
            nodes.append(_Node(partition, int(cpus.rstrip("+")), _gpus(gres), _minutes(limit), state.lower()))
    return nodes


def _gpus(gres: str) -> int:
    """GPUs in a node's GRES ("gpu:4", "gpu:a100:2(S:0-1),gpu:v100:2", "(null)")."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)", gres))


def _minutes(limit: str) -> float | None:
    """sinfo's time limit ("infinite", "1-00:00:00", "2:00:00", "30:00") in minutes."""
    limit = limit.strip().lower()
    if not limit or limit in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def _fits(node: _Node, run: RunConfig) -> bool:
    return node.cpus >= run.cpus_per_job and node.gpus >= int(run.gpus_per_job)


def _usable(nodes: list[_Node], partition: str, run: RunConfig) -> bool:
    """Whether a node of ``partition`` that could take a job is up (not down, drained...)."""
    return any(n.partition.rstrip("*") == partition and _fits(n, run) and n.state.rstrip("*~#!%$@^-") not in _UNUSABLE
               for n in nodes)


def _gone(folder: Path, now: float) -> str | None:
    """How the driver of ``folder`` is known to be gone ("pid 12 on login1 ended"), or
    None while it may still run."""
    try:
        driver = json.loads((folder / "driver").read_text())
        pid, host = int(driver["pid"]), str(driver["host"])
        beat = max(path.stat().st_mtime for path in (folder / "driver", *folder.glob("alive")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname() and driver.get("pids") == _pid_space():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"pid {pid} on {host} ended"
        except OSError:
            pass
        return None  # alive (or its pid reused: kept, to be safe)
    if now - beat > STALE_AFTER:
        return f"pid {pid} on {host}, silent for {int(now - beat)} s"
    return None


def _pid_space() -> str:
    """This kernel's boot and pid namespace: where a pid names the same process (two
    containers may share a host name, not their pids)."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return ":".join(parts)


def _check_slurm(run: RunConfig) -> str:
    """The partition jobs go to; DeviceError (one line) unless Slurm's commands are
    here, its controller answers, and the partition has a node that can take a job
    (CPUs, GPUs) for run.slurm_time minutes."""
    missing = [name for name in ("sbatch", "squeue", "scancel", "srun", "sinfo") if shutil.which(name) is None]
    if missing:
        raise DeviceError(f'run.executor = "slurm": {", ".join(missing)} not found (run this on a Slurm login node)')
    try:
        out = subprocess.run(SINFO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceError(f'run.executor = "slurm": sinfo did not answer: {err}') from None
    if out.returncode:
        line = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").splitlines()[-1]
        raise DeviceError(f'run.executor = "slurm": the Slurm controller does not answer: {line}')
    nodes = parse_sinfo(out.stdout)
    if not nodes:
        raise DeviceError('run.executor = "slurm": sinfo lists no node on this cluster')
    known = list(dict.fromkeys(node.partition.rstrip("*") for node in nodes))
    partition = run.slurm_partition
    if partition and partition not in known:
        raise DeviceError(f"run.slurm_partition: no partition {partition!r} on this cluster (it has {', '.join(known)})")
    if not partition:
        partition = next((n.partition.rstrip("*") for n in nodes if n.partition.endswith("*")), "")
        if not partition:
            raise DeviceError(
                f"run.slurm_partition: this cluster has no default partition; name one of {', '.join(known)}")
    mine = [node for node in nodes if node.partition.rstrip("*") == partition]
    cpus, gpus = max(n.cpus for n in mine), max(n.gpus for n in mine)
    where = f"partition {partition!r}"
    if run.cpus_per_job > cpus:
        raise DeviceError(f"run.cpus_per_job = {run.cpus_per_job}: no node of {where} has that many CPUs "
                          f"(at most {cpus}); Slurm would keep the jobs pending forever")
    if int(run.gpus_per_job) > gpus:
        has = f"at most {gpus}" if gpus else "none has a GPU"
        raise DeviceError(f"run.gpus_per_job = {int(run.gpus_per_job)}: no node of {where} has that many GPUs "
                          f"({has}); Slurm would keep the jobs pending forever")
    if not any(_fits(n, run) for n in mine):
        raise DeviceError(f"run.cpus_per_job = {run.cpus_per_job} with run.gpus_per_job = {int(run.gpus_per_job)}: "
                          f"no node of {where} has both; Slurm would keep the jobs pending forever")
    limit = mine[0].time_limit
    if limit is not None and run.slurm_time > limit:
        raise DeviceError(f"run.slurm_time = {run.slurm_time}: {where} lets a job run at most {limit:g} minutes")
    return partition
