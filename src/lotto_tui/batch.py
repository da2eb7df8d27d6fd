"""``lotto-tui --batch``: the engine headless, for scripts, CI and nohup.

On a terminal it shows rich progress bars (the grid and the current job); otherwise
it prints one plain line per epoch. NO_COLOR is honoured. Ctrl-C cancels cleanly (the
job in flight is recorded as cancelled, the store stays consistent, exit 130); a
second Ctrl-C stops at once, and so does one during the final report (every run is
stored by then). A reader that goes away (``| head``) is an interruption too: the
job in flight is cancelled and the exit code is 141, as for a writer killed by
SIGPIPE. Never imports textual.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lotto_engine import events as ev
from lotto_engine.events import Event

from . import event_text as text
from .cli import EXIT_FAILED_RUNS, EXIT_INTERRUPTED, EXIT_OK
from .commands import EXIT_OUTPUT_CLOSED, config_from_options, discard_stdout, print_error, read_data_before_the_store
from .formatting import grid_counts, mixed_numerics, peak_memory, printable

if TYPE_CHECKING:
    from lotto_engine.runner import GridSummary
    from lotto_engine.store import Store

class PlainReporter:
    """One line per epoch and per finished job: for logs, pipes and nohup. The texts
    are :mod:`lotto_tui.event_text`'s, after a ``[k/n]`` counter: k is the job's place
    in start order, the same on all its lines (with jobs at once, or a retry, finish
    order differs), so grepping for ``[3/21]`` follows one job."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.total = 0
        self.index: dict[str, int] = {}  # job key -> its place in start order

    def __call__(self, event: Event) -> None:
        if isinstance(event, ev.GridStarted):
            self.total = len(event.jobs) - len(event.skipped)
            self._print(text.grid_started(event).plain)
        elif isinstance(event, ev.JobStarted):
            place = self._place(event.job.key)
            if event.resumed_from:  # a fresh start needs no line: its first epoch line says it
                self._print(f"[{place}/{self.total}] {text.job_started(event).plain}")
        elif isinstance(event, ev.EpochFinished):
            self._print(f"[{self._place(event.job.key)}/{self.total}] {text.epoch_finished(event).plain}")
        elif isinstance(event, ev.JobFinished):
            self._print(f"[{self._place(event.job.key)}/{self.total}] {text.job_finished(event).status_first().plain}")
        elif isinstance(event, ev.JobFailed):
            self._print(f"[{self._place(event.job.key)}/{self.total}] {text.job_failed(event).status_first().plain}")
        elif isinstance(event, ev.Notice):
            self._print(text.notice(event).plain)

    def _place(self, key: str) -> int:
        return self.index.setdefault(key, len(self.index) + 1)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichReporter:
    """Live progress bars for the grid and each job in flight (several with run.parallel),
    and :mod:`lotto_tui.event_text`'s lines, styled. The bars start with the grid, and
    only when it has jobs to run: a finished grid (every job already done) draws no
    empty ``0/0`` bar. A job gets its bar when it starts; the grid's bar counts the
    jobs that wait in the executor's queue (``· 30 queued``)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.grid: TaskID | None = None  # the grid's bar, once there are jobs to run
        self.title = ""  # the grid bar's description, before its queued count
        self.jobs: dict[str, TaskID] = {}  # job key -> its bar, while it runs
        self.queued: set[str] = set()  # keys of jobs handed to the executor, not started yet

    def __call__(self, event: Event) -> None:
        if isinstance(event, ev.GridStarted):
            todo = len(event.jobs) - len(event.skipped)
            self.console.print(text.grid_started(event))
            if todo > 0:
                self.title = f"experiment {event.experiment_id}"
                self.grid = self.progress.add_task(self.title, total=todo)
                self.progress.start()
        elif isinstance(event, ev.JobQueued):
            self._queue(event.job.key, True)
        elif isinstance(event, ev.JobStarted):
            self._queue(event.job.key, False)
            if event.resumed_from:
                self.console.print(text.job_started(event))
            total = event.epochs * event.batches_per_epoch
            self.jobs[event.job.key] = self.progress.add_task(
                printable(event.job.label), total=total, completed=event.resumed_from * event.batches_per_epoch)
        elif isinstance(event, ev.BatchProgress) and event.job.key in self.jobs:
            self.progress.update(self.jobs[event.job.key], completed=(event.epoch - 1) * event.batches + event.batch)
        elif isinstance(event, ev.Notice):
            self.console.print(text.notice(event))
        elif isinstance(event, ev.JobFinished):
            self._queue(event.job.key, False)
            self._drop(event.job.key)
            self._advance()
            self.console.print(text.job_finished(event).status_first())
        elif isinstance(event, ev.JobFailed):
            self._queue(event.job.key, False)
            self._drop(event.job.key)
            self._advance()
            self.console.print(text.job_failed(event).status_first())

    def _queue(self, key: str, queued: bool) -> None:
        """Count ``key`` among the queued jobs, or no more; the grid bar says how many."""
        before = len(self.queued)
        if queued:
            self.queued.add(key)
        else:
            self.queued.discard(key)
        if self.grid is not None and len(self.queued) != before:
            n = len(self.queued)
            self.progress.update(self.grid, description=self.title + (f" · {n} queued" if n else ""))

    def _advance(self) -> None:
        if self.grid is not None:
            self.progress.advance(self.grid)

    def _drop(self, key: str) -> None:
        if key in self.jobs:
            self.progress.remove_task(self.jobs.pop(key))

    def close(self) -> None:
        self.progress.stop()


class _Interrupts:
    """First Ctrl-C (or SIGTERM, or SIGHUP unless nohup ignores it) sets the cancel
    flag; a second one stops at once."""

    def __init__(self, cancel: threading.Event, notify: Callable[[str], None] | None) -> None:
        self.cancel = cancel
        self.notify = notify
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # under nohup: the hang-up stays ignored
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.cancel.is_set() or self.notify is None:
            raise KeyboardInterrupt
        self.cancel.set()
        self.notify("stopping: jobs in flight end at their next batch (Ctrl-C again to stop now)")

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _StopAtOnce(_Interrupts):
    """While the final report prints, Ctrl-C (or SIGTERM) stops it at once: every run
    is stored by then, so there is nothing left to finish cleanly."""

    def __init__(self) -> None:
        super().__init__(threading.Event(), notify=None)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt


class _OutputGuard:
    """Passes events to the reporter; when the reader of standard output goes away
    (BrokenPipeError), cancels the grid (the job in flight stops at its next batch and
    is recorded ``cancelled``) and discards any further output."""

    def __init__(self, reporter: PlainReporter | RichReporter, cancel: threading.Event) -> None:
        self.reporter = reporter
        self.cancel = cancel
        self.closed = False

    def __call__(self, event: Event) -> None:
        if self.closed:
            return
        try:
            self.reporter(event)
        except BrokenPipeError:
            self.output_closed()

    def output_closed(self) -> None:
        self.closed = True
        self.cancel.set()
        discard_stdout()


#: The width of tables and charts written to a file or pipe, unless COLUMNS says otherwise.
PIPED_WIDTH = 120


def piped_width() -> int:
    """Logs and pipes get a fixed, wide layout so tables are never squeezed: 120
    columns, or ``COLUMNS`` when it is set to a width between 60 and 1000."""
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and 60 <= int(value) <= 1000 else PIPED_WIDTH


def _default_name(opts: argparse.Namespace, config: Any) -> str:
    """A new experiment's name when run.name is empty: the preset (or the config file's
    stem) and what differs from it, e.g. ``demo, seeds=3``."""
    from pathlib import Path

    from lotto_engine.config import load_config
    from lotto_engine.errors import LottoError
    from lotto_engine.naming import default_name

    reference = None
    if opts.config:
        try:
            reference = load_config(file=opts.config)
        except LottoError:
            reference = None
    base = opts.preset or (Path(opts.config).stem if opts.config else None)
    return default_name(config, base, reference=reference)


def batch_command(opts: argparse.Namespace) -> int:
    from lotto_engine.errors import LottoError

    try:
        config = config_from_options(opts)
        from lotto_engine.devices import execution

        execution(config.run)  # a bad device or setting stops here, before the store exists
        read_data_before_the_store(config)  # so does a dataset that cannot be had
    except LottoError as err:
        print_error(str(err))
        return err.exit_code

    from lotto_engine.runner import Runner
    from lotto_engine.store import Store

    interactive = sys.stdout.isatty()
    console = Console(highlight=False, width=None if interactive else piped_width())
    reporter: PlainReporter | RichReporter = RichReporter(console) if interactive else PlainReporter(sys.stdout)
    cancel = threading.Event()
    guard = _OutputGuard(reporter, cancel)
    started = time.perf_counter()
    summary = None
    reporting = False
    try:
        with Store(config.run.store) as store:
            with _Interrupts(cancel, lambda m: print_error(m)):
                runner = Runner(config, store, on_event=guard, cancel=cancel, default_name=_default_name(opts, config))
                try:
                    summary = runner.run()
                finally:
                    _close(reporter, guard)
            if guard.closed:
                return _output_closed("the job in flight was cancelled; finished runs are saved, "
                                      "run the same command to resume")
            reporting = True
            with _StopAtOnce():
                _report(console, store, summary.experiment_id, color=interactive and "NO_COLOR" not in os.environ)
                console.print(Text(_summary_line(summary, config.run.store, time.perf_counter() - started)), soft_wrap=True)
    except LottoError as err:
        _close(reporter, guard)
        print_error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        _close(reporter, guard)
        print_error("interrupted during the report; every run is saved (lotto-tui export shows them)" if reporting
                    else "interrupted; finished runs are saved, run the same command to resume")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        guard.output_closed()
        return _output_closed("every run is saved (lotto-tui export shows them)")
    if summary.cancelled:
        print_error("cancelled; finished runs are saved, run the same command to resume")
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED_RUNS


def _close(reporter: PlainReporter | RichReporter, guard: _OutputGuard) -> None:
    """Stop the progress display; a reader gone by now is no error."""
    try:
        reporter.close()
    except BrokenPipeError:
        guard.output_closed()


def _output_closed(what: str) -> int:
    print_error(f"standard output was closed (the reader went away); {what}")
    return EXIT_OUTPUT_CLOSED


def _summary_line(summary: GridSummary, store: str, seconds: float) -> str:
    """The grid's last line: job counts, flagged jobs by flag, wall time, store, memory."""
    counts = grid_counts(summary.counts, summary.flags, summary.flagged, summary.unchecked)
    memory = peak_memory(summary.peak_memory)
    return (f"experiment {summary.experiment_id}: {counts}"
            + f" ({seconds:.1f}s); store {printable(store)}" + (f"; {memory}" if memory else ""))


def _report(console: Console, store: Store, experiment_id: int, *, color: bool) -> None:
    from lotto_engine.views.results import load_results

    from .report import REPORT_CURVE, chart_texts, results_table

    # finished results only (the grid is over), and only the curve the charts show
    data = load_results(store, experiment_id, metrics=(REPORT_CURVE,), include_running=False, masks=False)
    if not data.cells:
        return
    note = mixed_numerics(data.numerics)
    if note:
        console.print(Text.assemble(("note:", "yellow" if color else ""), f" {note}"), soft_wrap=True)
    console.print(results_table(data.cells, title=f"Experiment {experiment_id}", width=console.width, best=data.best))
    width = max(60, min(console.width, 120))
    console.file.write("\n")
    for chart in chart_texts(data, width=width, color=color):
        # plotext output carries its own colour codes (or none): print it verbatim.
        console.file.write(chart + "\n\n")
    console.file.flush()
