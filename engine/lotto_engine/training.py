"""One training run: epochs over whole-tensor batches, with an optional enforced mask.

The data already sits normalised on the training device (:mod:`lotto_engine.data`),
so a batch is an index slice of a seeded permutation. Loss and accuracy accumulate
on the device and are read once per epoch: no host sync per step.

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

BatchCallback = Callable[[int, int, int], None]  # (epoch, batch, batches)
EpochCallback = Callable[[EpochMetrics], None]


@dataclass
class TrainOutcome:
    """How training ended, its curve, and weight snapshots asked for by epoch."""

    status: Literal["done", "diverged", "cancelled"]
    curve: list[EpochMetrics] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


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
) -> TrainOutcome:
    """Train ``model`` in place for ``epochs``; data order and augmentation from ``seed``.

    ``snapshot_epochs`` lists epochs after which a CPU copy of the weights is kept
    (0 = before the first step). Stops early as ``diverged`` on a non-finite loss and
    as ``cancelled`` when ``cancel`` is set (checked before every batch).

    Fast-path options (:func:`lotto_engine.devices.fast_path` resolves them):
    ``precision="bf16"`` runs forward and loss under bf16 autocast with fp32 master
    weights; ``channels_last`` trains conv nets in NHWC; ``compile`` wraps the model
    in ``torch.compile`` for the training steps.
    """
    outcome = TrainOutcome(status="done")
    params = dict(model.named_parameters())
    masked = [params[name] for name in (masks or {})]
    mask_values = [m.to(params[name].device, params[name].dtype) for name, m in (masks or {}).items()]
    if masked:
        with torch.no_grad():
            torch._foreach_mul_(masked, mask_values)
    if 0 in snapshot_epochs:
        outcome.snapshots[0] = _cpu_copy(model)

    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    n_batches = batches_per_epoch(len(train_split), cfg.batch_size)
    device = train_split.x.device
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()
    for epoch in range(epochs):
        started = time.perf_counter()
        lr = lr_at(cfg, epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        batches = epoch_batches(
            train_split.x, train_split.y, cfg.batch_size, generator, augment=augment, padding=padding
        )
        for i, (x, y) in enumerate(batches):
            if cancel is not None and cancel.is_set():
                outcome.status = "cancelled"
                return outcome
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            with autocast:
                logits = forward(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masked:
                with torch.no_grad():
                    torch._foreach_mul_([p.grad for p in masked], mask_values)
            optimizer.step()
            if masked:
                with torch.no_grad():
                    torch._foreach_mul_(masked, mask_values)
            with torch.no_grad():
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.argmax(1) == y).sum()
            if on_batch is not None:
                on_batch(epoch + 1, i + 1, n_batches)
        n = len(train_split)
        train_loss = loss_sum.item() / n
        val_loss, val_acc = evaluate(model, val_split, cfg.eval_batch_size, precision=precision)
        metrics = EpochMetrics(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_acc=correct.item() / n,
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
            return outcome
        if epoch + 1 in snapshot_epochs:
            outcome.snapshots[epoch + 1] = _cpu_copy(model)
    return outcome


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
