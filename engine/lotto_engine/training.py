"""One training run as one chain: ``train(model, train, val, cfg, fast, loop)``.

- ``cfg`` (:class:`~lotto_engine.config.TrainConfig`) says what is trained: optimizer,
  learning rate and schedule, batch sizes.
- ``fast`` (:class:`~lotto_engine.devices.FastPath`) says how a step executes:
  precision, layout, compilation, CUDA graphs. ``FastPath()`` is the plain path.
- ``loop`` (:class:`LoopOptions`) says how the run loops: epochs, seed, mask,
  augmentation, snapshots, cancellation, callbacks, checkpoints and a resume point.

:func:`train` picks the step (:mod:`lotto_engine.step`): a
:class:`~lotto_engine.step.GraphedSgdStep` when CUDA graphs are asked for and cover
the setup, else an :class:`~lotto_engine.step.EagerStep`. Both implement the
:class:`~lotto_engine.step.TrainStep` protocol, the only thing the epoch loop knows.
Its pieces (:func:`begin`, :func:`make_step`, :func:`start_order`, :func:`keep_epoch`)
are public so that :mod:`lotto_engine.lockstep` keeps the same books for every net
of a group trained in one step.

The data already sits normalised on the training device (:mod:`lotto_engine.data`),
so a batch is an index slice of a seeded permutation. Loss and accuracy accumulate
on the device; an epoch's training and validation numbers are read in one host
sync at its end: none per step.

Checkpoints: after every finished epoch but the last, ``loop.on_checkpoint`` gets a
:class:`TrainState`, everything the run needs to go on as plain CPU data (weights,
the step's optimizer state, the data-order generator's state, the curve, and the
snapshots with their data orders so far). ``LoopOptions(resume=state)`` continues
from it, and the rest of the run is bit for bit the run that was never interrupted:
the data order and augmentation come only from that one generator (seeded from
``loop.seed`` or set to ``loop.data_order``), the optimizer state is restored
exactly, and the learning-rate schedule counts absolute epochs.

Late rewinding (open_lth's ``rewind`` to a step after initialisation): a run can
continue the schedule and the data order of another run after its epoch K, with
fresh optimizer state (only the weights are kept at the rewind point, as open_lth
does). The dense run asks for ``snapshot_epochs=(K,)`` and gets, besides the
weights ``outcome.snapshots[K]``, the data-order generator's state at that point
``outcome.snapshot_orders[K]``. The continuation loads those weights and runs with
``LoopOptions(schedule_offset=K, data_order=snapshot_orders[K])``: its epoch e
(0-based) uses the learning rate of absolute epoch K + e of a schedule
K + ``loop.epochs`` long (cosine reaches 0 at the end of this run; step decays
count absolute epochs), and its batches and augmentations are those the dense run
would have drawn from epoch K + 1 on. With a stateless optimizer (SGD without
momentum) such a continuation over the dense run's remaining epochs is bit for bit
the dense run's epochs K + 1 .. E. Its curve still numbers its own epochs 1, 2, ...
and a checkpoint of it counts its own epochs (``TrainState.epoch``).

A mask, when given, is enforced exactly: masked weights are zeroed before the first
step, their gradients are zeroed before every optimizer step (so momentum and Adam
state stay zero) and the weights are zeroed again after every step (so weight decay
or any optimizer quirk cannot revive them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import Split
from .data.batches import epoch_batches
from .devices import FastPath
from .records import EpochMetrics
from .step import STEPS, EagerStep, GraphedSgdStep, StepCache, TrainStep, graphed_step, sgd_step_supported

BatchCallback = Callable[[int, int, int], None]  # (epoch, batch, batches)
EpochCallback = Callable[[EpochMetrics], None]


class CancelFlag(Protocol):
    """What cancels a run: a ``threading.Event`` or anything with ``is_set()``."""

    def is_set(self) -> bool: ...


@dataclass
class TrainOutcome:
    """How training ended, its curve, and weight snapshots asked for by epoch."""

    status: Literal["done", "diverged", "cancelled"]
    curve: list[EpochMetrics] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: for each snapshot epoch K, the data-order generator's state (``get_state()``,
    #: uint8, CPU) at the end of epoch K (K = 0: before the first batch); with the
    #: weights ``snapshots[K]`` it is where ``LoopOptions(data_order=...)`` continues
    snapshot_orders: dict[int, torch.Tensor] = field(default_factory=dict)
    #: what the fast path could not do (e.g. why CUDA graphs fell back to eager)
    notes: list[str] = field(default_factory=list)
    #: nets trained in one step with this one (:mod:`lotto_engine.lockstep`); 1: alone
    group: int = 1


#: 2 added ``snapshot_orders``. A version 1 payload is refused: it has no data orders
#: for its snapshots, and a late-rewound run it checkpointed restarted the schedule
#: and data order at epoch 0, which a continuation now would not.
PAYLOAD_VERSION = 2
_PAYLOAD_KEYS = ("version", "epoch", "weights", "step", "generator", "curve", "snapshots", "snapshot_orders")
_METRIC_FIELDS = tuple(f.name for f in fields(EpochMetrics))


@dataclass
class TrainState:
    """Everything needed to continue a run after a finished epoch, as plain CPU data."""

    epoch: int  # epochs finished
    weights: dict[str, torch.Tensor]  # model.state_dict(), CPU copies
    step: dict[str, Any]  # TrainStep.state()
    generator: torch.Tensor  # the data-order torch.Generator's get_state() (uint8, CPU)
    curve: list[EpochMetrics]  # the curve so far
    snapshots: dict[int, dict[str, torch.Tensor]]  # weight snapshots taken so far (snapshot_epochs)
    #: the data-order generator's state at each snapshot so far (same epochs as ``snapshots``)
    snapshot_orders: dict[int, torch.Tensor]

    def to_payload(self) -> dict[str, Any]:
        """Plain data only (tensors, lists, dicts, ints, floats, strs, None), so a file
        of it loads with ``torch.load(..., weights_only=True)``: no code is unpickled."""
        return {
            "version": PAYLOAD_VERSION,
            "epoch": self.epoch,
            "weights": dict(self.weights),
            "step": self.step,
            "generator": self.generator,
            "curve": [asdict(m) for m in self.curve],
            "snapshots": {epoch: dict(weights) for epoch, weights in self.snapshots.items()},
            "snapshot_orders": dict(self.snapshot_orders),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainState:
        """The state :meth:`to_payload` wrote; ``ValueError`` (one line) when the payload
        is malformed: not a dict, another version, a key missing, a value of the wrong
        type, a curve that does not count the epochs finished, snapshot orders that are
        not for the snapshots' epochs."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"train state: expected a dict, not {type(payload).__name__}")
        if "version" not in payload:
            raise ValueError("train state: missing key 'version'")
        if payload["version"] != PAYLOAD_VERSION:
            older = " (written before snapshot data orders)" if payload["version"] == 1 else ""
            raise ValueError(f"train state: version {payload['version']!r}{older} is not {PAYLOAD_VERSION}")
        for key in _PAYLOAD_KEYS:
            if key not in payload:
                raise ValueError(f"train state: missing key {key!r}")
        epoch = payload["epoch"]
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"train state: 'epoch' must be an int >= 0, not {_describe(epoch)}")
        weights = _tensors(payload["weights"], "weights")
        step = payload["step"]
        if not isinstance(step, Mapping):
            raise ValueError(f"train state: 'step' must be a dict, not {_describe(step)}")
        _check_plain(step, "step")
        generator = payload["generator"]
        if not _is_order(generator):
            raise ValueError(f"train state: 'generator' must be a 1-d uint8 tensor, not {_describe(generator)}")
        curve = _curve(payload["curve"])
        if [m.epoch for m in curve] != list(range(1, epoch + 1)):
            raise ValueError(f"train state: the curve has epochs {[m.epoch for m in curve]}, not 1..{epoch}")
        raw = payload["snapshots"]
        if not isinstance(raw, Mapping):
            raise ValueError(f"train state: 'snapshots' must be a dict, not {_describe(raw)}")
        snapshots = {}
        for key, value in raw.items():
            if not _is_int(key) or not 0 <= key <= epoch:
                raise ValueError(f"train state: snapshot epoch {key!r} is not an int in 0..{epoch}")
            snapshots[key] = _tensors(value, f"snapshots[{key}]")
        raw = payload["snapshot_orders"]
        if not isinstance(raw, Mapping):
            raise ValueError(f"train state: 'snapshot_orders' must be a dict, not {_describe(raw)}")
        orders = {}
        for key, value in raw.items():
            if not _is_int(key) or key not in snapshots:
                raise ValueError(f"train state: snapshot order {key!r} is not a snapshot's epoch {sorted(snapshots)}")
            if not _is_order(value):
                raise ValueError(
                    f"train state: snapshot_orders[{key}] must be a 1-d uint8 tensor, not {_describe(value)}"
                )
            orders[key] = value
        if sorted(orders) != sorted(snapshots):
            raise ValueError(f"train state: snapshot orders for epochs {sorted(orders)}, snapshots {sorted(snapshots)}")
        return cls(epoch, weights, dict(step), generator, curve, snapshots, orders)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_order(value: object) -> bool:
    """A generator state as ``torch.Generator.get_state()`` gives it: a 1-d uint8 tensor."""
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dim()}-d {str(value.dtype).removeprefix('torch.')} tensor"
    return type(value).__name__


