"""The dependency graph of the jobs one runner call trains.

A job waits for its parent (dense -> pruned, and pruned -> pruned chains alike)
when the parent is also to be trained in this call; a parent outside the call is
already finished in the store. A job whose parent did not end ``done`` fails
without training, and so, in turn, do its own dependents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..plan import Job


class JobGraph:
    """Hands out jobs in plan order as their parents finish; see the module doc."""

    def __init__(self, jobs: Sequence[Job], failed: Iterable[str] = ()) -> None:
        self._waiting = list(jobs)
        self._unfinished = {job.key for job in jobs}
        #: keys whose latest run did not end done: their dependents cannot train
        self.failed = set(failed)

    def ready(self) -> Job | None:
        """The first waiting job whose parent is not still to finish, taken off the
        waiting list; None when every waiting job waits (or none is left)."""
        for i, job in enumerate(self._waiting):
            if job.parent not in self._unfinished:
                return self._waiting.pop(i)
        return None

    def finish(self, key: str, *, ok: bool) -> None:
        """Record that a job ended (``ok``: done, so its dependents may start)."""
        self._unfinished.discard(key)
        if not ok:
            self.failed.add(key)

    def parent_failed(self, job: Job) -> bool:
        return job.parent is not None and job.parent in self.failed

    @property
    def waiting(self) -> list[Job]:
        return list(self._waiting)
