"""The Slurm executor: submitit's local executor (a process per task on this
machine: the same pickles, events files, requeue and retry paths) finishes a tiny grid
started by the local executor, with its numbers; a preempted task is requeued and continues from
its checkpoint, a task whose worker was killed runs again from its last checkpoint,
cancel stops a running task; and a real single-node Slurm (tests/slurm_cluster.py)
runs the two-job grid end to end, or the test skips with the reason."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import astuple
from pathlib import Path

import pytest

from conftest import run_main, tiny_config
from lotto_engine import devices
from lotto_engine.errors import DeviceError
from lotto_engine.events import Notice
from lotto_engine.executors import Checkpointed, EpochDone, Finished, Retrying, Started, Task, WorkerSettings
from lotto_engine.executors import slurm
from lotto_engine.executors.slurm_files import (
    Attempt, EventReader, EventWriter, SlurmTask, checkpoints, save_checkpoint, worker_label,
)
from lotto_engine.executors.worker import run_task
from lotto_engine.plan import build_plan
from lotto_engine.protocol import JobSpec
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from slurm_cluster import ClusterUnavailable, SlurmCluster, single_node_slurm

SETTINGS = WorkerSettings("cpu", threads=1, deterministic=True)


def numbers(curve: list) -> list[tuple]:
    """A curve without its wall times."""
    return [astuple(m)[:6] for m in curve]


def slurm_config(folder: Path, *extra: str):  # type: ignore[no-untyped-def]
    return tiny_config('run.executor="slurm"', f'run.slurm_folder="{folder}"', *extra)


def dense_task(*extra: str) -> Task:
    config = tiny_config(*extra)
    job = next(job for job in build_plan(config) if job.kind == "dense")
    return Task(JobSpec.of(job, config, devices.execution(config.run).fast))


def grid_results(store: Store) -> dict[str, tuple]:
    return {run.job_key: (run.status, run.test_acc, numbers(store.curve(run.id))) for run in store.runs(1)}


@pytest.fixture(scope="module")
def local_numbers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """The tiny grid's results from the local executor (run.threads = 1)."""
    with Store(tmp_path_factory.mktemp("local") / "runs") as store:
        Runner(tiny_config(), store).run()
        return grid_results(store)


@pytest.fixture
def local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's local executor instead of sbatch; job states looked at often."""
    monkeypatch.setattr(slurm, "CLUSTER", "local")
    monkeypatch.setattr(slurm, "STATE_INTERVAL", 0.3)
    monkeypatch.setattr(slurm, "LOST_AFTER", 0.5)


