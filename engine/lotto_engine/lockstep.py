"""Sibling nets trained in lockstep: several nets that see the same batches, one step.

Why: on a GPU one small net at batch 128 is latency-bound (a step is about 100 short
kernels; the arithmetic units mostly wait). The pruned runs of one dense parent draw
identical batches (their data order comes from the job's seed, or from the dense
run's order at a late rewind), so N of them can share every step: their weights are
stacked along a new first dimension, the forward is ``torch.func.vmap`` of
``functional_call`` over the stack (the first conv, over the shared batch, becomes one
conv N times as wide; the later ones grouped convs), one backward of the summed
losses gives each net its own gradient, and the optimizer runs on the stacked
tensors, where every update is elementwise: each net's slice moves as its own
optimizer would move it. On CPU one net already keeps the cores busy and lockstep
measured slower (0.64x), so ``run.lockstep = "auto"`` is off there; on CUDA a short
probe on the first group decides (:class:`Choices`).

Each net stays its own run: its own :class:`~lotto_engine.training.LoopOptions`
(mask, callbacks, snapshots, checkpoints, cancel flag, resume point) and its own
:class:`~lotto_engine.training.TrainOutcome`. Its checkpoints are plain
:class:`~lotto_engine.training.TrainState` (its slice of the stack, its optimizer
state in the format of :mod:`lotto_engine.step`), so a run checkpointed here goes on
alone and the other way round. A net whose epoch loss is not finite ends
``diverged`` after that epoch, one whose cancel flag is set ends ``cancelled`` before
the next batch; the others go on (their rows are cut out of the stack).

Numbers: each net trains as it would alone up to float rounding (grouped kernels
round differently), not bit for bit. A group of one is :func:`~lotto_engine.training.train`
itself. Only nets that can share batches go together (:func:`group_key`): the same
architecture and activation (vmap cannot vary a module), device, epochs, schedule
offset, data order (seed, rewind order or resumed generator), resume epoch and
augmentation; the training config and fast path are the group's. Not covered: nets
with buffers (batch norm statistics) and ``run.compile``; the step runs eagerly (no
CUDA graph) and contiguous (``channels_last`` does not apply).
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .config import TrainConfig
from .data import Split
from .data.batches import epoch_batches
from .devices import FastPath
from .records import EpochMetrics
from .step import checked_state, cpu_state, optimizer_for
from .training import (
    CancelFlag, LoopOptions, TrainOutcome, batches_per_epoch, begin, evaluation_sums, keep_epoch, lr_at, make_step,
    read_numbers, release_step, start_order, train,
)

#: nets in one step at most; a bigger set of siblings trains in groups of this size
MAX_GROUP = 32


def group_key(model: nn.Module, loop: LoopOptions) -> Hashable:
    """What nets must share to train in one step (see the module doc); equal keys,
    with one training config and fast path, can go together."""
    resume = loop.resume
    order = resume.generator if resume is not None else loop.data_order
    return (
        repr(model),  # layers, shapes and activations
        str(next(model.parameters()).device),
        loop.epochs,
        loop.schedule_offset,
        loop.augment,
        loop.padding,
        None if resume is None else resume.epoch,
        ("seed", loop.seed) if order is None else ("order", hashlib.sha256(order.numpy().tobytes()).hexdigest()),
    )


def unsupported(model: nn.Module, fast: FastPath) -> str | None:
    """Why nets like ``model`` cannot train in lockstep under ``fast``, or None."""
    if fast.compile:
        return "run.lockstep does not combine with run.compile"
    if any(True for _ in model.buffers()):
        return "lockstep does not cover nets with buffers (batch norm statistics)"
    return None


class GroupStep:
    """One optimisation step of N nets of one architecture on a shared batch.

    Row r of every stacked tensor is net r of ``models`` (until :meth:`keep` cuts the
    stack down). The mask is enforced as :class:`~lotto_engine.step.EagerStep` does:
    gradients of masked weights zeroed before the update, the weights after it (a net
    without a mask for a tensor multiplies by ones, which changes nothing).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        cfg: TrainConfig,
        masks: Sequence[Mapping[str, torch.Tensor]],
        fast: FastPath = FastPath(),
    ) -> None:
        nets = [dict(model.named_parameters()) for model in models]
        self.cfg = cfg
        self.names = list(nets[0])
        self.device = nets[0][self.names[0]].device
        self.params = {n: torch.stack([net[n].detach() for net in nets]).requires_grad_() for n in self.names}
        self.masked = [n for n in self.names if any(n in m for m in masks)]
        self.masks = [
            torch.stack([m[n].to(self.device, net[n].dtype) if n in m else torch.ones_like(net[n])
                         for m, net in zip(masks, nets, strict=True)])
            for n in self.masked
        ]
        self.optimizer = optimizer_for(list(self.params.values()), cfg)
        # the architecture only: the weights come from the stack at every call
        self.base = copy.deepcopy(models[0]).to("meta").train()
        self.forward = vmap(self._forward, in_dims=(0, None))
        self.losses = vmap(F.cross_entropy, in_dims=(0, None))
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=fast.precision == "bf16")
        self.loss_sum = torch.zeros(len(models), device=self.device)
        self.correct = torch.zeros(len(models), device=self.device, dtype=torch.long)

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, params, (x,))

    def start_epoch(self, lr: float) -> None:
        """Use ``lr`` from now on and reset the epoch's metrics."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.loss_sum = torch.zeros_like(self.loss_sum)
        self.correct = torch.zeros_like(self.correct)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One update of every net on the batch ``(x, y)``."""
        with self.autocast:
            logits = self.forward(self.params, x)  # (nets, batch, classes)
            losses = self.losses(logits, y)  # (nets,): each net's mean loss
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # d(sum)/d(loss of net r) = 1: each net gets its own gradient
        with torch.no_grad():
            masked = [self.params[n] for n in self.masked]
            if masked:
                torch._foreach_mul_([p.grad for p in masked], self.masks)
            self.optimizer.step()
            if masked:
                torch._foreach_mul_(masked, self.masks)
            self.loss_sum += losses.detach() * y.shape[0]
            self.correct += (logits.argmax(-1) == y).sum(-1)

    def metrics(self) -> list[tuple[float, int]]:
        """(summed loss, correct predictions) of each row this epoch (one host sync)."""
        return list(zip(self.loss_sum.tolist(), self.correct.tolist(), strict=True))

    @torch.no_grad()
    def sync_to(self, row: int, model: nn.Module) -> None:
        """Copy row ``row``'s weights into ``model``."""
        params = dict(model.named_parameters())
        for name, stacked in self.params.items():
            params[name].copy_(stacked[row])

    def state(self, row: int) -> dict[str, Any]:
        """Row ``row``'s optimizer state in the format of :mod:`lotto_engine.step`
        (what an :class:`~lotto_engine.step.EagerStep` of that net would hold)."""
        per_param = {}
        for name, stacked in self.params.items():
            values = self.optimizer.state.get(stacked)
            if values:
                per_param[name] = {k: v[row] if isinstance(v, torch.Tensor) and k != "step" else v
                                   for k, v in values.items()}
        return cpu_state(per_param, self.cfg.optimizer)

    def load_states(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Restore each row's :meth:`state` (row r from ``states[r]``; copied, never
        aliased). ``ValueError`` when they do not fit, or when some rows have state
        for a tensor and others not (nets resumed from different points)."""
        shapes = {name: stacked.shape[1:] for name, stacked in self.params.items()}
        loaded = [checked_state(state, self.cfg.optimizer, shapes) for state in states]
        own = self.optimizer.state_dict()
        own["state"] = {}
        for i, name in enumerate(self.names):
            rows = [net.get(name) for net in loaded]
            if all(values is None for values in rows):
                continue
            if any(values is None for values in rows) or len({tuple(sorted(v)) for v in rows}) > 1:
                raise ValueError(f"step states of {name} differ in kind between the nets of a group")
            own["state"][i] = {
                key: torch.stack([v[key] for v in rows]) if isinstance(rows[0][key], torch.Tensor) and key != "step"
                else (rows[0][key].clone() if isinstance(rows[0][key], torch.Tensor) else rows[0][key])
                for key in rows[0]
            }
        self.optimizer.load_state_dict(own)

    @torch.no_grad()
    def keep(self, rows: Sequence[int]) -> None:
        """Go on with ``rows`` only (in that order): weights, masks, optimizer state
        (and the learning rate in force) and this epoch's metrics."""
        index = torch.tensor(list(rows), device=self.device)
        saved = self.optimizer.state_dict()
        self.params = {n: p.detach().index_select(0, index).requires_grad_() for n, p in self.params.items()}
        self.masks = [m.index_select(0, index) for m in self.masks]
        self.optimizer = optimizer_for(list(self.params.values()), self.cfg)
        saved["state"] = {
            i: {k: v.index_select(0, index) if isinstance(v, torch.Tensor) and k != "step" else v
                for k, v in values.items()}
            for i, values in saved["state"].items()
        }
        self.optimizer.load_state_dict(saved)
        self.loss_sum = self.loss_sum.index_select(0, index)
        self.correct = self.correct.index_select(0, index)


