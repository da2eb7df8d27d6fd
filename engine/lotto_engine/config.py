"""The experiment configuration: one typed pydantic model, loaded from TOML.

``ExperimentConfig`` has sections ``data``, ``model``, ``grid``, ``train``, ``prune``
and ``run``. Configs are built by merging, in order: the defaults, a preset, a TOML
file, then ``KEY=VALUE`` overrides (dotted keys, values parsed as TOML). Every
problem becomes one line naming its key (:class:`~lotto_engine.errors.ConfigError`).

Field descriptions double as the generated reference (:func:`render_toml`,
:func:`reference_markdown`), so the docs cannot drift from the code.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .activations import ACTIVATIONS
from .errors import ConfigError, first_control
from .scores import METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: sanity checks of Frankle et al. 2021, run as variants of every pruned method
VARIANTS = ("none", "shuffle", "reinit", "invert")
DATASETS = ("digits", "cifar10", "fashion-mnist", "mnist")
#: classes of each dataset (chance accuracy is 1/K), known without loading it
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "fashion-mnist": 10, "mnist": 10}
MODELS = ("shallow-cnn", "lenet-300-100")
# Always used with fullmatch: ``$`` would also match before a trailing newline, and
# ``\d`` would accept non-ASCII digits.
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
_REWIND_RE = re.compile(r"init|epoch:([0-9]+)")
#: host:port or ray://host:port (a hostname, IPv4 or [IPv6] and a port)
_ADDRESS_RE = re.compile(r"(ray://)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


#: Bump when a change to the engine changes results for the same inputs: it is part of
#: every experiment identity and job key, so old and new results never mix.
#: 2: exact-mode ties break in a seeded random order (was: flat index); epoch:K rewinding
#: continues the lr schedule and the data order from epoch K (was: from epoch 0).
ENGINE_VERSION = 2
MAX_SEED = 2**32 - 1
MAX_THREADS = 512
# Upper bounds that keep a typo (1e6 for 1e3, an extra zero) from running for days or
# asking for more memory than any machine has; each is far above any sensible value.
MAX_EPOCHS = 100_000
MAX_WIDTH = 1024
MAX_HIDDEN = 16_384
MAX_BATCH = 65_536
MAX_SCORE_SAMPLES = 100_000
MAX_CROP_PADDING = 64
# Float hyperparameters end up in float32 tensors (largest value 3.4e38): a value that
# cannot be converted fails every job ("value cannot be converted to type float without
# overflow", exit 1) instead of being refused here (exit 2). Within these bounds an
# absurd value at worst makes a run diverge, which is recorded as such.
#: learning rate. Adam's first step is lr / (1 - momentum) and momentum <= 1 - 1e-8, so
#: 1e30 keeps even that below 1e38. No sane run comes within 25 orders of magnitude
#: of it (SGD uses ~1e-3..1, Adam ~1e-5..1e-2); it is this high, and not 1e4, because
#: a huge lr (1e30) is the way to make a run diverge on purpose (the tests do).
MAX_LR = 1e30
#: L2 weight decay: sane values are 0..0.1; above 1 the decay alone outruns any
#: gradient, so 1e4 only stops typos and overflow (wd * weight, in float32).
MAX_WEIGHT_DECAY = 1e4
#: SGD momentum / Adam beta1: below 1 (at 1 nothing decays), and far enough below it
#: that Adam's 1 / (1 - beta1) bias correction stays within 1e8 (see MAX_LR); sane
#: values are 0.9..0.999.
MAX_MOMENTUM = 1 - 1e-8


def _plain_text(value: str) -> str:
    """Reject control characters (NUL, newline, ESC...) in a path or name: they cannot
    be opened, or would break a line or drive the terminal wherever it is printed."""
    bad = first_control(value)
    if bad is not None:
        raise ValueError(f"must not contain control characters, found {bad}")
    return value


def _path_text(value: str) -> str:
    """A path must name something: an empty one (say, an unset shell variable) would
    silently mean the working directory."""
    if not value.strip():
        raise ValueError("must name a folder, got an empty path")
    return _plain_text(value)


#: A name: any text without control characters.
PlainText = Annotated[str, AfterValidator(_plain_text)]
#: A path: non-empty text without control characters.
PathText = Annotated[str, AfterValidator(_path_text)]
#: A path that may be left empty (unset); when given, a path as above.
OptionalPath = Annotated[str, AfterValidator(lambda v: v if v == "" else _path_text(v))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Which images, how they are split, and how they are augmented."""

    dataset: Literal["digits", "cifar10", "fashion-mnist", "mnist"] = Field(
        "digits", description="digits (bundled, offline) | cifar10 | fashion-mnist | mnist"
    )
    root: PathText = Field("data", description="folder holding (or receiving) downloaded datasets")
    download: bool = Field(True, description="download a missing dataset (checksums verified)")
    subset: int = Field(
        0, ge=0, le=2**40, description="train on a stratified subset of this many images (0 = all)"
    )
    val_size: float = Field(
        0.1,
        gt=0,
        le=2**40,
        description="validation images carved from the training set: a fraction < 1 or a count",
    )
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the validation split and the subset")
    augment: bool = Field(False, description="random crop (with padding) and horizontal flip")
    crop_padding: int = Field(
        4, ge=0, le=MAX_CROP_PADDING, description="padding of the random crop, in pixels"
    )

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError(f"a count must be a whole number, got {v}")
        return v


