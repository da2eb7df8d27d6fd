"""Where training runs: device resolution, CPU threads and determinism."""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .config import RunConfig
from .errors import DeviceError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"run.device: {spec} asked for, but CUDA is not available here (use cpu or auto)")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"run.device: {spec} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if spec == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("run.device: mps asked for, but MPS is not available here (use cpu or auto)")
    return torch.device(spec)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def threads_for(run: RunConfig) -> int:
    """The CPU threads a grid uses: ``run.threads`` (0 = all available cores), never
    more than the available cores: oversubscribed threads only wait on each other
    (512 threads on 2 cores ran 30x slower)."""
    cores = available_cores()
    return min(run.threads, cores) if run.threads else cores


def _threads_note(run: RunConfig) -> tuple[str, ...]:
    cores = available_cores()
    if run.threads <= cores:
        return ()
    return (f"run.threads = {run.threads} but this process may use {cores} core(s): using {cores} threads",)


def configure(threads: int, deterministic: bool) -> int:
    """Set torch's CPU threads (0 = all cores this process may use; capped at those
    cores, see :func:`threads_for`), determinism, and full fp32 on CUDA.

    ``deterministic`` (``run.deterministic``, on by default) costs on CUDA: cuDNN may
    pick only deterministic convolution algorithms and never autotunes
    (``cudnn.benchmark`` stays off), and a few ops (scatter/index adds) take their
    deterministic kernels. Off, cuDNN autotunes on the first batches and a rerun may
    differ in the last bits. Deterministic mode's NaN-fill of new tensors is turned
    off either way (it guards against reads the engine never makes).

    torch lets cuDNN run fp32 convolutions as TF32 (10-bit mantissa) by default. Then
    "fp32" runs are not fp32: on an H200 the eager and the captured fp32 step drifted
    1.5% apart in validation loss after one epoch with TF32, and 8e-7 without
    (``bench/cuda_rounding.py``). fp32 means fp32 here; bf16 is the fast precision.

    Returns the thread count in force.
    """
    cores = available_cores()
    n = min(threads, cores) if threads else cores
    torch.set_num_threads(n)
    if deterministic:
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_deterministic(deterministic)
    # Deterministic mode also fills every torch.empty with NaN (and integers with
    # their max) so that reading uninitialised memory shows; the engine never does,
    # and on CUDA the fill is one more kernel per allocation. Off.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return n