def train_together(
    models: Sequence[nn.Module],
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    fast: FastPath,
    loops: Sequence[LoopOptions],
) -> list[TrainOutcome]:
    """Train ``models[i]`` under ``loops[i]`` for every i, all in one step per batch;
    each as :func:`~lotto_engine.training.train` would train it alone, up to float
    rounding (see the module doc). One net is ``train`` itself. ``ValueError`` when
    the nets cannot share batches (:func:`group_key`, :func:`unsupported`)."""
    if len(models) != len(loops) or not models:
        raise ValueError(f"train_together needs one loop per net ({len(models)} nets, {len(loops)} loops)")
    if len(models) == 1:
        return [train(models[0], train_split, val_split, cfg, fast, loops[0])]
    if len({group_key(model, loop) for model, loop in zip(models, loops)}) > 1:
        raise ValueError("these nets cannot train in one step: they do not share their batches")
    why = unsupported(models[0], fast)
    if why is not None:
        raise ValueError(why)

    # each net where its run starts (resume weights, mask); all resume from one epoch
    begun = [begin(model, loop) for model, loop in zip(models, loops)]
    outcomes = [outcome for outcome, _ in begun]
    for outcome in outcomes:
        outcome.group = len(models)
    if not begun[0][1]:
        return outcomes
    step = GroupStep(models, cfg, [loop.masks or {} for loop in loops], fast)
    if loops[0].resume is not None:
        step.load_states([loop.resume.step for loop in loops if loop.resume is not None])
    # one data order for all (equal keys: equal seed, order or resumed generator)
    generator, first = [start_order(loop, outcome) for loop, outcome in zip(loops, outcomes)][0]
    live = list(range(len(models)))  # the nets still training: row r of the step is net live[r]

    def stop(nets: list[int], status: Literal["diverged", "cancelled"]) -> None:
        """End ``nets`` (their weights into their models) and cut them out of the stack."""
        for i in nets:
            outcomes[i].status = status
            step.sync_to(live.index(i), models[i])
        rows = [r for r, i in enumerate(live) if i not in nets]
        live[:] = [live[r] for r in rows]
        if live:
            step.keep(rows)

    n, epochs, offset = len(train_split), loops[0].epochs, loops[0].schedule_offset
    n_batches = batches_per_epoch(n, cfg.batch_size)
    try:
        for epoch in range(first, epochs):
            started = time.perf_counter()
            lr = lr_at(cfg, offset + epoch, offset + epochs)
            step.start_epoch(lr)
            batches = epoch_batches(
                train_split.x, train_split.y, cfg.batch_size, generator,
                augment=loops[0].augment, padding=loops[0].padding,
            )
            for b, (x, y) in enumerate(batches):
                cancelled = [i for i in live if _is_set(loops[i].cancel)]
                if cancelled:
                    stop(cancelled, "cancelled")
                    if not live:
                        return outcomes
                step(x, y)
                for i in live:
                    on_batch = loops[i].on_batch
                    if on_batch is not None:
                        on_batch(epoch + 1, b + 1, n_batches)
            diverged = []
            sums = [step.loss_sum, step.correct]
            for row, i in enumerate(live):
                step.sync_to(row, models[i])
                sums += evaluation_sums(models[i], val_split, cfg.eval_batch_size, precision=fast.precision)
            numbers, n_val = read_numbers(sums), max(len(val_split), 1)  # every net's epoch in one host sync
            k = len(live)
            for row, i in enumerate(live):
                val_sum, val_correct = numbers[2 * k + 2 * row : 2 * k + 2 * row + 2]
                metrics = EpochMetrics(
                    epoch=epoch + 1, train_loss=numbers[row] / n, train_acc=numbers[k + row] / n,
                    val_loss=val_sum / n_val, val_acc=val_correct / n_val, lr=lr,
                    seconds=time.perf_counter() - started,
                )
                outcomes[i].curve.append(metrics)
                on_epoch = loops[i].on_epoch
                if on_epoch is not None:
                    on_epoch(metrics)
                if not math.isfinite(metrics.train_loss):
                    diverged.append(i)
                    continue
                keep_epoch(models[i], generator, outcomes[i], loops[i], epoch + 1, lambda row=row: step.state(row))
            if diverged:
                stop(diverged, "diverged")
                if not live:
                    return outcomes
    finally:
        for row, i in enumerate(live):
            step.sync_to(row, models[i])
    return outcomes


