"""``lotto-tui report``: paper figures and a ``report.md`` for one experiment, or two
compared.

:func:`write_report` is the whole of it (the CLI's ``report`` command and the
explorer's report key call it). It reads each experiment with
:func:`lotto_engine.views.results.load_results` (finished runs only) and writes, into
one folder:

- ``report.md``: the experiment, how to read it, a table per activation (every number
  ``mean ± 95% CI (n=k)`` over seeds, flags, the best point per sparsity marked),
  the figures linked by file name, the imp levels between grid sparsities, the
  provenance and the config; with two experiments, tables side by side with the
  difference of the means (second minus first);
- the figures (:mod:`lotto_tui.figures`), one file per figure and format:
  ``accuracy-vs-sparsity``, ``mask-vs-target``, ``stability-vs-sparsity``,
  ``curves-<activation>`` (``curves-<activation>-<variant>`` for a sanity-check
  variant) and ``layer-sparsity-<method>`` (``layer-sparsity-<method>-<variant>``).

Numbers are formatted here, never computed: means, CIs and n come from the engine's
:class:`~lotto_engine.stats.Stat`; the only arithmetic is the comparison's
difference of two means, which is what that column is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lotto_engine.errors import LottoError, escape_controls

if TYPE_CHECKING:
    from lotto_engine.stats import Stat
    from lotto_engine.store import Store
    from lotto_engine.views.results import Cell, ComparedPoint, ResultsData

    from .figures import Source

FORMATS = ("png", "svg", "pdf")  # the same as figures.FORMATS (checked in tests), without importing it
REPORT_NAME = "report.md"
#: Tags of the first and second experiment in a comparison.
TAGS = ("A", "B")
#: What the table columns hold: (stat name, header, digits kind).
TABLE_METRICS = (
    ("actual_sparsity", "actual sparsity", "fixed"),
    ("val_acc", "val acc", "fixed"),
    ("best_val_acc", "best val acc", "fixed"),
    ("test_acc", "test acc", "fixed"),
    ("stability", "D", "general"),
    ("stability_floor", "floor", "general"),
    ("kept_change", "kept change", "general"),
)
#: The columns a comparison sets side by side.
COMPARE_METRICS = (("val_acc", "val acc", "fixed"), ("test_acc", "test acc", "fixed"),
                   ("actual_sparsity", "actual sparsity", "fixed"), ("stability", "D", "general"))
BEST = "★"


class ReportError(LottoError):
    """The report cannot be made as asked (a bad format, too many experiments, no matplotlib)."""


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,svg"`` (or a sequence) as validated formats, in the order given, once each."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip().lower() for item in items]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        shown = escape_controls(repr(unknown[0])) if unknown else "none given"
        raise ReportError(f"--format: unknown figure format {shown} (choose from {', '.join(FORMATS)}, "
                          "comma-separated)")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class WrittenFigure:
    """A figure written: its file stem, its title and caption in report.md, and its files."""

    stem: str
    title: str
    caption: str
    paths: tuple[Path, ...]


def write_report(
    store: Store | str | os.PathLike[str],
    experiment_ids: Sequence[int] | None,
    out: str | os.PathLike[str],
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write ``report.md`` and the figures of one experiment (``experiment_ids`` None
    or empty: the latest) or two (compared: the second against the first) into the
    folder ``out`` (made when missing). Returns the paths written, ``report.md`` first.

    Raises :class:`~lotto_engine.errors.LottoError` for what the caller asked wrongly
    (an unknown experiment or format, more than two experiments, no store) and
    ``OSError`` when ``out`` cannot be written.
    """
    from lotto_engine.store import Store

    fmts = parse_formats(formats)
    ids = list(experiment_ids or [])
    if len(ids) > 2:
        raise ReportError(f"--experiment: at most two experiments (one, or two to compare), got {len(ids)}")
    if len(ids) == 2 and ids[0] == ids[1]:
        raise ReportError(f"--experiment: experiment {ids[0]} given twice (give two different ones to compare)")
    if isinstance(store, Store):
        return _write(store, ids, Path(out), fmts)
    with Store(store, create=False) as opened:
        return _write(opened, ids, Path(out), fmts)


