"""The results store: one SQLite file (WAL) plus safetensors artifacts.

Layout of a store folder (default ``./lotto-runs``)::

    lotto.db                       experiments, runs, epochs, layer_sparsity, provenance
    artifacts/<job key>/<name>.safetensors   theta0, dense, rewind, mask, final
    checkpoints/<job key>.pt       a running job's state after its last finished epoch
    locks/experiment-<id>.lock     held while a runner works on that experiment
    space-reserve                  256 KiB given back on a full disk to record a run's end

Durability rules: a run row is written as ``queued`` when its job is handed to an
executor, becomes ``running`` when the job starts (on a cluster it may wait in a
queue before that), and each epoch's metrics (and a pruned run's mask sparsity) are committed as they happen, so
other processes can follow a run live; when it ends, its status, metrics, curve and
per-layer sparsity are committed in ONE transaction. Artifacts are written to a temporary file, fsynced and renamed, before
that commit. A running job's checkpoint is replaced atomically (temp file, rename)
after every epoch. So ``kill -9`` at any moment loses at most the epoch in flight:
the next run marks that row (``running`` or ``queued``) ``cancelled``, then continues the job in the same row
from its checkpoint (or runs it again when it has none).

Checkpoints are not fsynced: a process killed after the rename leaves a whole file
in the page cache; a power cut can leave a broken one. A checkpoint that does not
load, or does not fit the job's net, is named by the next run, which starts that job
over (a file altered but still loadable is not detected: there is no checksum).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import io
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import StoreError, one_line
from .files import writer_alive
from .health import parse_flags
from .records import EpochMetrics, ExperimentRecord, LayerSparsity, RunRecord, RunResult
from .statuses import FINAL, IN_FLIGHT

if TYPE_CHECKING:
    import torch

    from .config import ExperimentConfig
    from .plan import Job

DB_NAME = "lotto.db"
#: Space held back for recording a run's end when the disk fills up.
RESERVE_NAME, RESERVE_BYTES = "space-reserve", 256 * 1024
#: 2: runs.reused_from; 3: runs.flags, runs.numerics, layer_sparsity units; 4: runs.variant,
#: runs.level; 5: runs.stability_floor, runs.kept_change, runs.provenance, the provenance table
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    job_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    activation TEXT NOT NULL,
    method TEXT NOT NULL,
    target_sparsity REAL NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    val_acc REAL, best_val_acc REAL, test_acc REAL,
    actual_sparsity REAL, stability REAL, wall_time REAL,
    error TEXT,
    reused_from INTEGER,
    flags TEXT,
    numerics TEXT,
    variant TEXT NOT NULL DEFAULT 'none',
    level INTEGER,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    stability_floor REAL,
    kept_change REAL,
    provenance TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs(experiment_id, job_key, attempt);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS layer_sparsity (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    layer TEXT NOT NULL,
    numel INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    units INTEGER,
    dead_units INTEGER,
    PRIMARY KEY (run_id, layer)
);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    recorded_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS provenance_by_experiment ON provenance(experiment_id, id);
"""

_RUN_COLUMNS = (
    "id, experiment_id, job_key, kind, activation, method, target_sparsity, seed, status, "
    "attempt, val_acc, best_val_acc, test_acc, actual_sparsity, stability, wall_time, error, "
    "started_at, finished_at, reused_from, flags, numerics, variant, level, "
    "stability_floor, kept_change, provenance"
)
#: Columns schemas 2 to 5 added, with what an older store reads in their place.
_V3_RUN_COLUMNS = {
    "reused_from": "NULL AS reused_from",
    "flags": "NULL AS flags",
    "numerics": "NULL AS numerics",
    "variant": "'none' AS variant",
    "level": "NULL AS level",
    "stability_floor": "NULL AS stability_floor",
    "kept_change": "NULL AS kept_change",
    "provenance": "NULL AS provenance",
}
#: Statuses a resume does not redo: done, and diverged (deterministic: it would diverge again).


