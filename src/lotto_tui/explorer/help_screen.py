"""The ``?`` screen: every key of the explorer, read from the keymap; how to read the
results (stability D and its two companions, actual vs target sparsity, the seed
interval, the table's marks, reused jobs); what each health flag means, read from the
engine (:data:`lotto_engine.health.FLAGS`); and how variants and imp levels read."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widgets import Static

from lotto_engine.config import VARIANTS
from lotto_engine.health import FLAGS

from .. import formatting
from ..formatting import UNCHECKED, health_text
from .jobs_panel import REUSED_MARK
from .keys import APP_KEYS, BUILTIN_KEYS, CONFIG_KEYS, HISTORY_KEYS, display
from .results_panel import LEGEND_KEYS, RESULTS_KEYS


def keys_table() -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, keys in (("Everywhere", APP_KEYS), ("Config panel", CONFIG_KEYS), ("Results panel", RESULTS_KEYS),
                        ("Results legend", LEGEND_KEYS), ("History panel", HISTORY_KEYS)):
        table.add_row(f"[underline]{title}[/]", "")
        for key in keys:
            table.add_row(display(key.keys), key.description)
        table.add_row("", "")
    table.add_row("[underline]Textual[/]", "")
    for key, what in BUILTIN_KEYS:
        table.add_row(key, what)
    return table


#: The results table's marks (lotto_tui.formatting defines them with the tables).
BEST_MARK: str = formatting.BEST_MARK
MIXED_MARK: str = formatting.MIXED_MARK

#: (term, meaning) rows of the "Reading the results" part.
RESULTS_HELP: tuple[tuple[str, str], ...] = (
    ("D", "stability: ||W_dense - W_pruned|| / ||W_dense||, how far the retrained "
     "ticket's weights are from the dense net's (a pruned weight counts as moved to 0). "
     "It mostly measures what the mask removes, and it explodes when weights blow up."),
    ("floor", "||W_dense * (1 - m)|| / ||W_dense||: what the mask m alone removes, "
     "before any training; D is never below it."),
    ("kept change", "||(W_dense - W_pruned) * m|| / ||W_dense * m||: how far the kept "
     "weights moved in retraining, relative to their size. "
     "D^2 = floor^2 + (kept change * ||W_dense * m|| / ||W_dense||)^2."),
    ("target / actual", "target: the sparsity the grid asks for; actual: the share of "
     "prunable weights the mask really removes (ties, layers left out and imp levels "
     "make them differ)."),
    ("± (CI)", "mean ± the 95% confidence interval over seeds: t(0.975, n-1) * s / sqrt(n), "
     "Student's t with n-1 degrees of freedom, s the sample standard deviation. "
     "n counts finished runs; one seed shows its value and n=1, no interval."),
    (BEST_MARK + " (best)", "in the results table: the pruned point with the highest mean "
     "validation accuracy at its activation and target sparsity (ties: each); never a "
     "point whose every run is flagged: among nets that did not train, the highest mean is noise."),
    (MIXED_MARK + " (mixed)", "after n: the cell's runs were made under different "
     "numerics settings (device, precision, threads, torch version), which move results "
     "by more than rounding; the line above the table says which."),
    ("reused", "a job whose key (a hash of every input that decides its result) matches a "
     "finished run in the store is copied into the new experiment, not run again: "
     f"status done{REUSED_MARK}, and the config panel counts them before r."),
)


def results_table() -> Table:
    """What the numbers and marks of the results mean."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("[underline]Reading the results[/]", "")
    for term, meaning in RESULTS_HELP:
        table.add_row(term, meaning)
    return table


def health_table() -> Table:
    """The health column's words, each with the engine's one-line meaning."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("[underline]Health[/]", "flags inform; a flagged run keeps its status")
    table.add_row("ok", "the run trained: no flag")
    for flag, meaning in FLAGS.items():
        table.add_row(health_text((flag,)), f"{flag}: {meaning}")
    table.add_row(UNCHECKED, "finished by a release before health checks: flags unknown")
    table.add_row("", "")
    table.add_row(f"done{REUSED_MARK}", "status of a job adopted from an earlier experiment (same inputs)")
    table.add_row("", "")
    table.add_row("[underline]Labels[/]", "")
    table.add_row("grasp/shuffle", f"a method's sanity-check variant ({', '.join(v for v in VARIANTS if v != 'none')})")
    table.add_row("0.36 L2", "an imp job's target: its sparsity and level (levels between grid "
                  "sparsities show in curves and exports only)")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen VerticalScroll { height: auto; }
    HelpScreen #help-close { height: 1; dock: bottom; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll(id="help-body"):
                yield Static("[b]lotto-tui keys[/]  (letters act outside text fields; esc leaves a field)")
                yield Static(keys_table())
                yield Static("")
                yield Static(results_table())
                yield Static("")
                yield Static(health_table())
            # outside the scrolled part: always on screen, however short the terminal
            yield Static("[dim]esc closes · up/down/pgup/pgdn scroll[/]", id="help-close")

    #: Rows around the scrolled body: the border (2) and the closing line.
    FRAME_ROWS = 3

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # the arrow keys scroll at once

    def on_resize(self, event: Resize) -> None:
        # The body scrolls within what the terminal leaves, so the closing line stays on screen.
        body = self.query_one("#help-body", VerticalScroll)
        body.styles.max_height = max(1, event.size.height - self.FRAME_ROWS)
