"""The training step: one optimisation step over a batch, behind one contract.

:class:`TrainStep` is what the epoch loop of :func:`lotto_engine.training.train`
needs from a step: set the learning rate and reset metrics per epoch, step on a
batch, read the epoch's (loss, correct) with one host sync, copy the trained
weights into the model (:meth:`~TrainStep.sync_to`), and hand out and take back its
optimizer state (:meth:`~TrainStep.state`, :meth:`~TrainStep.load_state`) so a run
interrupted after an epoch continues bit for bit from a checkpoint. Two steps
implement it:

- :class:`EagerStep`: ``torch.optim`` (foreach) on the model itself, with optional
  bf16 autocast, channels_last and ``torch.compile``;
- :class:`GraphedSgdStep`: SGD as one replayable unit over static tensors, captured
  as a CUDA graph where it can be.

Both keep the state as plain CPU data keyed by parameter name
(``{"optimizer": "sgd" | "adam", "params": {name: {"momentum_buffer": tensor, ...}}}``),
so an SGD state of one step loads into the other (a run continued on the other step
then agrees with the original to float rounding, as the two steps do).

Why the graphed step: on a GPU this small net's step is ~100 short kernels, so
launch overhead, not arithmetic, sets the pace. A CUDA graph replays the whole step
(forward, backward, SGD with momentum and weight decay, mask enforcement, metric
accumulation) with one launch. A graph binds memory addresses, so everything the
step reads or writes is static and owned here: the input batch buffers, the
parameters, the momentum buffers, the masks, the learning rate (a 0-d tensor updated
in place, so schedules work without re-capture) and the loss/accuracy accumulators.

The graphed step is plain PyTorch: with ``capture=False`` (any device) it runs
eagerly on the same static tensors, which is how its logic is tested on CPU.
Captured steps are cached per architecture and training settings
(:class:`StepCache`) and reused by later runs: a new run copies its weights and mask
into the cached tensors (and, when it resumes, its momentum buffers).

Numerics: the update is ``p -= lr * buf`` computed as a product then a sum, where
``torch.optim.SGD`` fuses it (one rounding); runs agree with the eager path to
float rounding, not bit for bit (see the tests for the tolerance).

A mask, when given, is enforced exactly by both steps: masked weights are zeroed
before the first step (by ``train``), their gradients are zeroed before every update
(so momentum and Adam state stay zero) and the weights are zeroed again after every
update (so weight decay or any optimizer quirk cannot revive them).
"""

from __future__ import annotations

import copy
import gc
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .config import TrainConfig
from .devices import FastPath, compile_model

WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuDNN and allocator warm-up)
# One capture at a time per process: two captures at once share the allocator's
# capture bookkeeping, and a failed one could take the other down.
_CAPTURE_LOCK = threading.Lock()
#: a key is captured again after a failure (another thread's CUDA work can break a
#: capture) until it has failed this many times; then its runs go straight to eager
CAPTURE_TRIES = 2


@runtime_checkable
class TrainStep(Protocol):
    """One optimisation step over a batch, with per-epoch metrics, the weights it trains,
    and its own state for checkpoints."""

    def start_epoch(self, lr: float) -> None:
        """Use ``lr`` from now on and reset the epoch's metrics."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One update on the batch ``(x, y)``."""

    def metrics(self) -> tuple[float, int]:
        """(summed loss, correct predictions) this epoch (one host sync)."""

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`metrics` as the device's 0-d tensors (no sync; valid until the next
        :meth:`start_epoch`)."""

    def sync_to(self, model: nn.Module) -> None:
        """Copy the trained weights into ``model`` (a no-op for a step that trains it)."""

    def state(self) -> dict[str, Any]:
        """A CPU copy of the optimizer state as plain data (tensors, ints, floats, strs,
        lists, dicts), keyed by parameter name."""

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` (copied, never aliased), so training continues bit for bit."""


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer of :class:`EagerStep` (foreach: one kernel per op
    over all parameters, not one per tensor)."""
    return optimizer_for(list(model.parameters()), cfg)


def optimizer_for(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg``'s optimizer over ``params`` (foreach). Every update is elementwise, so
    over parameters stacked from several nets (:mod:`lotto_engine.lockstep`) each
    net's slice is updated as that net's own optimizer would update it."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay,
            foreach=True,
        )
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def cpu_state(per_param: Mapping[str, Mapping[str, Any]], optimizer: str) -> dict[str, Any]:
    """The common state format: CPU copies of each parameter's optimizer tensors."""
    return {
        "optimizer": optimizer,
        "params": {
            name: {key: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value
                   for key, value in values.items()}
            for name, values in per_param.items()
        },
    }


