"""The plan: which jobs a config asks for, in which order, and what each depends on.

A dense job trains one (activation, seed) net; each pruned job masks it with one
(method, sparsity) and retrains. Every job has a *key*: a hash of exactly the inputs
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


@dataclass(frozen=True)
class Job:
    """One unit of work: a dense run or a pruned run of one dense parent."""

    key: str
    kind: Literal["dense", "pruned"]
    activation: str
    seed: int
    method: str  # "dense" for dense jobs
    sparsity: float  # 0.0 for dense jobs
    parent: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "dense":
            return f"{self.activation} dense seed={self.seed}"
        return f"{self.activation} {self.method} s={self.sparsity:g} seed={self.seed}"


@dataclass(frozen=True)
class Plan:
    """Jobs in a runnable order: every dense job before its dependents."""

    jobs: tuple[Job, ...]

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.jobs)

    def dependents(self, key: str) -> list[Job]:
        return [job for job in self.jobs if job.parent == key]


def build_plan(config: ExperimentConfig, *, precision: str = "fp32") -> Plan:
    """Expand the grid: per activation and seed, one dense job then its pruned jobs.

    ``precision`` is the resolved training precision (``fp32`` or ``bf16``): it is part
    of every job key, so bf16 results are never taken for fp32 ones.
    """
    jobs: list[Job] = []
    for activation in config.grid.activations:
        for seed in config.grid.seeds:
            dense = Job(
                key=dense_key(config, activation, seed, precision),
                kind="dense",
                activation=activation,
                seed=seed,
                method="dense",
                sparsity=0.0,
            )
            jobs.append(dense)
            for method in config.grid.methods:
                for sparsity in config.grid.sparsities:
                    jobs.append(
                        Job(
                            key=pruned_key(config, dense.key, method, sparsity),
                            kind="pruned",
                            activation=activation,
                            seed=seed,
                            method=method,
                            sparsity=sparsity,
                            parent=dense.key,
                        )
                    )
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


def pruned_key(config: ExperimentConfig, parent: str, method: str, sparsity: float) -> str:
    return _key(
        {
            "v": ENGINE_VERSION,
            "parent": parent,
            "method": method,
            "sparsity": sparsity,
            "prune": config.prune.model_dump(mode="json"),
            "pruned_epochs": config.train.pruned_epochs,
        }
    )


def _key(obj: dict[str, Any]) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
