"""The explorer app: configuration, jobs, results and history panels over one store.

Data flows one way. The form yields a config; the engine's runner executes its plan
in a Textual thread worker and emits typed events; the events arrive here as
messages and only mark the views stale; a timer redraws stale views from the store
(the read models of :mod:`lotto_engine.views`) a few times a second.
A ``--batch`` process writing the same store is picked up the same way, by polling
SQLite's ``data_version``: that is follow mode. The process that holds the shown
experiment's lock is named on the jobs panel, and its end is notified.

Two experiments can be on screen: the jobs panel shows the form's config (its plan,
a new experiment until it runs), and the results panel keeps the last experiment that
ran or was opened until the new one has results to show, with a line saying so.
The store query that counts a plan's reusable jobs runs in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.driver import Driver
from textual.screen import Screen
from textual.widgets import Footer, Input, Select, SelectionList, Static, TabbedContent, TabPane

from lotto_engine.config import ExperimentConfig
from lotto_engine.errors import LottoError, escape_controls, one_line
from lotto_engine.naming import name_origin, name_to_store
from lotto_engine.events import (
    BatchProgress,
    EpochFinished,
    GridFinished,
    GridStarted,
    JobFailed,
    JobFinished,
    JobStarted,
    Notice,
)
from lotto_engine.plan import Plan, build_plan
from lotto_engine.statuses import ORDER, RERUNNABLE
from lotto_engine.store import DB_NAME, Store
from lotto_engine.views.experiments import experiment_summaries
from lotto_engine.views.progress import GridProgress, experiment_plan, grid_progress
from lotto_engine.views.results import load_results

from .. import event_text as text
from ..commands import read_data_before_the_store
from ..formatting import grid_counts, printable
from .config_form import ConfigForm
from .help_screen import HelpScreen
from .history import CompareScreen, HistoryPanel
from .jobs_panel import JobsPanel, more_running
from .keys import APP_KEYS, CONFIG_KEYS, bindings, display
from .messages import EngineEvent, EngineReady, ReportWritten, ReuseCounted, RunEnded
from .results_panel import ResultsPanel
from .state import GridWriter, grid_writer, remember

PANELS = ("config", "jobs", "results", "history")
#: The widget each panel focuses when it is shown (keyboard first: arrows work at once).
PANEL_FOCUS = {
    "config": "#config-fields",
    "jobs": "#jobs-table",
    "results": "#result-tabs Tabs",
    "history": "#history-table",
}
#: Where the report key writes, under the store (``experiment-<id>`` inside).
REPORTS = "reports"


class ResultsSource(Static):
    """The line above the results saying they are an earlier experiment's, while the
    edited config is not run yet (hidden otherwise)."""

    DEFAULT_CSS = """
    ResultsSource { height: auto; display: none; color: $text-warning; }
    ResultsSource.-shown { display: block; }
    """

    def say(self, text: str) -> None:
        self.update(text)
        self.set_class(bool(text), "-shown")


def preview_text(*, jobs: int, finished: int | None, experiment_id: int | None, name: str,
                 counting: bool = False) -> str:
    """The config panel's line about the plan: which experiment, and how many of its
    jobs are already finished in the store (reused or skipped) and how many train.
    ``finished`` None: still ``counting``, or the store could not say."""
    named = f' "{printable(name)}"' if name else ""
    where = f"experiment {experiment_id}{named}" if experiment_id is not None else f"new experiment{named}"
    if finished is None:
        return f"{where} · {jobs} jobs" + (" (counting finished ones…)" if counting else " (the store could not be read)")
    kept = "finished" if experiment_id is not None else "reused"
    return f"{where} · {jobs} jobs: {finished} {kept}, {jobs - finished} to run"


def follow_end_text(writer: GridWriter, experiment_id: int, counts: dict[str, int]) -> str:
    """The notice when a followed process lets go of the grid: its done and failed
    counts (always), then any other status it left."""
    shown = {"done": counts.get("done", 0), "failed": counts.get("failed", 0)}
    shown.update({s: n for s in ORDER if (n := counts.get(s, 0)) and s not in shown})
    parts = ", ".join(f"{n} {s}" for s, n in shown.items())
    return f"{writer.describe()} stopped running experiment {experiment_id}: {parts}"


class ExplorerApp(App[int]):
    """``lotto-tui`` without ``--batch``. Build it with :func:`create_app`."""

    TITLE = "lotto-tui"
    CSS_PATH = "lotto.tcss"
    BINDINGS = bindings(APP_KEYS)

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        config_path: str | None = None,
        preset: str | None = None,
        reopen: int | None = None,
        origin: tuple[str, ExperimentConfig | None] | None = None,
        poll_interval: float = 1.0,
        refresh_interval: float = 0.25,
        progress_interval: float = 0.2,
        driver_class: type[Driver] | None = None,
    ) -> None:
        super().__init__(driver_class=driver_class)  # explore.py: draw on the terminal stream
        self.form_config: ExperimentConfig | None = config  # the form's, when it validates
        self.view_config: ExperimentConfig = config  # the experiment the panels show
        self.plan: Plan | None = None
        self.experiment_id: int | None = None  # the experiment of the shown plan (None: not run yet)
        self.shown_id: int | None = None  # the experiment the results show (the last one run or opened)
        self.reuse: int | None = None  # finished jobs of the shown plan in the store (None: counting)
        self.writer: GridWriter | None = None  # another process running the shown experiment
        self._writer_of: int | None = None  # the experiment self.writer was found running
        self.device = "…"
        self.cancel = threading.Event()
        self.running = False
        self.runs_ended = 0  # worker runs finished so far (tests and scripts wait on it)
        self.last_progress: GridProgress | None = None
        self._config_path = config_path
        self._preset = preset
        self._reopen = reopen
        # what a new experiment's default name is made from (lotto_engine.naming)
        self._origin = origin or ((preset, None) if preset and not config.run.name else name_origin(config))
        self._experiment_name = ""  # the shown experiment's stored name
        self._preview_token = 0
        self._preview_pending = False
        self._remembered: int | None = None  # the experiment last written to explorer-state.json
        self._reporting = False
        self._poll_interval = poll_interval
        self._refresh_interval = refresh_interval
        self._progress_interval = progress_interval
        self._engine_ready = False
        self._precision = "fp32"
        self._reader: Store | None = None
        self._reader_root: Path | None = None
        self._data_version: int | None = None
        self._dirty = True
        self._stale: set[str] = {"results", "history"}
        self._batch: BatchProgress | None = None
        self._quitting = False
        self._exiting = False
        self._replan_after_run = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with TabbedContent(id="panels", initial="jobs"):
            with TabPane("1 Config", id="config"):
                yield ConfigForm(
                    self.view_config, path=self._config_path, preset=self._preset, origin=self._origin,
                    id="config-form",
                )
            with TabPane("2 Jobs", id="jobs"):
                yield JobsPanel(id="jobs-panel")
            with TabPane("3 Results", id="results"):
                yield ResultsSource("", id="results-source")
                yield ResultsPanel(id="results-panel")
            with TabPane("4 History", id="history"):
                yield HistoryPanel(id="history-panel")
        yield Footer(compact=True)

    @property
    def jobs(self) -> JobsPanel:
        return self.query_one(JobsPanel)

    @property
    def results(self) -> ResultsPanel:
        return self.query_one(ResultsPanel)

    @property
    def history(self) -> HistoryPanel:
        return self.query_one(HistoryPanel)

    @property
    def panel(self) -> str:
        return str(self.query_one("#panels", TabbedContent).active)

    def on_mount(self) -> None:
        self.jobs.log("[dim]press [b]r[/b] to run the grid, [b]?[/b] for every key[/]")
        self.jobs.table.focus()
        self.set_interval(self._refresh_interval, self._tick)
        self.set_interval(self._poll_interval, self._poll)
        self.run_worker(self._load_engine, thread=True, group="load", name="load engine")

    def _load_engine(self) -> None:
        """Import torch off the UI thread (about 2 s), so the window paints at once."""
        try:
            import torch  # noqa: F401

            from lotto_engine import devices  # noqa: F401
            from lotto_engine.data import load_dataset  # noqa: F401

            # What the first run would otherwise pay when `r` is pressed: the digits
            # loader imports scikit-learn (about 2 s). (torch's compiler stack is no
            # longer imported by a run: devices.set_deterministic.)
            import sklearn.datasets  # noqa: F401
        except Exception as err:  # pragma: no cover - a broken torch install
            self.post_message(EngineReady(error=f"cannot load torch: {err}"))
            return
        self.post_message(EngineReady())

    def on_engine_ready(self, message: EngineReady) -> None:
        if message.error:
            self.notify(message.error, severity="error", timeout=30)
            return
        self._engine_ready = True
        # reopened: the form holds the stored config already (with --device, if given)
        if self._reopen is not None and self._open(self._reopen, self.view_config):
            self.notify(
                f"Reopened experiment {self._reopen}, the last one worked on in this store "
                "(--preset, --config or --set opens another)", timeout=6,
            )
            return
        self._replan(self.view_config)

    def _open(self, experiment_id: int, config: ExperimentConfig | None = None) -> bool:
        """Show a stored experiment: its plan, and ``config`` (default: its stored config,
        in this store). False, with a notice, when it cannot be rebuilt."""
        reader = self.reader()
        if reader is None:
            return False
        try:
            stored, plan = experiment_plan(reader.experiment(experiment_id))
        except LottoError as err:
            self.notify(str(err), severity="error")
            return False
        if config is None:
            config = stored.model_copy(
                update={"run": stored.run.model_copy(update={"store": self.view_config.run.store})}
            )
        self._replan(config, experiment=(experiment_id, plan))
        return True

    # ------------------------------------------------------------------ the view

    def _replan(self, config: ExperimentConfig, experiment: tuple[int, Plan] | None = None) -> None:
        """Show ``config``'s plan and its experiment in the store (if it has one)."""
        from lotto_engine import devices

        self.view_config = config
        try:
            execution = devices.execution(config.run)
        except LottoError as err:
            execution = None
            self.device = "no device"
            self.notify(str(err), severity="error", timeout=10)
        else:
            self._precision = execution.fast.precision
            self.device = execution.label
        if experiment is not None:  # a stored experiment shows its own plan, whatever runs it here
            self.plan = experiment[1]
            self._set_experiment(experiment[0])
        else:
            if execution is None:
                self.plan = None
                self._mark_dirty()
                self._count_reuse()  # no plan: no preview
                return
            fast = execution.fast
            self.plan = build_plan(config, precision=fast.precision)
            reader = self.reader()
            found = reader.find_experiment(config, precision=fast.precision) if reader else None
            self._set_experiment(found.id if found else None, found.name if found else "")
        self._mark_dirty()
        self._count_reuse()

    def _set_experiment(self, experiment_id: int | None, name: str | None = None) -> None:
        """The shown plan's experiment. Once it exists, the results show it (until then
        they keep the last one) and the store remembers it for the next start."""
        self.experiment_id = experiment_id
        if experiment_id is None:
            self._experiment_name = ""
            self._show_source()
            return
        if name is None:
            reader = self.reader()
            try:
                name = reader.experiment(experiment_id).name if reader else ""
            except LottoError:
                name = ""
        self._experiment_name = name
        if self.shown_id != experiment_id:
            self.shown_id = experiment_id
            self._stale.add("results")
        self._show_source()
        if self._remembered != experiment_id:
            reader = self.reader()
            try:
                identity = reader.experiment(experiment_id).identity if reader else None
            except LottoError:
                identity = None
            if identity is not None and remember(self.view_config.run.store, experiment_id, identity):
                self._remembered = experiment_id

    def _show_source(self) -> None:
        """Say so above the results when they are not the shown plan's experiment."""
        kept = self.shown_id is not None and self.experiment_id != self.shown_id
        self.query_one(ResultsSource).say(
            f"showing experiment {self.shown_id} (the last one run or opened): the edited config is a "
            "new experiment, not run yet (r runs it)" if kept else ""
        )

    # ------------------------------------------------------------------ reuse count

    def _count_reuse(self, *, new_plan: bool = True) -> None:
        """Count, in a worker, how many of the plan's jobs the store has finished
        (any experiment): a new experiment reuses them, a resumed one skips them.
        ``new_plan``: forget the last count (else it shows until the new one is in)."""
        self._preview_token += 1
        if new_plan:
            self.reuse = None
        plan = self.plan
        if plan is None:
            self._preview_pending = False
            self._show_preview()
            return
        self._preview_pending = True
        self._show_preview()
        root = Path(self.view_config.run.store)
        keys = tuple(job.key for job in plan)
        self.run_worker(
            partial(self._reuse_work, self._preview_token, root, keys),
            thread=True, group="preview", exclusive=True, name="count reusable jobs",
        )

    def _reuse_work(self, token: int, root: Path, keys: tuple[str, ...]) -> None:
        """Worker thread: its own read-only connection (the UI's may be swapped meanwhile)."""
        finished: int | None = 0
        try:
            if (root / DB_NAME).exists():
                with Store(root, create=False) as store:
                    finished = len(store.finished_job_keys(keys))
        except Exception:  # a store that went away or broke: the preview says so
            finished = None
        self.post_message(ReuseCounted(token, finished))

    def on_reuse_counted(self, message: ReuseCounted) -> None:
        if message.token != self._preview_token or self._exiting or not self.screen_stack:
            return  # an older plan's count, or a count that arrived while the app shuts down
        self._preview_pending = False
        self.reuse = message.finished
        self._show_preview()
        self._dirty = True  # the jobs panel's title names the count too

    def _show_preview(self) -> None:
        forms = self.query(ConfigForm)
        if self._exiting or not self.is_running or not forms:  # a form change that lands while the app closes
            return
        form = forms.first()
        if self.plan is None:
            form.show_preview("")
            return
        name = self._experiment_name
        if self.experiment_id is None and self.form_config is not None:
            explicit, default = form.name_for(self.view_config)
            name = explicit or default
        form.show_preview(preview_text(jobs=len(self.plan), finished=self.reuse, experiment_id=self.experiment_id,
                                       name=name, counting=self._preview_pending))

    def reader(self) -> Store | None:
        """A read-only connection to the shown config's store (None before it exists)."""
        root = Path(self.view_config.run.store)
        if self._reader is not None and self._reader_root == root:
            return self._reader
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if not (root / DB_NAME).exists():
            return None
        try:
            self._reader = Store(root, create=False)
        except LottoError as err:
            self.notify(str(err), severity="error")
            return None
        self._reader_root = root
        self._data_version = None
        return self._reader

    def _mark_dirty(self) -> None:
        self._dirty = True
        self._stale.update(("results", "history"))

    def _tick(self) -> None:
        """Redraw what changed, at most every ``refresh_interval`` (the throttle)."""
        if self._exiting or not self.is_running:
            return
        if self._dirty:
            self._dirty = self._preview_pending  # settled once the reuse count is in too
            self.refresh_views()
        batch, self._batch = self._batch, None
        if batch is not None and self.running:
            done = batch.epoch - 1 + batch.batch / max(batch.batches, 1)
            self.jobs.show_job(
                f"{text.batch_progress(batch).plain}{more_running(self.last_progress)}", done, batch.epochs
            )

    def _poll(self) -> None:
        """Follow mode: reload when any process committed to the store."""
        if self._exiting or not self.is_running:
            return
        reader = self.reader()
        if reader is None:
            return
        try:
            version = reader.data_version()
        except Exception:  # the store went away under us: try again next time
            self._reader = None
            return
        if version != self._data_version:
            self._data_version = version
            if self.experiment_id is None and self.plan is not None and not self.running:
                found = reader.find_experiment(self.view_config, precision=self._precision)
                if found is not None:
                    self._set_experiment(found.id, found.name)
            self._mark_dirty()
            if not self.running:
                self._count_reuse(new_plan=False)
        self._follow()

    def _follow(self) -> None:
        """Name the process that runs the shown experiment; notify when it lets go."""
        writer = None
        if not self.running and self.experiment_id is not None:
            writer = grid_writer(self.view_config.run.store, self.experiment_id)
        if (writer, self.experiment_id) == (self.writer, self._writer_of):
            return
        before, same = self.writer, self._writer_of == self.experiment_id
        self.writer, self._writer_of = writer, self.experiment_id
        self.jobs.show_follow(
            f"following: {writer.describe()} runs this grid; the store shows its progress" if writer else ""
        )
        if before is not None and writer is None and same and self.experiment_id is not None and self.plan is not None:
            reader = self.reader()
            progress = grid_progress(reader, self.view_config, self.plan, self.experiment_id)
            failed = progress.counts.get("failed", 0) + progress.counts.get("diverged", 0)
            self.notify(follow_end_text(before, self.experiment_id, progress.counts), title="Followed grid ended",
                        severity="information" if not failed else "warning", timeout=10)
            self._mark_dirty()

    def refresh_views(self) -> None:
        """Redraw the jobs panel, and the results/history panels when they show."""
        if not self._engine_ready:
            return
        reader = self.reader()
        if self.plan is not None:
            progress = grid_progress(reader, self.view_config, self.plan, self.experiment_id)
            self.last_progress = progress
            if self.experiment_id is not None:
                title = f"experiment {self.experiment_id}"
            elif self.reuse:
                title = f"new experiment ({self.reuse} reused, {len(self.plan) - self.reuse} to run)"
            else:
                title = "new experiment (not run yet)"
            self.jobs.show(progress, device=self.device, title=title)
        self._refresh_stale_panels()

    def _refresh_stale_panels(self) -> None:
        panel = self.panel
        reader = self.reader()
        if panel == "results" and "results" in self._stale:
            self._stale.discard("results")
            self.results.show(load_results(reader, self.shown_id))
        if panel == "history" and "history" in self._stale:
            self._stale.discard("history")
            self.history.show(experiment_summaries(reader)[::-1], self.shown_id)  # newest first

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.tabbed_content.id != "panels":
            return
        self._settle_focus()  # also when the tab was picked with the mouse
        if self._engine_ready:
            self._refresh_stale_panels()

    # ------------------------------------------------------------------ config

    def on_config_form_changed(self, message: ConfigForm.Changed) -> None:
        self.form_config = message.config
        if message.config is None:
            self.query_one(ConfigForm).show_preview("the config has problems (in red): fix them to see what r runs")
            return
        if message.config == self.view_config:
            if self._engine_ready:
                self._show_preview()  # back to the shown plan, or a typed name
            return
        if self.running:
            self._replan_after_run = True
        elif self._engine_ready:
            self._replan(message.config)

    # ------------------------------------------------------------------ running

    def _start(self, mode: str, keys: Iterable[str] = ()) -> None:
        if self.running:
            self.notify("A grid is already running (x cancels it)", severity="warning")
            return
        if not self._engine_ready:
            self.notify("The engine is still loading; try again in a moment", severity="warning")
            return
        config = self.form_config if mode == "grid" else self.view_config
        if config is None:
            self.action_show_panel("config")
            self.notify("The config has problems (shown in red); fix them to run", severity="error")
            return
        if mode == "grid" and config != self.view_config:
            self._replan(config)
        if mode == "grid" and self.plan is None:  # the run settings did not resolve (say, no such device)
            self.action_show_panel("config")
            self.notify("The run settings cannot be used here (see the error); fix them to run", severity="error")
            return
        explicit, default = self.query_one(ConfigForm).name_for(config)
        config = config.model_copy(update={"run": config.run.model_copy(update={"name": explicit})})
        self.cancel.clear()
        self.running = True
        self._batch = None
        self.writer = None
        self.jobs.show_follow("")
        self.jobs.show_job("starting: loading the data…", 0, 1)
        self.run_worker(
            partial(self._engine_work, config, mode, tuple(keys), default),
            thread=True, group="engine", exclusive=True, name=f"engine {mode}",
        )

    def _engine_work(self, config: ExperimentConfig, mode: str, keys: tuple[str, ...], default_name: str) -> None:
        """Runs in the worker thread: everything it tells the UI goes by message.

        A new (or unnamed) experiment gets ``default_name``; a named one keeps its name
        unless the form's run.name was typed."""
        from lotto_engine.runner import Runner

        try:
            read_data_before_the_store(config)
            with Store(config.run.store) as store:
                found = store.find_experiment(config, precision=self._precision)
                name = name_to_store(config, default_name, found.name if found else None)
                config = config.model_copy(update={"run": config.run.model_copy(update={"name": name})})
                runner = Runner(
                    config, store,
                    on_event=lambda event: self.post_message(EngineEvent(event)),
                    cancel=self.cancel,
                    progress_interval=self._progress_interval,
                )
                if mode == "rerun":
                    summary = runner.rerun(*keys)
                elif mode == "failed":
                    summary = runner.rerun_failed()
                else:
                    summary = runner.run()
            self.post_message(RunEnded(summary=summary))
        except LottoError as err:
            self.post_message(RunEnded(error=escape_controls(" ".join(str(err).split()))))
        except Exception as err:  # a bug: say it in one line, keep the app alive
            self.post_message(RunEnded(error=f"internal error: {type(err).__name__}: {one_line(err)}"))

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, BatchProgress):
            self._batch = event  # coalesced: the tick shows only the latest
            return
        self._dirty = True
        self._stale.add("results")
        if not isinstance(event, EpochFinished):
            self._stale.add("history")
        log = self.jobs.log
        if isinstance(event, GridStarted):
            self.reader()
            if self.experiment_id != event.experiment_id:
                self._set_experiment(event.experiment_id)
            log(text.grid_started(event))
        elif isinstance(event, JobStarted):
            log(Text("▶ ").append_text(text.job_started(event)))
        elif isinstance(event, EpochFinished):
            log(Text("  ").append_text(text.epoch_finished(event)))
        elif isinstance(event, JobFinished):
            log(text.job_finished(event).label_first("■"))
        elif isinstance(event, JobFailed):
            log(text.job_failed(event).label_first("✗"))
        elif isinstance(event, Notice):
            log(text.notice(event))
        elif isinstance(event, GridFinished):
            log(text.grid_finished(event))

    def on_run_ended(self, message: RunEnded) -> None:
        self.running = False
        self.runs_ended += 1
        self._mark_dirty()
        self.jobs.show_job("", 0, 1)
        if message.error:
            self.jobs.log(Text(message.error, style="bold red"))
            self.notify(message.error, title="Run stopped", severity="error", timeout=10)
        elif message.summary is not None:
            s = message.summary
            counts = grid_counts(s.counts, s.flags, s.flagged, s.unchecked)
            if s.cancelled:
                self.notify(f"Cancelled: {counts}. r resumes.", title="Grid cancelled", severity="warning")
            else:
                self.notify(counts, title="Grid finished", severity="information" if s.ok else "error")
        if self._quitting:
            self.exit(0)
            return
        if self._replan_after_run and self.form_config is not None:
            self._replan_after_run = False
            self._replan(self.form_config)
        else:
            if self.experiment_id is not None and not self._experiment_name:
                self._set_experiment(self.experiment_id)  # the name the run gave it
            self._count_reuse(new_plan=False)

    # ------------------------------------------------------------------ actions

    def action_run_grid(self) -> None:
        self._start("grid")

    def action_cancel(self) -> None:
        if not self.running:
            elsewhere = self.last_progress is not None and self.last_progress.in_flight > 0
            if self.writer is not None:
                self.notify(f"This grid runs in {self.writer.describe()}: stop it there", timeout=6)
            else:
                self.notify(
                    "That job runs in another process (lotto-tui --batch?): stop it there"
                    if elsewhere else "Nothing is running", timeout=4,
                )
            return
        self.cancel.set()
        self.notify("Cancelling after the current batch…", timeout=3)

    def action_rerun_selected(self) -> None:
        key = self.jobs.selected_key()
        if key is None or self.plan is None:
            self.notify("Select a job in the jobs panel first", severity="warning")
            return
        if not self.running:
            dependents = len(self.plan.dependents(key))
            also = f" and its {dependents} pruned jobs" if dependents else ""
            job = next(j for j in self.plan if j.key == key)
            self.notify(f"Rerunning {job.label}{also}", timeout=4)
        self._start("rerun", [key])

    def action_rerun_failed(self) -> None:
        progress = self.last_progress
        if progress is None or not any(r.status in RERUNNABLE for r in progress.rows):
            self.notify("No failed, diverged or cancelled jobs to rerun", timeout=3)
            return
        self._start("failed")

    def action_export(self) -> None:
        from lotto_engine.export import write_exports

        reader = self.reader()
        if reader is None or self.shown_id is None:
            self.notify("Nothing to export yet: run the grid first", severity="warning")
            return
        folder = Path(self.view_config.run.store) / "exports"
        try:
            paths = write_exports(reader, self.shown_id, folder)
        except OSError as err:
            self.notify(f"{folder}: {err.strerror or err}", title="Export failed", severity="error")
            return
        self.notify("\n".join(map(str, paths)), title="Exported", timeout=10)

    def action_write_report(self) -> None:
        """Write the shown experiment's report (figures and report.md) in a worker."""
        if self.shown_id is None or self.reader() is None:
            self.notify("Nothing to report yet: run the grid first", severity="warning")
            return
        if self._reporting:
            self.notify("A report is being written; wait for it", severity="warning", timeout=3)
            return
        self._reporting = True
        root = Path(self.view_config.run.store).absolute()  # the notice names exactly where
        out = root / REPORTS / f"experiment-{self.shown_id}"
        self.notify(f"Writing the report of experiment {self.shown_id}…", timeout=3)
        self.run_worker(partial(self._report_work, root, self.shown_id, out), thread=True, group="report",
                        name="write report")

    def _report_work(self, root: Path, experiment_id: int, out: Path) -> None:
        """Worker thread: matplotlib renders off the UI thread."""
        try:
            from ..paper import write_report
        except ImportError as err:
            self.post_message(ReportWritten(error=f"report unavailable: {one_line(err)}"))
            return
        try:
            with Store(root, create=False) as store:
                paths = write_report(store, [experiment_id], out)
        except LottoError as err:
            self.post_message(ReportWritten(error=escape_controls(" ".join(str(err).split()))))
        except OSError as err:
            self.post_message(ReportWritten(error=f"{out}: {err.strerror or one_line(err)}"))
        except Exception as err:  # a bug: one line, the app stays up
            self.post_message(ReportWritten(error=f"internal error: {type(err).__name__}: {one_line(err)}"))
        else:
            self.post_message(ReportWritten(paths=tuple(Path(p) for p in paths)))

    def on_report_written(self, message: ReportWritten) -> None:
        self._reporting = False
        if message.error:
            self.notify(message.error, title="Report not written", severity="error", timeout=10)
            return
        paths = message.paths
        if not paths:
            self.notify("The report wrote no file", title="Report not written", severity="error")
            return
        more = f"\n+ {len(paths) - 1} figure files beside it" if len(paths) > 1 else ""
        self.notify(f"{printable(paths[0])}{more}", title="Report written", timeout=10)

    def action_show_panel(self, name: str) -> None:
        self.query_one("#panels", TabbedContent).active = name
        self._settle_focus()

    def _settle_focus(self) -> None:
        """Focus the shown panel's main widget once the switch is over.

        Hiding the panel we leave makes its focused widget hand focus to a sibling (or
        to nothing) a moment later; so focus now, and check again after the refresh.
        """
        def settle() -> None:
            # after the refresh the app may be shutting down with no screen left
            if self._exiting or not self.screen_stack or self.screen is not self.screen_stack[0]:
                return
            panel = self.query_one(f"#panels TabPane#{self.panel}")
            focused = self.focused
            if focused is None or panel not in focused.ancestors_with_self or not focused.display:
                self.query_one(PANEL_FOCUS[self.panel]).focus()

        settle()
        self.call_after_refresh(settle)
        self.set_timer(0.1, settle)

    def action_cycle_panel(self, step: int) -> None:
        self.action_show_panel(PANELS[(PANELS.index(self.panel) + step) % len(PANELS)])

    def action_cycle_result_tab(self, step: int) -> None:
        if self.panel != "results":
            self.action_show_panel("results")
        self.results.cycle(step)

    def action_leave_field(self) -> None:
        if isinstance(self.focused, (Input, Select, SelectionList)):
            self.query_one("#config-fields").focus()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Quit; a running grid is cancelled first (the store stays consistent)."""
        if self.running:
            if self._quitting:
                return
            self._quitting = True
            self.cancel.set()
            self.notify("Stopping the running job, then quitting…")
            return
        self.exit(0)

    def exit(self, *args: Any, **kwargs: Any) -> None:
        self._exiting = True  # the timers stop redrawing widgets that are going away
        super().exit(*args, **kwargs)

    def on_unmount(self) -> None:
        self._exiting = True
        self.cancel.set()  # whatever ends the app, the worker thread stops at its next batch
        if self._reader is not None:
            self._reader.close()

    # ------------------------------------------------------------------ history

    def on_history_panel_open(self, message: HistoryPanel.Open) -> None:
        if self.running:
            self.notify("Wait for the running grid (or cancel it) before opening another", severity="warning")
            return
        if not self._open(message.experiment_id):
            return
        self.query_one(ConfigForm).load(self.view_config, origin=name_origin(self.view_config))
        self.notify(f"Opened experiment {message.experiment_id}", timeout=3)
        self.action_show_panel("jobs")

    def on_history_panel_compare(self, message: HistoryPanel.Compare) -> None:
        reader = self.reader()
        right = self.shown_id if message.right is None else message.right
        if reader is None or right is None or right == message.left:
            self.notify("Mark two experiments with space (or open one and select another)", severity="warning")
            return
        sides = []
        for exp_id in (message.left, right):
            record = reader.experiment(exp_id)
            title = f"experiment {exp_id} {record.name or ''} ({record.config.get('data', {}).get('dataset', '?')})"
            sides.append((title, load_results(reader, exp_id)))
        self.push_screen(CompareScreen(sides[0], sides[1]))

    # ------------------------------------------------------------------ palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key in APP_KEYS + CONFIG_KEYS:
            action = key.action if key in APP_KEYS else f"focused_form('{key.action}')"
            yield SystemCommand(
                key.description, f"key: {display(key.keys)}", partial(self._palette, action)
            )

    def _palette(self, action: str) -> None:
        self.call_later(self.run_action, action)

    def action_focused_form(self, action: str) -> None:
        getattr(self.query_one(ConfigForm), f"action_{action}")()


def create_app(config: ExperimentConfig, **options: Any) -> ExplorerApp:
    """The app factory the CLI and the tests share."""
    return ExplorerApp(config, **options)


__all__ = ["ExplorerApp", "create_app"]
