"""Where training runs: device resolution, CPU threads and determinism."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

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
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def configure(threads: int, deterministic: bool) -> int:
    """Set torch's CPU threads (0 = all cores this process may use) and determinism.

    Returns the thread count in force.
    """
    n = threads or available_cores()
    torch.set_num_threads(n)
    if deterministic:
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return n


@dataclass(frozen=True)
class FastPath:
    """Execution options of the training loop, resolved for one device."""

    precision: str  # "fp32" | "bf16"
    channels_last: bool
    compile: bool


def fast_path(precision: str, channels_last: str, compile: bool, device: torch.device) -> FastPath:
    """Resolve the ``auto`` settings of ``run.*`` for ``device``."""
    on_cuda = device.type == "cuda"
    return FastPath(
        precision=("bf16" if on_cuda else "fp32") if precision == "auto" else precision,
        channels_last=on_cuda if channels_last == "auto" else channels_last == "on",
        compile=compile,
    )
