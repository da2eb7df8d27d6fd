"""The runner: schedules a plan's jobs on an executor and is the only writer of the store.

- :mod:`.grid`: :class:`Runner` and :class:`GridSummary`;
- :mod:`.graph`: :class:`JobGraph`, which job waits for which.
"""

from .graph import JobGraph
from .grid import PARENT_FAILED, PARENT_MISSING, EventHandler, GridSummary, Runner

__all__ = ["PARENT_FAILED", "PARENT_MISSING", "EventHandler", "GridSummary", "JobGraph", "Runner"]
