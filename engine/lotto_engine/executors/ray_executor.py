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
  need the job on a second thread.) The mailbox lives on the driver's node (only
  there, when the driver is a node) and Ray starts it again if its process dies:
  what it held then is lost, calls on their way wait for the new one, and the grid
  goes on (results are task results, not messages).
- Cancel is a flag in the mailbox that a running job reads, without blocking, at
  most every 0.25 s: it stops at its next batch and returns its partial output. A job
  not started yet (its worker may take seconds to import torch) is cancelled by Ray.
- ``auto`` joins the running cluster (``RAY_ADDRESS``, or the one ``ray start`` made
  last on this machine; a note names any others, and several without ``ray start``
  ask which), ``local`` starts a private one (in a temporary folder, removed at
  close unless a worker died: its log is named in the job's reason),
  ``host:port`` and ``ray://host:port`` join that one. Before ``ray.init`` the
  address gets a TCP connection and one gRPC call, each within
  :data:`CONNECT_TIMEOUT`: nothing listening, or another service there (a web
  server, Ray's dashboard), fails in seconds, in one line (Ray itself retries for
  minutes). :meth:`RayExecutor.close` shuts down a cluster it started, disconnects
  from one it joined (which keeps running), and leaves alone a connection it did not
  make; :meth:`RayExecutor.describe` says which cluster it is, in one line.
- Token authentication (``RAY_AUTH_MODE``) follows the cluster, unless the user set
  the variable: a private cluster has none (Ray would otherwise switch it on and
  write ``~/.ray/auth_token``, after which every ``auto`` expects a token), a joined
  one is asked by that gRPC call whether it wants one.
- What Ray prints on the driver's stdout by itself (``(raylet) A worker died ...``,
  coloured) goes to this module's logger instead; a job's reason says what happened.
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
import re
import shutil
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

