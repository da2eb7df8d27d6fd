"""The ``?`` screen: every key of the explorer, read from the keymap, what each
health flag means, read from the engine (:data:`lotto_engine.health.FLAGS`), and how
variants and imp levels read."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widgets import Static

from lotto_engine.config import VARIANTS
from lotto_engine.health import FLAGS

from ..formatting import UNCHECKED, health_text
from .jobs_panel import REUSED_MARK
from .keys import APP_KEYS, BUILTIN_KEYS, CONFIG_KEYS, HISTORY_KEYS, display


def keys_table() -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, keys in (("Everywhere", APP_KEYS), ("Config panel", CONFIG_KEYS), ("History panel", HISTORY_KEYS)):
        table.add_row(f"[underline]{title}[/]", "")
        for key in keys:
            table.add_row(display(key.keys), key.description)
        table.add_row("", "")
    table.add_row("[underline]Textual[/]", "")
    for key, what in BUILTIN_KEYS:
        table.add_row(key, what)
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
    table.add_row("0.75 L2", "an imp job's target: its sparsity and level (levels between grid "
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
