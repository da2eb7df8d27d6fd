"""Run statuses and the groups every module reads them by, defined once.

A run is ``running`` until it ends ``done``, ``diverged`` (a non-finite loss),
``cancelled`` (stopped by the user, or its process died) or ``failed`` (it raised).
A job with no run yet shows as ``pending``.
"""

from __future__ import annotations

#: every status a job can show, in the order tables and counts list them
ORDER = ("done", "running", "failed", "diverged", "cancelled", "pending")
#: a finished job: resume never runs it again, and its health was checked
FINAL = ("done", "diverged")
#: what makes a grid not ok (exit 1 in batch)
PROBLEMS = ("failed", "diverged")
#: what "rerun failed" runs again
RERUNNABLE = ("failed", "diverged", "cancelled")
