"""How numbers and statuses look, shared by the batch report and the explorer, so a
number reads the same in both. Formatting only: every value comes from the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lotto_engine.errors import escape_controls
from lotto_engine.health import FLAGS
from lotto_engine.statuses import RERUNNABLE
from lotto_engine.views.results import Cell

#: Rich styles by status, in the 16 named ANSI colours (no true colour assumed).
STATUS_STYLE = {
    "done": "green",
    "running": "bold yellow",
    "pending": "dim",
    "failed": "bold red",
    "diverged": "bold magenta",
    "cancelled": "yellow",
}

#: Short names of health flags (lotto_engine.health.FLAGS) for narrow table columns.
FLAG_SHORT = {"chance_level": "chance", "loss_exploded": "exploded", "layer_collapse": "collapse"}


#: The health cell of a run finished before health checks existed: never ``ok``.
UNCHECKED = "?"


def health_text(flags: Sequence[str], *, checked: bool = True) -> str:
    """A health cell as plain text, readable without colour: ``ok``, ``!chance,collapse``,
    or ``?`` for a run made before health checks (its flags are unknown)."""
    if not flags:
        return "ok" if checked else UNCHECKED
    return "!" + ",".join(FLAG_SHORT.get(f, f) for f in flags)


def health_style(flags: Sequence[str], *, checked: bool = True) -> str:
    """Rich style of a health cell in the 16 named colours (the ``!`` carries it in monochrome)."""
    if flags:
        return "bold yellow reverse"
    return "dim" if checked else "italic"


def printable(text: object) -> str:
    """``text`` safe to print: control characters (ESC, newline, BEL, ...) written as
    escapes, so a crafted name or path can neither drive the terminal nor fake a line."""
    return escape_controls(str(text))


def grid_counts(counts: Mapping[str, int], flags: Mapping[str, int], flagged: int, unchecked: int = 0) -> str:
    """``21 done, 11 flagged: 11 chance_level, 2 layer_collapse``: job statuses, then
    health flags (they inform; they are not statuses), then runs whose health is unknown
    because an older release made them. Batch and explorer say the same."""
    text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    flagged_text = flag_counts(flags, flagged)
    if flagged_text:
        text += f", {flagged_text}"
    if unchecked:
        text += f", {unchecked} unchecked (finished before health checks existed)"
    return text


def flag_counts(flags: Mapping[str, int], flagged: int) -> str:
    """``11 flagged: 6 chance_level, 2 loss_exploded`` for a summary line; '' when none."""
    if not flagged:
        return ""
    named = ", ".join(f"{flags[f]} {f}" for f in FLAGS if flags.get(f))
    return f"{flagged} flagged: {named}" if named else f"{flagged} flagged"


def numerics_setting(numerics: Mapping[str, object]) -> str:
    """One run's numerics as words: ``cpu fp32 2 threads``."""
    threads = numerics.get("threads", "?")
    unit = "thread" if threads == 1 else "threads"
    return f"{numerics.get('device', '?')} {numerics.get('precision', '?')} {threads} {unit}"


def mixed_numerics(numerics: Sequence[Mapping[str, object]]) -> str:
    """The ``note:`` text when one table mixes runs made under different numerics
    settings (their numbers can differ for that reason alone); '' when they agree."""
    if len(numerics) < 2:
        return ""
    keys = ("device", "precision", "threads")
    differ = [k for k in keys if len({str(n.get(k)) for n in numerics}) > 1]
    settings = "; ".join(printable(numerics_setting(n)) for n in numerics)
    return f"these runs mix {', '.join(differ) or 'settings'} ({settings}): their numbers can differ for that alone"


RESULT_COLUMNS = ("activation", "method", "target", "actual", "val %", "best val %", "test %", "D", "n", "status")


def pct(value: float | None, std: float | None = None) -> str:
    """An accuracy in [0, 1] as a percentage (with its seed std when there is one)."""
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    return f"{text} ±{100 * std:.2f}" if std is not None else text


def num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h01m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def peak_memory(peaks: dict[str, int]) -> str:
    """``peak memory cuda:0 2.1 GiB`` or ``peak memory 1.3 GiB (process)``; '' if none."""
    parts = [f"{device} {size / 2**30:.1f} GiB" if device != "cpu" else f"{size / 2**30:.1f} GiB (process)"
             for device, size in peaks.items()]
    return f"peak memory {', '.join(parts)}" if parts else ""


def cell_status(cell: Cell) -> tuple[str, str]:
    """(text, Rich style) of a results row's status: problems first."""
    style = next(
        (STATUS_STYLE[s] for s in (*RERUNNABLE, "running") if s in cell.statuses), "green"
    )
    return ",".join(cell.statuses), style


def cell_values(cell: Cell) -> tuple[str, ...]:
    """A results row as text, in RESULT_COLUMNS order (status without style); the
    method column names the variant too (``grasp/shuffle``)."""
    return (
        cell.activation, cell.label,
        "-" if cell.method == "dense" else num(cell.target_sparsity, 2), num(cell.actual_sparsity),
        pct(cell.val_acc, cell.stat("val_acc").ci95), pct(cell.best_val_acc), pct(cell.test_acc),
        num(cell.stability), f"{cell.done}/{cell.runs}", cell_status(cell)[0],
    )


def text_width(value: object) -> int:
    """Cells a table value takes: its longest line (a ``Text``'s plain text)."""
    from rich.cells import cell_len

    plain = getattr(value, "plain", value)
    return max((cell_len(line) for line in str(plain).split("\n")), default=0)


def fit_columns(columns: Sequence[str], widths: Mapping[str, int], room: int, droppable: Sequence[str],
                *, padding: int = 2) -> tuple[str, ...]:
    """``columns`` less the fewest of ``droppable`` (dropped in that order) for the
    columns to fit ``room`` cells, each ``widths[name]`` wide plus ``padding``: where a
    long method label (``grasp-hessian/shuffle``) widens a table, the columns that say
    least go, so the health column stays on screen. ``room`` 0 (not laid out yet): all."""
    kept = list(columns)
    for name in droppable:
        if not room or sum(widths.get(c, 0) + padding for c in kept) <= room:
            break
        if name in kept:
            kept.remove(name)
    return tuple(kept)
