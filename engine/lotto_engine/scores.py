"""Pruning scores by name: for every prunable weight a *keep score*, higher = keep.

Masks (:mod:`lotto_engine.pruning`) remove the weights with the lowest keep scores,
so each method is written in that one direction:

- ``magnitude``: ``|w|`` (keep the largest magnitudes; lottery-ticket pruning).
- ``grasp``: the write-up's first-order GraSP score is ``s = -w * g**2`` and, as in
  Wang et al. 2020, the weights with the HIGHEST ``s`` are removed; the keep score is
  therefore ``-s = w * g**2``.
- ``random``: i.i.d. uniform numbers from a seeded generator (a baseline).

torch is imported inside the functions so the config layer can list the names
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .registry import Registry

if TYPE_CHECKING:
    import torch


ScoreFn = Callable[
    ["Mapping[str, torch.Tensor]", "Mapping[str, torch.Tensor] | None", int],
    "dict[str, torch.Tensor]",
]


@dataclass(frozen=True)
class Scorer:
    """A keep-score function and whether it needs loss gradients."""

    fn: ScoreFn
    needs_gradients: bool = False
    #: which weights the protocol scores: the trained dense net ("trained", as in the
    #: lottery ticket hypothesis) or the initial net theta0 ("init", pruning at init).
    scores_at: str = "init"
    rounds: bool = False  # TEMP shim until the methods branch lands
    chain: bool = False

    @property
    def needs_data(self) -> bool:
        return self.needs_gradients


METHODS: Registry[Scorer] = Registry("pruning method")


def _magnitude(weights, grads, seed):  # type: ignore[no-untyped-def]
    return {name: w.detach().abs() for name, w in weights.items()}


def _grasp(weights, grads, seed):  # type: ignore[no-untyped-def]
    if grads is None:
        raise ValueError("grasp needs gradients")
    # keep score = -(-w * g^2): high GraSP scores are the ones removed.
    return {name: w.detach() * grads[name].detach().pow(2) for name, w in weights.items()}


def _random(weights, grads, seed):  # type: ignore[no-untyped-def]
    import torch

    gen = torch.Generator().manual_seed(seed)
    # Draw on the CPU in a fixed name order so CPU and GPU masks agree.
    return {
        name: torch.rand(w.shape, generator=gen, dtype=torch.float32).to(w.device)
        for name, w in weights.items()
    }


METHODS.register("magnitude")(Scorer(_magnitude, scores_at="trained"))
METHODS.register("grasp")(Scorer(_grasp, needs_gradients=True))
METHODS.register("random")(Scorer(_random))
METHODS.register("imp")(Scorer(_magnitude, scores_at="trained", chain=True))
