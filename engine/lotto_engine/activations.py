"""Activation functions by name.

Each entry builds a fresh ``nn.Module`` and names the gain used by Kaiming/Xavier
initialisation for it. torch is imported only when an activation is built, so the
config layer can validate names without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .registry import Registry


@dataclass(frozen=True)
class Activation:
    """How to build an activation and which init gain suits it."""

    build: Callable[[], Any]
    #: ``nonlinearity`` argument of ``torch.nn.init.calculate_gain``.
    gain: str
    gain_param: float | None = None


ACTIVATIONS: Registry[Activation] = Registry("activation")


def _module(name: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch.nn as nn

        return getattr(nn, name)(**kwargs)

    return build


ACTIVATIONS.register("relu")(Activation(_module("ReLU"), "relu"))
ACTIVATIONS.register("tanh")(Activation(_module("Tanh"), "tanh"))
ACTIVATIONS.register("sigmoid")(Activation(_module("Sigmoid"), "sigmoid"))
ACTIVATIONS.register("leaky_relu")(
    Activation(_module("LeakyReLU", negative_slope=0.01), "leaky_relu", 0.01)
)
ACTIVATIONS.register("gelu")(Activation(_module("GELU"), "relu"))
ACTIVATIONS.register("elu")(Activation(_module("ELU"), "relu"))
ACTIVATIONS.register("silu")(Activation(_module("SiLU"), "relu"))
