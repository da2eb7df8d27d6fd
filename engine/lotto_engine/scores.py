"""Pruning scores by name: for every prunable weight a *keep score*, higher = keep.

Masks (:mod:`lotto_engine.pruning`) remove the weights with the lowest keep scores,
so each method is written in that one direction. A scorer is a function of
:class:`ScoreInputs` (the model at the weights to score, the prunable names, the score
data, ...) that returns one keep-score tensor per prunable name. Methods, in registry
order:

- ``magnitude``: ``|w|`` at the trained dense weights (lottery-ticket pruning).
- ``grasp``: the write-up's first-order GraSP score is ``s = -w * g**2``, ``g`` the
  gradient of the mean cross-entropy over all of the score data, at theta0. As in
  Wang et al. 2020 the weights with the HIGHEST ``s`` are removed; the keep score is
  therefore ``-s = w * g**2``.
- ``random``: i.i.d. uniform numbers drawn on the CPU from
  ``torch.Generator().manual_seed(seed)`` in name order (a baseline).
- ``snip`` (Lee et al. 2019): ``|g * w|`` at theta0, ``g`` the same gradient as for
  ``grasp`` (mean cross-entropy over all of the data, no temperature).
- ``grasp-hessian`` (Wang et al. 2020, reference code alecwangcq/GraSP): logits are
  divided by ``temperature`` (default 200); ``g`` is the gradient of the mean
  cross-entropy of the tempered logits over all of the data, ``Hg`` the
  Hessian-gradient product of that same loss, both with respect to every Conv2d and
  Linear weight of the net (the reference's set; it differs from the prunable set
  only when the classifier is excluded, and then the classifier's weight still takes
  part in ``g`` and ``H``). GraSP's score is ``-theta * Hg`` at theta0 and the
  HIGHEST scores are removed, so the keep score is ``theta * Hg``. The reference
  splits each batch in halves and sums per-batch means; that only rescales ``g`` and
  ``Hg`` by positive factors (for equal batches), which leaves the ranking unchanged.
  Unlike the reference, linear layers are NOT re-initialised before scoring.
- ``synflow`` (Tanaka et al. 2020): data-free and iterative (``Scorer.rounds``), see
  :func:`lotto_engine.pruning.compute_masks` for the schedule. One round: a float64
  deep copy of the net in eval mode, every floating-point parameter and buffer
  replaced by its absolute value (the reference's ``linearize`` abs'es the whole
  state dict; the biases are included), the currently pruned weights zeroed; one
  all-ones input of shape ``(1, *input_shape)``; ``S`` = the sum of the outputs;
  keep score ``|theta * dS/dtheta|`` (float64) of the abs'ed, masked copy. The net's
  own activations are used as they are. ``input_shape`` comes from
  ``ScoreInputs.input_shape`` or else from the first data batch's ``x.shape[1:]``.
- ``magnitude-init``: ``|theta0|``, the pruning-at-init baseline of Frankle et al. 2021.
- ``imp``: one level of iterative magnitude pruning: ``|w|`` at the given (trained)
  weights. The caller chains levels (``Scorer.chain``) and passes the previous
  level's mask to ``compute_masks(within=...)``.

All gradients use ``torch.autograd.grad``: ``.grad`` of the model's parameters, its
weights and its train/eval mode are left untouched. Gradient scorers use the model in
the mode it is given in; ``synflow`` uses an eval-mode copy.

torch is imported inside the functions so the config layer can list the names
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ScoreInputs:
    """What a scorer may look at."""

    #: the net at the weights to score (theta0 or the trained dense net), on its device;
    #: scorers must not change it.
    model: nn.Module
    #: the prunable weight names to score, in ``named_parameters`` order.
    names: tuple[str, ...]
    #: score data: a list of ``(inputs, targets)`` batches (any device), or None.
    data: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    #: seed of the random scorer (and of the tie-break permutation in the masks).
    seed: int = 0
    #: the logit temperature of ``grasp-hessian``.
    temperature: float = 200.0
    #: one input's shape without the batch dimension (``synflow``), or None.
    input_shape: tuple[int, ...] | None = None
    #: the current masks (True = kept), or None for none pruned: the previous round's
    #: masks for iterative (``rounds``) scorers, else ``compute_masks(within=...)``.
    masks: dict[str, torch.Tensor] | None = None


ScoreFn = Callable[[ScoreInputs], "dict[str, torch.Tensor]"]


@dataclass(frozen=True)
class Scorer:
    """A keep-score function and how the protocol must call it."""

    fn: ScoreFn
    #: the scorer reads ``ScoreInputs.data`` (batches of training data; loss gradients).
    needs_data: bool = False
    #: which weights the protocol scores: the trained dense net ("trained", as in the
    #: lottery ticket hypothesis) or the initial net theta0 ("init", pruning at init).
    scores_at: Literal["init", "trained"] = "init"
    #: iterative: ``compute_masks`` calls ``fn`` once per round on the current masks
    #: and prunes on an exponential schedule (``synflow``).
    rounds: bool = False
    #: one level of a level chain (``imp``): the caller prunes level by level, each
    #: level's mask passed as ``within=`` to the next level's ``compute_masks``.
    chain: bool = False

    @property
    def needs_gradients(self) -> bool:
        """Old name of :attr:`needs_data` (kept for existing callers)."""
        return self.needs_data


METHODS: Registry[Scorer] = Registry("pruning method")


# ---------------------------------------------------------------------- helpers


def _params(inputs: ScoreInputs, names: Iterable[str] | None = None) -> list[torch.Tensor]:
    params = dict(inputs.model.named_parameters())
    return [params[n] for n in (inputs.names if names is None else names)]


def _batches(
    model: nn.Module, data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None, method: str
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    if data is None:
        raise ValueError(f"{method} needs data to compute gradients")
    device = next(model.parameters()).device
    batches = [(x.to(device), y.to(device)) for x, y in data]
    total = sum(int(y.numel()) for _, y in batches)
    if total == 0:
        raise ValueError("no samples to compute gradients on")
    return batches, total


def loss_gradients(
    model: nn.Module, names: list[str], data: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over all batches of ``data``, per name.

    Each batch's summed loss is divided by the total number of samples, so the result
    does not depend on how the data is batched. Uses ``torch.autograd.grad``, so
    ``.grad`` of the parameters is not touched.
    """
    import torch
    import torch.nn.functional as F

    params = dict(model.named_parameters())
    targets = [params[n] for n in names]
    batches, total = _batches(model, data, "loss_gradients")
    acc = [torch.zeros_like(p) for p in targets]
    with torch.enable_grad():
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            for a, g in zip(acc, torch.autograd.grad(loss, targets)):
                a.add_(g)
    return dict(zip(names, acc))