class ModelConfig(_Section):
    """The network: architecture, width and initialisation."""

    name: Literal["shallow-cnn", "lenet-300-100"] = Field(
        "shallow-cnn", description="shallow-cnn | lenet-300-100"
    )
    width: int = Field(32, ge=1, le=MAX_WIDTH, description="shallow-cnn: channels of the first conv block")
    hidden: int = Field(
        256, ge=1, le=MAX_HIDDEN, description="shallow-cnn: units of the hidden linear layer"
    )
    init: Literal["kaiming_normal", "xavier_normal", "torch_default"] = Field(
        "kaiming_normal",
        description="kaiming_normal | xavier_normal (gain of the activation) | torch_default",
    )


class GridConfig(_Section):
    """The grid of runs: every activation x method x sparsity x seed."""

    activations: list[str] = Field(
        ["relu", "tanh", "sigmoid"], description=f"any of: {', '.join(ACTIVATIONS.names())}"
    )
    methods: list[str] = Field(
        ["magnitude", "grasp"], description=f"any of: {', '.join(METHODS.names())}"
    )
    sparsities: list[float] = Field(
        [0.5, 0.8, 0.9], description="fractions of prunable weights removed, each in (0, 1)"
    )
    seeds: list[int] = Field([0], description="one dense net and its pruned runs per seed (0 to 2^32-1)")
    variants: list[str] = Field(
        ["none"],
        description=(
            "sanity checks run for every pruned method, any of: none (the method itself) | "
            "shuffle (each layer's mask permuted) | reinit (the mask on freshly drawn weights) | "
            "invert (the mask of the inverted score)"
        ),
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must list at least one variant (\"none\" is the method itself)")
        unknown = [name for name in v if name not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant {unknown[0]!r} (choose from {', '.join(VARIANTS)})")
        _no_duplicates(v)
        return v

    @field_validator("activations")
    @classmethod
    def _activations(cls, v: list[str]) -> list[str]:
        return _names(v, ACTIVATIONS, "activation")

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        return _names(v, METHODS, "method")

    @field_validator("sparsities", mode="before")
    @classmethod
    def _sparsities_numbers(cls, v: Any) -> Any:
        # TOML writes 1 for 1.0; accept ints here so the range check below can speak.
        if isinstance(v, list):
            return [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one sparsity")
        bad = [s for s in v if not 0.0 < s < 1.0]
        if bad:
            raise ValueError(f"each sparsity must be in (0, 1), got {', '.join(map(str, bad))}")
        _no_duplicates(v)
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must list at least one seed")
        if any(not 0 <= s <= MAX_SEED for s in v):
            raise ValueError(f"each seed must be in 0..{MAX_SEED}")
        _no_duplicates(v)
        return v


class TrainConfig(_Section):
    """How the dense net and the pruned nets are trained."""

    dense_epochs: int = Field(50, ge=1, le=MAX_EPOCHS, description="epochs of dense training")
    pruned_epochs: int = Field(
        20, ge=1, le=MAX_EPOCHS, description="epochs of retraining each pruned net"
    )
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd | adam")
    lr: float = Field(0.01, gt=0, le=MAX_LR, description="learning rate")
    momentum: float = Field(0.9, ge=0, le=MAX_MOMENTUM, description="SGD momentum (adam: beta1)")
    weight_decay: float = Field(5e-4, ge=0, le=MAX_WEIGHT_DECAY, description="L2 weight decay")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="training batch size")
    eval_batch_size: int = Field(
        1024, ge=1, le=MAX_BATCH, description="batch size for validation and test"
    )
    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "constant", description="constant | cosine (to 0 over the run) | step"
    )
    lr_step_epochs: int = Field(
        10, ge=1, le=MAX_EPOCHS, description="step schedule: epochs between decays"
    )
    # lr * lr_gamma**k never grows, so the step schedule stays within MAX_LR
    lr_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")


class PruneConfig(_Section):
    """How masks are scored, cut and applied."""

    scope: Literal["global", "layerwise"] = Field(
        "global", description="global (one ranking over all layers) | layerwise"
    )
    tie_mode: Literal["exact", "threshold"] = Field(
        "exact",
        description="exact (remove exactly round(s*N)) | threshold (keep score >= tau_k, ties kept)",
    )
    exclude_classifier: bool = Field(False, description="never prune the last linear layer")
    score_samples: int = Field(
        10,
        ge=1,
        le=MAX_SCORE_SAMPLES,
        description="grasp, grasp-hessian, snip: class-balanced training images per class for the gradient",
    )
    grasp_temperature: float = Field(
        200.0, gt=0, le=1e6, description="grasp-hessian: the logits are divided by this temperature"
    )
    rounds: int = Field(100, ge=1, le=10_000, description="synflow: pruning rounds (density d^(t/T) after round t)")
    fraction_per_level: float = Field(
        0.2, ge=0.01, lt=1, description="imp: fraction of the remaining weights each level removes"
    )
    rewind: str = Field(
        "init",
        description=(
            'where pruned runs start: "init" (theta0) or "epoch:K" (the dense weights after '
            "epoch K; the lr schedule and data order go on from epoch K)"
        ),
    )

    @field_validator("rewind")
    @classmethod
    def _rewind(cls, v: str) -> str:
        if not _REWIND_RE.fullmatch(v):
            raise ValueError(f'must be "init" or "epoch:K" with K >= 0, got {v!r}')
        return v

    @property
    def rewind_epoch(self) -> int | None:
        """K of ``epoch:K``; None for ``init``."""
        m = _REWIND_RE.fullmatch(self.rewind)
        return int(m.group(1)) if m and m.group(1) is not None else None


#: the run.* settings each cluster executor reads (local reads none of them)
_CLUSTER_SETTINGS: dict[str, set[str]] = {
    "ray": {"ray_address", "gpus_per_job", "cpus_per_job", "retries"},
    "slurm": {"gpus_per_job", "cpus_per_job", "retries", "slurm_partition", "slurm_time", "slurm_array_parallelism",
              "slurm_folder"},
}


class RunConfig(_Section):
    """Where and how the grid runs, and with which numerics.

    device, precision, threads, deterministic, channels_last, compile, cuda_graphs,
    lockstep and (on CPU, where jobs share the threads) parallel change the numbers: a rounding
    difference in the first steps compounds through training (2 threads vs 1 moved a
    dense ReLU net's test accuracy by 3 points). Each run records the settings it ran
    with. Only the resolved precision (fp32 or bf16) is part of the job key, so a grid
    resumes on another device or thread count, with that device's numbers for the jobs
    still to run. name and store change nothing.
    """

    name: PlainText = Field(
        "",
        description=(
            "a label for this experiment in the store; empty: named from the preset or file "
            "and what differs from it (demo, lr=0.1), see lotto_engine.naming"
        ),
    )
    device: str = Field(
        "auto", description="auto | cpu | cuda | cuda:N | mps; changes the numbers (recorded per run)"
    )
    threads: int = Field(
        0,
        ge=0,
        le=MAX_THREADS,
        description=(
            "CPU threads for torch (0 = the cores this process may use; more is capped to them, "
            "with a note); changes the numbers (recorded per run)"
        ),
    )
    deterministic: bool = Field(
        True,
        description=(
            "deterministic kernels (same config and run settings = same numbers); "
            "false lets CUDA kernels round differently on every run"
        ),
    )
    store: PathText = Field("lotto-runs", description="results folder (SQLite + artifacts)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description=(
            "auto (bf16 autocast on CUDA, fp32 elsewhere) | fp32 | bf16; changes the numbers "
            "(part of the job key: bf16 and fp32 results never mix)"
        ),
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto",
        description="NHWC memory format for conv nets: auto (on for CUDA) | on | off; changes float rounding",
    )
    compile: bool = Field(
        False, description="torch.compile the model (pays off on long GPU runs); changes float rounding"
    )
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "replay each SGD step as one CUDA graph: auto (on for CUDA) | on | off; "
            "changes float rounding (the graph step's update rounds once more)"
        ),
    )
    lockstep: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "train sibling nets (the pruned runs of one dense net) together in one vmapped step, each "
            "still its own job: auto (on CUDA when a short probe finds it faster, with a note; off "
            "elsewhere) | on | off; local executor only; changes float rounding"
        ),
    )
    parallel: int = Field(
        0, ge=0, le=64,
        description=(
            "jobs trained at once: 0 = auto (one per visible GPU, 1 on CPU; ray: what the "
            "cluster's CPUs or GPUs hold; slurm: run.slurm_array_parallelism); on CPU, locally, "
            "they share the threads, which changes the numbers"
        ),
    )

    executor: Literal["local", "ray", "slurm"] = Field(
        "local",
        description=(
            "where jobs run: local (this process: one job at a time, or run.parallel slots "
            "over GPUs or CPU threads) | ray (tasks on a Ray cluster, run.ray_*) | slurm "
            "(job arrays through submitit, run.slurm_*); this process stays the driver and "
            "the only writer of the store; a job's numbers are those of local at the same threads "
            "per job (ray, slurm: run.threads, else run.cpus_per_job)"
        ),
    )
    ray_address: str = Field(
        "auto",
        description=(
            "ray: auto (join the running cluster: RAY_ADDRESS or the one `ray start` made "
            "here) | local (start a private cluster on this machine) | host:port | ray://host:port"
        ),
    )
    gpus_per_job: float = Field(
        0, ge=0, le=64,
        description=(
            "ray and slurm: GPUs each job reserves (0 = CPU jobs); ray takes fractions "
            "(0.25: four jobs share a GPU), slurm whole GPUs per task"
        ),
    )
    cpus_per_job: int = Field(
        1, ge=1, le=MAX_THREADS,
        description="ray and slurm: CPUs each job reserves; its torch threads are run.threads, or this when 0",
    )
    retries: int = Field(
        2, ge=0, le=100,
        description=(
            "ray and slurm: times a job whose worker or node died is run again, from its last "
            "epoch checkpoint, before it is recorded failed with the reason"
        ),
    )
    slurm_partition: PlainText = Field("", description="slurm: the partition (empty: the cluster's default)")
    slurm_time: int = Field(
        60, ge=1, le=60 * 24 * 365,
        description=(
            "slurm: minutes each task may run; a task that runs out of time (or is preempted) "
            "is requeued and continues from its last epoch checkpoint"
        ),
    )
    slurm_array_parallelism: int = Field(
        16, ge=1, le=100_000, description="slurm: tasks of one job array running at once"
    )
    slurm_folder: OptionalPath = Field(
        "",
        description=(
            "slurm: a folder this machine and every node share (job files, events, checkpoints); "
            "required with run.executor = \"slurm\""
        ),
    )

    def unused_settings(self) -> list[str]:
        """The ``run.*`` settings given (not at their defaults) that the chosen
        executor does not read: ``ray`` and ``slurm`` ones under ``local``, and each
        cluster's own under the other."""
        used = _CLUSTER_SETTINGS.get(self.executor, set())
        cluster = set().union(*_CLUSTER_SETTINGS.values())
        fields = type(self).model_fields
        return [f"run.{name}" for name in fields
                if name in cluster - used and getattr(self, name) != fields[name].default]

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v: str) -> str:
        if v in ("auto", "local") or _ADDRESS_RE.fullmatch(v):
            return v
        raise ValueError(f"must be auto, local, host:port or ray://host:port, got {v!r}")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE_RE.fullmatch(v):
            raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v