_T = TypeVar("_T")


def _sql(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn SQLite failures inside a store method into one-line StoreErrors (exit 2):
    a damaged file, a full disk or a store locked too long is the environment's
    fault, never an internal error."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # our bug, not the file's
        except sqlite3.Error as err:
            raise _error(self.db_path, err) from None

    return wrapper


def lock_path(root: str | Path, experiment_id: int) -> Path:
    """The file a runner holds while it works on ``experiment_id`` in the store at ``root``."""
    return Path(root) / "locks" / f"experiment-{experiment_id}.lock"


def lock_holder(root: str | Path, experiment_id: int) -> int | None:
    """The pid of the live process that runs ``experiment_id`` now, or None.

    Reads the lock file's ``pid N`` (empty once the runner lets go) and checks that the
    process exists: a runner killed with ``kill -9`` leaves its pid behind. Never takes
    the lock, so a follower cannot stop a runner from starting."""
    path = lock_path(root, experiment_id)
    try:
        if not path.is_file():  # never open a FIFO or a device: that could block
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(64).strip()
    except OSError:
        return None
    head, _, number = text.partition(" ")
    if head != "pid" or not number.isdigit():
        return None
    pid = int(number)
    return pid if writer_alive(pid) else None

class StoreWriteError(StoreError):
    """The store could not be written (full disk, damaged file, I/O error): the grid
    stops, since every later job would fail the same way."""


def _error(db_path: Path, err: sqlite3.Error) -> StoreError:
    """The StoreError for an SQLite failure: a write-side one when the file or disk
    is at fault."""
    text = str(err)
    damaged = any(word in text for word in ("malformed", "not a database", "full", "disk I/O", "readonly"))
    return (StoreWriteError if damaged else StoreError)(_explain(db_path, err))


def _explain(db_path: Path, err: sqlite3.Error) -> str:
    """One line saying what went wrong with the store file and what to do."""
    text = " ".join(str(err).split())
    if "malformed" in text or "not a database" in text:
        return f"the results store {db_path} is damaged ({text}); restore it from a backup or use another --store"
    if "full" in text:
        return f"cannot write the results store {db_path}: {text}; free some space and run again (finished runs are kept)"
    return f"results store {db_path}: {text}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    """A results folder. Thread-safe: one connection guarded by a lock."""

    _run_columns = None  # set by a read-only open of an older store
    _has_provenance = True  # False: a read-only older store without the provenance table
    _layer_columns = "layer, numel, kept, units, dead_units"

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        """Open (and with ``create``, make) the store; ``create=False`` opens read-only."""
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        if not create and not self.db_path.exists():
            raise StoreError(f"no results store at {self.root.resolve()} (run an experiment first, or pass --store)")
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
                self._refuse_foreign()
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                with self._conn:
                    self._conn.executescript(_SCHEMA)
                    self._migrate()
                self._keep_reserve()
            else:
                self._conn = self._open_read_only()
        except sqlite3.Error as err:
            self._close_quietly()
            raise _error(self.db_path, err) from None
        except OSError as err:
            raise StoreError(f"cannot open results store {self.db_path}: {err.strerror or err}") from None
        except StoreError:
            self._close_quietly()
            raise
        self._lock = threading.RLock()

    def _refuse_foreign(self) -> None:
        """Never add lotto's tables to another program's database: a file at
        ``lotto.db`` that already holds tables must hold lotto's experiments and runs."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"experiments", "runs"} <= tables:
            raise StoreError(
                f"{self.db_path} is not a lotto-tui store (it holds other tables: "
                f"{', '.join(sorted(tables)[:5])}); pass another --store"
            )
        if tables:
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
            if not {"job_key", "experiment_id", "status"} <= columns:
                raise StoreError(f"{self.db_path} is not a lotto-tui store (its runs table is another program's)")

    def _close_quietly(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _migrate(self) -> None:
        """Bring a store written by an older release up to SCHEMA_VERSION."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        if "reused_from" not in columns:  # schema 1 -> 2
            self._conn.execute("ALTER TABLE runs ADD COLUMN reused_from INTEGER")
        if "flags" not in columns:  # schema 2 -> 3: older runs stay unchecked (flags NULL)
            self._conn.execute("ALTER TABLE runs ADD COLUMN flags TEXT")
            self._conn.execute("ALTER TABLE runs ADD COLUMN numerics TEXT")
        if "variant" not in columns:  # schema 3 -> 4: older runs are one-shot, no variant
            self._conn.execute("ALTER TABLE runs ADD COLUMN variant TEXT NOT NULL DEFAULT 'none'")
            self._conn.execute("ALTER TABLE runs ADD COLUMN level INTEGER")
        if "provenance" not in columns:  # schema 4 -> 5: older runs have no companions of D, no provenance
            self._conn.execute("ALTER TABLE runs ADD COLUMN stability_floor REAL")
            self._conn.execute("ALTER TABLE runs ADD COLUMN kept_change REAL")
            self._conn.execute("ALTER TABLE runs ADD COLUMN provenance TEXT")
        layer_columns = {row[1] for row in self._conn.execute("PRAGMA table_info(layer_sparsity)")}
        if "units" not in layer_columns:
            self._conn.execute("ALTER TABLE layer_sparsity ADD COLUMN units INTEGER")
            self._conn.execute("ALTER TABLE layer_sparsity ADD COLUMN dead_units INTEGER")
        self._conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def _open_read_only(self) -> sqlite3.Connection:
        """Open without writing; a store in a folder we cannot write is read as immutable."""
        base = self.db_path.resolve().as_uri()
        conn = sqlite3.connect(f"{base}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        except sqlite3.OperationalError:
            if os.access(self.root, os.W_OK):
                raise
            conn.close()
            conn = sqlite3.connect(f"{base}?immutable=1", uri=True, check_same_thread=False)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if not columns:
            raise StoreError(f"{self.db_path} is not a lotto-tui store (no runs table)")
        if not {"job_key", "experiment_id", "status"} <= columns:
            conn.close()
            raise StoreError(f"{self.db_path} is not a lotto-tui store (its runs table is another program's)")
        names = [name.strip() for name in _RUN_COLUMNS.split(",")]
        selected = ", ".join(  # a schema-1 to 4 store: read it as if migrated
            name if name in columns else _V3_RUN_COLUMNS[name] for name in names
        )
        if selected != ", ".join(names):
            self._run_columns = selected
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self._has_provenance = "provenance" in tables
        layer_columns = {row[1] for row in conn.execute("PRAGMA table_info(layer_sparsity)")}
        if "units" not in layer_columns:
            self._layer_columns = "layer, numel, kept, NULL, NULL"
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ experiments

    @_sql
    def experiment_for(self, config: ExperimentConfig, *, precision: str = "fp32") -> ExperimentRecord:
        """The experiment with this config's identity (at ``precision``), created if new."""
        identity = config.identity(precision)
        payload = json.dumps(config.model_dump(mode="json"), sort_keys=True)
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO experiments (identity, name, created_at, config) VALUES (?, ?, ?, ?)",
                (identity, config.run.name, _now(), payload),
            )
            if config.run.name:
                self._conn.execute(
                    "UPDATE experiments SET name = ? WHERE identity = ?", (config.run.name, identity)
                )
            row = self._conn.execute(
                "SELECT id, identity, name, created_at, config FROM experiments WHERE identity = ?",
                (identity,),
            ).fetchone()
        return _experiment(row)

    @_sql
    def find_experiment(self, config: ExperimentConfig, *, precision: str = "fp32") -> ExperimentRecord | None:
        """The experiment with this config's identity, or None (nothing is created)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, identity, name, created_at, config FROM experiments WHERE identity = ?",
                (config.identity(precision),),
            ).fetchone()
        return None if row is None else _experiment(row)

    @_sql
    def experiments(self) -> list[ExperimentRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, identity, name, created_at, config FROM experiments ORDER BY id"
            ).fetchall()
        return [_experiment(r) for r in rows]

    @_sql
    def experiment(self, experiment_id: int | None = None) -> ExperimentRecord:
        """One experiment by id; when ``experiment_id`` is None, the latest one with runs
        (or the latest one, if none has runs)."""
        with self._lock:
            if experiment_id is None:
                row = self._conn.execute(
                    "SELECT id, identity, name, created_at, config FROM experiments e "
                    "ORDER BY EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = e.id) DESC, id DESC LIMIT 1"
                ).fetchone()
                if row is None:
                    raise StoreError(f"the store {self.root} holds no experiment yet")
            else:
                row = self._conn.execute(
                    "SELECT id, identity, name, created_at, config FROM experiments WHERE id = ?",
                    (experiment_id,),
                ).fetchone()
                if row is None:
                    raise StoreError(f"no experiment {experiment_id} in {self.root} (see `lotto-tui experiments`)")
        return _experiment(row)

    @_sql
    def record_provenance(self, experiment_id: int, data: Mapping[str, Any]) -> None:
        """Add one provenance record to an experiment (the runner writes one per grid
        invocation that runs or adopts its jobs: see :mod:`lotto_engine.provenance`).
        ``data`` is stored as JSON; its ``recorded_at`` (default: now) orders the records."""
        recorded_at = str(data.get("recorded_at") or _now())
        payload = json.dumps({**dict(data), "recorded_at": recorded_at}, sort_keys=True, default=str)
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO provenance (experiment_id, recorded_at, data) VALUES (?, ?, ?)",
                (experiment_id, recorded_at, payload),
            )

    @_sql
    def provenance(self, experiment_id: int) -> list[dict]:
        """The experiment's provenance records, oldest first; [] for a store written
        before provenance was recorded."""
        if not self._has_provenance:
            return []
        with self._lock:
            rows = self._conn.execute(
                "SELECT data FROM provenance WHERE experiment_id = ? ORDER BY id", (experiment_id,)
            ).fetchall()
        return [record for record in (_parse_json(row[0]) for row in rows) if record is not None]

    @contextlib.contextmanager
    def lock_experiment(self, experiment_id: int) -> Iterator[None]:
        """Hold the experiment's lock file (it says ``pid N`` while held: see
        :func:`lock_holder`); a second runner gets a clear StoreError."""
        path = lock_path(self.root, experiment_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
        except OSError as err:
            raise StoreError(f"cannot create the lock file {path}: {err.strerror or err}") from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise StoreError(
                    f"experiment {experiment_id} is already running in {holder}; wait for it or stop it"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            try:
                yield
            finally:
                fh.truncate(0)
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ runs

    @_sql
    def start_run(self, experiment_id: int, job: Job) -> int:
        """Record a new attempt at ``job`` as queued (handed to an executor, not yet
        started: :meth:`mark_started`); returns its run id."""
        with self._lock, self._conn:
            (attempt,) = self._conn.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE experiment_id = ? AND job_key = ?",
                (experiment_id, job.key),
            ).fetchone()
            cur = self._conn.execute(
                "INSERT INTO runs (experiment_id, job_key, kind, activation, method, target_sparsity, "
                "seed, status, attempt, variant, level, pid, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (experiment_id, job.key, job.kind, job.activation, job.method, job.sparsity,
                 job.seed, attempt, job.variant, job.level, os.getpid(), _now()),
            )
            return int(cur.lastrowid)  # type: ignore[arg-type]

    @_sql
    def resume_run(self, experiment_id: int, job: Job, curve: Iterable[EpochMetrics]) -> int:
        """Continue ``job`` from a checkpoint: its latest attempt here, when that was
        interrupted (cancelled, or left in flight), is queued again in the same row with
        ``curve`` as its epochs so far; otherwise a new attempt is queued with that
        curve. Returns the run id."""
        with self._lock, self._conn:
            row = self._conn.execute(
                "SELECT id, status FROM runs WHERE experiment_id = ? AND job_key = ? ORDER BY attempt DESC LIMIT 1",
                (experiment_id, job.key),
            ).fetchone()
        if row is not None and row[1] in ("cancelled", *IN_FLIGHT):
            run_id = int(row[0])
            with self._lock, self._conn:
                self._conn.execute(
                    "UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, pid = ? WHERE id = ?",
                    (os.getpid(), run_id),
                )
                self._conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
                self._write_epochs(run_id, curve)
            return run_id
        run_id = self.start_run(experiment_id, job)
        with self._lock, self._conn:
            self._write_epochs(run_id, curve)
        return run_id

    @_sql
    def mark_started(self, run_id: int) -> None:
        """A queued run's job started: it is ``running`` from now (``started_at``)."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (_now(), run_id),
            )

    @_sql
    def mark_queued(self, run_id: int) -> None:
        """A running run's job waits to run again (its worker died; it is resubmitted)."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE runs SET status = 'queued' WHERE id = ? AND status = 'running'", (run_id,))

    @_sql
    def finish_run(self, run_id: int, result: RunResult) -> None:
        """Commit a run's outcome, curve and per-layer sparsity in one transaction."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET status = ?, val_acc = ?, best_val_acc = ?, test_acc = ?, "
                "actual_sparsity = ?, stability = ?, wall_time = ?, error = ?, flags = ?, numerics = ?, "
                "stability_floor = ?, kept_change = ?, provenance = ?, finished_at = ? WHERE id = ?",
                (result.status, result.val_acc, result.best_val_acc, result.test_acc,
                 result.actual_sparsity, result.stability, result.wall_time, result.error,
                 ",".join(result.flags), _json(result.numerics),
                 result.stability_floor, result.kept_change, _json(result.provenance),
                 _now(), run_id),
            )
            self._conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            self._write_epochs(run_id, result.curve)
            self._replace_layers(run_id, result.layers)

    def _write_epochs(self, run_id: int, curve: Iterable[EpochMetrics]) -> None:
        """Insert (or overwrite) epoch rows; call inside a transaction."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr, m.seconds) for m in curve],
        )

    def _replace_layers(self, run_id: int, layers: Iterable[LayerSparsity]) -> None:
        """Replace a run's per-layer sparsity rows; call inside a transaction."""
        self._conn.execute("DELETE FROM layer_sparsity WHERE run_id = ?", (run_id,))
        self._conn.executemany(
            "INSERT INTO layer_sparsity (run_id, layer, numel, kept, units, dead_units) VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, layer.name, layer.numel, layer.kept, layer.units, layer.dead_units) for layer in layers],
        )

    @_sql
    @_sql
    def mark_failed(self, run_id: int, error: str) -> None:
        """Record a run as failed with nothing else, after its full record could not be
        written. On a full disk the reserve file is given up to make room for it."""
        for last_try in (False, True):
            try:
                with self._lock, self._conn:
                    self._conn.execute(
                        "UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                        (error, _now(), run_id),
                    )
                return
            except sqlite3.OperationalError as err:
                if last_try or "full" not in str(err):
                    raise
                (self.root / RESERVE_NAME).unlink(missing_ok=True)

    def _keep_reserve(self) -> None:
        """Hold a little disk space that a full disk can give back, so a run's last
        status can still be written (best effort: no space, no reserve)."""
        path = self.root / RESERVE_NAME
        if path.exists():
            return
        try:
            with open(path, "wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    @_sql
    def record_epoch(self, run_id: int, metrics: EpochMetrics) -> None:
        """Commit one epoch of a running run (followers see the curve grow)."""
        with self._lock, self._conn:
            self._write_epochs(run_id, [metrics])

    @_sql
    def keep_epochs(self, run_id: int, epochs: int) -> None:
        """Drop a running run's epochs after the first ``epochs``: its job runs again
        from the checkpoint made then (a remote worker died after it)."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, epochs))

    @_sql
    def record_mask(self, run_id: int, actual_sparsity: float, layers: Iterable[LayerSparsity]) -> None:
        """Commit a running pruned run's mask sparsity as soon as the mask is cut."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE runs SET actual_sparsity = ? WHERE id = ?", (actual_sparsity, run_id))
            self._replace_layers(run_id, layers)

    @_sql
    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the store.

        Followers poll this (it costs no table read) and reload only on change.
        """
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @_sql
    def epoch_totals(self, experiment_id: int) -> dict[int, tuple[int, float]]:
        """Run id -> (epochs recorded, their total seconds), for every run of the experiment."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.run_id, COUNT(*), COALESCE(SUM(e.seconds), 0) FROM epochs e "
                "JOIN runs r ON r.id = e.run_id WHERE r.experiment_id = ? GROUP BY e.run_id",
                (experiment_id,),
            ).fetchall()
        return {int(r[0]): (int(r[1]), float(r[2])) for r in rows}

    @_sql
    def recover_interrupted(self, experiment_id: int) -> int:
        """Mark runs left ``running`` or ``queued`` by a dead process as cancelled;
        returns how many.

        Call while holding :meth:`lock_experiment`, so no live runner owns them.
        """
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE runs SET status = 'cancelled', error = 'interrupted: the process running it ended', "
                f"finished_at = ? WHERE experiment_id = ? AND status IN ({', '.join('?' * len(IN_FLIGHT))})",
                (_now(), experiment_id, *IN_FLIGHT),
            )
            return cur.rowcount

    def latest_statuses(self, experiment_id: int) -> dict[str, str]:
        """Job key -> status of its latest attempt in this experiment."""
        return {run.job_key: run.status for run in self.runs(experiment_id)}

    def final_keys(self, experiment_id: int) -> dict[str, str]:
        """Job key -> status, for jobs whose latest attempt here is final (done, diverged).

        A rerun that was interrupted leaves its job not final, so resuming runs it again.
        """
        return {key: st for key, st in self.latest_statuses(experiment_id).items() if st in FINAL}

    @_sql
    def adopt_runs(self, experiment_id: int, job_keys: Iterable[str]) -> dict[str, int]:
        """Copy finished runs of these jobs from other experiments into this one.

        A job key hashes every input of a job, so a job finished in another experiment
        (say, before a sparsity was added to the grid) need not run again. Only jobs
        never attempted in this experiment are adopted, and only from runs that really
        ran (never from copies). The copy keeps its metrics, curve and per-layer rows
        and names its source in ``reused_from``. Returns job key -> new run id.
        """
        adopted: dict[str, int] = {}
        with self._lock, self._conn:
            for key in job_keys:
                tried = self._conn.execute(
                    "SELECT 1 FROM runs WHERE experiment_id = ? AND job_key = ? LIMIT 1", (experiment_id, key)
                ).fetchone()
                if tried:
                    continue
                src = self._conn.execute(
                    "SELECT id FROM runs WHERE job_key = ? AND experiment_id != ? AND reused_from IS NULL "
                    "AND status IN ('done', 'diverged') ORDER BY id DESC LIMIT 1",
                    (key, experiment_id),
                ).fetchone()
                if src is None:
                    continue
                attempt = 1
                cur = self._conn.execute(
                    "INSERT INTO runs (experiment_id, job_key, kind, activation, method, target_sparsity, seed, "
                    "status, attempt, val_acc, best_val_acc, test_acc, actual_sparsity, stability, wall_time, "
                    "error, reused_from, flags, numerics, variant, level, pid, started_at, finished_at, "
                    "stability_floor, kept_change, provenance) "
                    "SELECT ?, job_key, kind, activation, method, target_sparsity, seed, status, ?, val_acc, "
                    "best_val_acc, test_acc, actual_sparsity, stability, wall_time, error, id, flags, numerics, "
                    "variant, level, pid, started_at, finished_at, stability_floor, kept_change, provenance "
                    "FROM runs WHERE id = ?",
                    (experiment_id, attempt, src[0]),
                )
                new = int(cur.lastrowid)  # type: ignore[arg-type]
                self._conn.execute(
                    "INSERT INTO epochs SELECT ?, epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds "
                    "FROM epochs WHERE run_id = ? ORDER BY epoch",
                    (new, src[0]),
                )
                self._conn.execute(
                    "INSERT INTO layer_sparsity (run_id, layer, numel, kept, units, dead_units) "
                    "SELECT ?, layer, numel, kept, units, dead_units FROM layer_sparsity WHERE run_id = ? "
                    "ORDER BY rowid",
                    (new, src[0]),
                )
                adopted[key] = new
        return adopted

    @_sql
    def finished_job_keys(self, job_keys: Iterable[str]) -> set[str]:
        """The job keys among ``job_keys`` with a final run (done, diverged) in any
        experiment of this store: the jobs a grid with these keys reuses, not reruns."""
        keys = list(dict.fromkeys(job_keys))
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite caps bound parameters
                chunk = keys[start:start + 500]
                rows = self._conn.execute(
                    f"SELECT DISTINCT job_key FROM runs WHERE status IN ('done', 'diverged') "
                    f"AND job_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update(row[0] for row in rows)
        return found

    def remove_partial_artifacts(self, job_keys: Iterable[str]) -> int:
        """Delete temp files left by killed processes while writing these jobs'
        artifacts or checkpoints."""
        removed = 0
        keys = list(job_keys)
        temps = [tmp for key in keys for tmp in (self.root / "artifacts" / key).glob("*.tmp*")]
        temps += [tmp for key in keys for tmp in (self.root / "checkpoints").glob(f"{key}.pt.tmp*")]
        for tmp in temps:
            pid = tmp.suffix.removeprefix(".tmp")
            if pid.isdigit() and writer_alive(int(pid)):
                continue  # another process is writing it right now
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    @_sql
    def runs(self, experiment_id: int, *, history: bool = False) -> list[RunRecord]:
        """Runs of an experiment in start order: the latest attempt per job, or all."""
        query = f"SELECT {self._run_columns or _RUN_COLUMNS} FROM runs r WHERE experiment_id = ?"
        if not history:
            query += (
                " AND attempt = (SELECT MAX(attempt) FROM runs q"
                " WHERE q.experiment_id = r.experiment_id AND q.job_key = r.job_key)"
            )
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", (experiment_id,)).fetchall()
        return [_run(row) for row in rows]

    @_sql
    def curve(self, run_id: int) -> list[EpochMetrics]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds FROM epochs "
                "WHERE run_id = ? ORDER BY epoch",
                (run_id,),
            ).fetchall()
        return [EpochMetrics(*row) for row in rows]

    @_sql
    def layers(self, run_id: int) -> list[LayerSparsity]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {self._layer_columns} FROM layer_sparsity WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [LayerSparsity(*row) for row in rows]

    # ------------------------------------------------------------------ artifacts

    def artifact_path(self, job_key: str, name: str) -> Path:
        return self.root / "artifacts" / job_key / f"{name}.safetensors"

    def save_tensors(self, job_key: str, name: str, tensors: Mapping[str, torch.Tensor]) -> Path:
        """Write tensors atomically (temp file, fsync, rename)."""
        from safetensors.torch import save

        path = self.artifact_path(job_key, name)
        blob = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"cannot write {path}: {err.strerror or err}") from None
        return path

    def has_tensors(self, job_key: str, name: str) -> bool:
        return self.artifact_path(job_key, name).exists()

    def load_tensors(
        self,
        job_key: str,
        name: str,
        device: Any = "cpu",
        *,
        like: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Read an artifact, checked: a file that does not parse, holds NaN or infinite
        values, or (with ``like``, e.g. a model's state dict) differs in names, shapes
        or dtypes raises a StoreError naming the file."""
        from safetensors.torch import load_file

        path = self.artifact_path(job_key, name)
        if not path.exists():
            raise StoreError(f"missing artifact {path}")
        try:
            tensors = load_file(str(path), device=str(device))
        except Exception as err:  # safetensors raises its own error type for a bad header
            raise StoreError(f"unreadable artifact {path}: {' '.join(str(err).split())[:200]}") from None
        problem = tensor_problem(tensors, like)
        if problem:
            raise StoreError(f"bad artifact {path}: {problem}")
        return tensors

    def check_tensors(
        self, job_key: str, name: str, *, like: Mapping[str, torch.Tensor] | None = None
    ) -> str | None:
        """Why an artifact cannot be used (missing, unreadable, not finite, not shaped
        ``like``), or None."""
        try:
            self.load_tensors(job_key, name, like=like)
        except StoreError as err:
            return str(err)
        return None


    # ------------------------------------------------------------------ checkpoints

    def checkpoint_path(self, job_key: str) -> Path:
        return self.root / "checkpoints" / f"{job_key}.pt"

    def save_checkpoint(self, job_key: str, payload: Mapping[str, Any]) -> None:
        """Replace a running job's checkpoint atomically (temp file, rename; see the
        module doc for why no fsync). ``payload`` holds tensors and plain values."""
        import torch

        path = self.checkpoint_path(job_key)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        buffer = io.BytesIO()  # serialise first: torch.save reports a full disk as a RuntimeError
        torch.save(dict(payload), buffer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"cannot write {path}: {err.strerror or err}") from None

    def load_checkpoint(self, job_key: str) -> Any | None:
        """A job's checkpoint payload, or None when it has none. A file that does not
        load raises a StoreError naming it. Loaded with ``weights_only``: a file can
        hold tensors and plain values, never code."""
        import torch

        path = self.checkpoint_path(job_key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and torch raise many types for a broken file
            raise StoreError(f"unreadable checkpoint {path}: {type(err).__name__}: {one_line(err)}") from None

    def drop_checkpoint(self, job_key: str) -> None:
        """Delete a job's checkpoint (its job ended, or starts over)."""
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint_path(job_key).unlink()

    def has_checkpoint(self, job_key: str) -> bool:
        return self.checkpoint_path(job_key).exists()


def tensor_problem(tensors: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor] | None) -> str | None:
    """What is wrong with loaded tensors, or None: non-finite values, or a mismatch
    with the reference's names, shapes and dtypes."""
    import torch

    if like is not None:
        if set(tensors) != set(like):
            odd = sorted(set(tensors) ^ set(like))
            return f"tensor names differ from the model's ({', '.join(odd[:3])})"
        for key, ref in like.items():
            got = tensors[key]
            if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
                return f"{key} is {got.dtype} {tuple(got.shape)}, the model expects {ref.dtype} {tuple(ref.shape)}"
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{key} holds NaN or infinite values"
    return None


def _run(row: tuple[Any, ...]) -> RunRecord:
    """A runs row (in _RUN_COLUMNS order) as a record: flags and numerics decoded. A
    finished run without flags (NULL) was made before health checks: unchecked."""
    *head, flags, numerics, variant, level, floor, kept_change, provenance = row
    record = RunRecord(
        *head, flags=parse_flags(flags), numerics=_parse_json(numerics), variant=variant, level=level,
        stability_floor=floor, kept_change=kept_change, provenance=_parse_json(provenance),
    )
    if flags is None and record.status in FINAL:
        record = dataclasses.replace(record, checked=False)
    return record


def _json(value: Mapping[str, Any] | None) -> str | None:
    """A dict column's text (keys sorted; values JSON cannot hold written as text)."""
    return None if value is None else json.dumps(dict(value), sort_keys=True, default=str)


def _parse_json(text: str | None) -> dict | None:
    """A dict column's value; None for NULL or text that is not a JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _experiment(row: tuple[Any, ...]) -> ExperimentRecord:
    return ExperimentRecord(id=row[0], identity=row[1], name=row[2], created_at=row[3], config=json.loads(row[4]))