def drive(executor: slurm.SlurmExecutor, on_message, limit: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while executor.busy:
        assert time.monotonic() < deadline, "the executor did not finish in time"
        executor.wait(on_message, 0.2)


def test_the_event_files_carry_whole_records_in_order_across_restarts(tmp_path: Path) -> None:
    task = dense_task()
    first = EventWriter(tmp_path)
    sent: list[object] = []
    finished = run_task(task, SETTINGS, lambda m: (sent.append(m), first.put(m)))
    reader = EventReader(tmp_path, task.key)
    assert reader.started
    with open(tmp_path / "events.000", "ab") as f:  # a record torn by a killed writer
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")
    first.close()
    got = reader.read()
    assert [type(m) for m in got] == [type(m) for m in sent] and Checkpointed in map(type, got)
    for mine, theirs in zip(got, sent, strict=True):
        if isinstance(mine, Checkpointed):  # loaded back from its own file
            assert mine.checkpoint.epoch == theirs.checkpoint.epoch
            assert mine.checkpoint.train.curve == theirs.checkpoint.train.curve
        else:
            assert mine == theirs
    assert reader.read() == []  # the torn record waits: its writer might still finish it
    second = EventWriter(tmp_path)  # the next start of the task: the torn record is dropped
    second.put(finished)
    second.close()
    (again,) = reader.read()
    assert second.number == 1 and isinstance(again, Finished) and again.output.result == finished.output.result
    assert again.output.artifacts.keys() == finished.output.artifacts.keys()


def test_a_checkpoint_the_driver_cannot_read_is_skipped_and_the_older_one_kept(tmp_path: Path) -> None:
    # damaged, or not yet visible on a shared file system: the driver goes on with the
    # other messages (a traceback here would stop the grid) and keeps the older file
    task = dense_task("train.dense_epochs=3")
    writer = EventWriter(tmp_path)
    run_task(task, SETTINGS, writer.put)
    writer.close()
    (older, _), (newest, path) = checkpoints(tmp_path)
    path.write_bytes(b"not a checkpoint")
    got = EventReader(tmp_path, task.key).read()
    assert [m.checkpoint.epoch for m in got if isinstance(m, Checkpointed)] == [older]
    assert [m.metrics.epoch for m in got if isinstance(m, EpochDone)] == [1, 2, 3]  # the rest still came
    assert [epoch for epoch, _ in checkpoints(tmp_path)] == [older, newest]


def test_a_task_start_continues_from_the_newest_checkpoint_in_its_folder(tmp_path: Path) -> None:
    task = dense_task("train.dense_epochs=3")
    sent: list[object] = []
    plain = run_task(task, SETTINGS, sent.append)
    saved = [m.checkpoint for m in sent if isinstance(m, Checkpointed)]
    assert [c.epoch for c in saved] == [1, 2]
    for checkpoint in saved:  # what an earlier start left
        save_checkpoint(tmp_path, checkpoint)
    assert SlurmTask(task, {}, SETTINGS, str(tmp_path), str(tmp_path / "control"))() == "done"
    got = EventReader(tmp_path, task.key).read()
    assert got[0] == Attempt(0, 2, worker_label())
    assert isinstance(got[1], Started) and got[1].resumed_from == 2
    assert [m.metrics.epoch for m in got if isinstance(m, EpochDone)] == [3]
    assert numbers(got[-1].output.result.curve) == numbers(plain.output.result.curve)


def test_a_task_whose_inputs_cannot_be_read_says_so_in_its_finished(tmp_path: Path) -> None:
    task = dense_task()
    missing = tmp_path / "inputs" / "00000.pt"
    error = SlurmTask(task, {"weights": str(missing)}, SETTINGS, str(tmp_path), str(tmp_path / "control"))()
    assert error.startswith("FileNotFoundError: ") and str(missing) in error and error.endswith(f"(on {worker_label()})")
    attempt, finished = EventReader(tmp_path, task.key).read()
    assert isinstance(attempt, Attempt) and finished == Finished(task.key, None, error)


def test_squeue_lines_give_each_array_task_its_state_and_why_it_waits() -> None:
    text = ("77_3|RUNNING|None\n77_[4-6,9%2]|PENDING|Resources\n78|COMPLETED|None\n79_1|CANCELLED by 0|None\n"
            "80|PENDING|ReqNodeNotAvail, UnavailableNodes:n[1-2]\n"
            "81_[0-1]|PENDING|Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority "
            "partitions\n")
    got = slurm.parse_squeue(text)
    assert {ident: state for ident, (state, _) in got.items()} == {
        "77_3": "RUNNING", "77_4": "PENDING", "77_5": "PENDING", "77_6": "PENDING", "77_9": "PENDING",
        "78": "COMPLETED", "79_1": "CANCELLED", "80": "PENDING", "81_0": "PENDING", "81_1": "PENDING",
    }
    assert [slurm.short_reason(got[i][1]) for i in ("77_4", "80", "81_1")] == [
        "Resources", "ReqNodeNotAvail", "ReqNodeNotAvail"]
    # what Slurm never clears by itself fails; group limits, priority, held or down partitions wait
    never = ["PartitionConfig", "BadConstraints", "PartitionTimeLimit", "InvalidQOS", "AssocMaxCpuPerJobLimit",
             "QOSMaxGRESPerJob", "QOSMaxWallDurationPerJobLimit", "AssocMaxGRESPerNode", "QOSMinCpuNotSatisfied"]
    assert slurm.short_reason("None") == "WaitingForScheduling"
    wait = ["Resources", "Priority", "None", "AssocGrpCpuLimit", "QOSMaxJobsPerUserLimit", "MaxCpuPerAccount",
            "AssocMaxJobsLimit", "PartitionDown", "JobHeldUser", "ReqNodeNotAvail, UnavailableNodes:n1", "BeginTime"]
    assert [slurm.never_reason(r) for r in never] == never
    assert [slurm.never_reason(r) for r in wait] == [None] * len(wait)


def test_sinfo_lines_give_each_node_its_cpus_gpus_and_time_limit() -> None:
    nodes = slurm.parse_sinfo("gpu|64|gpu:a100:4(S:0-1)|2-00:00:00|mixed\ncpu*|128|(null)|30:00|drained*\n"
                              "mix|8|gpu:v100:2,gpu:t4:1,mps:200|infinite|idle\n")
    assert [(n.partition, n.cpus, n.gpus, n.time_limit, n.state) for n in nodes] == [
        ("gpu", 64, 4, 2880, "mixed"), ("cpu*", 128, 0, 30, "drained*"), ("mix", 8, 3, None, "idle")]
    assert [slurm.signal_delay(m) for m in (1, 2, 5, 15, 600)] == [10, 12, 30, 90, 90]


def test_without_slurm_or_submitit_the_executor_fails_in_one_line(tmp_path: Path, monkeypatch) -> None:
    run = slurm_config(tmp_path).run
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(DeviceError, match=r'^run.executor = "slurm": sbatch, squeue, scancel, srun, sinfo not found'):
        slurm.SlurmExecutor(run, SETTINGS, cancel=threading.Event())
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(DeviceError, match=r'needs submitit: pip install "lotto-tui\[slurm\]"$'):
        slurm.SlurmExecutor(run, SETTINGS, cancel=threading.Event())
    assert not list(tmp_path.iterdir())  # nothing created


@pytest.mark.slow
def test_a_grid_started_here_is_finished_through_submitit_with_the_local_numbers(
    tmp_path: Path, local_cluster: None, local_numbers: dict[str, tuple],
) -> None:
    """Stopped locally after the dense job's first epoch, the same experiment is
    finished by the Slurm executor (submitit's local cluster): the dense job continues
    from its checkpoint, and every number is the local executor's."""
    cancel = threading.Event()
    events: list[object] = []
    with Store(tmp_path / "runs") as store:
        stop = lambda event: cancel.set() if type(event).__name__ == "EpochFinished" else None  # noqa: E731
        assert Runner(tiny_config(), store, on_event=stop, cancel=cancel).run().counts == {"cancelled": 1, "pending": 1}
        summary = Runner(slurm_config(tmp_path / "shared"), store, on_event=events.append).run()
        assert summary.counts == {"done": 2}
        assert grid_results(store) == local_numbers
    started = [e for e in events if type(e).__name__ == "JobStarted"]
    assert [e.resumed_from for e in started] == [1, 0]
    assert all(e.worker.startswith("submitit local job ") and e.pid for e in started)
    # a clean end leaves nothing in the shared folder: the logs of jobs that succeeded go too
    assert not list((tmp_path / "shared").iterdir())


@pytest.mark.slow
def test_a_preempted_task_resumes_and_a_killed_one_runs_again_with_the_same_numbers(tmp_path: Path,
                                                                                     local_cluster: None) -> None:
    """Slurm's preemption warning (SIGUSR2 to the task): submitit requeues it and it
    continues from its last checkpoint; then its worker is killed: it runs again from
    the last checkpoint the driver got (a retry). The numbers are those of one run."""
    extra = ("train.dense_epochs=45",)
    task = dense_task(*extra)
    plain = run_task(task, SETTINGS, lambda m: None)
    run = slurm_config(tmp_path, *extra, "run.retries=1").run
    executor = slurm.SlurmExecutor(run, SETTINGS, cancel=threading.Event())
    messages: list[object] = []

    def on_message(message: object) -> None:
        messages.append(message)
        starts = [m for m in messages if isinstance(m, Started)]
        if isinstance(message, Checkpointed) and len(starts) == 1:
            os.kill(starts[0].pid, signal.SIGUSR2)  # preempted (what Slurm sends before the end)
        if isinstance(message, Checkpointed) and len(starts) == 2 and message.checkpoint.epoch > starts[1].resumed_from:
            os.kill(starts[1].pid, signal.SIGKILL)  # the node died (at its first checkpoint: a driver slowed
            # by a loaded machine must not read it after the task has finished)

    executor.submit([task])
    drive(executor, on_message)
    executor.close()
    starts = [m for m in messages if isinstance(m, Started)]
    retries = [m for m in messages if isinstance(m, Retrying)]
    assert len(starts) == 3 and len(retries) == 2
    requeued, killed = retries
    assert requeued.reason == "preempted or out of time, requeued by Slurm" and requeued.resume_epoch >= 1
    assert starts[1].resumed_from == requeued.resume_epoch and starts[1].pid != starts[0].pid
    assert killed.reason.endswith("ended (COMPLETED) without a result") and (killed.attempt, killed.attempts) == (2, 2)
    assert starts[2].resumed_from == killed.resume_epoch > requeued.resume_epoch
    finished = messages[-1]
    assert isinstance(finished, Finished) and finished.error is None
    assert numbers(finished.output.result.curve) == numbers(plain.output.result.curve)
    assert finished.output.result.test_acc == plain.output.result.test_acc


@pytest.mark.slow
def test_a_killed_task_without_retries_fails_with_the_reason_and_cancel_stops_the_rest(tmp_path: Path,
                                                                                      local_cluster: None) -> None:
    extra = ("train.dense_epochs=200", "grid.seeds=[0,1]")
    config = slurm_config(tmp_path, *extra, "run.retries=0")
    killed, cancelled = (Task(JobSpec.of(job, config, devices.execution(config.run).fast))
                         for job in build_plan(config) if job.kind == "dense")
    cancel = threading.Event()
    executor = slurm.SlurmExecutor(config.run, SETTINGS, cancel=cancel)
    messages: list[object] = []

    def on_message(message: object) -> None:
        messages.append(message)
        if isinstance(message, EpochDone) and message.key == killed.key and message.metrics.epoch == 1:
            pid = next(m.pid for m in messages if isinstance(m, Started) and m.key == killed.key)
            os.kill(pid, signal.SIGKILL)
        # cancel once the killed one has ended (a task lost while cancelling is recorded
        # cancelled, not failed) and the other one trains
        ended = any(isinstance(m, Finished) and m.key == killed.key for m in messages)
        if ended and any(isinstance(m, EpochDone) and m.key == cancelled.key for m in messages):
            cancel.set()

    executor.submit([killed, cancelled])
    drive(executor, on_message, limit=60)
    executor.close()
    ends = {m.key: m for m in messages if isinstance(m, Finished)}
    assert ends[killed.key].output is None and not ends[killed.key].cancelled
    error = ends[killed.key].error
    assert " ended (COMPLETED) without a result (after 1 attempts) (log: " in error
    log = Path(error.rpartition("(log: ")[2].rstrip(")"))  # a failure keeps its log, and names it
    assert log.name.endswith("_log.err") and log.exists()
    assert log.parent.parent == executor.folder / "jobs"
    assert not list(executor.folder.glob("jobs/*/*.pkl")) and executor.folder.exists()
    assert not any(isinstance(m, Retrying) for m in messages)
    stopped = ends[cancelled.key].output.result
    assert stopped.status == "cancelled" and 1 <= len(stopped.curve) < 200
    assert isinstance(messages[-1], Finished)  # nothing of a task after its Finished


# ---------------------------------------------------------------------- a real Slurm


@pytest.fixture(scope="module")
def real_slurm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    try:
        with single_node_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
    except ClusterUnavailable as err:
        print(f"\nno real Slurm here: {err}", file=sys.stderr)
        pytest.skip(f"a real slurmctld/slurmd could not start here: {err}")


@pytest.mark.slow
def test_a_real_single_node_slurm_runs_the_two_job_grid(tmp_path: Path, real_slurm: SlurmCluster, monkeypatch,
                                                       local_numbers: dict[str, tuple]) -> None:
    monkeypatch.setenv("SLURM_CONF", str(real_slurm.conf))
    monkeypatch.setattr(slurm, "STATE_INTERVAL", 1.0)
    with pytest.raises(DeviceError, match=r"^run.slurm_partition: no partition 'gpu' on this cluster \(it has debug\)$"):
        slurm.SlurmExecutor(slurm_config(tmp_path, 'run.slurm_partition="gpu"').run, SETTINGS, cancel=threading.Event())
    events: list[object] = []
    with Store(tmp_path / "slurm") as store:
        summary = Runner(slurm_config(tmp_path / "shared"), store, on_event=events.append).run()
        assert summary.counts == {"done": 2}, [e for e in events if isinstance(e, Notice)]
        assert grid_results(store) == local_numbers
    workers = [e.worker for e in events if type(e).__name__ == "JobStarted"]
    assert len(workers) == 2 and all(w.startswith("slurm job ") and w.endswith(f" on {real_slurm.host}") for w in workers)
    # the partition it ran on is said at the start
    told = [e.message for e in events if isinstance(e, Notice) and e.message.startswith("jobs run on the slurm")]
    assert len(told) == 1 and told[0].startswith("jobs run on the slurm partition 'debug' (1 node, "), told
    # without accounting, the job completion log is where ended jobs are told
    deadline = time.monotonic() + 20
    while real_slurm.jobcomp().count("JobState=COMPLETED") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert real_slurm.jobcomp().count("JobState=COMPLETED") == 2, real_slurm.jobcomp()
    assert not list((tmp_path / "shared").iterdir())  # the logs of succeeded jobs are gone once they ended


@pytest.mark.slow
def test_a_job_larger_than_every_node_of_the_partition_fails_in_one_line_before_anything_is_written(
    tmp_path: Path, real_slurm: SlurmCluster, monkeypatch,
) -> None:
    """Slurm would keep such a job pending forever (PartitionConfig), in silence: the
    driver asks sinfo first and stops at once, exit 2, one line."""
    shared = tmp_path / "shared"
    env = {"SLURM_CONF": str(real_slurm.conf)}
    base = ("--batch", "--store", str(tmp_path / "runs"), "--preset", "demo")
    started = time.monotonic()
    got = run_main(*base, "--set", 'run.executor="slurm"', "--set", f'run.slurm_folder="{shared}"',
                   "--set", "run.cpus_per_job=4", cwd=tmp_path, env=env)
    took = time.monotonic() - started
    assert got.rc == 2 and len(got.stderr.splitlines()) == 1 and "Traceback" not in got.stderr, got.stderr
    assert ("run.cpus_per_job = 4: no node of partition 'debug' has that many CPUs (at most 2); "
            "Slurm would keep the jobs pending forever") in got.stderr
    assert took < 10, took
    assert not shared.exists()
    monkeypatch.setenv("SLURM_CONF", str(real_slurm.conf))
    run = slurm_config(shared, "run.gpus_per_job=1", 'run.device="auto"').run
    with pytest.raises(DeviceError, match=r"^run.gpus_per_job = 1: no node of partition 'debug' has that many GPUs "
                                          r"\(none has a GPU\)"):
        slurm.SlurmExecutor(run, SETTINGS, cancel=threading.Event())
    real_slurm.run("scontrol", "update", "PartitionName=debug", "MaxTime=5")
    try:
        with pytest.raises(DeviceError,
                           match=r"^run.slurm_time = 60: partition 'debug' lets a job run at most 5 minutes$"):
            slurm.SlurmExecutor(slurm_config(shared).run, SETTINGS, cancel=threading.Event())
    finally:
        real_slurm.run("scontrol", "update", "PartitionName=debug", "MaxTime=INFINITE")
    assert not shared.exists()


@pytest.mark.slow
def test_a_task_waiting_in_the_queue_is_told_and_one_slurm_never_starts_fails_with_the_reason(
    tmp_path: Path, real_slurm: SlurmCluster, monkeypatch,
) -> None:
    """A partition that is down waits (a person brings it back): the wait is told, once.
    Once every node that could take the task is drained, Slurm will never start it by
    itself: the task is scancelled and fails with the reason."""
    monkeypatch.setenv("SLURM_CONF", str(real_slurm.conf))
    monkeypatch.setattr(slurm, "STATE_INTERVAL", 0.3)
    monkeypatch.setattr(slurm, "LOST_AFTER", 0.3)
    monkeypatch.setattr(slurm, "WAIT_NOTICE_AFTER", 0.5)
    task = dense_task()
    messages: list[object] = []
    real_slurm.run("scontrol", "update", "PartitionName=debug", "State=DOWN")
    try:
        executor = slurm.SlurmExecutor(slurm_config(tmp_path, "run.slurm_time=5").run, SETTINGS,
                                       cancel=threading.Event())
        assert executor.notes() == []
        executor.submit([task])
        deadline = time.monotonic() + 20
        while "PartitionDown" not in executor.waiting and time.monotonic() < deadline:  # "None" first, maybe
            executor.wait(messages.append, 0.2)
        assert executor.waiting == {"PartitionDown": 1} and executor.busy == 1 and not messages
        assert executor.notes()[-1] == "1 job waits in the Slurm queue (PartitionDown)"
        executor.wait(messages.append, 1.0)
        assert executor.notes() == []  # told once
        real_slurm.run("scontrol", "update", f"NodeName={real_slurm.host}", "State=DRAIN", "Reason=lotto-test")
        real_slurm.run("scontrol", "update", "PartitionName=debug", "State=UP")
        drive(executor, messages.append, limit=30)
        executor.close()
    finally:
        real_slurm.run("scontrol", "update", "PartitionName=debug", "State=UP")
        real_slurm.run("scontrol", "update", f"NodeName={real_slurm.host}", "State=RESUME")
    (finished,) = messages
    assert finished == Finished(task.key, None, "slurm will not start it: ReqNodeNotAvail (every node of partition "
                                                "'debug' that could take it is down or drained)")
    assert "CANCELLED" in real_slurm.run("squeue", "-h", "-t", "all", "-o", "%T", "-j", finished_job(real_slurm))
    assert not list(tmp_path.iterdir())  # nothing kept: it never ran


def finished_job(cluster: SlurmCluster) -> str:
    """The id of the newest job the cluster knows."""
    return max(cluster.run("squeue", "-h", "-t", "all", "-o", "%A").split(), key=int)


#: a driver that submits one long task and is killed (SIGKILL: no clean-up) right after
_DYING_DRIVER = """
import os, signal, sys, threading
sys.path.insert(0, {tests!r})
from test_slurm import SETTINGS, dense_task, slurm, slurm_config
executor = slurm.SlurmExecutor(slurm_config({shared!r}, "train.dense_epochs=500").run, SETTINGS,
                               cancel=threading.Event())
executor.submit([dense_task("train.dense_epochs=500")])
executor.wait(lambda message: None, 0.1)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_the_jobs_of_a_driver_that_died_are_scancelled_by_the_next_one(
    tmp_path: Path, real_slurm: SlurmCluster, monkeypatch,
) -> None:
    """A driver killed without clean-up leaves its job in the queue; the next driver on
    the same folder scancels it when it submits, and says so: it would only duplicate
    the job the new driver trains again from the store's checkpoints."""
    shared = tmp_path / "shared"
    monkeypatch.setenv("SLURM_CONF", str(real_slurm.conf))
    script = _DYING_DRIVER.format(tests=str(Path(__file__).parent), shared=str(shared))
    first = subprocess.run([sys.executable, "-c", script], env=os.environ, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr
    (old,) = shared.iterdir()
    (orphan,) = (old / "jobs.txt").read_text().split()
    assert real_slurm.run("squeue", "-h", "-o", "%j", "-j", orphan).split() == ["lotto"]  # pending or running
    executor = slurm.SlurmExecutor(slurm_config(shared).run, SETTINGS, cancel=threading.Event())
    try:
        executor.submit([dense_task()])
        executor.wait(lambda message: None, 0.1)
        (note,) = executor.notes()
    finally:
        executor.close()
    pid = json.loads((old / "driver").read_text())["pid"]
    assert note == (f"scancelled 1 Slurm task (job {orphan}) left by an earlier driver that is gone (pid {pid} "
                    f"on {socket.gethostname()} ended; {old}): this run trains their jobs again, from the store's "
                    "checkpoints")
    state = real_slurm.run("squeue", "-h", "-t", "all", "-o", "%T", "-j", orphan).strip()
    assert state in ("CANCELLED", "COMPLETING"), state
    assert (old / "ended").exists()


@pytest.mark.slow
def test_the_test_cluster_kills_what_it_started_and_nothing_else(tmp_path: Path) -> None:
    """The test process dies without cleaning up: the daemons get SIGTERM from the
    kernel and the watchdog kills the job still running; a process that merely has
    the cluster's SLURM_CONF in its environment lives on."""
    root = tmp_path / "cluster"
    pid_file = tmp_path / "job.pid"
    script = f"""
import contextlib, os, subprocess, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from slurm_cluster import ClusterUnavailable, single_node_slurm
stack = contextlib.ExitStack()
try:
    cluster = stack.enter_context(single_node_slurm({str(root)!r}))
except ClusterUnavailable as err:
    print("unavailable:", err, flush=True)
    sys.exit(0)
with stack:
    cluster.run("sbatch", "-o", {str(tmp_path / "job.out")!r}, "--wrap", "echo $$ > {pid_file}; exec sleep 300")
    while not os.path.exists({str(pid_file)!r}):
        time.sleep(0.1)
    print("ready", flush=True)
    time.sleep(300)
"""
    bystander = subprocess.Popen(["sleep", "300"], env={**os.environ, "SLURM_CONF": str(root / "slurm.conf")})
    try:
        test = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            line = test.stdout.readline().strip()
            if line.startswith("unavailable:"):
                pytest.skip(f"a real slurmctld/slurmd could not start here: {line.removeprefix('unavailable: ')}")
            assert line == "ready"
        finally:
            test.kill()
            test.wait()
        job = int(pid_file.read_text())
        deadline = time.monotonic() + 15
        while Path(f"/proc/{job}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{job}").exists(), "the job's process outlived its cluster"
        assert bystander.poll() is None, "the sweep killed a process the cluster did not start"
    finally:
        bystander.kill()
        bystander.wait()