#: the mailbox actor's name starts so (then the driver's pid and a count)
MAILBOX = "lotto-mailbox"
_mailboxes = itertools.count(1)

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

        def drain(self, cancelled: bool = False) -> list[tuple[int, bytes]]:
            self._cancelled = self._cancelled or cancelled  # (again after a restart)
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
            except Exception:  # the mailbox is restarting: ask again
                pass
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
        #: notes for the user about how the cluster was chosen (``auto`` passing over others)
        self._notes: list[str] = []
        self._temp = ""  # a private cluster's folder (Ray's sessions, logs), removed at close
        self._owned = ""  # "started", "joined", or "" (already connected: that connection is used)
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
            if run.ray_address == "local":
                self._temp = options["_temp_dir"] = tempfile.mkdtemp(prefix="lotto-ray-")  # short: socket paths
            try:
                self._owned, note = connect_to(ray, run.ray_address, options)
            except BaseException:
                self._remove_temp()
                raise
            self._notes += [note] if note else []
        self._unmute = mute_ray_prints()
        self._died = False  # a worker died: a private cluster's logs are kept for the user
        try:
            self._where = describe_cluster(ray, run.ray_address)
            self._logs = _logs_dir(ray)
            self._parallel = run.parallel
            self._capacity = self._fit()
            self._capacity_at = time.monotonic()
            # restarted if its process dies (what it held is lost: the jobs' results still
            # come as task results); on the driver's node, which the run cannot outlive
            self._mailbox = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(mailbox_class()).options(
                name=f"{MAILBOX}-{os.getpid()}-{next(_mailboxes)}", **_on_driver_node(ray)).remote()
            self._remote = ray.remote(ray_task).options(
                num_cpus=run.cpus_per_job, num_gpus=run.gpus_per_job, max_retries=0, name="lotto-job",
            )
        except BaseException:
            self._disconnect()
            self._unmute()
            raise
        self._attempts = Attempts(run.retries)
        self._tokens = itertools.count(1)
        self._running: dict[Any, tuple[int, Task]] = {}  # result ref -> (token, task)
        self._live: set[int] = set()  # tokens of attempts still running (others' late messages are dropped)
        self._workers: dict[int, str] = {}  # token -> the worker its Started named
        self._pids: dict[int, tuple[int, str]] = {}  # token -> that worker's pid and host
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

    def notes(self) -> list[str]:
        """What the user should hear since the last call (how ``auto`` chose among
        several clusters), one line each; the runner shows them as notices."""
        notes, self._notes = self._notes, []
        return notes

    def describe(self) -> str:
        """The cluster in one line, for the run's header and provenance: ``ray cluster
        10.0.0.5:6379, 2 nodes, 4 CPUs, 0 GPUs`` (``private ray cluster ...`` for
        run.ray_address = local)."""
        kind = "private ray cluster" if self._owned == "started" else "ray cluster"
        try:
            nodes = [n for n in self._ray.nodes() if n.get("Alive", True)]
            cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
            gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
        except Exception:
            return f"{kind} {self._where}"
        return f"{kind} {self._where}, {_count(len(nodes), 'node')}, {_count(cpus, 'CPU')}, {_count(gpus, 'GPU')}"

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
            self._unmute()

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
        are dropped. While the mailbox restarts (its process died) there is nothing:
        what it held is lost, the jobs go on and their results still come."""
        ray = self._ray
        try:
            items = ray.get(self._mailbox.drain.remote(self._cancel_sent))
        except ray.exceptions.ActorUnavailableError:
            return
        except ray.exceptions.ActorDiedError as err:
            raise DeviceError(f"the Ray cluster at {self._where} lost this run's mailbox: {one_line(err)}") from None
        for token, blob in items:
            if token not in self._live:
                continue
            message = pickle.loads(blob)
            if isinstance(message, Started):
                self._workers[token] = message.worker or "its ray worker"
                self._pids[token] = (message.pid, message.host)
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
            reason = died(err, self._workers.get(token, "its ray worker"), self._log_of(token))
            self._died = True
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
        self._pids.pop(token, None)

    def _log_of(self, token: int) -> str:
        """Where the log of the token's worker is: ``python-core-worker-*_123.log in
        /tmp/ray/session_.../logs`` (on that node, when it is another)."""
        pid, host = self._pids.get(token, (0, ""))
        if not pid or not self._logs:
            return ""
        on = f" on {host}" if host and host != socket.gethostname() else ""
        return f"python-core-worker-*_{pid}.log in {self._logs}{on}"

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
        if not self._died:
            self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = ""


# ---------------------------------------------------------------------- connecting

#: Ray's switch for token authentication: "token" or "disabled"
AUTH_MODE = "RAY_AUTH_MODE"
#: the RAY_AUTH_MODE value this module set (a value it did not set is the user's, and stays)
_auth_set: list[str] = []


def connect_to(ray: Any, address: str, options: dict[str, Any]) -> tuple[str, str]:
    """Connect this process (not connected yet) to ``address`` (run.ray_address) with
    ``ray.init`` ``options``: ("started", "") for a private cluster made here,
    ("joined", note) for one that runs elsewhere, the note saying which of several
    ``auto`` chose ("" when none: see :func:`choose_cluster`). One-line
    :class:`DeviceError` when it cannot."""
    if address == "local":
        # a cluster of this machine's processes, for this run only: no token (Ray would
        # otherwise switch token auth on and write ~/.ray/auth_token, which later makes
        # `auto` expect a token from clusters that have none)
        _auth_mode("disabled")
        try:
            with stderr_with_fileno():
                ray.init(address="local", include_dashboard=False, **options)
        except Exception as err:
            raise DeviceError(f"run.ray_address = local: could not start a Ray cluster here: {one_line(err)}") from None
        return "started", ""
    target, note = _running_cluster() if address == "auto" else (address, "")
    _reachable(target, address)
    needs = _speaks_ray(target, address)
    _auth_mode(needs or "disabled")
    if needs == "token":
        _have_token(target, address)
    try:
        with stderr_with_fileno():
            ray.init(address=target, **options)
    except Exception as err:
        raise DeviceError(f"run.ray_address = {address}: could not join the Ray cluster at {target}: {_reason(err)}") from None
    except SystemExit:  # Ray's core worker gives up on a GCS that never answered
        raise DeviceError(f"run.ray_address = {address}: no Ray cluster answered at {target}") from None
    return "joined", note


def _auth_mode(wanted: str) -> None:
    """Set Ray's token authentication for this process (and a cluster it starts) to
    ``wanted`` ("token" or "disabled"; "" leaves it), unless the user set RAY_AUTH_MODE:
    theirs stays. Ray reads the variable once: its config is read again."""
    current = os.environ.get(AUTH_MODE)
    if not wanted or (current is not None and current not in _auth_set):
        return
    _auth_set[:] = [wanted]
    if current == wanted:
        return
    os.environ[AUTH_MODE] = wanted
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # an older Ray without token auth: nothing to switch
        pass


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


_NONE_RUNNING = (
    "run.ray_address = auto: no running Ray cluster found (RAY_ADDRESS is unset and no `ray start` "
    'cluster runs here); start one (ray start --head), give its host:port, or use run.ray_address = "local"'
)


def _running_cluster() -> tuple[str, str]:
    """The address ``auto`` means, and a note when others were passed over: RAY_ADDRESS,
    else the cluster ``ray start`` made on this machine (see :func:`choose_cluster`)."""
    named = os.environ.get("RAY_ADDRESS", "")
    if named:
        return named, ""
    try:
        from ray._private import services

        running = services.find_gcs_addresses()
        latest = services.find_bootstrap_address(None)
    except Exception:  # Ray's own lookup changed: let ray.init say what it finds
        return "auto", ""
    return choose_cluster(running, latest)


def choose_cluster(running: Any, latest: str | None) -> tuple[str, str]:
    """Which of the Ray clusters ``running`` on this machine (their GCS addresses)
    ``auto`` joins: the one ``ray start`` made last (``latest``, as Ray does), with a
    note naming the others; else the only one. Several and none of them made by
    ``ray start`` (Ray would pick one at random): one line asking which."""
    others = sorted(set(running) - {latest})
    if latest:
        if not others:
            return latest, ""
        return latest, (
            f"run.ray_address = auto: {len(others) + 1} Ray clusters run on this machine; joined {latest}, "
            f"the one `ray start` made last, not {', '.join(others)} (run.ray_address or RAY_ADDRESS chooses)"
        )
    if not others:
        raise DeviceError(_NONE_RUNNING)
    if len(others) == 1:
        return others[0], ""
    raise DeviceError(
        f"run.ray_address = auto: {len(others)} Ray clusters run on this machine ({', '.join(others)}) and none "
        "was made by `ray start`; give the one to join as run.ray_address (host:port) or RAY_ADDRESS"
    )


def _reachable(target: str, address: str) -> None:
    """Fail fast, in one line, when nothing listens at ``target`` (host:port, maybe
    ray://host:port): Ray itself would retry for minutes."""
    where = _host_port(target)
    if where is None:
        return  # not an address to probe ("auto" that Ray resolves itself)
    try:
        with socket.create_connection(where, timeout=CONNECT_TIMEOUT):
            pass
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__).lower()
        named = f" ({target})" if target != address else ""
        raise DeviceError(f"run.ray_address = {address}{named}: no Ray cluster answers there ({why})") from None