def set_deterministic(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` without importing
    torch's compiler: that call imports ``torch._inductor`` to set its own copy of the
    flag, 0.9 s of every CLI start and every Ray or Slurm worker's first job (2 s under
    load, measured with ``python -X importtime``). Only ``torch.compile`` reads that
    copy, so :func:`compile_model` sets it there."""
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)


def compile_model(model: torch.nn.Module) -> Callable[..., Any]:
    """``torch.compile(model)`` under the determinism in force (:func:`set_deterministic`)."""
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = torch.are_deterministic_algorithms_enabled()
    return torch.compile(model)


@dataclass(frozen=True)
class FastPath:
    """Execution options of the training loop, resolved for one device.

    The defaults are the plain path (``FastPath()``): fp32, contiguous layout, no
    compilation, no graphs, what ``auto`` resolves to on a CPU."""

    precision: str = "fp32"  # "fp32" | "bf16"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False


def fast_path(
    precision: str, channels_last: str, compile: bool, device: torch.device, cuda_graphs: str = "off"
) -> FastPath:
    """Resolve the ``auto`` settings of ``run.*`` for ``device``.

    CUDA graphs are off under ``compile`` (which captures on its own terms) and
    asking for them off CUDA is an error.
    """
    on_cuda = device.type == "cuda"
    if cuda_graphs == "on" and not on_cuda:
        raise DeviceError(f"run.cuda_graphs: on needs a CUDA device, but this run uses {device} (use auto or off)")
    return FastPath(
        precision=("bf16" if on_cuda else "fp32") if precision == "auto" else precision,
        channels_last=on_cuda if channels_last == "auto" else channels_last == "on",
        compile=compile,
        cuda_graphs=(on_cuda and not compile) if cuda_graphs == "auto" else cuda_graphs == "on",
    )


def lockstep_mode(setting: str, device: torch.device) -> str:
    """``run.lockstep`` for the local executor on ``device``: ``on`` (siblings that can
    share batches train in one step, :mod:`lotto_engine.lockstep`), ``off``, or
    ``probe``: ``auto`` on CUDA, where a short probe on the first group of siblings
    decides, per architecture and device (:class:`lotto_engine.lockstep.Choices`).
    ``auto`` is off elsewhere: on CPU one net already keeps the cores busy, and
    lockstep measured slower (0.64x)."""
    if setting == "auto":
        return "probe" if device.type == "cuda" else "off"
    if setting not in ("on", "off"):
        raise ValueError(f"run.lockstep: {setting!r} is not auto, on or off")
    return setting


def job_devices(spec: str, device: torch.device, parallel: int) -> list[torch.device]:
    """The device of each job slot: ``parallel`` slots (0 = auto).

    ``auto`` or ``cuda`` without an index spreads slots over every visible GPU (auto:
    one slot each); an explicit device (``cuda:N``, ``cpu``, ``mps``) holds every
    slot, and auto gives it one.
    """
    if device.type == "cuda" and spec in ("auto", "cuda"):
        gpus = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [gpus[i % len(gpus)] for i in range(parallel or len(gpus))]
    return [device] * (parallel or 1)


def describe_slots(slots: list[torch.device]) -> str:
    """``cpu``, ``cuda:0``, ``cpu (2 jobs at once)``, ``cuda:0, cuda:1``..."""
    names = list(dict.fromkeys(str(d) for d in slots))
    text = ", ".join(names)
    return text if len(slots) == len(names) else f"{text} ({len(slots)} jobs at once)"


@contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` the current CUDA device in this thread, with a stream of the
    thread's own (no-op elsewhere). Job slots that share a GPU then overlap instead
    of queueing on its default stream, and a slot's work never joins another slot's
    CUDA graph capture (work on the legacy default stream would)."""
    if device.type == "cuda":
        streams = _STREAMS.__dict__.setdefault("by_device", {})
        if device not in streams:  # one per thread and device: freed memory is reused on its stream only
            streams[device] = torch.cuda.Stream(device)
        with torch.cuda.device(device), torch.cuda.stream(streams[device]):
            yield
    else:
        yield


#: each thread's own CUDA stream per device (:func:`on_device`)
_STREAMS = threading.local()


def reset_peak_memory(slots: Iterable[torch.device]) -> None:
    """Start counting peak memory afresh on each CUDA device among ``slots``.

    Before the process's first CUDA allocation there is nothing to reset, and torch
    (2.11) refuses the call ("Invalid device argument"): skip it then."""
    if not torch.cuda.is_initialized():
        return
    for device in dict.fromkeys(d for d in slots if d.type == "cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(slots: Iterable[torch.device]) -> dict[str, int]:
    """Peak bytes per device: CUDA's max allocated since :func:`reset_peak_memory`, and
    for ``cpu`` the process's peak resident set (Linux; the whole process, libraries
    included)."""
    out: dict[str, int] = {}
    for device in dict.fromkeys(slots):
        if device.type == "cuda":
            out[str(device)] = int(torch.cuda.max_memory_allocated(device))
        elif device.type == "cpu":
            out["cpu"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    return out


@dataclass(frozen=True)
class Execution:
    """Where and how a config's jobs run, resolved once: its device, fast path, job
    slots and anything the user should be told about the resolution."""

    device: torch.device
    fast: FastPath
    slots: list[torch.device]
    notes: tuple[str, ...] = ()
    #: CPU threads for the whole grid (:func:`threads_for`); CPU job slots share them.
    #: With a remote executor: each job's threads on its worker
    threads: int = 1
    #: run.executor; with ``ray`` or ``slurm`` jobs run on workers of a cluster and
    #: ``slots`` holds this process's CPU only (where the driver checks saved tensors)
    executor: str = "local"

    @property
    def remote(self) -> bool:
        return self.executor != "local"

    @property
    def where(self) -> str:
        """Where jobs train: ``cpu``, ``cuda:0, cuda:1``, ``ray: cuda per job``..."""
        if self.remote:
            return f"{self.executor}: {self.device.type} per job"
        return describe_slots(self.slots)

    @property
    def label(self) -> str:
        """``cpu fp32``, ``cuda:0, cuda:1 bf16``, ``cpu (2 jobs at once) fp32``, ``ray: cpu per job fp32``..."""
        return f"{self.where} {self.fast.precision}"


def execution(run: RunConfig) -> Execution:
    """Resolve ``run.*`` (device, precision, layouts, graphs, parallel slots, threads).

    Raises :class:`DeviceError` (one line) for a device that does not exist or a
    setting it cannot honour; call it before creating anything on disk.

    With a remote executor (``ray``, ``slurm``) jobs train on the cluster's workers:
    on a GPU when ``run.gpus_per_job`` reserves one, else on their CPUs, whatever this
    machine has; the fast path is resolved for that device, and each job gets
    ``run.threads`` threads (0: ``run.cpus_per_job``).
    """
    unused = run.unused_settings()
    ignored = (f"{', '.join(unused)}: not read by run.executor = {run.executor}, ignored",) if unused else ()
    if run.executor != "local":
        device = torch.device("cuda" if run.gpus_per_job > 0 else "cpu")
        if run.device == "cuda" and device.type == "cpu":
            raise DeviceError(f"run.device: cuda, but run.gpus_per_job = 0 gives the {run.executor} jobs no GPU")
        fast = fast_path(run.precision, run.channels_last, run.compile, device, run.cuda_graphs)
        threads = run.threads or run.cpus_per_job
        notes: tuple[str, ...] = ignored
        if run.lockstep == "on":
            notes += (f"run.lockstep is for the local executor: on {run.executor} each job trains alone",)
        return Execution(device, fast, [torch.device("cpu")], notes, threads, run.executor)
    device = resolve_device(run.device)
    fast = fast_path(run.precision, run.channels_last, run.compile, device, run.cuda_graphs)
    slots = job_devices(run.device, device, run.parallel)
    notes = ignored + _threads_note(run)
    if run.compile and len(slots) > 1:  # torch.compile is not thread-safe
        notes += (f"run.compile trains one job at a time (run.parallel asked for {len(slots)} at once)",)
        slots = slots[:1]
    if run.compile and run.lockstep == "on":
        notes += ("run.lockstep does not combine with run.compile: each job trains alone",)
    elif run.lockstep == "on" and device.type == "cpu":
        notes += ("run.lockstep = on, on a CPU: siblings train in one step, which measured slower here than one "
                  "net at a time (bench/lockstep.py); auto leaves it off on CPU",)
    return Execution(device, fast, slots, notes, threads_for(run), run.executor)
