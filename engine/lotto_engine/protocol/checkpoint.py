"""A running job's state after a finished epoch, to continue it after a crash.

The job hands it to its ``on_checkpoint`` hook; the runner writes it (the only
writer of the store) and gives it back as ``resume`` when the experiment runs again.
The payload holds only tensors and plain values, so ``torch.load(weights_only=True)``
reads it without running any code from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..training import TrainState

FORMAT = 1


@dataclass
class JobCheckpoint:
    """The training state of one job and, for a pruned job, its mask (CPU tensors)."""

    job_key: str
    train: TrainState
    masks: dict[str, torch.Tensor] | None = None
    #: the settings that made its numbers ({"device", "precision", "threads"}): a run
    #: under other settings would not continue the same numbers
    numerics: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        return self.train.epoch

    def to_payload(self) -> dict[str, Any]:
        return {"format": FORMAT, "job": self.job_key, "train": self.train.to_payload(), "masks": self.masks,
                "numerics": self.numerics}

    @classmethod
    def from_payload(cls, payload: Any, job_key: str) -> JobCheckpoint:
        """Check and read a payload; ValueError (one line) when it is not this job's."""
        if not isinstance(payload, Mapping):
            raise ValueError("not a checkpoint")
        if payload.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {payload.get('format')!r}, expected {FORMAT}")
        if payload.get("job") != job_key:
            raise ValueError(f"checkpoint of job {payload.get('job')!r}, not {job_key!r}")
        masks = payload.get("masks")
        if masks is not None and not (
            isinstance(masks, Mapping) and all(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks.values())
        ):
            raise ValueError("checkpoint masks are not boolean tensors")
        numerics = payload.get("numerics")
        if numerics is not None and not isinstance(numerics, Mapping):
            raise ValueError("checkpoint numerics are not a dict")
        return cls(job_key, TrainState.from_payload(payload.get("train")), None if masks is None else dict(masks),
                   None if numerics is None else dict(numerics))
