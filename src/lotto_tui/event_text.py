"""The text users read for each engine event (:mod:`lotto_engine.events`), made here
once for every client: the batch's plain lines, the batch's rich lines and the
explorer's log all show these texts, so a number reads the same in each of them.

Each function returns a :class:`rich.text.Text`: its ``plain`` is the text (every
name, path and message in it already :func:`~lotto_tui.formatting.printable`), and its
spans the styles a terminal may add (status colours, the health mark); plain output
drops them. Clients only put a mark or a counter in front (``[3/21]``, ``■``).

How the numbers read:

- an epoch (its losses and accuracies as the curve and the export hold them):
  ``train_loss=0.1234 train_acc=0.9567 val_loss=0.2345 val_acc=0.9444 (0.53s)``, the
  plain batch epoch line, which scripts parse;
- a finished job, as the epochs read: accuracies as fractions, mask sparsity and
  stability D with four decimals, its wall time in seconds:
  ``val_acc=0.9567  test_acc=0.9506  sparsity=0.8000  D=0.6200  (2.3s)``;
- a grid: job counts and health flags as the batch's last line has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

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
from lotto_engine.records import RunResult

from .formatting import STATUS_STYLE, duration, grid_counts, health_style, health_text, num, peak_memory, printable

#: Width of the status column of :meth:`JobEnd.status_first` (the longest status fits).
STATUS_WIDTH = 9


def grid_started(event: GridStarted) -> Text:
    """``experiment 3: 21 jobs, 4 already done (2 reused from earlier experiments), 17 to run on cpu``"""
    todo = len(event.jobs) - len(event.skipped)
    reused = f" ({len(event.reused)} reused from earlier experiments)" if event.reused else ""
    return Text.assemble(
        (f"experiment {event.experiment_id}", "bold"),
        f": {len(event.jobs)} jobs, {len(event.skipped)} already done{reused}, {todo} to run on "
        f"{printable(event.device)}",
    )


def job_started(event: JobStarted) -> Text:
    """``relu magnitude s=0.8 seed=0 on cuda:1 (resumed after epoch 3)``: where it trains
    when that is not the CPU, the remote worker (``... on cpu, ray worker pid 81 on box2``),
    and the epochs it had trained before an interruption."""
    where = f" on {printable(event.device)}" if event.device and (event.device != "cpu" or event.worker) else ""
    if event.worker:
        where += f", {printable(event.worker)}"
    resumed = f" (resumed after epoch {event.resumed_from})" if event.resumed_from > 0 else ""
    return Text(f"{printable(event.job.label)}{where}{resumed}")


def batch_progress(event: BatchProgress) -> Text:
    """``relu dense seed=0 · epoch 2/8 · batch 31/56``"""
    return Text(
        f"{printable(event.job.label)} · epoch {event.epoch}/{event.epochs} · batch {event.batch}/{event.batches}"
    )


def epoch_finished(event: EpochFinished) -> Text:
    """``relu dense seed=0 epoch 2/8 train_loss=0.4012 train_acc=0.8790 val_loss=0.3561
    val_acc=0.8944 (0.53s)``: the plain batch epoch line after its ``[k/n]``."""
    m = event.metrics
    return Text(
        f"{printable(event.job.label)} epoch {m.epoch}/{event.epochs} "
        f"train_loss={num(m.train_loss)} train_acc={num(m.train_acc)} "
        f"val_loss={num(m.val_loss)} val_acc={num(m.val_acc)} ({m.seconds:.2f}s)"
    )


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, as text: its label, its status and the details (results, error,
    health). A log column-aligns the status (:meth:`status_first`); the explorer's log
    leads with the job (:meth:`label_first`). Both show the same details."""

    label: str
    status: str
    details: Text

    @property
    def style(self) -> str:
        return STATUS_STYLE.get(self.status, STATUS_STYLE["failed"])

    def status_first(self) -> Text:
        """``done       relu dense seed=0  val_acc=0.9567  test_acc=0.9506  (2.3s)``"""
        line = Text().append(f"{self.status:<{STATUS_WIDTH}}  {self.label}", style=self.style)
        return line.append("  ").append_text(self.details) if self.details else line

    def label_first(self, mark: str = "") -> Text:
        """``■ relu dense seed=0: done val_acc=0.9567  test_acc=0.9506  (2.3s)`` (``mark`` in front)"""
        line = Text().append(f"{mark} {self.label}: {self.status}" if mark else f"{self.label}: {self.status}",
                             style=self.style)
        return line.append(" ").append_text(self.details) if self.details else line


def result_details(job_kind: str, result: RunResult) -> Text:
    """``val_acc=0.9567  test_acc=0.9506  sparsity=0.8000  D=0.6200  (2.3s)  - error  flagged !chance``:
    what is known of a finished job, then why it stopped, then its health flags (the
    batch's job line since the first release: scripts parse it)."""
    parts = []
    if result.val_acc is not None:
        parts.append(f"val_acc={num(result.val_acc)}")
    if result.test_acc is not None:
        parts.append(f"test_acc={num(result.test_acc)}")
    if job_kind == "pruned" and result.actual_sparsity is not None:
        parts.append(f"sparsity={num(result.actual_sparsity)}")
    if result.stability is not None:
        parts.append(f"D={num(result.stability)}")
    parts.append(f"({result.wall_time:.1f}s)")
    if result.error and result.status != "done" and result.error != result.status:
        parts.append(f"- {printable(result.error)}")
    details = Text("  ".join(parts))
    if result.flags:  # the words say it; the style only underlines them
        details.append("  ").append(f"flagged {health_text(result.flags)}", style=health_style(result.flags))
    return details


def job_finished(event: JobFinished) -> JobEnd:
    """A job that ended done, diverged or cancelled, with its results."""
    return JobEnd(printable(event.job.label), event.result.status, result_details(event.job.kind, event.result))


def job_failed(event: JobFailed) -> JobEnd:
    """A job that raised: its error."""
    return JobEnd(printable(event.job.label), "failed", Text(f"- {printable(event.error)}"))


def grid_finished(event: GridFinished) -> Text:
    """``grid finished in 3m05s: 21 done, 11 flagged: 11 chance_level · peak memory 0.8 GiB (process)``"""
    word = "cancelled" if event.cancelled else "finished"
    memory = peak_memory(event.peak_memory)
    return Text.assemble(
        (f"grid {word}", "bold"),
        f" in {duration(event.wall_time)}: {grid_counts(event.counts, event.flags, event.flagged, event.unchecked)}",
        f" · {memory}" if memory else "",
    )


def notice(event: Notice) -> Text:
    """``note: CUDA graphs fell back to eager: ...``"""
    return Text.assemble(("note:", "yellow"), f" {printable(event.message)}")