def checked_state(
    state: Mapping[str, Any], optimizer: str, shapes: Mapping[str, torch.Size]
) -> dict[str, dict[str, Any]]:
    """The per-parameter part of ``state``, checked against this step (ValueError, one line)."""
    if not isinstance(state, Mapping) or not isinstance(state.get("params"), Mapping):
        raise ValueError("step state: expected a dict with 'optimizer' and 'params'")
    if state.get("optimizer") != optimizer:
        raise ValueError(f"step state of optimizer {state.get('optimizer')!r} given to a {optimizer} step")
    params = state["params"]
    unknown = sorted(set(params) - set(shapes))
    if unknown:
        raise ValueError(f"step state for unknown parameters: {', '.join(map(str, unknown))}")
    for name, values in params.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"step state of {name}: expected a dict, not {type(values).__name__}")
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and key != "step" and value.shape != shapes[name]:
                raise ValueError(
                    f"step state of {name}: {key} has shape {tuple(value.shape)}, the parameter {tuple(shapes[name])}"
                )
    return {name: dict(values) for name, values in params.items()}


class EagerStep:
    """The plain training step: ``torch.optim`` (foreach), optional autocast,
    channels_last and ``torch.compile`` (from ``fast``; ``cuda_graphs`` is not its
    business), the mask enforced around every update. It trains ``model`` itself."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        masks: Mapping[str, torch.Tensor],
        fast: FastPath = FastPath(),
    ) -> None:
        params = dict(model.named_parameters())
        self.names = list(params)  # the optimizer's parameter order (model.parameters())
        self.kind = cfg.optimizer
        self.masked = [params[name] for name in masks]
        self.masks = [m.to(params[name].device, params[name].dtype) for name, m in masks.items()]
        self.optimizer = make_optimizer(model, cfg)
        self.device = next(iter(params.values())).device
        self.channels_last = fast.channels_last
        if fast.channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = compile_model(model) if fast.compile else model
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=fast.precision == "bf16")
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

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_sum, self.correct

    def sync_to(self, model: nn.Module) -> None:
        """The step trains ``model`` itself: nothing to copy."""

    def state(self) -> dict[str, Any]:
        """``torch.optim``'s per-parameter state (SGD momentum buffers; Adam moments and
        step counts) by parameter name. A parameter not stepped yet has none."""
        groups = self.optimizer.param_groups
        params = [p for group in groups for p in group["params"]]
        per_param = {name: self.optimizer.state[p] for name, p in zip(self.names, params, strict=True)
                     if self.optimizer.state.get(p)}
        return cpu_state(per_param, self.kind)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` through ``torch.optim``'s own loader (which puts each
        tensor on its parameter's device, Adam's step counts staying on the CPU); the
        tensors are cloned first so training never writes into ``state``."""
        own = self.optimizer.state_dict()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        shapes = {name: p.shape for name, p in zip(self.names, params, strict=True)}
        loaded = checked_state(state, self.kind, shapes)
        index = {name: i for i, name in enumerate(self.names)}
        own["state"] = {
            index[name]: {key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in values.items()}
            for name, values in loaded.items()
        }
        self.optimizer.load_state_dict(own)


class CaptureUnsupported(Exception):
    """The step cannot be captured here (no CUDA, or capture failed); train eagerly."""


@dataclass(frozen=True)
class StepKey:
    """What a captured step depends on; runs with equal keys can share one."""

    architecture: str  # repr of the model: layer types, shapes, activations
    device: str
    batch_size: int
    input_shape: tuple[int, ...]
    masked: tuple[str, ...]  # names of the masked parameters
    momentum: float
    weight_decay: float
    precision: str
    channels_last: bool


def step_key(
    model: nn.Module,
    *,
    batch_size: int,
    input_shape: tuple[int, ...],
    masked: tuple[str, ...],
    momentum: float,
    weight_decay: float,
    precision: str,
    channels_last: bool,
) -> StepKey:
    """The key of a step for ``model`` (which must already sit on its device)."""
    device = str(next(model.parameters()).device)
    return StepKey(repr(model), device, batch_size, tuple(input_shape), tuple(masked),
                   momentum, weight_decay, precision, channels_last)


