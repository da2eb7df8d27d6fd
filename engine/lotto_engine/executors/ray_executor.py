"""The Ray executor (``run.executor = "ray"``): each job is a Ray task on a cluster.

Why it is built this way:

- A task calls :func:`.worker.run_task` in the worker's main thread (training from a
  second thread is much slower on CPU, see :mod:`.local`) and reserves
  ``run.cpus_per_job`` CPUs and ``run.gpus_per_job`` GPUs (fractions share a GPU).
  Ray's own retries are off: Ray would start the job over, while here a job whose
  worker or node died continues from its last epoch checkpoint (:class:`.base.Attempts`),
  up to ``run.retries`` times, then is recorded failed with the reason.
- Live messages go through one small actor, the mailbox, which tasks call without
  waiting and the driver drains every 50 ms. An actor runs one caller's calls in
  order and a task waits for its last call before returning, so a job's Finished
  (the task's result) always comes after its other messages; each attempt has a
  token, and what a dead attempt sent late is dropped. (Streaming generators would
  need the job on a second thread.)
- Cancel is a flag in the mailbox that a running job reads, without blocking, at
  most every 0.25 s: it stops at its next batch and returns its partial output. A job
  not started yet (its worker may take seconds to import torch) is cancelled by Ray.
- ``auto`` joins the running cluster (``RAY_ADDRESS``, or ``ray start`` on this
  machine), ``local`` starts a private one, ``host:port`` and ``ray://host:port``
  join that one. Nothing listening there fails in seconds, in one line (Ray itself
  retries for minutes). :meth:`RayExecutor.close` shuts down a cluster it started,
  disconnects from one it joined (which keeps running), and leaves alone a
  connection it did not make.
- Ray is imported only here, with ``RAY_USAGE_STATS_ENABLED=0`` set first.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import logging
import os
import pickle
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..config import RunConfig
from ..errors import DeviceError, one_line
from .base import Attempts, Finished, Message, Started, Task
from .worker import PolledFlag, WorkerSettings, run_task

Deliver = Callable[[Message], None]

#: seconds the driver waits between two looks at the mailbox while jobs run
POLL = 0.05
#: seconds between two looks at the cancel flag from a running job
CANCEL_POLL = 0.25
#: seconds a TCP connection to the cluster's address may take before it counts as unreachable
CONNECT_TIMEOUT = 5.0
#: seconds between two reads of the cluster's resources (run.parallel = 0: nodes may come and go)
RESOURCES_EVERY = 5.0

_INSTALL = 'run.executor = "ray" needs Ray: pip install "lotto-tui[ray]"'


def import_ray() -> Any:
    """The ``ray`` module, with usage stats off; one line when it is not installed."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise DeviceError(_INSTALL) from None
    return ray


# ---------------------------------------------------------------------- on the cluster


def mailbox_class() -> type:
    """The actor between running jobs and the driver: pickled messages in, drained in
    order; and the cancel flag. Made in a function so that Ray ships the class itself
    (the actor's process then never imports torch or this package)."""

    class Mailbox:
        def __init__(self) -> None:
            self._items: list[tuple[int, bytes]] = []
            self._cancelled = False

        def put(self, token: int, message: bytes) -> None:
            self._items.append((token, message))

        def drain(self) -> list[tuple[int, bytes]]:
            items, self._items = self._items, []
            return items

        def cancel(self) -> None:
            self._cancelled = True

        def cancelled(self) -> bool:
            return self._cancelled

    return Mailbox


def ray_task(mailbox: Any, token: int, task: Task, settings: WorkerSettings) -> Finished:
    """What a Ray worker runs for one attempt of a job (see the module doc)."""
    import ray

    last: list[Any] = []

    def put(message: Message) -> None:
        last[:] = [mailbox.put.remote(token, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))]

    asked: list[Any] = []  # the pending read of the cancel flag, as a future (never blocks training)

    def cancelled() -> bool:
        if asked and asked[0].done():
            try:
                if asked.pop().result():
                    return True
            except Exception:  # the mailbox is gone: so is the driver
                return True
        if not asked:  # ask again now: the answer is there by the next look
            asked.append(mailbox.cancelled.remote().future())
        return False

    host = socket.gethostname()
    finished = run_task(task, settings, put, PolledFlag(cancelled, CANCEL_POLL),
                        worker=f"ray worker pid {os.getpid()} on {host}")
    if last:
        try:
            ray.get(last[0])  # every message is in the mailbox before the result is seen
        except Exception:  # the driver is gone: nobody waits for them
            pass
    return finished