class ExperimentConfig(_Section):
    """A whole experiment: data, model, grid, training, pruning and run settings."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    grid: GridConfig = GridConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _rewind_in_range(self) -> ExperimentConfig:
        k = self.prune.rewind_epoch
        if k is not None and k > self.train.dense_epochs:
            raise ValueError(
                f"prune.rewind: epoch {k} is past train.dense_epochs ({self.train.dense_epochs})"
            )
        return self

    @model_validator(mode="after")
    def _executor_settings(self) -> ExperimentConfig:
        run = self.run
        if run.executor == "slurm":
            if not run.slurm_folder:
                raise ValueError(
                    'run.slurm_folder: required with run.executor = "slurm" (a folder this machine '
                    "and every node share)"
                )
            if run.gpus_per_job != int(run.gpus_per_job):
                raise ValueError(
                    f"run.gpus_per_job: slurm gives whole GPUs per task, got {run.gpus_per_job:g}"
                )
        if run.executor == "ray" and run.gpus_per_job > 1 and run.gpus_per_job != int(run.gpus_per_job):
            raise ValueError(
                f"run.gpus_per_job: ray shares a GPU in fractions below 1, above that whole GPUs, "
                f"got {run.gpus_per_job:g}"
            )
        if run.executor != "local" and run.device not in ("auto", "cpu", "cuda"):
            raise ValueError(
                f"run.device: with run.executor = {run.executor!r} a job gets the device its worker is "
                f"given (auto, cpu or cuda), got {run.device!r}"
            )
        if run.executor != "local" and run.device == "cpu" and run.gpus_per_job:
            raise ValueError(f"run.device: cpu, but run.gpus_per_job = {run.gpus_per_job:g} reserves GPUs")
        return self

    def identity(self, precision: str = "fp32") -> str:
        """A hash of what an experiment computes: every section but ``run``, not where
        the data lives (``data.root``, ``data.download``), plus the resolved training
        ``precision`` (fp32 or bf16), the one execution setting that changes results
        by more than float rounding."""
        science = self.model_dump(mode="json", exclude={"run": True, "data": {"root", "download"}})
        if precision != "fp32":
            science["precision"] = precision
        if ENGINE_VERSION != 1:
            science["engine"] = ENGINE_VERSION
        return _hash(science)


def _names(v: list[str], registry: Any, what: str) -> list[str]:
    if not v:
        raise ValueError(f"must list at least one {what}")
    unknown = [name for name in v if name not in registry]
    if unknown:
        raise ValueError("; ".join(registry.unknown(name) for name in unknown))
    _no_duplicates(v)
    return v


def _no_duplicates(v: list[Any]) -> None:
    seen: set[Any] = set()
    dups = [x for x in v if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"duplicate value {dups[0]!r}")


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- presets

#: The demo's training on digits (tuned on the 2-core reference machine), shared by
#: the presets on digits; load_config deep-copies a preset before merging into it.
_DIGITS_TRAIN: dict[str, Any] = {
    "dense_epochs": 12,
    "pruned_epochs": 8,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 64,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Offline, the write-up's full 3 x 2 x 3 grid on scikit-learn's digits (8x8 images).
    # Tuned on the 2-core reference machine: the dense ReLU net reaches >= 90% test
    # accuracy and the whole grid finishes in well under a minute.
    "demo": {
        "data": {"dataset": "digits"},
        "model": {"width": 16, "hidden": 128},
        "train": _DIGITS_TRAIN,
    },
    # What a reviewer asks next, offline: every pruning method (one-shot and imp), the
    # three sanity checks of Frankle et al. 2021 and 3 seeds (1053 jobs), with the demo's
    # training. LeNet-300-100, not the shallow CNN: on digits the CNN's sigmoid nets stay
    # at chance (12 and 24 epochs, lr 0.05 to 0.5, three inits, Adam: all measured), so
    # a third of the grid would compare nothing; LeNet trains all three activations.
    "reviewer": {
        "data": {"dataset": "digits"},
        "model": {"name": "lenet-300-100"},
        "grid": {
            "methods": ["magnitude", "grasp", "random", "snip", "grasp-hessian", "synflow", "magnitude-init", "imp"],
            "variants": ["none", "shuffle", "reinit", "invert"],
            "seeds": [0, 1, 2],
        },
        "train": _DIGITS_TRAIN,
    },
    # The write-up: CIFAR-10, ReLU/tanh/sigmoid x magnitude/GraSP x {0.5, 0.8, 0.9},
    # 50 dense and 20 pruned epochs. The write-up does not give its optimizer; these
    # are the defaults (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, batch 128).
    "seed-paper": {
        "data": {"dataset": "cifar10"},
        "train": {"dense_epochs": 50, "pruned_epochs": 20},
    },
}


# --------------------------------------------------------------------------- loading


def load_config(
    *,
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
    last: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Build a validated config: defaults < preset < TOML file < values < overrides < last.

    ``last`` holds what dedicated flags set (``--store``, ``--device``), as plain values.

    Raises :class:`ConfigError` with one line per problem.
    """
    merged: dict[str, Any] = {}
    problems: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError([f"--preset: unknown preset {preset!r} (choose from {', '.join(PRESETS)})"])
        merged = copy.deepcopy(PRESETS[preset])
    if file is not None:
        _deep_merge(merged, read_toml(file))
    if values:
        _deep_merge(merged, copy.deepcopy(dict(values)))
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        try:
            _set_dotted(merged, key, value)
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems)
    if last:
        # a flag never hides a bad value: `--set run=1 --store D` must still say run is
        # not a table, as it does without --store
        _deep_merge(merged, copy.deepcopy(dict(last)), keep_scalars=True)
    return validate(merged)