#: a call every Ray GCS answers, cheaply (its request is empty)
_GCS_CALL = "/ray.rpc.NodeInfoGcsService/GetClusterId"
#: a Ray Client server's read-only call (an empty request asks what it always answers)
_CLIENT_CALL = "/ray.rpc.RayletDriver/ClusterInfo"


def _speaks_ray(target: str, address: str) -> str:
    """Ask what listens at ``target`` (host:port, maybe ray://host:port) one gRPC
    call, within :data:`CONNECT_TIMEOUT`: another service there (a web server, Ray's
    dashboard) would keep ``ray.init`` retrying for minutes. A GCS tells whether it
    wants a token: "token", or "disabled"; "" for a Ray Client server (it answers
    gRPC, but not the GCS's calls) or when this cannot be asked."""
    scheme, _, hostport = target.rpartition("://")
    if not _host_port(target):
        return ""
    try:
        import grpc  # Ray's own dependency
    except ImportError:
        return ""
    code: Any = None
    try:
        with grpc.insecure_channel(hostport) as channel:
            call = channel.unary_unary(_GCS_CALL)
            call(b"", timeout=CONNECT_TIMEOUT)
    except grpc.RpcError as err:
        code = err.code()
    except Exception:  # not a question grpc can ask here: ray.init will tell
        return ""
    named = f" ({target})" if target != address else ""
    gcs = code is None or code == grpc.StatusCode.UNAUTHENTICATED
    if gcs and not scheme:
        return "token" if code is not None else "disabled"
    if code == grpc.StatusCode.UNIMPLEMENTED and scheme:  # a gRPC server: Ray Client's, as asked
        return _client_wants_token(grpc, hostport)
    if gcs:  # (Ray Client would keep trying there)
        raise DeviceError(f"run.ray_address = {address}{named}: {hostport} is a Ray cluster's GCS, not its Ray Client "
                          f"server: join it as {hostport} from a node of the cluster, or use ray://HOST:10001")
    hint = f" (it speaks gRPC: a Ray Client server? then ray://{hostport})" if code == grpc.StatusCode.UNIMPLEMENTED else ""
    what = "a Ray Client server" if scheme else "a Ray cluster (GCS)"
    raise DeviceError(f"run.ray_address = {address}{named}: {hostport} answers but is not {what}{hint}")