def _tensors(value: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping):
        raise ValueError(f"train state: {where!r} must be a dict of tensors, not {_describe(value)}")
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"train state: {where!r} must map names to tensors ({name!r}: {_describe(tensor)})")
    return dict(value)


def _check_plain(value: object, where: str) -> None:
    """Only the data a step's state may hold (what weights_only loading allows)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"train state: {where} has a key of type {type(key).__name__}")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (torch.Tensor, int, float, str)):
        raise ValueError(f"train state: {where} holds a {type(value).__name__}")


def _curve(value: object) -> list[EpochMetrics]:
    if not isinstance(value, list):
        raise ValueError(f"train state: 'curve' must be a list, not {_describe(value)}")
    curve = []
    for i, point in enumerate(value):
        if not isinstance(point, Mapping) or set(point) != set(_METRIC_FIELDS):
            raise ValueError(f"train state: curve[{i}] must be a dict of {', '.join(_METRIC_FIELDS)}")
        if not _is_int(point["epoch"]):
            raise ValueError(f"train state: curve[{i}].epoch must be an int, not {_describe(point['epoch'])}")
        numbers = {}
        for name in _METRIC_FIELDS[1:]:
            number = point[name]
            if _is_int(number) or isinstance(number, float):
                numbers[name] = float(number)
            else:
                raise ValueError(f"train state: curve[{i}].{name} must be a number, not {_describe(number)}")
        curve.append(EpochMetrics(epoch=point["epoch"], **numbers))
    return curve


@dataclass(frozen=True)
class LoopOptions:
    """How one training run loops: everything train() needs beyond the model, data,
    config and fast path. The one place the loop's options are spelled.

    ``schedule_offset`` and ``data_order`` continue another run after its epoch K
    (late rewinding, see the module doc): ``schedule_offset=K`` and
    ``data_order=outcome.snapshot_orders[K]`` of that run."""

    epochs: int  # epochs of this run (numbered 1..epochs in its curve and checkpoints)
    seed: int  # data order and augmentation (unless data_order is given)
    masks: Mapping[str, torch.Tensor] | None = None
    augment: bool = False
    padding: int = 4
    #: epochs after which a CPU copy of the weights is kept (0 = before the first step)
    snapshot_epochs: tuple[int, ...] = ()
    #: checked before every batch; a set flag ends the run as ``cancelled``
    cancel: CancelFlag | None = None
    on_batch: BatchCallback | None = None  # (epoch 1-based, batch 1-based, batches)
    on_epoch: EpochCallback | None = None  # (EpochMetrics) after each epoch's validation
    #: after on_epoch, for every epoch that ends with a finite loss and is not the
    #: last, with a CPU TrainState; not called (and nothing copied) when None
    on_checkpoint: Callable[[TrainState], None] | None = None
    #: continue from it: weights, step state, data order, curve and snapshots;
    #: epochs resume.epoch+1..epochs run
    resume: TrainState | None = None
    step_cache: StepCache | None = STEPS
    #: epochs of the lr schedule already run before this run: run epoch e (0-based)
    #: uses ``lr_at(cfg, schedule_offset + e, schedule_offset + epochs)``
    schedule_offset: int = 0
    #: a data-order generator state (``torch.Generator.get_state()``: 1-d uint8, CPU,
    #: e.g. ``outcome.snapshot_orders[K]``) to draw batches and augmentation from
    #: instead of ``manual_seed(seed)``; ignored with ``resume`` (it carries the generator)
    data_order: torch.Tensor | None = None


def lr_at(cfg: TrainConfig, epoch: int, epochs: int) -> float:
    """Learning rate of 0-based ``epoch`` out of ``epochs`` under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)
    return cfg.lr


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