# ---------------------------------------------------------------------- scorers


def _magnitude(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in zip(inputs.names, _params(inputs))}


def _grasp(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    grads = loss_gradients(inputs.model, list(inputs.names), _need_data(inputs, "grasp"))
    # keep score = -(-w * g^2): high GraSP scores are the ones removed.
    return {n: p.detach() * grads[n].pow(2) for n, p in zip(inputs.names, _params(inputs))}


def _random(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    import torch

    gen = torch.Generator().manual_seed(inputs.seed)
    # Draw on the CPU in a fixed name order so CPU and GPU masks agree.
    return {
        n: torch.rand(p.shape, generator=gen, dtype=torch.float32).to(p.device)
        for n, p in zip(inputs.names, _params(inputs))
    }


def _snip(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    grads = loss_gradients(inputs.model, list(inputs.names), _need_data(inputs, "snip"))
    return {n: (grads[n] * p.detach()).abs() for n, p in zip(inputs.names, _params(inputs))}


def _grasp_hessian(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    import torch
    import torch.nn.functional as F

    from .pruning import prunable_names  # here: pruning imports this module

    model, temperature = inputs.model, float(inputs.temperature)
    if not temperature > 0:
        raise ValueError(f"grasp-hessian needs a positive temperature, got {temperature}")
    batches, total = _batches(model, _need_data(inputs, "grasp-hessian"), "grasp-hessian")
    wrt_names = prunable_names(model)  # every Conv2d/Linear weight, as the reference
    wrt = _params(inputs, wrt_names)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x) / temperature, y, reduction="sum") / total

    g = [torch.zeros_like(p) for p in wrt]
    hg = [torch.zeros_like(p) for p in wrt]
    with torch.enable_grad():
        for x, y in batches:
            for a, gi in zip(g, torch.autograd.grad(loss(x, y), wrt)):
                a.add_(gi)
        for x, y in batches:
            grads = torch.autograd.grad(loss(x, y), wrt, create_graph=True)
            z = sum((gi * gr).sum() for gi, gr in zip(g, grads))
            if not z.requires_grad:  # no second-order path at all: Hg = 0
                continue
            for a, h in zip(hg, torch.autograd.grad(z, wrt, allow_unused=True)):
                if h is not None:
                    a.add_(h)
    by_name = dict(zip(wrt_names, hg))
    # GraSP removes the highest -theta * Hg: keep score theta * Hg.
    return {n: p.detach() * by_name[n] for n, p in zip(inputs.names, _params(inputs))}


def _synflow(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    import copy
    import itertools

    import torch

    shape = inputs.input_shape
    if shape is None and inputs.data:
        shape = tuple(inputs.data[0][0].shape[1:])
    if shape is None:
        raise ValueError(
            "synflow needs the shape of one input: pass input_shape=(C, H, W) "
            "or data (the first batch's x.shape[1:] is used)"
        )
    net = copy.deepcopy(inputs.model).double().eval()
    params = dict(net.named_parameters())
    targets = [params[n] for n in inputs.names]
    with torch.no_grad():
        for t in itertools.chain(net.parameters(), net.buffers()):
            if t.is_floating_point():
                t.abs_()
        for n, p in zip(inputs.names, targets):
            if inputs.masks is not None:
                p.mul_(inputs.masks[n].to(p.device, torch.float64))
    x = torch.ones((1, *shape), dtype=torch.float64, device=targets[0].device)
    with torch.enable_grad():
        for p in targets:
            p.requires_grad_(True)
        grads = torch.autograd.grad(net(x).sum(), targets, allow_unused=True)
    return {
        n: torch.zeros_like(p.detach()) if g is None else (p.detach() * g).abs()
        for n, p, g in zip(inputs.names, targets, grads)
    }


def _need_data(inputs: ScoreInputs, method: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if not inputs.data:
        raise ValueError(f"{method} needs data to compute gradients")
    return inputs.data


METHODS.register("magnitude")(Scorer(_magnitude, scores_at="trained"))
METHODS.register("grasp")(Scorer(_grasp, needs_data=True))
METHODS.register("random")(Scorer(_random))
METHODS.register("snip")(Scorer(_snip, needs_data=True))
METHODS.register("grasp-hessian")(Scorer(_grasp_hessian, needs_data=True))
METHODS.register("synflow")(Scorer(_synflow, rounds=True))
METHODS.register("magnitude-init")(Scorer(_magnitude, scores_at="init"))
METHODS.register("imp")(Scorer(_magnitude, scores_at="trained", chain=True))