def _is_set(flag: CancelFlag | None) -> bool:
    return flag is not None and flag.is_set()


# ---------------------------------------------------------------------- auto: the probe

Clock = Callable[[], float]


def probe(
    models: Sequence[nn.Module],
    loops: Sequence[LoopOptions],
    train_split: Split,
    cfg: TrainConfig,
    fast: FastPath,
    *,
    steps: int = 3,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
) -> tuple[float, float]:
    """(images per second of ``models`` trained in one lockstep step, images per
    second trained one at a time), each from ``steps`` timed steps on the first full
    batch after ``warmup`` untimed ones. One at a time is the step the first net
    would train with alone (a captured CUDA graph where it would be one, which then
    stays in ``loops[0].step_cache`` for the run); every sibling costs the same. It
    runs on copies: the nets are left as they were."""
    device = train_split.x.device
    size = min(cfg.batch_size, len(train_split))
    x, y = train_split.x[:size], train_split.y[:size]

    def seconds(one_step: Callable[[], None]) -> float:
        for _ in range(warmup):
            one_step()
        _sync(device)
        start = clock()
        for _ in range(steps):
            one_step()
        _sync(device)
        return max(clock() - start, 1e-9)

    group = GroupStep([copy.deepcopy(m) for m in models], cfg, [loop.masks or {} for loop in loops], fast)
    group.start_epoch(cfg.lr)
    together = seconds(lambda: group(x, y))
    alone_model = copy.deepcopy(models[0])
    alone, _ = make_step(alone_model, train_split, cfg, fast, loops[0])
    try:
        alone.start_epoch(cfg.lr)
        one = seconds(lambda: alone(x, y))
    finally:
        release_step(alone, alone_model, loops[0].step_cache)
    return len(models) * size * steps / together, size * steps / one