@torch.no_grad()
def evaluation_sums(
    model: nn.Module, split: Split, batch_size: int, *, precision: str = "fp32", channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy in fp32, correct predictions) of ``model`` on ``split``,
    left on the device: reading them is the caller's one host sync (:func:`read_numbers`).
    One autocast region for all batches, so bf16 casts each weight once per call;
    ``channels_last`` feeds images in the layout a channels-last model trains in."""
    was_training = model.training
    model.eval()
    autocast = torch.autocast(split.x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    with autocast:
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size]
            y = split.y[start : start + batch_size]
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return loss_sum, correct


def evaluate(model: nn.Module, split: Split, batch_size: int, *, precision: str = "fp32") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``split`` (loss summed in fp32)."""
    loss_sum, correct = read_numbers(evaluation_sums(model, split, batch_size, precision=precision))
    n = max(len(split), 1)
    return loss_sum / n, correct / n


def read_numbers(tensors: Sequence[torch.Tensor]) -> list[float]:
    """The elements of tensors on one device as Python numbers, in order, in one host
    sync instead of one each (float64 holds fp32 sums and counts exactly: the same
    numbers as ``.item()``)."""
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).tolist()


def train(
    model: nn.Module,
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    fast: FastPath = FastPath(),
    loop: LoopOptions | None = None,
) -> TrainOutcome:
    """Train ``model`` in place for ``loop.epochs``; data order and augmentation from ``loop.seed``
    (or from the generator state ``loop.data_order``).

    ``loop`` is required (it has no sensible default; ``None`` is a ``TypeError``).
    Epoch e (0-based) of this run trains at ``lr_at(cfg, loop.schedule_offset + e,
    loop.schedule_offset + loop.epochs)``; ``EpochMetrics.lr`` records it and
    ``EpochMetrics.epoch`` is the run's own e + 1. For every epoch K in
    ``loop.snapshot_epochs`` the outcome holds the weights ``snapshots[K]`` and the
    data-order generator state ``snapshot_orders[K]`` after epoch K (K = 0: before
    the first batch), so a later run can continue from there (see the module doc).
    Stops early as ``diverged`` on a non-finite loss and as ``cancelled`` when
    ``loop.cancel`` is set (checked before every batch).

    Fast path (:func:`lotto_engine.devices.fast_path` resolves it):
    ``precision="bf16"`` runs forward and loss under bf16 autocast with fp32 master
    weights; ``channels_last`` trains conv nets in NHWC; ``compile`` wraps the model
    in ``torch.compile`` for the training steps; ``cuda_graphs`` replays each full
    batch's whole step as one CUDA graph (:mod:`lotto_engine.step`; SGD only, reused
    across runs through ``loop.step_cache``). If capture fails the same step runs
    uncaptured; with Adam or ``compile`` the run trains eagerly. ``outcome.notes``
    says which and why.

    With ``loop.resume`` the model first gets the resume's weights (then the mask is
    applied, as for any start), the step its optimizer state and the data order its
    generator state (``loop.data_order`` is ignored); the outcome starts from the
    resume's curve, snapshots and snapshot orders and
    epochs ``resume.epoch + 1 .. loop.epochs`` run. A resume with nothing left to do
    (``resume.epoch >= loop.epochs``) trains nothing: the model gets the resume's
    weights and the outcome is ``done`` with the resume's curve, snapshots and orders.
    """
    if loop is None:
        raise TypeError("train() needs loop=LoopOptions(epochs=..., seed=...)")
    outcome, more = begin(model, loop)
    if not more:
        return outcome
    step, notes = make_step(model, train_split, cfg, fast, loop)
    outcome.notes.extend(notes)
    try:
        _run_epochs(step, model, train_split, val_split, cfg, outcome, loop, precision=fast.precision,
                    channels_last=fast.channels_last)
    finally:
        release_step(step, model, loop.step_cache)
    return outcome


