"""What every remote executor stands on, checked without a cluster: a worker runs a
task in its own process and reports like the local executor; a job whose worker
died runs again from its last checkpoint with the same numbers; remote settings
resolve without looking at this machine's devices; the engine imports without Ray
or submitit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import astuple

import pytest
import torch

from conftest import tiny_config
from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import load_dataset
from lotto_engine.events import Notice
from lotto_engine.executors import (
    Attempts, Checkpointed, EpochDone, Finished, LocalExecutor, Retrying, Started, Task, WorkerSettings,
)
from lotto_engine.executors.worker import PolledFlag, run_task
from lotto_engine.plan import build_plan
from lotto_engine.protocol import JobSpec
from lotto_engine.runner import Runner, grid
from lotto_engine.store import Store


def numbers(curve: list) -> list[tuple]:
    """A curve without its wall times."""
    return [astuple(m)[:6] for m in curve]


def _dense_task(*extra: str) -> Task:
    config = tiny_config(*extra)
    job = next(job for job in build_plan(config) if job.kind == "dense")
    return Task(JobSpec.of(job, config, devices.execution(config.run).fast))


def test_a_worker_runs_a_task_and_reports_like_the_local_executor() -> None:
    task = _dense_task("train.dense_epochs=2")
    messages: list[object] = []
    settings = WorkerSettings("cpu", threads=1, deterministic=True)
    finished = run_task(task, settings, messages.append, worker="test worker")
    assert finished.error is None and finished.output is not None
    assert finished.output.result.status == "done" and len(finished.output.result.curve) == 2
    start = messages[0]
    assert isinstance(start, Started)
    assert (start.worker, start.pid, start.host, start.device) == ("test worker", os.getpid(), socket.gethostname(), "cpu")
    assert [m.metrics.epoch for m in messages if isinstance(m, EpochDone)] == [1, 2]
    assert [m.checkpoint.epoch for m in messages if isinstance(m, Checkpointed)] == [1]
    assert finished.peak_memory["cpu"] > 0
    # the same job in the local executor gives the same numbers
    local: list[Finished] = []
    executor = LocalExecutor([torch.device("cpu")], lambda d: load_dataset(task.spec.data, d), threads=1,
                             cancel=threading.Event())
    executor.submit([task])
    executor.wait(lambda m: local.append(m) if isinstance(m, Finished) else None, 60)
    assert numbers(local[0].output.result.curve) == numbers(finished.output.result.curve)


def test_a_worker_turns_a_jobs_error_and_a_cancel_into_its_finished() -> None:
    settings = WorkerSettings("cpu", threads=1, deterministic=True)
    config = tiny_config()
    pruned = next(job for job in build_plan(config) if job.kind == "pruned")
    broken = run_task(Task(JobSpec.of(pruned, config, devices.FastPath())), settings, lambda m: None)
    assert broken.output is None and broken.error.startswith("ValueError: a pruned job needs its parent's tensors")
    polls: list[int] = []
    flag = PolledFlag(lambda: polls.append(1) or True, every=0.0)
    cancelled = run_task(_dense_task(), settings, lambda m: None, flag)
    assert cancelled.output is not None and cancelled.output.result.status == "cancelled" and polls
    if not torch.cuda.is_available():  # a GPU job on a worker without one: its error, not a crash
        gpu = run_task(_dense_task(), WorkerSettings("cuda", 1, True), lambda m: None)
        assert gpu.error == "RuntimeError: this worker was given no GPU (CUDA is not available here)"


def test_attempts_continue_from_the_last_checkpoint_then_give_up() -> None:
    task = _dense_task()
    attempts = Attempts(retries=1)
    first = run_task(task, WorkerSettings("cpu", 1, True), attempts.track)
    assert first.output is not None
    again = attempts.retry(task, "worker died")
    assert again is not None
    retried, message = again
    assert retried.resume is not None and retried.resume.epoch == 1
    assert message == Retrying(task.key, "worker died", 2, 2, 1)
    assert attempts.retry(task, "worker died again") is None  # one retry allowed, used
    attempts.forget(task.key)
    fresh = attempts.retry(task, "died before any checkpoint")
    assert fresh is not None and fresh[0].resume is None and fresh[1].resume_epoch == 0


class _DiesOnce(LocalExecutor):
    """The local executor, but the first job to finish its second epoch 'loses its
    worker' there: nothing more of that attempt arrives, and the job is submitted
    again from its last checkpoint (epoch 1), as a remote executor does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.attempts = Attempts(retries=1)
        self.tasks: dict[str, Task] = {}
        self.died: str | None = None

    def submit(self, group: list[Task]) -> None:
        self.tasks.update((task.key, task) for task in group)
        super().submit(group)

    def wait(self, on_message, timeout: float) -> None:  # type: ignore[no-untyped-def]
        dead: list[str] = []

        def relay(message: object) -> None:
            if dead:
                return  # the worker is gone: the rest of this attempt never arrives
            self.attempts.track(message)
            on_message(message)
            if self.died is None and isinstance(message, EpochDone) and message.metrics.epoch == 2:
                self.died = message.key
                dead.append(message.key)

        super().wait(relay, timeout)
        if dead:
            task, retrying = self.attempts.retry(self.tasks[dead[0]], "worker died: killed")
            on_message(retrying)
            super().submit([task])