def validate(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain mapping; raise :class:`ConfigError` with one line per problem."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err)) from None


def format_errors(err: ValidationError) -> list[str]:
    """pydantic errors as ``key: problem`` lines (also used by the UI, next to fields)."""
    lines = []
    for e in err.errors():
        key = _dotted(e["loc"])
        kind = e["type"]
        msg = e["msg"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            if msg.startswith(f"{key}: "):
                msg = msg[len(key) + 2 :]
        elif kind == "model_type" or kind == "dict_type":
            msg = f"expected a table, got {_show(e.get('input'))}"
        elif kind in _BOUNDS and _huge_float(bound := (e.get("ctx") or {}).get(_BOUNDS[kind][0])):
            # pydantic writes a float bound such as 1e30 with all 31 digits
            msg = f"input should be {_BOUNDS[kind][1]} {bound:g}, got {_show(e.get('input'))}"
        else:
            msg = f"{msg[0].lower()}{msg[1:]}, got {_show(e.get('input'))}"
        lines.append(f"{key}: {msg}" if key else msg)
    return lines


_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "greater than or equal to"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "less than or equal to"),
}


def _huge_float(bound: Any) -> bool:
    return isinstance(bound, float) and abs(bound) >= 1e16


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a one-line ConfigError."""
    p = Path(path)
    bad = first_control(str(p))
    if bad is not None:
        raise ConfigError([f"--config: the path {str(p)!r} contains a control character ({bad})"])
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except RecursionError:
        raise ConfigError([f"--config: {p}: invalid TOML (nested too deeply)"]) from None
    except FileNotFoundError:
        raise ConfigError([f"--config: no such file {str(p)!r}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"--config: {str(p)!r} is a folder, not a TOML file"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"--config: {p}: invalid TOML ({err})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"--config: {p}: not a UTF-8 text file"]) from None
    except OSError as err:
        raise ConfigError([f"--config: cannot read {str(p)!r}: {err.strerror or err}"]) from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; bare words become strings."""
    if "=" not in item:
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE"])
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {item!r}: expected a dotted KEY such as train.lr"])
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except RecursionError:
        raise ConfigError([f"--set {key}: invalid TOML value (nested too deeply)"]) from None
    except tomllib.TOMLDecodeError as err:
        if not raw or raw[0] in "\"'[{":  # meant as TOML, but malformed
            fixed = _quoted_list(raw)
            if fixed is not None:
                raise ConfigError([
                    f"--set {key}: strings in lists need quotes; write {shlex.quote(f'{key}={fixed}')}"
                ]) from None
            raise ConfigError([f"--set {key}: invalid TOML value {raw!r} ({err})"]) from None
        value = raw  # a bare word: cifar10, cuda:0, /data/sets
    return key, value


