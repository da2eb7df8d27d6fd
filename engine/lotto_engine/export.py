"""Export an experiment from the store as JSON or CSV.

JSON: ``{"experiment": {...}, "provenance": [...], "cells": [...], "runs": [...]}``.
``provenance`` has one record per grid invocation that ran the experiment (command
line, versions, git commit, dataset checksums: see :mod:`lotto_engine.provenance`).
Each run has its grid point, with its ``variant`` ("none" for the method itself) and
its imp ``level`` (1, 2, ...; null for dense and one-shot runs: every imp level is a
run, those between grid sparsities too), its status, metrics (accuracies in [0, 1];
``stability`` and its companions ``stability_floor`` and ``kept_change`` null for
dense runs), its health ``flags`` (see :mod:`lotto_engine.health`), the ``numerics``
it ran with (device, precision, threads), its ``provenance`` (versions, device name),
its per-epoch ``curve`` and per-layer ``layers`` (with the units each layer left
without any incoming weight). CSV: one row per run, scalar columns only; ``flags``
joined with ``;``, ``level`` empty where null.

JSON also has ``"cells"``: one object per grid point and imp level (activation,
method, variant, target sparsity; dense at target 0) with ``n`` (finished runs) and,
for each of :data:`CELL_METRICS`, ``{"mean", "std", "ci95"}`` over the seeds at full
precision (``std`` the sample standard deviation, ``ci95`` the half-width
t(0.975, n-1) * std / sqrt(n); both null for one seed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from pathlib import Path

from .files import write_text_atomic
from .store import Store
from .views.results import STAT_METRICS, Cell, load_results

#: The per-run numbers ``"cells"`` summarises over seeds, in this order.
CELL_METRICS = STAT_METRICS

CSV_COLUMNS = (
    "run_id", "experiment_id", "job_key", "activation", "method", "variant", "level", "target_sparsity",
    "actual_sparsity", "seed", "status", "attempt", "val_acc", "best_val_acc", "test_acc",
    "stability", "stability_floor", "kept_change", "flags", "wall_time", "epochs", "error", "reused_from",
    "device", "precision", "threads",
)


def export_experiment(store: Store, experiment_id: int | None = None, *, history: bool = False) -> dict[str, Any]:
    """The experiment (latest when ``experiment_id`` is None) and its runs as plain data."""
    exp = store.experiment(experiment_id)
    runs = []
    for run in store.runs(exp.id, history=history):
        curve = store.curve(run.id)
        runs.append(
            {
                "run_id": run.id,
                "experiment_id": exp.id,
                "job_key": run.job_key,
                "activation": run.activation,
                "method": run.method,
                "variant": run.variant,
                "level": run.level,
                "target_sparsity": run.target_sparsity,
                "actual_sparsity": run.actual_sparsity,
                "seed": run.seed,
                "status": run.status,
                "attempt": run.attempt,
                "val_acc": run.val_acc,
                "best_val_acc": run.best_val_acc,
                "test_acc": run.test_acc,
                "stability": run.stability,
                "stability_floor": run.stability_floor,
                "kept_change": run.kept_change,
                "flags": list(run.flags) if run.checked else None,
                "numerics": run.numerics,
                "provenance": run.provenance,
                "wall_time": run.wall_time,
                "error": run.error,
                "reused_from": run.reused_from,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "epochs": len(curve),
                "curve": [
                    {
                        "epoch": m.epoch,
                        "train_loss": m.train_loss,
                        "train_acc": m.train_acc,
                        "val_loss": m.val_loss,
                        "val_acc": m.val_acc,
                        "lr": m.lr,
                    }
                    for m in curve
                ],
                "layers": [
                    {
                        "name": layer.name,
                        "numel": layer.numel,
                        "kept": layer.kept,
                        "sparsity": layer.sparsity,
                        "collapsed": layer.numel > 0 and layer.kept == 0,
                        "units": layer.units,
                        "dead_units": layer.dead_units,
                    }
                    for layer in store.layers(run.id)
                ],
            }
        )
    results = load_results(store, exp.id, include_running=False, masks=False, metrics=())
    cells = [cell_summary(cell) for cell in (*results.cells, *results.intermediate)]
    experiment = {
        "id": exp.id,
        "identity": exp.identity,
        "name": exp.name,
        "created_at": exp.created_at,
        "config": exp.config,
    }
    return {"experiment": experiment, "provenance": store.provenance(exp.id), "cells": cells, "runs": runs}


def cell_summary(cell: Cell) -> dict[str, Any]:
    """One ``"cells"`` entry: the grid point, its level, how many runs finished, and
    each metric's mean, sample std and 95% CI half-width over them."""
    out: dict[str, Any] = {
        "activation": cell.activation,
        "method": cell.method,
        "variant": cell.variant,
        "target_sparsity": cell.target_sparsity,
        "level": cell.level,
        "n": cell.n,
        "runs": cell.runs,
        "flagged": cell.flagged,
        "mixed_numerics": cell.mixed_numerics,
    }
    for name in CELL_METRICS:
        stat = cell.stat(name)
        out[name] = {"mean": stat.mean, "std": stat.std, "ci95": stat.ci95}
    return out


def to_json(data: dict[str, Any]) -> str:
    """Strict JSON: NaN and infinities (diverged runs) become null."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def to_csv(data: dict[str, Any]) -> str:
    """One row per run. Control characters in text cells (an error quoting a crafted
    name, say) are written as escapes (``\\x1b``), as JSON escapes them: the CSV is
    often read on a terminal, and a row stays one line."""
    from .errors import escape_controls

    def cell(value: Any) -> Any:
        if value is None:
            return ""
        return escape_controls(value) if isinstance(value, str) else value

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for run in data["runs"]:
        flags = run.get("flags")  # None: made before health checks, so unknown (never "no flags")
        row = {**run, **(run.get("numerics") or {}), "flags": "?" if flags is None else ";".join(flags)}
        writer.writerow({k: cell(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_exports(store: Store, experiment_id: int | None, folder: str | Path) -> list[Path]:
    """Write ``experiment-<id>.json`` and ``.csv`` into ``folder`` (atomically); returns
    their paths. Raises ``OSError`` when the folder cannot be written."""
    data = export_experiment(store, experiment_id)
    name = f"experiment-{data['experiment']['id']}"
    return [
        write_text_atomic(Path(folder) / f"{name}.{suffix}", text)
        for suffix, text in (("json", to_json(data)), ("csv", to_csv(data)))
    ]
