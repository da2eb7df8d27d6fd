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
    def inputs(self) -> dict[str, tuple[str, str]]:
        """The saved tensors this job reads, by the name it reads them under:
        ``name -> (job key, artifact name)``; empty for a dense job.

        Every pruned job reads its dense net's ``theta0`` and trained ``dense``
        weights (and with ``prune.rewind = "epoch:K"`` the ``rewind`` weights and the
        ``rewind_order`` data-order state); an imp level after the first also reads
        its parent level's ``mask`` and trained weights (as ``parent_mask`` and
        ``parent_final``).
        """
        job = self.job
        if job.kind == "dense" or job.dense is None:
            return {}
        out = {"theta0": (job.dense, "theta0"), "dense": (job.dense, "dense")}
        if self.prune.rewind_epoch is not None:
            out["rewind"] = (job.dense, "rewind")
            out["rewind_order"] = (job.dense, "rewind_order")
        if job.parent is not None and job.parent != job.dense:
            out["parent_mask"] = (job.parent, "mask")
            out["parent_final"] = (job.parent, "final")
        return out
