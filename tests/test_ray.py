"""The Ray executor against a real Ray cluster on this machine (``ray.init(num_cpus=2)``,
once for the module): the same numbers as the local executor, bit for bit; a worker
killed mid-job (``kill -9``) has its job run again from its checkpoint, or recorded
failed with the reason when no retries are left; cancel stops a running grid; a
grid started locally finishes on Ray and one started on Ray finishes locally; follow
mode sees a ``--batch`` run on Ray live; an address where no cluster answers fails
in one line before anything is written.

Jobs run in Ray's worker processes, which import this checkout (the fixture puts it
on their ``PYTHONPATH``). The cluster has no token (``RAY_AUTH_MODE=disabled``):
nothing is written to ``~/.ray``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lotto_engine
import lotto_tui
from conftest import LOTTO, TINY, tiny_args, tiny_config
from lotto_engine.errors import DeviceError
from lotto_engine.events import EpochFinished, Event, GridStarted, JobFailed, JobStarted, Notice
from lotto_engine.runner import Runner
from lotto_engine.store import Store

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='Ray is not installed (pip install "lotto-tui[ray]")'
)

# The demo grid's shape, shrunk: two activations, dense + magnitude + random pruning
# (2 dense and 4 pruned jobs); dense jobs long enough (20 epochs, about a second) to
# be caught mid-job by a kill or a cancel that follows an epoch event.
GRID = ('grid.activations=["relu","tanh"]', 'grid.methods=["magnitude","random"]', "train.dense_epochs=20")
ON_RAY = ('run.executor="ray"',)


def _warm_up() -> None:
    """What a job's task does first in a new worker: imports, then torch's settings
    (which import more of torch): seconds per worker on 2 busy cores."""
    importlib.import_module("lotto_engine.executors.ray_executor")
    importlib.import_module("lotto_engine.devices").configure(1, True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A private Ray cluster with 2 CPUs for this module; its GCS address."""
    from lotto_engine.executors.ray_executor import import_ray

    ray = import_ray()
    if ray.is_initialized():
        pytest.skip("this process is already connected to a Ray cluster")
    temp = tempfile.mkdtemp(prefix="lotto-ray-")  # short: Ray's socket paths live under it
    # (and this module's folder: the warm-up below is a function of this module)
    code = [str(Path(lotto_engine.__file__).parents[1]), str(Path(lotto_tui.__file__).parents[1]), str(Path(__file__).parent)]
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a cluster of this machine's processes only: no token in ~/.ray
    os.environ["PYTHONPATH"] = os.pathsep.join([*code, *filter(None, [saved["PYTHONPATH"]])])
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False,
                 logging_level=logging.ERROR, _temp_dir=temp)
        # both workers import torch and the engine while the reference runs locally (seconds each)
        warm = ray.remote(num_cpus=1)(_warm_up)
        for _ in range(2):
            warm.remote()
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------- what a store holds


def numbers(store: Store) -> dict[str, tuple]:
    """Every number of every latest run, by job key (not wall times or where it ran)."""
    return {
        r.job_key: (r.status, r.val_acc, r.best_val_acc, r.test_acc, r.actual_sparsity, r.stability,
                    r.stability_floor, r.kept_change, r.flags,
                    [astuple(m)[:6] for m in store.curve(r.id)], [astuple(layer) for layer in store.layers(r.id)])
        for r in store.runs(1)
    }