class GraphedSgdStep:
    """SGD (momentum, L2 weight decay, no dampening) on static tensors; see the module doc.

    ``model`` becomes this step's own: its parameters are the static weights. Use
    :meth:`load` to start a run from another model's weights, :meth:`load_state` to
    continue one from a checkpoint, and :meth:`sync_to` to copy the trained weights back.
    """

    def __init__(self, model: nn.Module, key: StepKey) -> None:
        self.model = model
        self.key = key
        params = dict(model.named_parameters())
        self.device = next(iter(params.values())).device
        self.names = list(params)
        self.params = list(params.values())
        position = {name: i for i, name in enumerate(params)}
        self.masked_at = [position[name] for name in key.masked]
        self.masked = [self.params[i] for i in self.masked_at]
        self.masks = [torch.ones_like(p) for p in self.masked]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        # bf16: the weights autocast would cast at every use, kept as bf16 copies that
        # the step refreshes after each update (see _step)
        lowered = _lowered_by_autocast(model) if key.precision == "bf16" else set()
        self.half_at = [i for i, name in enumerate(self.names) if name in lowered]
        self.half = [self.params[i].detach().to(torch.bfloat16).requires_grad_() for i in self.half_at]
        self.half_grads = [torch.zeros_like(self.params[i]) for i in self.half_at]
        self.lr = torch.zeros((), device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        images = len(key.input_shape) == 3
        self.layout = torch.channels_last if key.channels_last and images else torch.contiguous_format
        if self.layout is torch.channels_last:
            model.to(memory_format=torch.channels_last)
        self.x = torch.zeros((key.batch_size, *key.input_shape), device=self.device)
        self.x = self.x.contiguous(memory_format=self.layout)
        self.y = torch.zeros(key.batch_size, device=self.device, dtype=torch.long)
        self.graph: torch.cuda.CUDAGraph | None = None
        model.train()

    # ------------------------------------------------------------------ runs

    @torch.no_grad()
    def load(self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> None:
        """Start a run: weights from ``model``, fresh momentum, ``masks`` applied."""
        own = self.model.state_dict()
        for name, value in model.state_dict().items():
            own[name].copy_(value)
        masks = masks or {}
        if tuple(masks) != self.key.masked:
            raise ValueError(f"masks for {tuple(masks)} given to a step built for {self.key.masked}")
        for static, name in zip(self.masks, self.key.masked):
            static.copy_(masks[name])
        if self.masked:
            torch._foreach_mul_(self.masked, self.masks)
        self._refresh_half()
        for buf in self.bufs:
            buf.zero_()

    @torch.no_grad()
    def sync_to(self, model: nn.Module) -> None:
        """Copy this step's weights (and buffers) into ``model``."""
        target = model.state_dict()
        for name, value in self.model.state_dict().items():
            target[name].copy_(value)

    def state(self) -> dict[str, Any]:
        """The momentum buffers by parameter name (the same format as an SGD
        :class:`EagerStep`; all zeros while momentum is 0)."""
        return cpu_state({name: {"momentum_buffer": buf} for name, buf in zip(self.names, self.bufs)}, "sgd")

    @torch.no_grad()
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Copy the momentum buffers of :meth:`state` into the static ones (in place: a
        captured graph keeps reading them). A parameter without one starts from zero,
        as ``torch.optim.SGD`` does on its first step."""
        loaded = checked_state(state, "sgd", {name: p.shape for name, p in zip(self.names, self.params)})
        for name, buf in zip(self.names, self.bufs):
            value = loaded.get(name, {}).get("momentum_buffer")
            if value is None:
                buf.zero_()
            else:
                buf.copy_(value)

    @torch.no_grad()
    def start_epoch(self, lr: float) -> None:
        self.lr.fill_(lr)
        self.loss_sum.zero_()
        self.correct.zero_()

    def metrics(self) -> tuple[float, int]:
        """(summed loss, correct predictions) since :meth:`start_epoch` (one host sync)."""
        return float(self.loss_sum.item()), int(self.correct.item())

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_sum, self.correct

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step on a batch: replayed when captured and ``x`` is full, else eager."""
        if self.graph is not None and x.shape[0] == self.x.shape[0]:
            self.x.copy_(x)
            self.y.copy_(y)
            self.graph.replay()
        else:
            self._step(x.contiguous(memory_format=self.layout) if x.dim() == 4 else x, y)

    # ------------------------------------------------------------------ the step

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # bf16: the layers autocast lowers read the bf16 copies of their weights, so no
        # weight is cast in the step; their bf16 gradients go into fp32 buffers in one
        # foreach copy (what autocast's cast would have given back: the same numbers)
        leaves = list(self.params)
        for i, half in zip(self.half_at, self.half):
            leaves[i] = half
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.key.precision == "bf16", cache_enabled=False):
            if self.half:
                logits = functional_call(self.model, {self.names[i]: h for i, h in zip(self.half_at, self.half)}, (x,))
            else:
                logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        grads = list(torch.autograd.grad(loss, leaves))
        with torch.no_grad():
            if self.half:
                torch._foreach_copy_(self.half_grads, [grads[i] for i in self.half_at])
                for i, grad in zip(self.half_at, self.half_grads):
                    grads[i] = grad
            if self.masked:
                torch._foreach_mul_([grads[i] for i in self.masked_at], self.masks)
            if self.key.weight_decay:
                grads = torch._foreach_add(grads, self.params, alpha=self.key.weight_decay)
            if self.key.momentum:
                torch._foreach_mul_(self.bufs, self.key.momentum)
                torch._foreach_add_(self.bufs, grads)
                direction = self.bufs
            else:
                direction = list(grads)
            torch._foreach_add_(self.params, torch._foreach_mul(direction, -self.lr))
            if self.masked:
                torch._foreach_mul_(self.masked, self.masks)
            self._refresh_half()
            self.loss_sum.add_(loss.detach().float() * y.shape[0])
            self.correct.add_((logits.argmax(1) == y).sum())

    @torch.no_grad()
    def _refresh_half(self) -> None:
        """The bf16 copies from the fp32 weights (one foreach copy)."""
        if self.half:
            torch._foreach_copy_(self.half, [self.params[i] for i in self.half_at])

    def capture(self) -> None:
        """Record the step on full batches as a CUDA graph; state is left as it was.

        Raises :class:`CaptureUnsupported` off CUDA or when capture fails.
        """
        if self.device.type != "cuda":
            raise CaptureUnsupported(f"CUDA graphs need a CUDA device, not {self.device}")
        with _CAPTURE_LOCK, torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            state = [*self.params, *self.bufs, self.loss_sum, self.correct]
            saved = [t.detach().clone() for t in state]
            side = torch.cuda.Stream(self.device)
            # its own stream on this step's device (the default capture stream is one per
            # process, made on whichever device was current first)
            capture = torch.cuda.Stream(self.device)
            try:
                side.wait_stream(caller)
                with torch.cuda.stream(side):
                    for _ in range(WARMUP_STEPS):
                        self._step(self.x, self.y)
                capture.wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # Not torch.cuda.graph(): on entry it synchronises the whole device and
                # empties the allocator's cache, stalling every other job slot's stream.
                # Capture errors count for this thread only, so the other slots (each on
                # its own stream, devices.on_device) go on while this one captures.
                gc.collect()  # no Python-side frees of CUDA tensors in mid-capture
                with torch.cuda.stream(capture):
                    graph.capture_begin(capture_error_mode="thread_local")
                    try:
                        self._step(self.x, self.y)
                    finally:
                        graph.capture_end()
            except Exception as err:  # noqa: BLE001 - any capture failure means: run uncaptured
                raise CaptureUnsupported(f"CUDA graph capture failed: {type(err).__name__}: {err}") from err
            finally:
                torch.cuda.set_stream(caller)  # a failed capture can leave another stream current
                caller.wait_stream(side)  # the warm-up's writes before the state goes back
                caller.wait_stream(capture)
                with torch.no_grad():
                    for t, value in zip(state, saved):
                        t.copy_(value)
                self._refresh_half()
        self.graph = graph


def _lowered_by_autocast(model: nn.Module) -> set[str]:
    """Names of the parameters bf16 autocast casts at every use: those of the
    convolutions and linear layers (the rest, e.g. a norm's, stay fp32 under autocast)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules() if isinstance(module, kinds)
        for name, _ in module.named_parameters(recurse=False)
    }


def sgd_step_supported(optimizer: str, precision: str) -> str | None:
    """Why the graphed step cannot train this setup, or None when it can."""
    if optimizer != "sgd":
        return f"CUDA graphs cover SGD only, not {optimizer}"
    if precision not in ("fp32", "bf16"):
        return f"CUDA graphs do not cover precision {precision}"
    return None


class StepCache:
    """Captured steps kept for reuse, checked out by one run at a time (thread-safe).

    At most ``size`` idle steps are kept per process; the oldest goes first, and
    :meth:`clear` lets them all go (the runner does at the end of a grid: each holds
    its graph's memory). A key whose capture failed :data:`CAPTURE_TRIES` times is
    remembered with the reason, so later runs go straight to eager training instead
    of failing again. On CUDA a step checked in records an event on the stream of
    the run that used it, and the next run's stream waits for it (job slots train on
    their own streams), so no run touches a step's tensors while the last one's
    kernels may still read them.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._idle: list[tuple[GraphedSgdStep, Any]] = []
        self._failed: dict[StepKey, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def failed(self, key: StepKey) -> str | None:
        """Why ``key`` is not captured any more, or None while it may be tried."""
        with self._lock:
            count, reason = self._failed.get(key, (0, ""))
            return reason if count >= CAPTURE_TRIES else None

    def remember_failure(self, key: StepKey, reason: str) -> None:
        with self._lock:
            count, _ = self._failed.get(key, (0, ""))
            self._failed[key] = (count + 1, reason)

    def checkout(self, key: StepKey) -> GraphedSgdStep | None:
        with self._lock:
            for i, (step, done) in enumerate(self._idle):
                if step.key == key:
                    del self._idle[i]
                    break
            else:
                return None
        if done is not None:
            torch.cuda.current_stream(step.device).wait_event(done)
        return step

    def checkin(self, step: GraphedSgdStep) -> None:
        done = None
        if step.device.type == "cuda":
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(step.device))
        with self._lock:
            self._idle.append((step, done))
            keep = max(self.size, 0)
            evicted, self._idle = self._idle[: len(self._idle) - keep], self._idle[len(self._idle) - keep:]
        _let_go(evicted)

    def clear(self) -> None:
        """Let every idle step go (and its graph's memory)."""
        with self._lock:
            evicted, self._idle = self._idle, []
        _let_go(evicted)

    def idle(self) -> list[GraphedSgdStep]:
        """The steps kept, oldest first."""
        with self._lock:
            return [step for step, _ in self._idle]

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)


