"""Where a number came from: what a reader needs to trust (or redo) a result.

Two records, both plain JSON-able dicts, neither ever part of a job key or an
experiment identity (they describe how a run was made, not what it computes):

- :func:`run_provenance`, per run (``RunResult.provenance``): the numerics-changing
  settings of ``numerics`` (device, precision, threads) plus the device's name, the
  torch, CUDA, cuDNN, Python and lotto-tui versions, determinism and TF32.
- :func:`experiment_provenance`, per grid invocation that runs or adopts jobs of an
  experiment (``Store.provenance``): when, the command line, versions, platform, the
  project's git commit when it runs from a clone, and the SHA-256 of every dataset
  file the dataset's loader reads. No host name or user name is recorded.

Collecting never fails a grid: a field that cannot be found is None. Importing this
module does not import torch.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    import torch

    from .config import DataConfig, ExperimentConfig
    from .devices import Execution, FastPath

_T = TypeVar("_T")

#: keys of a run's provenance that change its numbers (as ``numerics``), and the rest
RUN_KEYS = ("device", "precision", "threads", "device_name", "torch", "cuda", "cudnn", "python",
            "lotto_tui", "deterministic", "tf32")


def _safe(collect: Callable[[], _T]) -> _T | None:
    """``collect()``, or None when it raises anything (provenance never fails a grid)."""
    try:
        return collect()
    except Exception:  # noqa: BLE001 - any failure to collect a field gives None
        return None


# ---------------------------------------------------------------------- versions


@functools.lru_cache(maxsize=1)
def lotto_version() -> str:
    """The installed lotto-tui's version (package metadata), else the engine's own."""
    from importlib import metadata

    try:
        return metadata.version("lotto-tui")
    except Exception:  # noqa: BLE001 - not installed (a source checkout on PYTHONPATH)
        try:
            from . import __version__

            return __version__
        except Exception:  # noqa: BLE001
            return "unknown"


def _torch_version() -> str | None:
    import torch

    return str(torch.__version__)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def device_label(device: torch.device | str) -> str:
    """How ``numerics`` names a device: ``cpu``, ``cuda:0 (NVIDIA H200)``..."""
    import torch

    device = torch.device(device)
    name = str(device)
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    return name


def _device_name(device: torch.device) -> str | None:
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return f"Apple MPS ({cpu_name() or platform.machine()})"
    return cpu_name()


# ---------------------------------------------------------------------- per run


def run_provenance(
    device: torch.device | str, precision: str, threads: int, *, fast: FastPath | None = None
) -> dict[str, object]:
    """A run's provenance: ``device``, ``precision`` and ``threads`` exactly as its
    ``numerics`` holds them, plus ``device_name``, ``torch``, ``cuda`` and ``cudnn``
    (None off CUDA), ``python``, ``lotto_tui``, ``deterministic`` (torch's
    deterministic algorithms were on) and ``tf32`` (on CUDA: TF32 allowed in matmuls
    or convolutions; None elsewhere). With ``fast``, also the fast path's
    ``channels_last``, ``compile`` and ``cuda_graphs``. A field that cannot be found
    is None."""
    import torch

    dev = _safe(lambda: torch.device(device))
    on_cuda = dev is not None and dev.type == "cuda"
    out: dict[str, object] = {
        "device": _safe(lambda: device_label(dev)) or str(device),
        "precision": precision,
        "threads": threads,
        "device_name": None if dev is None else _safe(lambda: _device_name(dev)),
        "torch": _safe(_torch_version),
        "cuda": _safe(lambda: torch.version.cuda) if on_cuda else None,
        "cudnn": _safe(lambda: torch.backends.cudnn.version()) if on_cuda else None,
        "python": platform.python_version(),
        "lotto_tui": _safe(lotto_version),
        "deterministic": _safe(lambda: bool(torch.are_deterministic_algorithms_enabled())),
        "tf32": _safe(lambda: bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32))
        if on_cuda else None,
    }
    if fast is not None:
        out.update(channels_last=fast.channels_last, compile=fast.compile, cuda_graphs=fast.cuda_graphs)
    return out


# ---------------------------------------------------------------------- per experiment


def experiment_provenance(
    config: ExperimentConfig,
    *,
    argv: Sequence[str] | None = None,
    execution: Execution | None = None,
) -> dict[str, object]:
    """One grid invocation's provenance: ``recorded_at`` (UTC, ISO 8601), ``command``
    (``argv``, default :data:`sys.argv`, shell-quoted, the program by its base name),
    ``lotto_tui``, ``torch``, ``python``, ``platform``, ``git_commit`` and
    ``git_dirty`` (see :func:`git_commit`, :func:`git_dirty`), ``dataset``,
    ``data_files`` (path -> SHA-256 of each file the dataset's loader reads, see
    :func:`data_files`) and ``device`` (as asked for: ``run.device``). With
    ``execution`` (what the runner resolved), also ``execution`` (its label, e.g.
    ``cpu fp32``), ``threads`` and ``device_names`` (each job slot's device name).
    A field that cannot be found is None; nothing here raises."""
    out: dict[str, object] = {
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": _safe(lambda: command_line(sys.argv if argv is None else argv)),
        "lotto_tui": _safe(lotto_version),
        "torch": _safe(_torch_version),
        "python": platform.python_version(),
        "platform": _safe(platform.platform),
        "git_commit": _safe(git_commit),
        "git_dirty": _safe(git_dirty),
        "dataset": _safe(lambda: config.data.dataset),
        "data_files": _safe(lambda: data_files(config.data)),
        "device": _safe(lambda: config.run.device),
    }
    if execution is not None:
        out["execution"] = _safe(lambda: execution.label)
        out["threads"] = _safe(lambda: execution.threads)
        out["device_names"] = _safe(
            lambda: {str(d): _device_name(d) for d in dict.fromkeys(execution.slots)}
        )
    return out


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line, the program (``argv[0]``) by its base name."""
    args = [str(a) for a in argv]
    if args:
        args[0] = os.path.basename(args[0]) or args[0]
    return shlex.join(args)


# ---------------------------------------------------------------------- git


def _git_folder(start: Path | None) -> tuple[Path, Path] | None:
    """(work tree root, git dir) of the clone that holds ``start`` (default: this
    package's source), or None. A package installed into site-packages is never
    taken for a clone, even when its environment lives inside one."""
    here = Path(start if start is not None else __file__).resolve()
    for folder in [here, *here.parents]:
        if folder.name in ("site-packages", "dist-packages"):
            return None
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return folder, dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                gitdir = Path(text.removeprefix("gitdir:").strip())
                return folder, (gitdir if gitdir.is_absolute() else (folder / gitdir)).resolve()
            return None
    return None


def _resolve_ref(gitdir: Path, ref: str) -> str | None:
    """The commit a ref names: a loose ref file, else packed-refs (in the git dir or,
    for a worktree, its common dir)."""
    common = gitdir
    commondir = gitdir / "commondir"
    if commondir.is_file():
        path = Path(commondir.read_text(encoding="utf-8").strip())
        common = (path if path.is_absolute() else gitdir / path).resolve()
    for base in dict.fromkeys((gitdir, common)):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text(encoding="utf-8").strip()
            if value.startswith("ref:"):
                return _resolve_ref(gitdir, value.removeprefix("ref:").strip())
            return value or None
    for base in dict.fromkeys((gitdir, common)):
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                if line and line[0] not in "#^":
                    sha, _, name = line.partition(" ")
                    if name.strip() == ref:
                        return sha.strip()
    return None


def git_commit(start: Path | None = None) -> str | None:
    """The commit checked out in the git clone holding ``start`` (default: this
    package's source, so the project's commit when lotto-tui runs from a clone), read
    from ``.git`` without running git; None when not in a clone (e.g. installed from a
    wheel) or when it cannot be read."""
    try:
        found = _git_folder(start)
        if found is None:
            return None
        _, gitdir = found
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref:"):
            return _resolve_ref(gitdir, head.removeprefix("ref:").strip())
        return head or None  # a detached HEAD holds the commit itself
    except (OSError, ValueError):
        return None


def git_dirty(start: Path | None = None, *, timeout: float = 5.0) -> bool | None:
    """Whether tracked files of the clone holding ``start`` differ from its commit
    (``git status --porcelain --untracked-files=no``; untracked files, like a results
    store inside the clone, do not count). None when not in a clone, when git is not
    installed, or when it fails or takes longer than ``timeout`` seconds."""
    found = _safe(lambda: _git_folder(start))
    git = shutil.which("git")
    if found is None or git is None:
        return None
    try:
        proc = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"], cwd=found[0], capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


# ---------------------------------------------------------------------- dataset files

_sums: dict[tuple[str, int, int], str] = {}
_sums_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, remembered in this process by (path, size, mtime): a
    file that did not change is read once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _sums_lock:
        if key in _sums:
            return _sums[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _sums_lock:
        _sums[key] = value
    return value


def dataset_paths(cfg: DataConfig) -> dict[str, Path]:
    """The files the loader of ``cfg.dataset`` reads, by a name relative to where it
    finds them (``data.root`` for downloaded datasets; the installed package for
    scikit-learn's bundled digits). Nothing is downloaded: files not there yet give
    an empty dict."""
    from .errors import DataError

    root = Path(cfg.root).expanduser()
    name = cfg.dataset
    try:
        if name == "digits":
            from importlib import resources

            from sklearn.datasets import _base

            module = getattr(_base, "DATA_MODULE", "sklearn.datasets.data")
            path = Path(str(resources.files(module).joinpath("digits.csv.gz")))
            return {f"{module.replace('.', '/')}/digits.csv.gz": path}
        if name in ("mnist", "fashion-mnist"):
            from .data.idx import SOURCES, find_or_fetch_idx

            found = find_or_fetch_idx(SOURCES[name], root, download=False)
            return {_relative(p, root): p for p in found.values()}
        if name == "cifar10":
            from .data.cifar import TEST_BATCH, TRAIN_BATCHES, find_or_fetch_cifar10

            folder = find_or_fetch_cifar10(root, download=False)
            return {_relative(folder / f, root): folder / f for f in (*TRAIN_BATCHES, TEST_BATCH)}
    except DataError:
        return {}
    return {}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def data_files(cfg: DataConfig) -> dict[str, str | None]:
    """Name -> SHA-256 of each file :func:`dataset_paths` names (None for a file that
    cannot be read)."""
    return {name: _safe(lambda p=path: sha256_file(p)) for name, path in sorted(dataset_paths(cfg).items())}