def _write(store: Store, ids: list[int], out: Path, formats: tuple[str, ...]) -> list[Path]:
    from lotto_engine.views.results import load_results

    try:
        from . import figures
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise ReportError(f"the report needs matplotlib ({err}); install it with pip install 'matplotlib>=3.8'")
    records = [store.experiment(i) for i in ids] if ids else [store.experiment(None)]
    datas = [load_results(store, record.id, include_running=False) for record in records]
    sources = [figures.Source(data, _tag(i, data) if len(datas) > 1 else "", i) for i, data in enumerate(datas)]
    out.mkdir(parents=True, exist_ok=True)
    written = _figures(sources, out, formats)
    text = report_markdown(datas, written, store_root=str(store.root))
    from lotto_engine.files import write_text_atomic

    report = write_text_atomic(out / REPORT_NAME, text)
    return [report, *(path for figure in written for path in figure.paths)]


def _tag(index: int, data: ResultsData) -> str:
    """``A: #3 demo``: how legends and tables name an experiment in a comparison."""
    return f"{TAGS[index]}: #{data.experiment_id} {data.name}".rstrip()


# ------------------------------------------------------------------------ figures


def _figures(sources: list[Source], out: Path, formats: tuple[str, ...]) -> list[WrittenFigure]:
    """Draw and save every figure that has data; the write-up's order."""
    from . import figures as fg

    if not any(s.data.any_done for s in sources):
        return []

    ci = "error bars: 95% CI over seeds (Student t; none where n=1)"
    hollow = "; hollow markers: at least one run of the point is flagged (see the tables)"
    offset = "; series are shifted slightly sideways so their bars do not cover each other"
    compare = ("; the second experiment (B) is drawn faded over the first (A)" if len(sources) > 1 else "")
    plans: list[tuple[str, str, str, Any]] = [
        ("accuracy-vs-sparsity", "Validation accuracy vs sparsity",
         "Final validation accuracy per method against target sparsity, one panel per activation; black line "
         f"and band: the dense baseline and its 95% CI; dotted: chance; {ci}{hollow}{offset}{compare}.",
         lambda: fg.accuracy_vs_sparsity(sources)),
        ("mask-vs-target", "Mask sparsity vs target sparsity",
         f"Actual sparsity of the pruning mask against the target; dashed: actual = target; {ci}{hollow}{compare}.",
         lambda: fg.mask_vs_target(sources)),
        ("stability-vs-sparsity", "Stability vs sparsity",
         "Stability D = ‖W_dense − W_pruned‖/‖W_dense‖ (log scale), with its floor ‖W_dense·(1−m)‖/‖W_dense‖ "
         "(what the mask alone removes) and the change on the kept weights ‖(W_dense − W_pruned)·m‖/‖W_dense·m‖ "
         f"where recorded; {ci}{hollow}{offset}{compare}.",
         lambda: fg.stability_vs_sparsity(sources)),
    ]
    for activation, variant in _curve_groups(sources):
        suffix = "" if variant == "none" else f"-{variant}"
        which = "" if variant == "none" else f", variant {variant}"
        plans.append((
            f"curves-{activation}{suffix}", f"Training curves — {activation}{which}",
            f"Mean training (top) and validation (bottom) accuracy by epoch, one column per target sparsity; "
            f"the dense net in every column; bands: 95% CI over seeds; dotted: chance{compare}.",
            lambda a=activation, v=variant: fg.training_curves(sources, a, v),
        ))
    for label in _mask_labels(sources):
        plans.append((
            f"layer-sparsity-{label.replace('/', '-')}", f"Per-layer sparsity — {label}",
            f"Each layer's mask sparsity (mean over seeds) for {label}: rows are layers in the net's order, "
            "columns the target sparsities" + (", one panel per activation and experiment" if len(sources) > 1
                                                else ", one panel per activation") + ".",
            lambda lb=label: fg.layer_sparsity(sources, lb),
        ))
    done: list[WrittenFigure] = []
    used: set[str] = set()
    with fg.saving():
        for stem, title, caption, draw in plans:
            stem = _unique(_safe(stem), used)
            fig = draw()
            if fig is None:
                continue
            paths = []
            for fmt in formats:
                path = out / f"{stem}.{fmt}"
                _write_bytes(path, fg.figure_bytes(fig, fmt))
                paths.append(path)
            done.append(WrittenFigure(stem, title, caption, tuple(paths)))
    return done