# ---------------------------------------------------------------------- the driver


class RayExecutor:
    """Runs tasks on a Ray cluster; see the module doc."""

    def __init__(
        self,
        run: RunConfig,
        settings: WorkerSettings,
        *,
        cancel: Any,
        progress_interval: float = 0.1,
    ) -> None:
        self._ray = ray = import_ray()
        self._run = run
        self._settings = settings
        self._cancel = cancel  # (progress_interval: the workers' settings.progress_interval rate-limits them)
        self._owned = connect(ray, run.ray_address)  # "started", "joined", or "" (already connected)
        try:
            self._where = describe_cluster(ray, run.ray_address)
            self._parallel = run.parallel
            self._capacity = self._fit()
            self._capacity_at = time.monotonic()
            self._mailbox = ray.remote(num_cpus=0, max_restarts=0)(mailbox_class()).options(
                **_near_driver(ray)).remote()
            self._remote = ray.remote(ray_task).options(
                num_cpus=run.cpus_per_job, num_gpus=run.gpus_per_job, max_retries=0, name="lotto-job",
            )
        except BaseException:
            self._disconnect()
            raise
        self._attempts = Attempts(run.retries)
        self._tokens = itertools.count(1)
        self._running: dict[Any, tuple[int, Task]] = {}  # result ref -> (token, task)
        self._live: set[int] = set()  # tokens of attempts still running (others' late messages are dropped)
        self._workers: dict[int, str] = {}  # token -> the worker its Started named
        self._inbox: collections.deque[Message] = collections.deque()
        self._undelivered = 0  # tasks whose Finished is in the inbox, not yet handed over
        self._cancel_sent = False
        self._closed = False

    # ------------------------------------------------------------------ the contract

    @property
    def capacity(self) -> int:
        """run.parallel, or the jobs the cluster's nodes hold at once (read again every
        few seconds: nodes may join or leave)."""
        if self._parallel:
            return self._parallel
        if time.monotonic() - self._capacity_at > RESOURCES_EVERY:
            self._capacity_at = time.monotonic()
            try:
                self._capacity = max(1, jobs_that_fit(self._ray.nodes(), self._run))
            except Exception:  # keep the last answer; the next wait will tell what broke
                pass
        return self._capacity

    def submit(self, group: Sequence[Task]) -> None:
        for task in group:
            self._launch(task)

    @property
    def busy(self) -> int:
        return len(self._running) + self._undelivered

    def wait(self, on_message: Deliver, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._cancel.is_set():
                self._send_cancel()
            if self._deliver(on_message):
                return
            left = deadline - time.monotonic()
            if not self._running:
                return
            if left <= 0:
                return
            try:
                done, _ = self._ray.wait(list(self._running), num_returns=1, timeout=min(POLL, left))
                self._collect()
            except self._ray.exceptions.RayError as err:  # the connection or the mailbox is gone
                raise DeviceError(f"the Ray cluster at {self._where} stopped answering: {one_line(err)}") from None
            for ref in done:
                self._settle(ref)

    def cancel(self) -> None:
        self._cancel.set()
        self._send_cancel()

    def close(self) -> None:
        """Stop what still runs (it stops at its next batch), then let the cluster go:
        a private one is shut down, a joined one keeps running."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        try:
            if self._running:
                self._send_cancel()
                deadline = time.monotonic() + 10
                while self._running and time.monotonic() < deadline:
                    done, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0.2)
                    for ref in done:
                        self._running.pop(ref, None)
                for ref in self._running:
                    ray.cancel(ref, force=True)
                self._running.clear()
            ray.kill(self._mailbox)
        except Exception:  # the cluster is gone already: nothing left to release there
            pass
        finally:
            self._disconnect()

    # ------------------------------------------------------------------ inside

    def _fit(self) -> int:
        """Jobs the cluster holds at once; one line when not even one fits."""
        run = self._run
        fit = jobs_that_fit(self._ray.nodes(), run)
        if fit == 0:
            need = f"{run.cpus_per_job} CPU" + ("s" if run.cpus_per_job > 1 else "")
            if run.gpus_per_job:
                need += f" and {run.gpus_per_job:g} GPU"
            raise DeviceError(
                f"run.executor = \"ray\": no node of the Ray cluster at {self._where} has {need} "
                f"for a job (run.cpus_per_job, run.gpus_per_job); it has {cluster_totals(self._ray)}"
            )
        return fit

    def _launch(self, task: Task) -> None:
        token = next(self._tokens)
        self._live.add(token)
        ref = self._remote.remote(self._mailbox, token, task, self._settings)
        self._running[ref] = (token, task)

    def _collect(self) -> None:
        """Move what the mailbox holds into the inbox; a dead attempt's late messages
        are dropped."""
        for token, blob in self._ray.get(self._mailbox.drain.remote()):
            if token not in self._live:
                continue
            message = pickle.loads(blob)
            if isinstance(message, Started):
                self._workers[token] = message.worker or "its ray worker"
            self._attempts.track(message)
            self._inbox.append(message)

    def _settle(self, ref: Any) -> None:
        """A task's result is ready: its Finished, or (its worker died) a retry."""
        ray = self._ray
        token, task = self._running.pop(ref)
        try:
            finished = ray.get(ref)
        except ray.exceptions.TaskCancelledError:  # cancelled before its job started
            finished = Finished(task.key, None, "cancelled", cancelled=True)
        except ray.exceptions.RayTaskError as err:  # ray_task itself raised: not a worker's death
            finished = Finished(task.key, None, _task_error(err))
        except ray.exceptions.RayError as err:  # the worker, or its node, died
            self._collect()  # what it sent before it died
            reason = died(err, self._workers.get(token, "its ray worker"))
            self._forget(token)
            if self._cancel.is_set():
                finished = Finished(task.key, None, "cancelled", cancelled=True)
            elif (again := self._attempts.retry(task, reason)) is not None:
                self._inbox.append(again[1])
                self._launch(again[0])
                return
            else:
                tries = self._run.retries + 1
                finished = Finished(task.key, None, f"{reason}; gave up after {tries} attempt{'s' if tries > 1 else ''}")
        self._forget(token)
        self._attempts.track(finished)
        self._inbox.append(finished)
        self._undelivered += 1

    def _forget(self, token: int) -> None:
        self._live.discard(token)
        self._workers.pop(token, None)

    def _deliver(self, on_message: Deliver) -> bool:
        """Hand the inbox over in order, up to and including a Finished (True then). A
        message stays queued until ``on_message`` takes it (an error there propagates
        with the rest kept)."""
        while self._inbox:
            message = self._inbox[0]
            if isinstance(message, Finished):
                self._undelivered -= 1
                self._inbox.popleft()
                on_message(message)
                return True
            on_message(message)
            self._inbox.popleft()
        return False

    def _send_cancel(self) -> None:
        """Raise the flag running jobs read; a task whose job has not started yet (still
        queued, or its worker still starting) is cancelled by Ray instead: it would see
        the flag only once started, seconds later."""
        if self._cancel_sent:
            return
        self._cancel_sent = True
        try:
            self._mailbox.cancel.remote()
            self._collect()
            for ref, (token, _) in list(self._running.items()):
                if token not in self._workers:
                    self._ray.cancel(ref)
        except Exception:  # the cluster is going away: the tasks go with it
            pass

    def _disconnect(self) -> None:
        if self._owned:
            try:
                self._ray.shutdown()
            except Exception:
                pass
            self._owned = ""


# ---------------------------------------------------------------------- connecting


def connect(ray: Any, address: str) -> str:
    """Connect to ``address`` (run.ray_address); "started" for a private cluster made
    here, "joined" for one that runs elsewhere, "" when this process was connected
    already (that connection is used as it is). One-line :class:`DeviceError` when it
    cannot."""
    if ray.is_initialized():
        return ""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        try:
            with stderr_with_fileno():
                ray.init(address="local", include_dashboard=False, **quiet)
        except Exception as err:
            raise DeviceError(f"run.ray_address = local: could not start a Ray cluster here: {one_line(err)}") from None
        return "started"
    target = address
    if address == "auto":
        target = _running_cluster(ray)
    _reachable(target, address)
    try:
        with stderr_with_fileno():
            ray.init(address=address, **quiet)
    except Exception as err:
        raise DeviceError(f"run.ray_address = {address}: could not join the Ray cluster at {target}: {one_line(err)}") from None
    except SystemExit:  # Ray's core worker gives up on a GCS that never answered
        raise DeviceError(f"run.ray_address = {address}: no Ray cluster answered at {target}") from None
    return "joined"


class _Fileno(io.TextIOBase):
    """``stream`` for writing, with the descriptor of a spare file for whoever needs one."""

    def __init__(self, stream: Any, spare: Any) -> None:
        self._stream = stream
        self._spare = spare

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._spare.fileno()


@contextlib.contextmanager
def stderr_with_fileno() -> Iterator[None]:
    """``ray.init`` hands ``sys.stderr`` to :func:`faulthandler.enable`, which needs a
    real file descriptor; in the explorer ``sys.stderr`` is Textual's capture (no
    descriptor). Meanwhile, writes still go where they went; a fatal-error traceback
    of this process would go to a spare temporary file (kept open: faulthandler
    keeps writing to it)."""
    stream = sys.stderr
    try:
        usable = stream is not None and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if usable:
        yield
        return
    wrapper = _Fileno(stream, tempfile.TemporaryFile())
    sys.stderr = wrapper
    try:
        yield
    finally:
        if sys.stderr is wrapper:  # (unless someone swapped it meanwhile: theirs stays)
            sys.stderr = stream


def _running_cluster(ray: Any) -> str:
    """The address ``auto`` means: RAY_ADDRESS, else the cluster ``ray start`` made on
    this machine."""
    try:
        from ray._private import services

        found = services.canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError:
        raise DeviceError(
            "run.ray_address = auto: no running Ray cluster found (RAY_ADDRESS is unset and no `ray start` "
            'cluster runs here); start one (ray start --head), give its host:port, or use run.ray_address = "local"'
        ) from None
    except Exception:  # Ray's own lookup changed: let ray.init say what it finds
        return os.environ.get("RAY_ADDRESS") or "auto"
    return str(found)


def _reachable(target: str, address: str) -> None:
    """Fail fast, in one line, when nothing listens at ``target`` (host:port, maybe
    ray://host:port): Ray itself would retry for minutes."""
    hostport = target.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not an address to probe ("auto" that Ray resolves itself)
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__).lower()
        named = f" ({target})" if target != address else ""
        raise DeviceError(f"run.ray_address = {address}{named}: no Ray cluster answers there ({why})") from None