def begin(model: nn.Module, loop: LoopOptions) -> tuple[TrainOutcome, bool]:
    """Put ``model`` where ``loop`` starts: the resume's weights (when resuming), then
    the mask applied. Returns the outcome so far and whether epochs are left to train
    (a resume at or past ``loop.epochs`` leaves none: the outcome is ``done`` with the
    resume's curve, snapshots and orders). A fresh run asked for ``snapshot_epochs``
    containing 0 gets its snapshot of the starting weights here."""
    if not _is_int(loop.schedule_offset) or loop.schedule_offset < 0:
        raise ValueError(f"loop.schedule_offset must be an int >= 0, not {loop.schedule_offset!r}")
    if loop.data_order is not None and not (_is_order(loop.data_order) and loop.data_order.device.type == "cpu"):
        raise ValueError(f"loop.data_order must be a 1-d uint8 CPU tensor, not {_describe(loop.data_order)}")
    outcome = TrainOutcome(status="done")
    masks = dict(loop.masks or {})
    params = dict(model.named_parameters())
    if loop.resume is not None:
        model.load_state_dict(loop.resume.weights)
    if masks:
        with torch.no_grad():
            torch._foreach_mul_(
                [params[n] for n in masks], [m.to(params[n].device, params[n].dtype) for n, m in masks.items()]
            )
    if loop.resume is not None and loop.resume.epoch >= loop.epochs:
        outcome.curve = list(loop.resume.curve)
        outcome.snapshots = dict(loop.resume.snapshots)
        outcome.snapshot_orders = dict(loop.resume.snapshot_orders)
        return outcome, False
    if loop.resume is None and 0 in loop.snapshot_epochs:
        outcome.snapshots[0] = _cpu_copy(model)
    return outcome, True


