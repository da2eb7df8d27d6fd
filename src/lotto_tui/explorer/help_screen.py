"""The ``?`` screen: every key of the explorer, read from the keymap."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

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


class HelpScreen(ModalScreen[None]):
    BINDINGS = [("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("[b]lotto-tui keys[/]  (letters act outside text fields; esc leaves a field)")
            yield Static(keys_table())
            yield Static("[dim]esc closes[/]")