def _curve_groups(sources: list[Source]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(g for s in sources for g in s.data.curve_groups))


def _mask_labels(sources: list[Source]) -> list[str]:
    """Method labels that have per-layer sparsities, in grid order."""
    from lotto_engine.views.results import point_label

    found = {point_label(k[1], k[2]) for s in sources for k in s.data.layer_stats}
    return [label for label in dict.fromkeys(c.label for s in sources for c in s.data.cells) if label in found]


def _safe(stem: str) -> str:
    """A file stem of letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "figure"


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place: a reader never sees half a figure."""
    tmp = path.with_name(f".{path.name}.lotto-tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------ report.md


#: Markdown markup a name could trigger: backslashed (an underscore only at a word's edge,
#: where it could start emphasis; ``chance_level`` stays as it is).
_MARKUP = re.compile(r"([\\|*`\[\]<>#~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md(text: object) -> str:
    """Text safe inside a Markdown table cell or line: controls escaped, pipes and
    markup characters backslashed."""
    return _MARKUP.sub(r"\\\1", escape_controls(str(text)))


def code(text: object) -> str:
    """``text`` as inline code (controls escaped; a pipe backslashed for tables)."""
    shown = escape_controls(str(text)).replace("|", "\\|")
    return f"`{shown}`" if "`" not in shown else md(shown)


def decimals(value: float, kind: str) -> int:
    """Decimals for ``value``: 3 for accuracies and sparsities ("fixed"); 4 significant
    digits for D and its companions ("general", from 0.001 to 250)."""
    if kind == "fixed":
        return 3
    import math

    return max(0, 3 - math.floor(math.log10(abs(value)))) if value else 3


def number(value: float | None, kind: str = "fixed") -> str:
    if value is None:
        return "–"
    return f"{value:.{decimals(value, kind)}f}"


def stat_text(stat: Stat, kind: str = "fixed", *, n: bool = True) -> str:
    """``0.912 ± 0.031 (n=3)`` (the half-width to the mean's decimals); one seed:
    ``0.912 (n=1)``; nothing finished: ``–``. ``n=False`` leaves ``(n=k)`` out."""
    if stat.mean is None:
        return "–"
    places = decimals(stat.mean, kind)
    text = f"{stat.mean:.{places}f}"
    if stat.ci95 is not None:
        text += f" ± {stat.ci95:.{places}f}"
    return f"{text} (n={stat.n})" if n else text


def flags_text(cell: Cell) -> str:
    """``2/3 chance_level``, plus ``mixed numerics``, unchecked runs and unfinished ones."""
    parts = []
    if cell.flagged:
        parts.append(f"{cell.flagged}/{cell.runs} {', '.join(cell.flags)}")
    if cell.unchecked:
        parts.append(f"{cell.unchecked} unchecked")
    if cell.mixed_numerics:
        parts.append("mixed numerics")
    others = [s for s in cell.statuses if s != "done"]
    if others:
        parts.append(f"{cell.runs - cell.done}/{cell.runs} not done ({', '.join(others)})")
    return md("; ".join(parts)) if parts else "ok"


def label_text(cell: Cell, data: ResultsData) -> str:
    return f"{BEST} **{md(cell.label)}**" if data.is_best(cell) else md(cell.label)


def report_markdown(datas: Sequence[ResultsData], figures: Sequence[WrittenFigure], store_root: str = "") -> str:
    """The whole ``report.md``."""
    lines: list[str] = []
    add = lines.append
    if len(datas) == 1:
        data = datas[0]
        add(f"# Report: {md(data.name)} (experiment {data.experiment_id})" if data.name
            else f"# Report: experiment {data.experiment_id}")
    else:
        add(f"# Comparison: experiments {datas[0].experiment_id} and {datas[1].experiment_id}")
    add("")
    add("Written by `lotto-tui report`" + (f" from the store `{md(store_root)}`" if store_root else "") + ".")
    add("")
    for i, data in enumerate(datas):
        tag = f"**{TAGS[i]}**: " if len(datas) > 1 else ""
        name = f" {code(data.name)}" if data.name else ""
        add(f"- {tag}experiment {data.experiment_id}{name}: {_summary(data)}")
    if len(datas) > 1:
        add("- Differences are **B − A** (second minus first) of the means.")
    add("")
    _how_to_read(add, datas)
    if len(datas) == 1:
        _tables(add, datas[0], level="##")
    else:
        _comparison(add, datas[0], datas[1])
    _figure_section(add, figures)
    for i, data in enumerate(datas):
        head = "## " if len(datas) == 1 else f"## {TAGS[i]}: "
        if len(datas) > 1:
            add(f"{head}experiment {data.experiment_id} in full")
            add("")
            _tables(add, data, level="###")
        _grid(add, data, "###" if len(datas) > 1 else "##")
        _provenance(add, data, "###" if len(datas) > 1 else "##")
        _config(add, data, "###" if len(datas) > 1 else "##")
    return "\n".join(lines).rstrip() + "\n"


def _summary(data: ResultsData) -> str:
    config = data.config
    dataset = _get(config, "data", "dataset")
    model = _get(config, "model", "name")
    seeds = _get(config, "grid", "seeds")
    finished = sum(c.done for c in (*data.cells, *data.intermediate))
    runs = sum(c.runs for c in (*data.cells, *data.intermediate))
    parts = [f"dataset {code(dataset)}" if dataset else "", f"model {code(model)}" if model else "",
             f"seeds {code(seeds)}" if seeds is not None else "", f"{finished} of {runs} recorded runs finished",
             f"chance {data.chance:g}" if data.chance is not None else ""]
    return ", ".join(p for p in parts if p)


def _get(config: Mapping[str, Any], section: str, key: str) -> Any:
    part = config.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def _how_to_read(add: Any, datas: Sequence[ResultsData]) -> None:
    add("## How to read this report")
    add("")
    add("- Every number is over the finished seeds of a grid point: `mean ± ci95 (n=k)`, where ci95 is the "
        "half-width of the 95% confidence interval (Student t with n−1 degrees of freedom, sample standard "
        "deviation); a single seed shows its value and `n=1`.")
    add("- **D** = ‖W_dense − W_pruned‖ / ‖W_dense‖ (final weights). It mostly measures what the mask removes, so "
        "two companions stand beside it: the **floor** ‖W_dense·(1−m)‖ / ‖W_dense‖ (what the mask alone "
        "removes) and the **kept change** ‖(W_dense − W_pruned)·m‖ / ‖W_dense·m‖ (how far training moved the "
        "kept weights). `–`: not recorded (dense runs, older stores).")
    add("- *Actual sparsity* is the fraction of prunable weights the mask removes; the *target* is what was asked.")
    add(f"- {BEST} marks the pruned point with the highest mean validation accuracy at its activation and "
        "sparsity (selected on validation, never on test; never a point whose every run is flagged).")
    add("- *Flags* count runs with a health flag (`chance_level`, `loss_exploded`, `layer_collapse`); "
        "*mixed numerics*: the point's runs were made under different device/precision/threads/torch settings. "
        "In figures, a hollow marker is a point with a flagged run.")
    add("")


def _tables(add: Any, data: ResultsData, *, level: str) -> None:
    add(f"{level} Results")
    add("")
    if not data.any_done:
        add("No finished runs yet: nothing to report.")
        add("")
        return
    for activation in data.activations:
        add(f"{level}# {md(activation)}")
        add("")
        add("| method | target | " + " | ".join(h for _, h, _ in TABLE_METRICS) + " | flags |")
        add("|---|---:|" + "---:|" * len(TABLE_METRICS) + "---|")
        for cell in data.cells:
            if cell.activation != activation:
                continue
            values = " | ".join(stat_text(cell.stat(name), kind) for name, _, kind in TABLE_METRICS)
            add(f"| {label_text(cell, data)} | {cell.target_sparsity:g} | {values} | {flags_text(cell)} |")
        add("")


def _comparison(add: Any, a: ResultsData, b: ResultsData) -> None:
    from lotto_engine.views.results import compare_results

    add("## Results side by side (A, B and B − A)")
    add("")
    add("Rows are aligned by activation, method, variant and target sparsity; a point only one experiment has "
        "reads *absent* in the other. Values are `mean ± ci95` over the n finished seeds of each; B − A is the "
        "difference of the means (compare it with the two intervals before reading it as an effect).")
    add("")
    points = compare_results(a, b)
    activations = list(dict.fromkeys(p.key[0] for p in points))
    if not points:
        add("Neither experiment has results yet.")
        add("")
    for activation in activations:
        add(f"### {md(activation)}")
        add("")
        heads = ["n A", "n B"]
        for _, head, _ in COMPARE_METRICS:
            heads += [f"{head} A", f"{head} B", f"{head} B − A"]
        add("| method | target | " + " | ".join(heads) + " | flags A | flags B |")
        add("|---|---:|" + "---:|" * len(heads) + "---|---|")
        for point in points:
            if point.key[0] != activation:
                continue
            key, ca, cb = point.key, point.a, point.b
            some = ca or cb
            assert some is not None
            label = md(some.label)
            marks = "".join(f" {BEST}{t}" for t, c, d in (("A", ca, a), ("B", cb, b)) if c is not None and d.is_best(c))
            row = [str(ca.n) if ca else "absent", str(cb.n) if cb else "absent"]
            for name, _, kind in COMPARE_METRICS:
                sa = ca.stat(name) if ca else None
                sb = cb.stat(name) if cb else None
                row += [_compact(sa, ca, kind), _compact(sb, cb, kind), _difference(point, name, kind)]
            add(f"| {label}{marks} | {key[3]:g} | " + " | ".join(row)
                + f" | {flags_text(ca) if ca else 'absent'} | {flags_text(cb) if cb else 'absent'} |")
        add("")


def _compact(stat: Stat | None, cell: Cell | None, kind: str) -> str:
    """``mean ± ci95`` for a side-by-side table (n has its own column; ``(n=k)`` only
    where this number has fewer values than the point has finished runs)."""
    if stat is None or cell is None:
        return "absent"
    return stat_text(stat, kind, n=stat.mean is not None and stat.n != cell.n)


def _difference(point: ComparedPoint, metric: str, kind: str) -> str:
    """B − A of the means (:meth:`~lotto_engine.views.results.ComparedPoint.difference`),
    signed, to as many decimals as the larger mean shows."""
    diff = point.difference(metric)
    if diff is None or point.a is None or point.b is None:
        return "–"
    larger = max(abs(point.a.stat(metric).mean or 0.0), abs(point.b.stat(metric).mean or 0.0))
    return f"{diff:+.{decimals(larger, kind)}f}"


def _figure_section(add: Any, figures: Sequence[WrittenFigure]) -> None:
    add("## Figures")
    add("")
    if not figures:
        add("No figures: no finished runs to draw.")
        add("")
        return
    for figure in figures:
        first, *others = figure.paths
        add(f"### {md(figure.title)}")
        add("")
        add(f"![{md(figure.title)}]({first.name})")
        add("")
        also = f" Also as {', '.join(f'[{p.suffix[1:]}]({p.name})' for p in others)}." if others else ""
        add(f"{figure.caption}{also}")
        add("")


def _grid(add: Any, data: ResultsData, level: str) -> None:
    add(f"{level} Grid: methods, variants and levels")
    add("")
    labels = list(dict.fromkeys(c.label for c in data.cells))
    sparsities = sorted({c.target_sparsity for c in data.cells if c.method != "dense"})
    add(f"- Activations: {', '.join(md(a) for a in data.activations) or '–'}")
    add(f"- Series (method or method/variant): {', '.join(md(x) for x in labels) or '–'}")
    add(f"- Target sparsities: {', '.join(f'{s:g}' for s in sparsities) or '–'}")
    levels = {c.key: c.level for c in data.cells if c.level is not None}
    if levels:
        add("- imp levels reaching a grid sparsity: "
            + ", ".join(f"{md(k[0])} {md(point_label_of(k))} {k[3]:g} = level {v}" for k, v in levels.items()))
    add("")
    if data.intermediate:
        add("imp levels between grid sparsities (in the training curves and the exports, not in the tables "
            "or sparsity figures):")
        add("")
        add("| activation | method | level | target | actual sparsity | val acc | test acc | D | flags |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for cell in data.intermediate:
            add(f"| {md(cell.activation)} | {md(cell.label)} | {cell.level if cell.level is not None else '–'} | "
                f"{cell.target_sparsity:.4g} | {stat_text(cell.stat('actual_sparsity'))} | "
                f"{stat_text(cell.stat('val_acc'))} | {stat_text(cell.stat('test_acc'))} | "
                f"{stat_text(cell.stat('stability'), 'general')} | {flags_text(cell)} |")
        add("")


def point_label_of(key: tuple[str, str, str, float]) -> str:
    from lotto_engine.views.results import point_label

    return point_label(key[1], key[2])


def _provenance(add: Any, data: ResultsData, level: str) -> None:
    add(f"{level} Provenance")
    add("")
    if not data.provenance:
        add("No provenance records: the experiment was run by a release that did not store them.")
        add("")
    for i, record in enumerate(data.provenance, 1):
        add(f"Grid invocation {i} of {len(data.provenance)}:")
        add("")
        add("| key | value |")
        add("|---|---|")
        for key, value in _flat(record):
            add(f"| {md(key)} | {_value(value)} |")
        add("")
    if data.numerics:
        add("Numerics settings of the runs (device, precision, threads):")
        add("")
        for setting in data.numerics:
            add("- " + ", ".join(f"{md(k)} {md(v)}" for k, v in setting.items()))
        if len(data.numerics) > 1:
            add("")
            add(f"The runs were made under {len(data.numerics)} different settings: numbers can differ for that "
                "reason alone; table rows that mix them say *mixed numerics*.")
        add("")


def _flat(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A provenance record's keys, nested ones as ``checksums.train``, in stored order."""
    out: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _flat(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def _value(value: Any) -> str:
    if value is None:
        return "–"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = escape_controls(text).replace("|", "\\|")
    return f"`{text}`" if "`" not in text else md(text)


def _config(add: Any, data: ResultsData, level: str) -> None:
    add(f"{level} Config")
    add("")
    if not data.config:
        add("Not stored.")
        add("")
        return
    text = json.dumps(data.config, indent=2)  # ASCII: no control or bidi character reaches the page
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", text)), default=0))
    add(f"{fence}json")
    add(text)
    add(fence)
    add("")