def tensors(root: Path) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Every saved tensor file (weights, masks, rewind points) of a store."""
    return {(p.parent.name, p.stem): load_file(str(p)) for p in sorted((root / "artifacts").glob("*/*.safetensors"))}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """GRID on the local executor, straight through: its numbers and tensors."""
    root = tmp_path_factory.mktemp("local")
    with Store(root) as store:
        summary = Runner(tiny_config(*GRID), store).run()
        assert summary.counts == {"done": 6}
        return numbers(store), tensors(root)


def started_by_key(events: list[Event]) -> dict[str, list[JobStarted]]:
    out: dict[str, list[JobStarted]] = {}
    for event in events:
        if isinstance(event, JobStarted):
            out.setdefault(event.job.key, []).append(event)
    return out


def after_epoch(epoch: int, act: Callable[[EpochFinished, list[Event]], None], events: list[Event]):
    """An event handler that records events and calls ``act`` once, after the first
    dense job to finish ``epoch``."""
    done: list[bool] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if not done and isinstance(event, EpochFinished) and event.job.kind == "dense" and event.metrics.epoch == epoch:
            done.append(True)
            act(event, events)

    return on_event


def kill_its_worker(event: EpochFinished, events: list[Event]) -> None:
    (started,) = started_by_key(events)[event.job.key]
    assert started.pid and started.pid != os.getpid()
    os.kill(started.pid, signal.SIGKILL)


# ---------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_a_grid_on_ray_gives_the_local_numbers_bit_for_bit(cluster, reference, tmp_path) -> None:
    events: list[Event] = []
    with Store(tmp_path) as store:
        summary = Runner(tiny_config(*GRID, *ON_RAY), store, on_event=events.append).run()
        assert summary.counts == {"done": 6} and not summary.cancelled
        assert numbers(store) == reference[0]
        # which cluster it ran on is said at the start and kept with the experiment
        (recorded,) = store.provenance(summary.experiment_id)
    assert_same_tensors(tensors(tmp_path), reference[1])
    where = f"ray cluster {cluster}, 1 node, 2 CPUs, 0 GPUs"
    assert recorded["cluster"] == where
    assert f"jobs run on the {where}" in [e.message for e in events if isinstance(e, Notice)]
    # the jobs ran in Ray's worker processes, which the events name
    (grid,) = [e for e in events if isinstance(e, GridStarted)]
    assert grid.device == "ray: cpu per job"
    starts = [s for runs in started_by_key(events).values() for s in runs]
    assert len(starts) == 6
    host = socket.gethostname()
    assert all(s.pid not in (0, os.getpid()) and s.worker == f"ray worker pid {s.pid} on {host}" for s in starts)
    assert summary.peak_memory["ray workers cpu"] > 0


@pytest.mark.slow
def test_cancel_stops_a_ray_grid_mid_job_and_a_local_resume_finishes_it(cluster, reference, tmp_path) -> None:
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def stop(event: EpochFinished, events: list[Event]) -> None:
        cancelled_at.append(time.monotonic())
        cancel.set()

    with Store(tmp_path) as store:
        first = Runner(tiny_config(*GRID, *ON_RAY), store, cancel=cancel, on_event=after_epoch(2, stop, [])).run()
        stopped = time.monotonic() - cancelled_at[0]
        assert first.cancelled
        runs = store.runs(1)
        # both dense jobs had been handed to Ray: each stopped mid-way; no pruned job started
        assert sorted((r.kind, r.status) for r in runs) == [("dense", "cancelled")] * 2
        assert all(len(store.curve(r.id)) < 20 for r in runs)
        # (a job whose worker was still starting is cancelled before its first epoch: no checkpoint)
        continued = {r.job_key: r.id for r in runs if store.has_checkpoint(r.job_key)}
        assert any(len(store.curve(r.id)) >= 2 for r in runs if r.job_key in continued)
        assert stopped < 5, stopped  # at their next batch, not at the end of the job

        second = Runner(tiny_config(*GRID), store).run()  # locally
        assert second.counts == {"done": 6}
        latest = {r.job_key: r.id for r in store.runs(1)}
        assert all(latest[key] == run_id for key, run_id in continued.items())  # in the same run row
        assert numbers(store) == reference[0]
    assert_same_tensors(tensors(tmp_path), reference[1])


@pytest.mark.slow
def test_follow_mode_sees_a_batch_run_on_ray_live(cluster, tmp_path) -> None:
    from lotto_tui.explorer import create_app
    from textual.widgets import Static

    from lotto_engine.config import load_config

    # the runs are "queued" from their submission, through the new driver's worker
    # start-up (seconds), then "running": so the shortest jobs are seen live
    config = load_config(overrides=[*TINY, f"run.store='{tmp_path}'"])
    app = create_app(config, poll_interval=0.2)
    args = [sys.executable, "-m", "lotto_tui", "--batch", "--store", str(tmp_path)]
    # one job at a time: the new driver starts one worker (torch imported once), not two
    for item in (*TINY, *ON_RAY, "run.parallel=1"):
        args += ["--set", item]
    # The batch run joins with run.ray_address = auto, as after `ray start`: Ray's
    # record of the cluster it made last is in $TMPDIR/ray. Its HOME has a token in
    # .ray/auth_token and RAY_AUTH_MODE is unset, which made Ray expect a token from
    # this cluster (it has none) and the run stop: "the Ray cluster ... stopped answering".
    temp = Path(tempfile.mkdtemp(prefix="lf-"))
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(cluster)
    (temp / "home" / ".ray").mkdir(parents=True)
    (temp / "home" / ".ray" / "auth_token").write_text("a-token-of-another-cluster")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(TMPDIR=str(temp), HOME=str(temp / "home"))

    async def scenario() -> tuple[set[str], str, list[str]]:
        seen: set[str] = set()
        follow = ""
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = time.monotonic() + 60
            while not (app._engine_ready and app.plan is not None) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            batch = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            line = app.query_one("#jobs-follow", Static)
            try:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and batch.poll() is None:
                    if line.display and not follow:
                        follow = str(line.render())
                    progress = app.last_progress
                    if progress is not None:
                        seen.update(progress.counts)
                    await pilot.pause(0.05)
                out, err = batch.communicate(timeout=60)
                assert batch.returncode == 0, err
            finally:
                batch.kill()
        return seen, follow, out.splitlines()

    try:
        seen, follow, out = asyncio.run(scenario())
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert {"queued", "running"} & seen  # it was watched while the Ray workers started and trained
    assert "following: pid" in follow and "-m lotto_tui --batch --store" in follow
    assert out[0] == "experiment 1: 2 jobs, 0 already done, 2 to run on ray: cpu per job", out
    with Store(tmp_path, create=False) as store:
        assert [r.status for r in store.runs(1)] == ["done"] * 2


@pytest.mark.slow
def test_a_grid_started_locally_finishes_on_ray_through_a_killed_worker_bit_for_bit(cluster, reference, tmp_path) -> None:
    config = tiny_config(*GRID)
    with Store(tmp_path) as store:
        cancel = threading.Event()
        first = Runner(config, store, cancel=cancel, on_event=after_epoch(2, lambda e, _: cancel.set(), [])).run()
        assert first.cancelled and first.counts["cancelled"] == 1

        # on Ray: the cancelled job continues from its checkpoint; the worker of the
        # first dense job to reach epoch 5 there is killed, and its job runs again
        events: list[Event] = []
        killed_key: list[str] = []
        requeued: list[str] = []  # the killed job's status when its retry is announced

        def kill(event: EpochFinished, seen: list[Event]) -> None:
            killed_key.append(event.job.key)
            kill_its_worker(event, seen)

        watch = after_epoch(5, kill, events)

        def on_event(event: Event) -> None:
            watch(event)
            if isinstance(event, Notice) and "running it again" in event.message:
                requeued.extend(r.status for r in store.runs(1) if r.job_key == killed_key[0])

        second = Runner(tiny_config(*GRID, *ON_RAY), store, on_event=on_event).run()
        assert second.counts == {"done": 6}
        assert requeued == ["queued"]  # resubmitted, it waits for a worker: queued until it starts
        starts = started_by_key(events)
        (resumed,) = [runs[0] for runs in starts.values() if runs[0].resumed_from]
        assert resumed.resumed_from == 2  # the local run's checkpoint
        (killed,) = [runs for runs in starts.values() if len(runs) == 2]
        notes = [e.message for e in events if isinstance(e, Notice) and "running it again" in e.message]
        assert len(notes) == 1, notes
        match = re.fullmatch(
            rf"{re.escape(killed[0].job.label)}: ray worker pid {killed[0].pid} on \S+ died \(WorkerCrashedError: .*\); "
            r"running it again from epoch (\d+) \(attempt 2 of 3\)",
            notes[0],
        )
        assert match, notes[0]
        assert 4 <= int(match[1]) < 20 and killed[1].resumed_from == int(match[1])  # from its last checkpoint
        assert killed[1].pid != killed[0].pid
        # one run row per job, its epochs trained once each, as if never stopped or killed
        assert [r.attempt for r in store.runs(1, history=True)] == [1] * 6
        assert numbers(store) == reference[0]
    assert_same_tensors(tensors(tmp_path), reference[1])


@pytest.mark.slow
def test_with_no_retries_a_killed_workers_job_is_recorded_failed_with_the_reason(cluster, tmp_path, capfd, caplog) -> None:
    config = tiny_config('grid.activations=["relu"]', "train.dense_epochs=20", *ON_RAY, "run.retries=0")
    events: list[Event] = []
    caplog.set_level(logging.INFO, logger="lotto_engine.executors.ray_executor")
    with Store(tmp_path) as store:
        summary = Runner(config, store, on_event=after_epoch(2, kill_its_worker, events)).run()
        assert summary.counts == {"failed": 2}
        dense, pruned = sorted(store.runs(1), key=lambda r: r.kind)
        (started,) = started_by_key(events)[dense.job_key]
        assert re.fullmatch(rf"ray worker pid {started.pid} on \S+ died \(WorkerCrashedError: .*\); gave up after 1 attempt",
                            dense.error or ""), dense.error
        # the reason says where the dead worker's log is
        log = re.search(r"its log: (python-core-worker-\*_(\d+)\.log) in (\S+)\)", dense.error or "")
        assert log and int(log[2]) == started.pid, dense.error
        assert list(Path(log[3]).glob(log[1]))
        assert pruned.error == "its dense run did not finish"
    assert [e.job.kind for e in events if isinstance(e, JobFailed)] == ["dense", "pruned"]
    assert not any(isinstance(e, Notice) and "running it again" in e.message for e in events)
    # Ray's own "(raylet) A worker died ..." (coloured) reached its logger, not the output
    deadline = time.monotonic() + 5
    while not any("A worker died" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(r.getMessage().startswith("ray (raylet): A worker died") for r in caplog.records)
    out, err = capfd.readouterr()
    assert "(raylet)" not in out + err and "\x1b[" not in out + err, out + err


def test_an_address_where_no_cluster_answers_fails_in_one_line_before_anything_is_written(
    tmp_path, monkeypatch, capsys
) -> None:
    from lotto_engine.executors.ray_executor import import_ray
    from lotto_tui.cli import main

    # in-process (no torch start-up to pay), as a process not connected to Ray yet
    monkeypatch.setattr(import_ray(), "is_initialized", lambda: False)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--batch", "--store", str(tmp_path / "runs")]
    for item in (*TINY, *ON_RAY, f'run.ray_address="127.0.0.1:{port}"'):
        args += ["--set", item]
    started = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert err == f"lotto-tui: run.ray_address = 127.0.0.1:{port}: no Ray cluster answers there (connection refused)\n"
    with Store(tmp_path / "runs", create=False) as store:
        assert store.experiments() == []


def test_an_address_where_another_service_answers_fails_fast_in_one_line(tmp_path, monkeypatch) -> None:
    # a web server (as Ray's dashboard on 8265 is): Ray itself would retry there for minutes
    import http.server

    from conftest import run_main
    from lotto_engine.executors.ray_executor import import_ray

    monkeypatch.setattr(import_ray(), "is_initialized", lambda: False)  # as a process not connected to Ray yet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None  # (its request log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        for address, what in ((f"127.0.0.1:{port}", "a Ray cluster (GCS)"), (f"ray://127.0.0.1:{port}", "a Ray Client server")):
            started = time.monotonic()
            result = run_main("--batch", "--store", str(tmp_path / "runs"), *tiny_args(*ON_RAY, f'run.ray_address="{address}"'),
                              cwd=tmp_path)
            assert time.monotonic() - started < 8  # (not the minutes Ray keeps retrying)
            assert result.rc == 2
            assert result.stderr == f"lotto-tui: run.ray_address = {address}: 127.0.0.1:{port} answers but is not {what}\n"
    finally:
        server.shutdown()
        server.server_close()
    with Store(tmp_path / "runs", create=False) as store:
        assert store.experiments() == []


@pytest.mark.slow
def test_a_clusters_gcs_given_as_a_ray_client_address_fails_in_one_line(cluster) -> None:
    # Ray Client would keep trying to speak its protocol to the GCS
    from lotto_engine.executors.ray_executor import connect_to, import_ray

    with pytest.raises(DeviceError) as err:
        connect_to(import_ray(), f"ray://{cluster}", {})
    assert str(err.value) == (
        f"run.ray_address = ray://{cluster}: {cluster} is a Ray cluster's GCS, not its Ray Client server: "
        f"join it as {cluster} from a node of the cluster, or use ray://HOST:10001"
    )


@pytest.mark.slow  # ~4 s: a lotto-tui process
def test_a_ray_client_server_that_wants_a_token_is_told_apart_in_one_line(tmp_path) -> None:
    # A Ray Client server (ray://) of a cluster with token authentication refuses calls
    # without a token; ray.init would wait 30 s and blame a timeout. Here a real gRPC
    # server answers as one does (the GCS's call unknown there, Ray Client's refused).
    from concurrent import futures

    import grpc

    from lotto_engine.executors import ray_executor

    def handler(details):
        if details.method == ray_executor._CLIENT_CALL:
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token"))
        return None  # UNIMPLEMENTED, as on a Ray Client server

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            return handler(details)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # a process of its own: this one may already be connected to the module's cluster
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    try:
        assert ray_executor._speaks_ray(f"ray://127.0.0.1:{port}", "x") == "token"
        started = time.monotonic()
        result = subprocess.run(
            [str(LOTTO), "--batch", "--store", str(tmp_path / "runs"),
             *tiny_args(*ON_RAY, f'run.ray_address="ray://127.0.0.1:{port}"')],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        took = time.monotonic() - started
    finally:
        server.stop(0)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert took < 20  # not the half minute ray.init waits before it gives up
    assert "that Ray cluster wants a token (token authentication) and none is here" in result.stderr
    with Store(tmp_path / "runs", create=False) as store:
        assert store.experiments() == []


def test_auto_joins_the_cluster_ray_start_made_last_and_says_so_when_others_run() -> None:
    from lotto_engine.executors.ray_executor import choose_cluster

    assert choose_cluster(["10.0.0.5:6379"], None) == ("10.0.0.5:6379", "")
    assert choose_cluster(["10.0.0.5:6379"], "10.0.0.5:6379") == ("10.0.0.5:6379", "")
    assert choose_cluster(["10.0.0.5:6379", "10.0.0.5:41000", "10.0.0.5:42000"], "10.0.0.5:6379") == (
        "10.0.0.5:6379",
        "run.ray_address = auto: 3 Ray clusters run on this machine; joined 10.0.0.5:6379, the one `ray start` "
        "made last, not 10.0.0.5:41000, 10.0.0.5:42000 (run.ray_address or RAY_ADDRESS chooses)",
    )
    with pytest.raises(DeviceError, match=r"^run.ray_address = auto: 2 Ray clusters run on this machine "
                                          r"\(10.0.0.5:41000, 10.0.0.5:42000\) and none was made by `ray start`; give "):
        choose_cluster({"10.0.0.5:42000", "10.0.0.5:41000"}, None)
    with pytest.raises(DeviceError, match=r"^run.ray_address = auto: no running Ray cluster found "):
        choose_cluster([], None)


@pytest.mark.slow
def test_a_private_cluster_leaves_no_token_no_files_and_no_ray_text_behind(tmp_path) -> None:
    # run.ray_address = local with RAY_AUTH_MODE unset: Ray would switch token auth on and
    # write ~/.ray/auth_token, after which `auto` expects a token from `ray start`
    # clusters that have none; its session folder (logs, sockets) would stay in /tmp/ray
    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="lr-"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.update(HOME=str(home), TMPDIR=str(temp))
    try:
        proc = subprocess.run(
            [str(LOTTO), "--batch", "--store", str(tmp_path / "runs"), *tiny_args(*ON_RAY, 'run.ray_address="local"')],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == "experiment 1: 2 jobs, 0 already done, 2 to run on ray: cpu per job"
        assert "(raylet)" not in proc.stdout + proc.stderr and "\x1b[" not in proc.stdout + proc.stderr
        assert not (home / ".ray" / "auth_token").exists()
        # its cluster's folder (sessions, logs, sockets; Ray's default: $TMPDIR/ray) was removed at the end
        assert not list(temp.rglob("session_*"))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    with Store(tmp_path / "runs", create=False) as store:
        assert [r.status for r in store.runs(1)] == ["done"] * 2


# A cluster with token authentication, in its own process (its HOME gets the token),
# until its stdin closes.
TOKEN_CLUSTER = """
import logging, shutil, sys, tempfile
import ray
temp = tempfile.mkdtemp(prefix="lt-")
ray.init(num_cpus=0, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, _temp_dir=temp)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
shutil.rmtree(temp, ignore_errors=True)
"""


@pytest.mark.slow
def test_a_cluster_that_wants_a_token_is_told_apart_and_without_one_fails_in_one_line(tmp_path, monkeypatch) -> None:
    from lotto_engine.executors.ray_executor import _have_token, _speaks_ray

    home = tmp_path / "cluster-home"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = subprocess.Popen([sys.executable, "-c", TOKEN_CLUSTER], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = cluster.stdout.readline().strip()
        assert (home / ".ray" / "auth_token").exists() and address, "the token cluster did not start"
        assert _speaks_ray(address, address) == "token"
        monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # (as the user set it)
        with pytest.raises(DeviceError, match=rf"^run.ray_address = {address}: that Ray cluster wants a token "
                                              r"\(token authentication\) but RAY_AUTH_MODE is 'disabled' here; "):
            _have_token(address, address)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        with pytest.raises(DeviceError, match=r"wants a token \(token authentication\) and none is here: copy the "
                                              r"cluster's ~/.ray/auth_token here, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH$"):
            _have_token(address, address)
        monkeypatch.setenv("HOME", str(home))
        _have_token(address, address)  # the token is there: ray.init may go on
    finally:
        cluster.stdin.close()
        cluster.wait(timeout=30)


@pytest.mark.slow
def test_a_grid_finishes_when_its_mailbox_is_killed_mid_job(cluster, tmp_path) -> None:
    import ray

    from lotto_engine.executors.ray_executor import MAILBOX

    def kill_the_mailbox(event: EpochFinished, events: list[Event]) -> None:
        (name,) = [n for n in ray.util.list_named_actors() if n.startswith(f"{MAILBOX}-{os.getpid()}-")]
        ray.kill(ray.get_actor(name), no_restart=False)  # its process dies; Ray starts it again

    events: list[Event] = []
    config = tiny_config('grid.activations=["relu"]', "train.dense_epochs=20", *ON_RAY)
    with Store(tmp_path) as store:
        summary = Runner(config, store, on_event=after_epoch(2, kill_the_mailbox, events)).run()
        assert summary.counts == {"done": 2} and not summary.cancelled
        assert all(len(started) == 1 for started in started_by_key(events).values())  # nothing ran again
        dense = next(r for r in store.runs(1) if r.kind == "dense")
        assert len(store.curve(dense.id)) == 20  # (epochs sent while it restarted may be missing live, not stored)


@pytest.mark.slow
def test_a_cluster_without_room_for_one_job_fails_in_one_line_and_a_reused_connection_stays(cluster) -> None:
    import ray

    from lotto_engine.executors import WorkerSettings
    from lotto_engine.executors.ray_executor import RayExecutor

    run = tiny_config(*ON_RAY, 'run.device="auto"', "run.gpus_per_job=0.5").run
    with pytest.raises(DeviceError) as err:
        RayExecutor(run, WorkerSettings("cuda", 1, True), cancel=threading.Event())
    assert str(err.value).startswith('run.executor = "ray": no node of the Ray cluster at ')
    assert "has 1 CPU and 0.5 GPU for a job" in str(err.value) and "it has 2 CPUs, 0 GPUs over 1 node" in str(err.value)
    assert ray.is_initialized()  # the fixture's connection was used, and is still there
    run = tiny_config(*ON_RAY, "run.cpus_per_job=2").run
    executor = RayExecutor(run, WorkerSettings("cpu", 1, True), cancel=threading.Event())
    assert executor.capacity == 1  # 2 CPUs, 2 a job
    assert executor.describe() == f"ray cluster {cluster}, 1 node, 2 CPUs, 0 GPUs"
    executor.close()
    assert ray.is_initialized()


def test_without_ray_the_executor_says_how_to_install_it_in_one_line(monkeypatch) -> None:
    from lotto_engine.executors import WorkerSettings
    from lotto_engine.executors.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(DeviceError, match=r'^run.executor = "ray" needs Ray: pip install "lotto-tui\[ray\]"$'):
        RayExecutor(tiny_config(*ON_RAY).run, WorkerSettings("cpu", 1, True), cancel=threading.Event())


def test_jobs_that_fit_count_whole_jobs_per_node() -> None:
    from lotto_engine.config import RunConfig
    from lotto_engine.executors.ray_executor import jobs_that_fit

    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {"CPU": 3.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    assert jobs_that_fit(nodes, RunConfig()) == 11
    assert jobs_that_fit(nodes, RunConfig(cpus_per_job=2)) == 5  # 4 + 1
    assert jobs_that_fit(nodes, RunConfig(gpus_per_job=0.25)) == 8  # 2 GPUs in quarters
    assert jobs_that_fit(nodes, RunConfig(gpus_per_job=1, cpus_per_job=6)) == 1


def test_ray_init_gets_a_stderr_with_a_descriptor_inside_the_explorer(monkeypatch) -> None:
    # ray.init calls faulthandler.enable() on sys.stderr, which fails on Textual's
    # capture (fileno -1): "file.fileno() is not a valid file descriptor"
    import faulthandler
    import io

    from lotto_engine.executors.ray_executor import stderr_with_fileno

    class Captured(io.StringIO):
        def fileno(self) -> int:
            return -1

    captured = Captured()
    monkeypatch.setattr(sys, "stderr", captured)
    with pytest.raises(RuntimeError, match="not a valid file descriptor"):
        faulthandler.enable(all_threads=False)  # fails before it changes anything
    with stderr_with_fileno():
        os.fstat(sys.stderr.fileno())  # what faulthandler.enable() needs
        print("still captured", file=sys.stderr)
    assert sys.stderr is captured and captured.getvalue() == "still captured\n"
