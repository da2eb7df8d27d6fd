"""The Slurm executor's file channel, and what a Slurm array task runs.

A Slurm task cannot call the driver back; the folder both see (``run.slurm_folder``)
can. Each task has a folder of its own there, and each start of the task (the first,
and every requeue after a preemption or a time limit) claims the next
``events.NNN`` file in it (``O_EXCL``: one writer per file) and appends its messages
as length-prefixed pickles, each written by one ``os.write`` and fsynced, so a
reader on another machine sees whole records (it reopens the file each time: NFS's
close-to-open consistency then hands it the new bytes). The first record of a file
is an :class:`Attempt`. A checkpoint goes to its own ``ckpt.EEEE.pt`` file
(``torch.save`` to a temporary name, fsync, rename) and the record only names it:
a restarted task continues from the newest one, and the driver loads each when it
reads the record, then deletes the older ones (the newest stays for the next
restart). The driver writes ``cancel`` into a control file the tasks read (in
place, not replaced: a renamed file can stay stale in an NFS client's cache).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import one_line
from ..protocol import JobCheckpoint
from .base import Checkpointed, Finished, Message, Task
from .worker import PolledFlag, WorkerSettings, run_task

_LENGTH = struct.Struct("<Q")
EVENTS = "events.{:03d}"
CHECKPOINT = "ckpt.{:04d}.pt"
#: seconds between two reads of the control file by a running task
CANCEL_POLL = 0.5


@dataclass(frozen=True)
class Attempt:
    """The first record of an events file: which start of the task writes it."""

    number: int  # 0 = the first start, 1 = the first requeue...
    resume_epoch: int  # epochs it continues from (0 = from scratch)
    worker: str


@dataclass(frozen=True)
class _CheckpointRef:
    key: str
    epoch: int
    name: str


def worker_label() -> str:
    """Where this process runs, for people: "slurm job 77_1 on node1"."""
    env, host = os.environ, socket.gethostname()
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"slurm job {env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')} on {host}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm job {env['SLURM_JOB_ID']} on {host}"
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"submitit local job {env['SUBMITIT_LOCAL_JOB_ID']} on {host}"
    return f"pid {os.getpid()} on {host}"


# ---------------------------------------------------------------------- writing


class EventWriter:
    """Appends one task start's messages to the next free ``events.NNN`` of ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        number = 0
        while True:
            try:
                self._fd = os.open(folder / EVENTS.format(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                number += 1
        self.number = number

    def record(self, obj: object) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        record = memoryview(_LENGTH.pack(len(data)) + data)
        while record:  # one write as a rule (a signal cannot split it); a short one goes on
            record = record[os.write(self._fd, record):]
        os.fsync(self._fd)

    def put(self, message: Message) -> None:
        if isinstance(message, Checkpointed):
            name = save_checkpoint(self.folder, message.checkpoint)
            self.record(_CheckpointRef(message.key, message.checkpoint.epoch, name))
        else:
            self.record(message)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_checkpoint(folder: Path, checkpoint: JobCheckpoint) -> str:
    name = CHECKPOINT.format(checkpoint.epoch)
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        torch.save(checkpoint.to_payload(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, folder / name)
    return name


def load_checkpoint(path: Path, key: str) -> JobCheckpoint:
    return JobCheckpoint.from_payload(torch.load(path, map_location="cpu", weights_only=True), key)


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The checkpoint files in ``folder``, oldest epoch first."""
    found = []
    for path in folder.glob("ckpt.*.pt"):
        with contextlib.suppress(ValueError):
            found.append((int(path.name.split(".")[1]), path))
    return sorted(found)


def newest_checkpoint(folder: Path, key: str) -> JobCheckpoint | None:
    """The newest readable checkpoint in ``folder`` (a damaged one is skipped)."""
    for _, path in reversed(checkpoints(folder)):
        with contextlib.suppress(Exception):
            return load_checkpoint(path, key)
    return None


# ---------------------------------------------------------------------- reading


class EventReader:
    """Follows a task folder's events files in order, from where it stopped.

    :meth:`read` returns the new whole records: :class:`Attempt` headers, and
    messages (a checkpoint record comes back as a :class:`Checkpointed` with the
    checkpoint loaded). Once a later file exists the earlier one's writer has been
    replaced: its whole records are read, a torn last one is dropped."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.key = key
        self.number = 0
        self._offset = 0

    @property
    def started(self) -> bool:
        """Whether a start of the task has claimed its first events file."""
        return (self.folder / EVENTS.format(0)).exists()

    def read(self) -> list[object]:
        out: list[object] = []
        while True:
            later = (self.folder / EVENTS.format(self.number + 1)).exists()  # before reading: see the text
            out.extend(self._read(self.folder / EVENTS.format(self.number)))
            if not later:
                return out
            self.number += 1
            self._offset = 0

    def _read(self, path: Path) -> list[object]:
        try:
            with open(path, "rb") as f:  # reopened each time (NFS close-to-open)
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        out: list[object] = []
        at = 0
        while at + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            if at + _LENGTH.size + size > len(data):
                break
            record = pickle.loads(data[at + _LENGTH.size: at + _LENGTH.size + size])
            at += _LENGTH.size + size
            resolved = self._resolve(record)
            if resolved is not None:
                out.append(resolved)
        self._offset += at
        return out

    def _resolve(self, record: object) -> object | None:
        """A record as a message; None for a checkpoint that cannot be read (damaged,
        or not visible yet on a shared file system): the older ones stay, and a retry
        continues from the newest readable one."""
        if not isinstance(record, _CheckpointRef):
            return record
        try:
            checkpoint = load_checkpoint(self.folder / record.name, self.key)
        except Exception:
            return None
        for epoch, path in checkpoints(self.folder):
            if epoch < record.epoch:
                with contextlib.suppress(OSError):
                    path.unlink()
        return Checkpointed(record.key, checkpoint)


# ---------------------------------------------------------------------- control


def write_control(path: Path, text: str) -> None:
    """Write ``text`` into the control file in place (created if missing)."""
    with open(path, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_control(path: Path) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------- the task


class SlurmTask:
    """What one Slurm array task runs (pickled by submitit): ``task`` through
    :func:`~.worker.run_task`, its messages into ``folder``'s events files.

    On a preemption or a time limit submitit calls :meth:`checkpoint`, requeues the
    job and exits; the next start finds the newest checkpoint in ``folder`` and
    continues from there."""

    def __init__(self, task: Task, inputs: dict[str, str], settings: WorkerSettings, folder: str, control: str) -> None:
        self.task = task
        #: the parent's tensors by name -> the file that holds them (shared by siblings)
        self.inputs = inputs
        self.settings = settings
        self.folder = folder
        self.control = control

    def __call__(self) -> str:
        folder, control = Path(self.folder), Path(self.control)
        worker = worker_label()
        with EventWriter(folder) as writer:
            try:
                task = self._inputs()
            except Exception as err:  # e.g. a folder the node does not share: said in the Finished
                writer.record(Attempt(writer.number, 0, worker))
                finished = Finished(self.task.key, None, f"{type(err).__name__}: {one_line(err)} (on {worker})")
            else:
                writer.record(Attempt(writer.number, 0 if task.resume is None else task.resume.epoch, worker))
                cancel = PolledFlag(lambda: read_control(control) == "cancel", every=CANCEL_POLL)
                finished = run_task(task, self.settings, writer.put, cancel, worker=worker)
            writer.put(finished)
        # the result submitit pickles: small (the output went through the events file)
        return finished.error or "done"

    def _inputs(self) -> Task:
        """The task with its parent's tensors, continuing from the newest checkpoint
        of an earlier start if there is one."""
        task = self.task
        if self.inputs:
            task = replace(task, parent={local: torch.load(path, map_location="cpu", weights_only=True)
                                         for local, path in self.inputs.items()})
        saved = newest_checkpoint(Path(self.folder), task.key)
        if saved is not None and (task.resume is None or saved.epoch > task.resume.epoch):
            task = replace(task, resume=saved)
        return task

    def checkpoint(self, *args: object, **kwargs: object) -> object:
        """submitit's hook on preemption/timeout: run again as is (the state is in ``folder``)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)
