"""How numbers and statuses look, shared by the batch report and the explorer, so a
number reads the same in both. Formatting only: every value comes from the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lotto_engine.errors import escape_controls
from lotto_engine.health import FLAGS
from lotto_engine.statuses import IN_FLIGHT, RERUNNABLE
from lotto_engine.stats import Stat
from lotto_engine.views.results import Cell

#: Rich styles by status, in the 16 named ANSI colours (no true colour assumed).
STATUS_STYLE = {
    "done": "green",
    "running": "bold yellow",
    "queued": "cyan",
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


#: Every column a results table can show, in order (tables leave some out by width).
RESULT_COLUMNS = ("activation", "method", "target", "actual", "val %", "best val %", "test %", "D", "floor", "kept Δ",
                  "n", "status")
#: Columns that show a number over seeds: column -> (lotto_engine.views.results.STAT_METRICS
#: name, kind: "pct" an accuracy in %, "num" a plain number).
STAT_COLUMNS = {
    "actual": ("actual_sparsity", "num"), "val %": ("val_acc", "pct"), "best val %": ("best_val_acc", "pct"),
    "test %": ("test_acc", "pct"), "D": ("stability", "num"), "floor": ("stability_floor", "num"),
    "kept Δ": ("kept_change", "num"),
}
#: Before the best grid point's validation accuracy: the highest mean at its sparsity.
BEST_MARK = "*"
#: After ``n`` where a cell's runs were made under different numerics settings.
MIXED_MARK = "~"
#: What a results table's marks and spreads mean (the batch table's caption, the
#: explorer's note), readable without colour.
SPREAD_LEGEND = "mean ±95% CI over seeds (Student t)"
BEST_LEGEND = f"{BEST_MARK} highest mean val % at its sparsity"
MIXED_LEGEND = f"{MIXED_MARK} runs made under different numerics settings"
COMPANIONS_LEGEND = "D stability; floor: what the mask alone removes; kept Δ: change of the kept weights"


def pct(value: float | None, std: float | None = None) -> str:
    """An accuracy in [0, 1] as a percentage (with a spread, e.g. its 95% CI, when there is one)."""
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
        (STATUS_STYLE[s] for s in (*RERUNNABLE, *IN_FLIGHT) if s in cell.statuses), "green"
    )
    return ",".join(cell.statuses), style


def stat_text(stat: Stat, kind: str = "num", *, spread: bool = True, sep: str = " ") -> str:
    """A value over seeds: ``95.39 ±0.12`` (mean and 95% CI half-width; ``kind`` "pct"
    shows an accuracy in %), the value alone for one seed, ``-`` for none. ``sep``
    goes between them (``"\n"`` puts the spread under the mean)."""
    if stat.mean is None:
        return "-"
    if kind == "pct":
        text = f"{100 * stat.mean:.2f}"
        ci = None if stat.ci95 is None else f"±{100 * stat.ci95:.2f}"
    else:
        text = num(stat.mean)
        ci = None if stat.ci95 is None else f"±{stat.ci95:.4f}"
    return f"{text}{sep}{ci}" if spread and ci is not None else text


def cell_stat(cell: Cell, metric: str) -> Stat:
    """``cell.stat(metric)``; for a cell made without statistics (by hand, by an older
    caller), its mean alone."""
    if metric in cell.stats:
        return cell.stats[metric]
    value = getattr(cell, metric, None)
    return Stat(value, None, None, cell.done) if isinstance(value, (int, float)) else cell.stat(metric)


def cell_health(cell: Cell) -> str:
    """A results row's health: ``ok``, ``!chance`` (its one run flagged), ``1/3 !chance``
    (one of its three runs flagged), ``?`` (made before health checks), ``-`` before any
    of its runs finished."""
    if not cell.flags and not cell.done:
        return "-"
    text = health_text(cell.flags, checked=not cell.unchecked)
    return f"{cell.flagged}/{cell.runs} {text}" if cell.flags and cell.runs > 1 else text


def unrecorded(cells: Sequence[Cell]) -> tuple[str, ...]:
    """D's companion columns (``floor``, ``kept Δ``) that no row has a value for (runs
    made before they were recorded): tables leave them out and say so."""
    return tuple(column for column, metric in (("floor", "stability_floor"), ("kept Δ", "kept_change"))
                 if all(cell_stat(c, metric).mean is None for c in cells))


def cell_values(cell: Cell, *, best: bool = False, sep: str = " ") -> dict[str, str]:
    """A results row as text by column (:data:`RESULT_COLUMNS` and ``health``; status
    without style): the method column names the variant too (``grasp/shuffle``),
    numbers over seeds are mean ±95% CI (``sep`` between them), ``best`` marks the
    validation accuracy with :data:`BEST_MARK`, n is ``done/runs`` with
    :data:`MIXED_MARK` when the runs mix numerics settings."""
    values = {
        "activation": cell.activation, "method": cell.label,
        "target": "-" if cell.method == "dense" else num(cell.target_sparsity, 2),
        "n": f"{cell.done}/{cell.runs}" + (MIXED_MARK if cell.mixed_numerics else ""),
        "status": cell_status(cell)[0], "health": cell_health(cell),
    }
    for column, (metric, kind) in STAT_COLUMNS.items():
        values[column] = stat_text(cell_stat(cell, metric), kind, sep=sep)
    if best:
        values["val %"] = BEST_MARK + values["val %"]
    return values


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