def _client_wants_token(grpc: Any, hostport: str) -> str:
    """"token" when the Ray Client server at ``hostport`` refuses a call without a
    token (a cluster with token authentication: without one, ray.init would wait
    half a minute and then blame a timeout), else "" (Ray's own handling)."""
    try:
        with grpc.insecure_channel(hostport) as channel:
            channel.unary_unary(_CLIENT_CALL)(b"", timeout=CONNECT_TIMEOUT)
    except grpc.RpcError as err:
        return "token" if err.code() == grpc.StatusCode.UNAUTHENTICATED else ""
    except Exception:
        return ""
    return ""


def _have_token(target: str, address: str) -> None:
    """One line when the cluster at ``target`` wants a token this process cannot give."""
    named = f" ({target})" if target != address else ""
    if os.environ.get(AUTH_MODE) != "token":
        raise DeviceError(
            f"run.ray_address = {address}{named}: that Ray cluster wants a token (token authentication) "
            f"but {AUTH_MODE} is {os.environ.get(AUTH_MODE)!r} here; unset it, or set it to token"
        )
    try:
        from ray._raylet import AuthenticationTokenLoader

        loader = AuthenticationTokenLoader.instance()
        loader.reset_cache()
        found = loader.has_token(ignore_auth_mode=True)
    except Exception:  # Ray's loader changed: ray.init will tell
        return
    if not found:
        raise DeviceError(
            f"run.ray_address = {address}{named}: that Ray cluster wants a token (token authentication) and none "
            "is here: copy the cluster's ~/.ray/auth_token here, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
        )


def _host_port(target: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``scheme://host:port``; None for anything else."""
    hostport = target.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _count(n: float, thing: str) -> str:
    return f"{n:g} {thing}{'' if n == 1 else 's'}"


def _reason(err: BaseException) -> str:
    """``err`` in one line; for a server's traceback passed on as the message, its
    last line (the error itself), not its first ("Traceback (most recent call last):")."""
    text = str(err)
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        head = lines[0].split("Traceback (most recent call last)")[0].strip()
        return f"{head} {lines[-1]}".strip()
    return one_line(err)


def describe_cluster(ray: Any, address: str) -> str:
    """The cluster's address for messages."""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return address


def _on_driver_node(ray: Any) -> dict[str, Any]:
    """Options that put the mailbox on the driver's node, and only there, when the
    driver is a node of the cluster (its messages then cross no network twice, and it
    cannot outlive the run); anywhere otherwise (Ray Client)."""
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        if not any(n.get("NodeID") == node and n.get("Alive", True) for n in ray.nodes()):
            return {}
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
    except Exception:
        return {}


def _logs_dir(ray: Any) -> str:
    """The folder of Ray's logs on the driver's node ("" when not known: Ray Client)."""
    try:
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        return str(node.get_logs_dir_path()) if node is not None else ""
    except Exception:
        return ""


_log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def mute_ray_prints() -> Callable[[], None]:
    """Keep what Ray prints on the driver's stdout by itself (``(raylet) A worker died
    ...``, coloured whatever NO_COLOR says) out of the run's output: it goes to this
    module's logger instead, uncoloured; what a failure means reaches the user in the
    job's own reason. Returns what puts Ray's printing back."""
    try:
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
    except Exception:  # Ray moved it: nothing to mute
        return lambda: None
    if getattr(original, "muted_by_lotto", False):  # (an outer executor did: it puts it back)
        return lambda: None

    def to_logger(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", ()):
            _log.info("ray (%s): %s", data.get("pid", "?"), _ANSI.sub("", str(line)))

    to_logger.muted_by_lotto = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_logger

    def unmute() -> None:
        if ray_worker.print_to_stdstream is to_logger:
            ray_worker.print_to_stdstream = original

    return unmute


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


def died(err: BaseException, worker: str, log: str = "") -> str:
    """One line: what happened to a task's worker (``ray worker pid 12 on box2 died
    (WorkerCrashedError: ...; its log: python-core-worker-*_12.log in /tmp/ray/...)``)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if log:  # instead of Ray's "Check python-core-worker-*.log files for more information."
        first = re.sub(r"\s*Check python-core-worker-\S* files for more information\.?", "", first).rstrip(". ")
        first += f"; its log: {log}"
    return f"{worker} died ({type(err).__name__}: {first[:400]})"


def _task_error(err: BaseException) -> str:
    """One line for an error raised in :func:`ray_task` (not by the job: run_task
    returns those), e.g. lotto-tui missing on a node."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {one_line(cause)}"
    return f"{type(err).__name__}: {one_line(err)}"