def test_a_job_whose_worker_died_runs_again_from_its_checkpoint_with_the_same_numbers(tmp_path, monkeypatch) -> None:
    config = tiny_config("train.dense_epochs=3")
    with Store(tmp_path / "plain") as store:
        Runner(config, store).run()
        plain = {run.job_key: run for run in store.runs(1)}
        plain_curves = {key: store.curve(run.id) for key, run in plain.items()}
    made: list[_DiesOnce] = []
    monkeypatch.setattr(grid, "make_executor",
                        lambda run, *, settings, **kw: made.append(_DiesOnce(**kw)) or made[-1])
    events: list[object] = []
    kept: list[int] = []  # epochs in the store when the retry is announced

    def on_event(event: object) -> None:
        events.append(event)
        if isinstance(event, Notice) and "running it again" in event.message:
            kept.append(len(store.curve(next(r for r in store.runs(1) if r.job_key == made[0].died).id)))

    with Store(tmp_path / "retried") as store:
        summary = Runner(config, store, on_event=on_event).run()
        assert kept == [1]  # epoch 2 of the dead attempt is gone until it is trained again
        assert summary.counts == {"done": 2}
        runs = {run.job_key: run for run in store.runs(1)}
        died = made[0].died
        assert died is not None and len(store.curve(runs[died].id)) == 3
        for key, run in runs.items():
            assert run.attempt == 1 and run.test_acc == plain[key].test_acc
            assert numbers(store.curve(run.id)) == numbers(plain_curves[key])
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("worker died: killed; running it again from epoch 1 (attempt 2 of 2)" in n for n in notes), notes


def test_remote_settings_resolve_for_the_workers_not_this_machine() -> None:
    cpu = devices.execution(load_config(preset="demo", overrides=['run.executor="ray"', "run.cpus_per_job=2"]).run)
    assert (cpu.device.type, cpu.fast.precision, cpu.threads, cpu.where) == ("cpu", "fp32", 2, "ray: cpu per job")
    gpu = devices.execution(load_config(preset="demo", overrides=['run.executor="ray"', "run.gpus_per_job=0.25"]).run)
    # a GPU job gets the CUDA fast path even when this machine (the driver) has no GPU
    assert (gpu.device.type, gpu.fast.precision, gpu.fast.channels_last) == ("cuda", "bf16", True)
    assert gpu.slots == [torch.device("cpu")] and gpu.label == "ray: cuda per job bf16"


def test_remote_executors_settings_fail_in_one_line() -> None:
    from lotto_engine.errors import ConfigError

    for overrides, text in [
        (['run.executor="slurm"'], 'run.slurm_folder: required with run.executor = "slurm"'),
        (['run.executor="slurm"', 'run.slurm_folder="/x"', "run.gpus_per_job=0.5"], "whole GPUs"),
        (['run.executor="ray"', 'run.ray_address="not an address"'], "run.ray_address: must be auto, local"),
        (['run.executor="ray"', 'run.device="cuda:1"'], "the device its worker is given"),
        (['run.executor="ray"', "run.ray_gpus=1"], "run.ray_gpus: unknown key"),
        (['run.executor="ray"', "run.gpus_per_job=1.5"], "in fractions below 1, above that whole GPUs"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(preset="demo", overrides=overrides)
        assert text in str(err.value) and "\n" not in str(err.value)


def test_settings_the_chosen_executor_does_not_read_are_named_in_a_note() -> None:
    def notes(*overrides: str) -> list[str]:
        run = load_config(preset="demo", overrides=list(overrides)).run
        return [n for n in devices.execution(run).notes if "not read by" in n]

    assert notes("run.gpus_per_job=1", "run.slurm_time=5") == [
        "run.gpus_per_job, run.slurm_time: not read by run.executor = local, ignored"
    ]
    assert notes('run.executor="ray"', "run.slurm_time=5", "run.cpus_per_job=2") == [
        "run.slurm_time: not read by run.executor = ray, ignored"
    ]
    assert notes('run.executor="slurm"', 'run.slurm_folder="/x"', 'run.ray_address="local"') == [
        "run.ray_address: not read by run.executor = slurm, ignored"
    ]
    assert notes() == notes('run.executor="ray"', "run.gpus_per_job=0.5") == []


@pytest.mark.slow  # ~4 s: fresh interpreters import torch
def test_the_engine_imports_without_ray_or_submitit_and_a_worker_starts_without_the_compiler() -> None:
    """lotto_engine needs neither optional package; and setting up torch in a fresh
    process (each Ray or Slurm worker, each CLI start) does not import torch's compiler
    (about a second) while still turning deterministic kernels on, warn-only."""
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['submitit'] = None\n"
        "import lotto_engine.runner, lotto_engine.executors, lotto_engine.executors.worker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'submitit') and sys.modules[m]))\n"
        "import torch; from lotto_engine import devices; devices.configure(1, True)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
        "devices.compile_model(torch.nn.Linear(2, 2)); import torch._inductor.config as c; print(c.deterministic)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[]", "True True False", "True"]


def test_a_store_on_a_network_file_system_is_named_in_a_note(tmp_path, monkeypatch) -> None:
    from lotto_engine import files

    mounts = (
        "overlay / overlay rw 0 0\n"
        f"server:/export {tmp_path / 'shared'} nfs4 rw,relatime 0 0\n"
        f"/dev/sdb1 {tmp_path / 'shared' / 'local'} ext4 rw 0 0\n"
    )
    assert files.filesystem_type(tmp_path / "shared" / "runs" / "new", mounts) == "nfs4"  # need not exist yet
    assert files.on_network_filesystem(tmp_path / "shared" / "local" / "runs", mounts) is None  # deepest mount wins
    assert files.on_network_filesystem(tmp_path / "elsewhere", mounts) is None
    assert files.filesystem_type(tmp_path) is not None  # this machine's own table reads
    monkeypatch.setattr(grid, "on_network_filesystem", lambda path: "nfs4")
    events: list[object] = []
    with Store(tmp_path / "runs") as store:
        Runner(tiny_config(), store, on_event=events.append).run([])
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("is on a network file system (nfs4): SQLite's write-ahead log needs a local disk" in n for n in notes)