def _quoted_list(raw: str) -> str | None:
    """``[tanh, relu]`` -> ``["tanh", "relu"]``: a flat list whose bare words become
    strings, when that makes it valid TOML; else None."""
    if not (raw.startswith("[") and raw.endswith("]")):
        return None
    items = [item.strip() for item in raw[1:-1].split(",")]
    if items and not items[-1]:
        items.pop()  # a trailing comma
    fixed = []
    for item in items:
        try:
            tomllib.loads(f"v = {item}")
            fixed.append(item)
        except tomllib.TOMLDecodeError:
            if not item or any(ch in item for ch in "\"'[]{}="):
                return None
            fixed.append(_toml_string(item))
    text = "[" + ", ".join(fixed) + "]"
    try:
        tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return None
    return text


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = target
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError([f"{'.'.join(parts[: i + 1])}: is a value, not a table"])
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any], *, keep_scalars: bool = False) -> None:
    """Merge ``extra`` into ``base``; with ``keep_scalars``, a table in ``extra`` leaves a
    non-table already in ``base`` in place (for validation to report)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, keep_scalars=keep_scalars)
        elif not (keep_scalars and isinstance(value, Mapping) and key in base):
            base[key] = value


# --------------------------------------------------------------------------- reference

SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "grid": GridConfig,
    "train": TrainConfig,
    "prune": PruneConfig,
    "run": RunConfig,
}


def render_toml(config: ExperimentConfig, *, header: str = "") -> str:
    """The complete config as commented TOML (every key, with its meaning and default)."""
    lines = ["# lotto-tui experiment configuration."]
    if header:
        lines.append(f"# {header}")
    lines.append("# Every key is shown; `# default: ...` marks values that differ from the default.")
    for section, model in SECTIONS.items():
        lines += ["", f"[{section}]"]
        lines += [f"# {line}".rstrip() for line in inspect.cleandoc(model.__doc__ or "").splitlines()]
        current = getattr(config, section)
        for name, field in model.model_fields.items():
            value = getattr(current, name)
            lines.append(f"# {field.description}")
            note = ""
            if value != field.default:
                note = f"  # default: {toml_value(field.default)}"
            lines.append(f"{name} = {toml_value(value)}{note}")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """A Markdown table of every key, its default and meaning (for the README)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{section}.{name}` | `{toml_value(field.default)}` | {meaning} |")
    return "\n".join(rows) + "\n"


def _toml_string(text: str) -> str:
    """A TOML basic string: escape quotes, backslashes and control characters only."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """Format one plain value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