def _sync(device: torch.device) -> None:
    """Wait for this thread's stream only (other job slots' streams would skew the timing)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


class Choices:
    """``run.lockstep = "auto"`` where it may pay (CUDA): whether siblings train
    together, decided by :func:`probe` on the first group of two or more of an
    architecture on a device, and remembered (thread-safe) for the life of this
    object; :data:`CHOICES` is the process's. ``clock`` times the probe (injectable,
    so the decision is tested without a GPU)."""

    def __init__(self, *, clock: Clock = time.perf_counter, steps: int = 3, warmup: int = 2) -> None:
        self.clock = clock
        self.steps = steps
        self.warmup = warmup
        self._chosen: dict[tuple[object, ...], bool] = {}
        self._lock = threading.Lock()

    def choose(
        self,
        models: Sequence[nn.Module],
        loops: Sequence[LoopOptions],
        train_split: Split,
        cfg: TrainConfig,
        fast: FastPath,
        *,
        label: str,
    ) -> tuple[bool, str | None]:
        """Whether ``models`` train together, and a note saying what was chosen and
        the two speeds (only from the call that probed; None when remembered).
        ``label`` names the architecture for people (``shallow-cnn relu``)."""
        device = str(train_split.x.device)
        # what sets the speed ratio: the net, the device, the batch, the fast path, the group's size
        key = (repr(models[0]), device, cfg.batch_size, fast, len(models))
        with self._lock:  # one probe at a time: two at once would time each other
            if key in self._chosen:
                return self._chosen[key], None
            together, alone = probe(models, loops, train_split, cfg, fast,
                                    steps=self.steps, warmup=self.warmup, clock=self.clock)
            chosen = self._chosen[key] = together > alone
        verdict = "siblings train together" if chosen else "each net trains alone"
        return chosen, (f"run.lockstep = auto: {label} on {device}: {len(models)} nets in one step "
                        f"{together:,.0f} img/s, one at a time {alone:,.0f} img/s; {verdict}")


#: the process's lockstep choices (``run.lockstep = "auto"`` on CUDA)
CHOICES = Choices()
