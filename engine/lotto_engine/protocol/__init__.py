"""The protocol: what one job computes, as a pure function of plain inputs.

- :mod:`.spec`: :class:`JobSpec`, a job and the config it depends on;
- :mod:`.jobs`: :func:`run_job` (dense and pruned), its hooks and output;
- :mod:`.checkpoint`: :class:`JobCheckpoint`, a running job's state after an epoch.
"""

from .checkpoint import JobCheckpoint
from .jobs import JobHooks, JobOutput, run_dense, run_job, run_pruned
from .spec import JobSpec

__all__ = ["JobCheckpoint", "JobHooks", "JobOutput", "JobSpec", "run_dense", "run_job", "run_pruned"]
