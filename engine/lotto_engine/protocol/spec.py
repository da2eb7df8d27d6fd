"""A job's inputs as plain, picklable data: what it trains and with which numerics.

A :class:`JobSpec` holds the config sections a job's numbers depend on (model,
training, pruning, augmentation) and the resolved fast path, never the store or
the run settings, so it can be handed to another thread, process or machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig, ExperimentConfig, ModelConfig, PruneConfig, TrainConfig
from ..devices import FastPath
from ..plan import Job


@dataclass(frozen=True)
class JobSpec:
    """One job of a plan with everything needed to run it, minus data and parents."""

    job: Job
    data: DataConfig  # which dataset, and its augmentation (a worker elsewhere loads it from here)
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig
    fast: FastPath

    @classmethod
    def of(cls, job: Job, config: ExperimentConfig, fast: FastPath) -> JobSpec:
        return cls(job, config.data, config.model, config.train, config.prune, fast)

    @property
    def epochs(self) -> int:
        return self.train.dense_epochs if self.job.kind == "dense" else self.train.pruned_epochs

    @property
    def parent_artifacts(self) -> tuple[str, ...]:
        """What this job reads from its parent's saved tensors (empty: no parent)."""
        if self.job.parent is None:
            return ()
        return ("theta0", "dense") + (("rewind",) if self.prune.rewind_epoch is not None else ())
