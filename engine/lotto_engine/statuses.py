"""Run statuses and the groups every module reads them by, defined once.

A run is ``queued`` from the moment the runner hands its job to an executor, and
``running`` once the job starts (its executor's ``Started``: on a cluster it can wait
in a queue for long before that). It ends ``done``, ``diverged`` (a non-finite loss),
``cancelled`` (stopped by the user, or its process died) or ``failed`` (it raised).
A job with no run yet shows as ``pending``.
"""

from __future__ import annotations

#: every status a job can show, in the order tables and counts list them
ORDER = ("done", "running", "queued", "failed", "diverged", "cancelled", "pending")
#: a run a live runner owns (handed to an executor, or training); a dead runner's are
#: recovered as ``cancelled`` when its experiment next runs
IN_FLIGHT = ("queued", "running")
#: a finished job: resume never runs it again, and its health was checked
FINAL = ("done", "diverged")
#: what makes a grid not ok (exit 1 in batch)
PROBLEMS = ("failed", "diverged")
#: what "rerun failed" runs again
RERUNNABLE = ("failed", "diverged", "cancelled")