def make_step(
    model: nn.Module, train_split: Split, cfg: TrainConfig, fast: FastPath, loop: LoopOptions
) -> tuple[TrainStep, list[str]]:
    """The step that trains ``model`` alone, and what the fast path could not do:
    a :class:`~lotto_engine.step.GraphedSgdStep` when CUDA graphs are asked for and
    cover the setup (from ``loop.step_cache`` when one fits), else an
    :class:`~lotto_engine.step.EagerStep`. Hand it back with :func:`release_step`."""
    masks = dict(loop.masks or {})
    params = dict(model.named_parameters())
    notes: list[str] = []
    if fast.cuda_graphs:
        why = sgd_step_supported(cfg.optimizer, fast.precision)
        if why is None and fast.compile:
            why = "CUDA graphs and run.compile do not combine"
        if why is not None:
            notes.append(f"{why}; training eagerly")
        else:
            # a failed capture still trains with the graph step, uncaptured: the numbers
            # of a run never depend on whether capture worked
            step, why = graphed_step(
                model, {n: m.to(params[n].device) for n, m in masks.items()},
                batch_size=cfg.batch_size, input_shape=tuple(train_split.x.shape[1:]),
                momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                precision=fast.precision, channels_last=fast.channels_last, cache=loop.step_cache,
            )
            if why is not None:
                notes.append(f"{why}; the same step runs uncaptured")
            return step, notes
    return EagerStep(model, cfg, masks, fast), notes


def release_step(step: TrainStep, model: nn.Module, cache: StepCache | None) -> None:
    """After a run: the step's weights into ``model``, a captured step back to ``cache``."""
    step.sync_to(model)
    if isinstance(step, GraphedSgdStep) and step.graph is not None and cache is not None:
        cache.checkin(step)


def start_order(loop: LoopOptions, outcome: TrainOutcome) -> tuple[torch.Generator, int]:
    """The data-order generator where ``loop`` starts and the first (0-based) epoch to
    train. With ``loop.resume`` the generator is the resume's and ``outcome`` gets the
    resume's curve, snapshots and snapshot orders; otherwise the generator starts from
    ``loop.data_order`` when given, else from ``loop.seed``, and a snapshot at epoch 0
    records its state."""
    generator = torch.Generator().manual_seed(loop.seed)
    if loop.resume is not None:
        generator.set_state(loop.resume.generator)
        outcome.curve.extend(loop.resume.curve)
        outcome.snapshots.update(loop.resume.snapshots)
        outcome.snapshot_orders.update(loop.resume.snapshot_orders)
        return generator, loop.resume.epoch
    if loop.data_order is not None:
        generator.set_state(loop.data_order)
    if 0 in loop.snapshot_epochs:
        outcome.snapshot_orders[0] = generator.get_state()
    return generator, 0


