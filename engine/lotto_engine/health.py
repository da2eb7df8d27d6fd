"""Run health: did a finished run really train?

A run can end with status ``done`` and still have learned nothing: accuracy at
chance, a loss that blew up, or a mask that removed a whole layer so the output no
longer depends on the input. :func:`diagnose` names those cases as flags. Flags
inform; they never change a run's status or the exit code (NaN/inf losses stay the
``diverged`` status).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .records import EpochMetrics, LayerSparsity

#: Every flag, in display order, with the one-line meaning that help screens show.
FLAGS: dict[str, str] = {
    "chance_level": "final validation and test accuracy no better than guessing "
    "(at most 1/K + 3 binomial standard errors over the images evaluated; K classes)",
    "loss_exploded": "some epoch's mean training loss was above 10 x ln K (K classes)",
    "layer_collapse": "the mask removed every weight of a prunable layer, so the output "
    "no longer depends on the input (the export's per-layer rows say which)",
}

#: Explosion threshold in units of ln K, the loss of a uniform guess.
EXPLODED_FACTOR = 10.0
#: Binomial standard errors above 1/K that still count as chance.
CHANCE_SE = 3.0


def chance_bound(num_classes: int, evaluated: int) -> float:
    """Highest accuracy still indistinguishable from guessing: 1/K + 3 SE(1/K, n)."""
    p = 1.0 / num_classes
    if evaluated <= 0:
        return p
    return p + CHANCE_SE * math.sqrt(p * (1.0 - p) / evaluated)


def at_chance(accuracy: float, num_classes: int, evaluated: int) -> bool:
    """Whether ``accuracy`` over ``evaluated`` images is at most the chance bound."""
    return accuracy <= chance_bound(num_classes, evaluated)


def loss_exploded(curve: Iterable[EpochMetrics], num_classes: int) -> bool:
    """Whether some epoch's mean training loss exceeded 10 x ln K (inf counts; NaN is
    the ``diverged`` status, not a flag)."""
    limit = EXPLODED_FACTOR * math.log(num_classes)
    return any(m.train_loss > limit for m in curve)


def collapsed_layers(layers: Iterable[LayerSparsity]) -> list[str]:
    """Names of prunable layers that keep no weight at all."""
    return [layer.name for layer in layers if layer.numel and layer.kept == 0]


def diagnose(
    *,
    num_classes: int,
    curve: Sequence[EpochMetrics],
    layers: Sequence[LayerSparsity] = (),
    val: tuple[float, int] | None = None,
    test: tuple[float, int] | None = None,
) -> tuple[str, ...]:
    """The flags of one run, in :data:`FLAGS` order.

    ``val`` and ``test`` are (final accuracy, images evaluated); a run is at chance
    level when every one of them that is known is at most the chance bound.
    """
    flags: list[str] = []
    measured = [acc for acc in (val, test) if acc is not None and acc[0] is not None and math.isfinite(acc[0])]
    if measured and all(at_chance(acc, num_classes, n) for acc, n in measured):
        flags.append("chance_level")
    if loss_exploded(curve, num_classes):
        flags.append("loss_exploded")
    if collapsed_layers(layers):
        flags.append("layer_collapse")
    return tuple(flags)


def parse_flags(text: str | None) -> tuple[str, ...]:
    """Flags as the store keeps them (comma-joined) back to a tuple (NULL: none known)."""
    return tuple(f for f in (text or "").split(",") if f)