def describe_cluster(ray: Any, address: str) -> str:
    """The cluster's address for messages."""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return address


def _near_driver(ray: Any) -> dict[str, Any]:
    """Options that put the mailbox on the driver's node when it has one (its
    messages then cross no network twice); anywhere otherwise (Ray Client)."""
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}
    except Exception:
        return {}


def jobs_that_fit(nodes: list[dict[str, Any]], run: RunConfig) -> int:
    """How many jobs of ``run.cpus_per_job`` CPUs and ``run.gpus_per_job`` GPUs the
    alive ``nodes`` (``ray.nodes()``) hold at once."""
    total = 0
    for node in nodes:
        if not node.get("Alive", node.get("alive", True)):
            continue
        resources = node.get("Resources", {})
        fit = int(resources.get("CPU", 0) // run.cpus_per_job)
        if run.gpus_per_job:
            fit = min(fit, int(resources.get("GPU", 0) / run.gpus_per_job + 1e-9))
        total += fit
    return total


def cluster_totals(ray: Any) -> str:
    """``3 CPUs, 0 GPUs over 2 nodes``."""
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive", True))
    except Exception:
        return "unknown resources"
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs over {nodes} node{'s' if nodes != 1 else ''}"


def died(err: BaseException, worker: str) -> str:
    """One line: what happened to a task's worker (``ray worker pid 12 on box2 died
    (WorkerCrashedError: ...)``)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{worker} died ({type(err).__name__}: {first})"[:300]


def _task_error(err: BaseException) -> str:
    """One line for an error raised in :func:`ray_task` (not by the job: run_task
    returns those), e.g. lotto-tui missing on a node."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {one_line(cause)}"
    return f"{type(err).__name__}: {one_line(err)}"
