"""One training run: epochs over whole-tensor batches, with an optional enforced mask.

The data already sits normalised on the training device (:mod:`lotto_engine.data`),
so a batch is an index slice of a seeded permutation. Loss and accuracy accumulate
on the device and are read once per epoch: no host sync per step.

One step object runs each batch: :class:`EagerStep` (``torch.optim``) or, on CUDA
with graphs on, a captured :class:`~lotto_engine.step.GraphedSgdStep`.

A mask, when given, is enforced exactly: masked weights are zeroed before the first
step, their gradients are zeroed before every optimizer step (so momentum and Adam
state stay zero) and the weights are zeroed again after every step (so weight decay
or any optimizer quirk cannot revive them).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import Split
from .data.batches import epoch_batches
from .records import EpochMetrics
from .step import STEPS, GraphedSgdStep, StepCache, graphed_step, sgd_step_supported

BatchCallback = Callable[[int, int, int], None]  # (epoch, batch, batches)
EpochCallback = Callable[[EpochMetrics], None]


@dataclass
class TrainOutcome:
    """How training ended, its curve, and weight snapshots asked for by epoch."""

    status: Literal["done", "diverged", "cancelled"]
    curve: list[EpochMetrics] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: what the fast path could not do (e.g. why CUDA graphs fell back to eager)
    notes: list[str] = field(default_factory=list)


def lr_at(cfg: TrainConfig, epoch: int, epochs: int) -> float:
    """Learning rate of 0-based ``epoch`` out of ``epochs`` under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay,
            foreach=True,
        )
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, *, precision: str = "fp32") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``split`` (loss summed in fp32)."""
    was_training = model.training
    model.eval()
    autocast = torch.autocast(split.x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size]
        y = split.y[start : start + batch_size]
        with autocast:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(split), 1)
    return loss_sum.item() / n, correct.item() / n


class EagerStep:
    """The plain training step: ``torch.optim`` (foreach), optional autocast,
    channels_last and ``torch.compile``, the mask enforced around every update."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        masks: Mapping[str, torch.Tensor],
        *,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        params = dict(model.named_parameters())
        self.masked = [params[name] for name in masks]
        self.masks = [m.to(params[name].device, params[name].dtype) for name, m in masks.items()]
        self.optimizer = make_optimizer(model, cfg)
        self.device = next(iter(params.values())).device
        self.channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if compile else model
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        model.train()

    def start_epoch(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            if self.masked:
                torch._foreach_mul_([p.grad for p in self.masked], self.masks)
            self.optimizer.step()
            if self.masked:
                torch._foreach_mul_(self.masked, self.masks)
            self.loss_sum += loss.detach() * y.shape[0]
            self.correct += (logits.argmax(1) == y).sum()

    def metrics(self) -> tuple[float, int]:
        """(summed loss, correct predictions) this epoch (one host sync)."""
        return float(self.loss_sum.item()), int(self.correct.item())

    def store_into(self, model: nn.Module) -> None:
        """The step trains ``model`` itself: nothing to copy."""


def train(
    model: nn.Module,
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    *,
    epochs: int,
    seed: int,
    masks: Mapping[str, torch.Tensor] | None = None,
    augment: bool = False,
    padding: int = 4,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
    on_epoch: EpochCallback | None = None,
    snapshot_epochs: tuple[int, ...] = (),
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
    step_cache: StepCache | None = STEPS,
) -> TrainOutcome:
    """Train ``model`` in place for ``epochs``; data order and augmentation from ``seed``.

    ``snapshot_epochs`` lists epochs after which a CPU copy of the weights is kept
    (0 = before the first step). Stops early as ``diverged`` on a non-finite loss and
    as ``cancelled`` when ``cancel`` is set (checked before every batch).

    Fast-path options (:func:`lotto_engine.devices.fast_path` resolves them):
    ``precision="bf16"`` runs forward and loss under bf16 autocast with fp32 master
    weights; ``channels_last`` trains conv nets in NHWC; ``compile`` wraps the model
    in ``torch.compile`` for the training steps; ``cuda_graphs`` replays each full
    batch's whole step as one CUDA graph (:mod:`lotto_engine.step`; SGD only, reused
    across runs through ``step_cache``). If capture fails the same step runs
    uncaptured; with Adam or ``compile`` the run trains eagerly. ``outcome.notes``
    says which and why.
    """
    outcome = TrainOutcome(status="done")
    masks = dict(masks or {})
    params = dict(model.named_parameters())
    if masks:
        with torch.no_grad():
            torch._foreach_mul_(
                [params[n] for n in masks], [m.to(params[n].device, params[n].dtype) for n, m in masks.items()]
            )
    if 0 in snapshot_epochs:
        outcome.snapshots[0] = _cpu_copy(model)

    step: EagerStep | GraphedSgdStep | None = None
    if cuda_graphs:
        why = sgd_step_supported(cfg.optimizer, precision)
        if why is None and compile:
            why = "CUDA graphs and run.compile do not combine"
        if why is not None:
            outcome.notes.append(f"{why}; training eagerly")
        else:
            # a failed capture still trains with the graph step, uncaptured: the numbers
            # of a run never depend on whether capture worked
            step, why = graphed_step(
                model, {n: m.to(params[n].device) for n, m in masks.items()},
                batch_size=cfg.batch_size, input_shape=tuple(train_split.x.shape[1:]),
                momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                precision=precision, channels_last=channels_last, cache=step_cache,
            )
            if why is not None:
                outcome.notes.append(f"{why}; the same step runs uncaptured")
    if step is None:
        step = EagerStep(model, cfg, masks, precision=precision, channels_last=channels_last, compile=compile)
    try:
        run_epochs(
            step, model, train_split, val_split, cfg, outcome, epochs=epochs, seed=seed, augment=augment,
            padding=padding, cancel=cancel, on_batch=on_batch, on_epoch=on_epoch,
            snapshot_epochs=snapshot_epochs, precision=precision,
        )
    finally:
        step.store_into(model)
        if isinstance(step, GraphedSgdStep) and step.graph is not None and step_cache is not None:
            step_cache.checkin(step)
    return outcome


def run_epochs(
    step: EagerStep | GraphedSgdStep,
    model: nn.Module,
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    outcome: TrainOutcome,
    *,
    epochs: int,
    seed: int,
    augment: bool = False,
    padding: int = 4,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
    on_epoch: EpochCallback | None = None,
    snapshot_epochs: tuple[int, ...] = (),
    precision: str = "fp32",
) -> None:
    """The epoch loop of :func:`train` with a given ``step``: batches, per-epoch
    metrics and validation of ``model`` (the step's weights copied into it first).
    Sets ``outcome.status`` when it stops early."""
    generator = torch.Generator().manual_seed(seed)
    n_batches = batches_per_epoch(len(train_split), cfg.batch_size)
    for epoch in range(epochs):
        started = time.perf_counter()
        lr = lr_at(cfg, epoch, epochs)
        step.start_epoch(lr)
        batches = epoch_batches(
            train_split.x, train_split.y, cfg.batch_size, generator, augment=augment, padding=padding
        )
        for i, (x, y) in enumerate(batches):
            if cancel is not None and cancel.is_set():
                outcome.status = "cancelled"
                return
            step(x, y)
            if on_batch is not None:
                on_batch(epoch + 1, i + 1, n_batches)
        n = len(train_split)
        loss_sum, correct = step.metrics()
        train_loss = loss_sum / n
        step.store_into(model)
        val_loss, val_acc = evaluate(model, val_split, cfg.eval_batch_size, precision=precision)
        metrics = EpochMetrics(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_acc=correct / n,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        outcome.curve.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if not math.isfinite(train_loss):
            outcome.status = "diverged"
            return
        if epoch + 1 in snapshot_epochs:
            outcome.snapshots[epoch + 1] = _cpu_copy(model)


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