def keep_epoch(
    model: nn.Module,
    generator: torch.Generator,
    outcome: TrainOutcome,
    loop: LoopOptions,
    epoch: int,
    step_state: Callable[[], dict[str, Any]],
) -> None:
    """After 1-based ``epoch`` ended with a finite loss (``model`` holds the trained
    weights): the snapshot and the checkpoint ``loop`` asks for. ``step_state`` gives
    the step's optimizer state (called only when a checkpoint is taken)."""
    if epoch in loop.snapshot_epochs:
        outcome.snapshots[epoch] = _cpu_copy(model)
        outcome.snapshot_orders[epoch] = generator.get_state()
    if loop.on_checkpoint is not None and epoch < loop.epochs:
        loop.on_checkpoint(TrainState(
            epoch=epoch,
            weights=_cpu_copy(model),
            step=step_state(),
            generator=generator.get_state(),
            curve=list(outcome.curve),
            snapshots=dict(outcome.snapshots),
            snapshot_orders=dict(outcome.snapshot_orders),
        ))


def _run_epochs(
    step: TrainStep,
    model: nn.Module,
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    outcome: TrainOutcome,
    loop: LoopOptions,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
) -> None:
    """The epoch loop of :func:`train` with a given ``step``: batches, per-epoch
    metrics, validation (of the step's own net when it has one, in its layout; the
    step's weights synced into ``model`` first), snapshots and checkpoints. Sets ``outcome.status`` when it stops early.

    With ``loop.resume`` it restores what the loop carries from epoch to epoch (the
    step's state, the generator, the curve, snapshots and snapshot orders) and starts
    after its epoch; the model's weights are the caller's business (``train`` loads
    them before it builds the step). Otherwise the generator starts from
    ``loop.data_order`` when given, else from ``loop.seed``."""
    if loop.resume is not None:
        step.load_state(loop.resume.step)
    generator, first = start_order(loop, outcome)
    n_batches = batches_per_epoch(len(train_split), cfg.batch_size)
    for epoch in range(first, loop.epochs):
        started = time.perf_counter()
        lr = lr_at(cfg, loop.schedule_offset + epoch, loop.schedule_offset + loop.epochs)
        step.start_epoch(lr)
        batches = epoch_batches(
            train_split.x, train_split.y, cfg.batch_size, generator, augment=loop.augment, padding=loop.padding
        )
        for i, (x, y) in enumerate(batches):
            if loop.cancel is not None and loop.cancel.is_set():
                outcome.status = "cancelled"
                return
            step(x, y)
            if loop.on_batch is not None:
                loop.on_batch(epoch + 1, i + 1, n_batches)
        n, n_val = len(train_split), max(len(val_split), 1)
        step.sync_to(model)
        # the epoch's four numbers in one host sync
        loss_sum, correct, val_sum, val_correct = read_numbers(
            [*step.sums(), *evaluation_sums(_evaluated(step, model), val_split, cfg.eval_batch_size,
                                            precision=precision, channels_last=channels_last)]
        )
        train_loss = loss_sum / n
        metrics = EpochMetrics(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_acc=correct / n,
            val_loss=val_sum / n_val,
            val_acc=val_correct / n_val,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        outcome.curve.append(metrics)
        if loop.on_epoch is not None:
            loop.on_epoch(metrics)
        if not math.isfinite(train_loss):
            outcome.status = "diverged"
            return
        keep_epoch(model, generator, outcome, loop, epoch + 1, step.state)


def _evaluated(step: TrainStep, model: nn.Module) -> nn.Module:
    """The net to validate: a graph step's own (the same weights as ``model`` after
    ``sync_to``, already in the training layout), else ``model``."""
    return step.model if isinstance(step, GraphedSgdStep) else model


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