def _let_go(steps: list[tuple[GraphedSgdStep, Any]]) -> None:
    """Drop steps once their last run's kernels are done (their memory may be reused
    by another stream the moment they go)."""
    for _, done in steps:
        if done is not None:
            done.synchronize()


STEPS = StepCache()


def graphed_step(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    *,
    batch_size: int,
    input_shape: tuple[int, ...],
    momentum: float,
    weight_decay: float,
    precision: str,
    channels_last: bool,
    capture: bool = True,
    cache: StepCache | None = STEPS,
) -> tuple[GraphedSgdStep, str | None]:
    """A step loaded with ``model``'s weights and ``masks``: a captured one from
    ``cache`` when one fits, else a new one (captured when ``capture``).

    Returns the step and, when capture was asked for but failed, why. The step then
    runs uncaptured: the same arithmetic, so a run's numbers never depend on whether
    capture worked. Give a captured step back with ``cache.checkin`` after the run.
    """
    key = step_key(
        model, batch_size=batch_size, input_shape=input_shape, masked=tuple(masks or {}),
        momentum=momentum, weight_decay=weight_decay, precision=precision, channels_last=channels_last,
    )
    step = cache.checkout(key) if cache is not None and capture else None
    reason = None
    if step is None:
        step = GraphedSgdStep(copy.deepcopy(model), key)
        reason = cache.failed(key) if cache is not None and capture else None
        if capture and reason is None:
            try:
                step.capture()
            except CaptureUnsupported as err:
                reason = str(err)
                out_of_memory = isinstance(err.__cause__, torch.cuda.OutOfMemoryError)
                if cache is not None and not out_of_memory:  # memory may be free next time
                    cache.remember_failure(key, reason)
    step.load(model, masks)
    return step, reason
