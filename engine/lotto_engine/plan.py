"""The plan: which jobs a config asks for, in which order, and what each depends on.

A dense job trains one (activation, seed) net; each pruned job masks it with one
(method, sparsity, variant) and retrains; ``imp`` chains pruned jobs level by level. Every job has a *key*: a hash of exactly the inputs
that determine its result. A finished job is never run twice: resuming skips it, and
an edited config adopts it from the earlier experiment
(:meth:`lotto_engine.store.Store.adopt_runs`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from .config import ENGINE_VERSION, ExperimentConfig
from .scores import METHODS


@dataclass(frozen=True)
class Job:
    """One unit of work: a dense run, or a pruned run of a dense net.

    ``parent`` is the job whose trained weights the mask is cut from (the dense job,
    or for ``imp`` level k > 1 the level k-1 job); ``dense`` is the dense job whose
    theta0, trained and rewind weights every pruned job uses (None for dense jobs).
    """

    key: str
    kind: Literal["dense", "pruned"]
    activation: str
    seed: int
    method: str  # "dense" for dense jobs
    sparsity: float  # 0.0 for dense jobs
    parent: str | None = None
    #: sanity-check variant (:data:`lotto_engine.config.VARIANTS`); "none" for the method itself
    variant: str = "none"
    #: imp level (1, 2, ...); None for dense and one-shot jobs
    level: int | None = None
    dense: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "pruned" and self.dense is None:
            object.__setattr__(self, "dense", self.parent)

    @property
    def label(self) -> str:
        if self.kind == "dense":
            return f"{self.activation} dense seed={self.seed}"
        method = self.method if self.variant == "none" else f"{self.method}/{self.variant}"
        level = "" if self.level is None else f" L{self.level}"
        return f"{self.activation} {method} s={self.sparsity:g}{level} seed={self.seed}"


@dataclass(frozen=True)
class Plan:
    """Jobs in a runnable order: every job after the jobs it depends on."""

    jobs: tuple[Job, ...]

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.jobs)

    def dependents(self, key: str) -> list[Job]:
        """Jobs that read ``key``'s tensors: its children, and for a dense job every
        pruned job of its net."""
        return [job for job in self.jobs if key in (job.parent, job.dense)]


def imp_levels(sparsities: list[float], fraction: float) -> list[float]:
    """The target sparsity of every imp level: each removes ``fraction`` of the weights
    still there, but never steps past the next grid sparsity, which it lands on exactly
    (the grid's own float); the next level goes on from there.

    ``imp_levels([0.5, 0.8, 0.9], 0.2)`` -> 0.2, 0.36, 0.488, 0.5, 0.6, 0.68, 0.744,
    0.7952, 0.8, 0.84, 0.872, 0.8976, 0.9 (13 levels).
    """
    levels: list[float] = []
    current = 0.0
    for target in sorted(sparsities):
        while True:
            step = 1.0 - (1.0 - current) * (1.0 - fraction)
            if step >= target - 1e-12:
                current = target
                levels.append(target)
                break
            current = step
            levels.append(step)
    return levels


def build_plan(config: ExperimentConfig, *, precision: str = "fp32") -> Plan:
    """Expand the grid: per activation and seed, one dense job, then per method its
    pruned jobs: one per (sparsity, variant) for one-shot methods; for ``imp`` a chain
    of levels (:func:`imp_levels`), a second chain for ``invert`` (every level removes
    the largest magnitudes), and ``shuffle``/``reinit`` at the grid's sparsities.

    ``precision`` is the resolved training precision (``fp32`` or ``bf16``): it is part
    of every job key, so bf16 results are never taken for fp32 ones.
    """
    grid = config.grid
    jobs: list[Job] = []
    for activation in grid.activations:
        for seed in grid.seeds:
            dense = Job(
                key=dense_key(config, activation, seed, precision),
                kind="dense",
                activation=activation,
                seed=seed,
                method="dense",
                sparsity=0.0,
            )
            jobs.append(dense)

            def pruned(method: str, sparsity: float, variant: str, parent: Job, level: int | None) -> Job:
                key = pruned_key(config, parent.key, method, sparsity, variant=variant, level=level)
                return Job(key, "pruned", activation, seed, method, sparsity, parent.key, variant, level, dense.key)

            for method in grid.methods:
                if METHODS.get(method).chain:
                    levels = imp_levels(grid.sparsities, config.prune.fraction_per_level)
                    # the method's chain, and for "invert" a chain of its own that removes
                    # the largest magnitudes at every level; shuffle and reinit branch off
                    # the method's chain at the grid's sparsities
                    for chain in ("none", "invert"):
                        if chain == "invert" and "invert" not in grid.variants:
                            continue
                        parent = dense
                        for level, sparsity in enumerate(levels, 1):
                            step = pruned(method, sparsity, chain, parent, level)
                            jobs.append(step)
                            if chain == "none" and sparsity in grid.sparsities:
                                jobs += [
                                    pruned(method, sparsity, v, parent, level)
                                    for v in grid.variants if v in ("shuffle", "reinit")
                                ]
                            parent = step
                    continue
                for sparsity in grid.sparsities:
                    jobs += [pruned(method, sparsity, variant, dense, None) for variant in grid.variants]
    return Plan(tuple(jobs))


def dense_key(config: ExperimentConfig, activation: str, seed: int, precision: str = "fp32") -> str:
    data = config.data.model_dump(mode="json", exclude={"root", "download"})
    train = config.train.model_dump(mode="json", exclude={"pruned_epochs"})
    return _key(
        {
            "v": ENGINE_VERSION,
            "data": data,
            "model": config.model.model_dump(mode="json"),
            "train": train,
            "activation": activation,
            "seed": seed,
            # the dense run must keep a snapshot at the rewind epoch
            "rewind": config.prune.rewind_epoch,
            "precision": precision,
        }
    )


def pruned_key(
    config: ExperimentConfig, parent: str, method: str, sparsity: float, *, variant: str = "none", level: int | None = None
) -> str:
    """The key of a pruned job: its parent's key, the method and what of ``prune`` the
    method reads (a SynFlow run is not redone because the GraSP temperature changed)."""
    scorer = METHODS.get(method)
    prune = config.prune.model_dump(mode="json", exclude={"score_samples", "grasp_temperature", "rounds", "fraction_per_level"})
    if scorer.needs_data:
        prune["score_samples"] = config.prune.score_samples
    if method == "grasp-hessian":
        prune["grasp_temperature"] = config.prune.grasp_temperature
    if scorer.rounds:
        prune["rounds"] = config.prune.rounds
    return _key(
        {
            "v": ENGINE_VERSION,
            "parent": parent,
            "method": method,
            "sparsity": sparsity,
            "variant": variant,
            "level": level,
            "prune": prune,
            "pruned_epochs": config.train.pruned_epochs,
        }
    )


def _key(obj: dict[str, Any]) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
