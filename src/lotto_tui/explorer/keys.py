"""The explorer's keymap: every global action with a stable id, its keys and its
description. The footer, the ``?`` help screen and the command palette all read this
one table, so they cannot disagree.

Plain letters act when no text field has focus (press ``escape`` to leave a field);
the ``ctrl`` keys act everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    id: str
    keys: str  # Textual key spec, comma separated
    action: str
    description: str
    show: bool = True  # in the footer
    priority: bool = False  # also while a text field has focus


APP_KEYS: tuple[Key, ...] = (
    Key("run", "r,ctrl+r", "run_grid", "Run grid"),
    Key("cancel", "x", "cancel", "Cancel"),
    Key("rerun-selected", "s", "rerun_selected", "Rerun job"),
    Key("rerun-failed", "f", "rerun_failed", "Rerun failed", show=False),
    Key("export", "e", "export", "Export"),
    # Not in the footer (80 columns): help and the command palette list it.
    Key("report", "R", "write_report", "Write report (figures + report.md)", show=False),
    Key("panel-config", "1", "show_panel('config')", "Config", show=False),
    Key("panel-jobs", "2", "show_panel('jobs')", "Jobs", show=False),
    Key("panel-results", "3", "show_panel('results')", "Results", show=False),
    Key("panel-history", "4", "show_panel('history')", "History", show=False),
    Key("next-panel", "ctrl+right,f6", "cycle_panel(1)", "Next panel", show=False, priority=True),
    Key("prev-panel", "ctrl+left,shift+f6", "cycle_panel(-1)", "Previous panel", show=False, priority=True),
    Key("next-tab", "]", "cycle_result_tab(1)", "Next result tab", show=False),
    Key("prev-tab", "[", "cycle_result_tab(-1)", "Previous result tab", show=False),
    Key("leave-field", "escape", "leave_field", "Leave the text field", show=False),
    Key("help", "question_mark,f1", "help", "Help"),
    Key("quit", "q", "quit", "Quit"),
)

#: Keys of the config panel (while a text field has focus too).
CONFIG_KEYS: tuple[Key, ...] = (
    # Not in the footer (it would overflow 80 columns): the Load/Save buttons name them.
    Key("config-save", "ctrl+s", "save_toml", "Save TOML", show=False, priority=True),
    Key("config-load", "ctrl+o", "load_toml", "Load TOML", show=False, priority=True),
)

#: Keys of the history panel.
HISTORY_KEYS: tuple[Key, ...] = (
    Key("history-open", "enter", "open_experiment", "Open"),
    Key("history-mark", "space", "mark", "Mark"),
    Key("history-compare", "c", "compare", "Compare"),
)

#: Keys shown on the help screen that Textual itself provides.
BUILTIN_KEYS: tuple[tuple[str, str], ...] = (
    ("ctrl+p", "Command palette (every action above, by name)"),
    ("ctrl+q", "Quit (also while a text field has focus)"),
    ("tab / shift+tab", "Move between fields and widgets"),
    ("up / down / pgup / pgdn", "Move in tables"),
)


def bindings(keys: tuple[Key, ...]) -> list[Binding]:
    return [
        Binding(k.keys, k.action, k.description, show=k.show, priority=k.priority, id=k.id) for k in keys
    ]


def display(spec: str) -> str:
    """``question_mark,f1`` -> ``? / f1`` for people."""
    names = {"question_mark": "?", "escape": "esc", "space": "space", "enter": "enter", "R": "R (shift+r)"}
    return " / ".join(names.get(part, part) for part in spec.split(","))
