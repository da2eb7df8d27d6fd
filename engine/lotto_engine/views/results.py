"""Results as the write-up reports them: per grid point (activation, method, variant,
target sparsity), averaged over seeds. Tables and charts (the batch report, the
explorer's results panel and its comparison) draw these numbers and compute none.

The grid points are the config's: tables and the charts against sparsity show the
grid's sparsities only. The levels of an ``imp`` chain between two grid sparsities
(0.2, 0.36, ... on the way to 0.5) are runs too: they are in the training curves and
in :attr:`ResultsData.intermediate`, not in :attr:`ResultsData.cells`. A point's label
is its method, or ``method/variant`` for a sanity-check variant (``grasp/shuffle``).

Every number of a cell is over its finished seeds: the mean, the sample standard
deviation and the 95% confidence half-width (Student t, n-1 degrees of freedom; see
:mod:`lotto_engine.stats`), so a view can say how far an effect exceeds seed noise.

:func:`load_results` reads an experiment's results in one pass; :func:`summarize`,
:func:`curve_stats`, :func:`best_points` and :func:`numerics_in` are the computations
it is made of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import LottoError
from ..health import FLAGS
from ..records import EpochMetrics, LayerSparsity, RunRecord
from ..stats import EMPTY, Stat, seed_stat

if TYPE_CHECKING:
    from ..store import Store

#: (activation, method, variant, target sparsity): one grid point (or imp level)
CurveKey = tuple[str, str, str, float]
#: The EpochMetrics fields a curve can show, in the order views offer them.
CURVE_METRICS = ("train_acc", "val_acc", "train_loss", "val_loss")
#: The per-run numbers a cell reports over seeds (mean, sample std, 95% CI, n).
STAT_METRICS = ("val_acc", "best_val_acc", "test_acc", "stability", "actual_sparsity",
                "stability_floor", "kept_change")
#: Provenance keys whose difference alone can change a run's numbers.
NUMERICS_KEYS = ("device", "precision", "threads", "torch")


def point_label(method: str, variant: str = "none") -> str:
    """How every client names a method and its variant: ``grasp``, ``grasp/shuffle``."""
    return method if variant == "none" else f"{method}/{variant}"


@dataclass(frozen=True)
class Cell:
    """One row of the results table: a grid point, over its seeds."""

    activation: str
    method: str  # "dense" for the baseline
    target_sparsity: float
    runs: int  # runs at this grid point (latest attempts)
    done: int  # of which finished
    val_acc: float | None  # mean final validation accuracy of finished runs
    best_val_acc: float | None
    test_acc: float | None
    actual_sparsity: float | None
    stability: float | None
    statuses: tuple[str, ...]
    #: health flags of any of its runs, in lotto_engine.health.FLAGS order
    flags: tuple[str, ...] = ()
    #: how many of its runs carry at least one flag
    flagged: int = 0
    #: how many of its finished runs were made before health checks (flags unknown)
    unchecked: int = 0
    #: sanity-check variant (lotto_engine.config.VARIANTS); "none" for the method itself
    variant: str = "none"
    #: the imp level that reaches this sparsity (1, 2, ...); None for dense and one-shot methods
    level: int | None = None
    #: STAT_METRICS name -> its value over the finished seeds (:class:`~lotto_engine.stats.Stat`)
    stats: Mapping[str, Stat] = field(default_factory=dict)
    #: its finished runs were made under different numerics settings (NUMERICS_KEYS):
    #: their numbers can differ for that reason alone
    mixed_numerics: bool = False

    def stat(self, name: str) -> Stat:
        """``name``'s mean, std, 95% CI and n over the finished seeds (empty when none)."""
        return self.stats.get(name, EMPTY)

    @property
    def n(self) -> int:
        """How many finished runs the statistics are over."""
        return self.done

    @property
    def label(self) -> str:
        """``magnitude``, ``grasp/shuffle``, ``dense``: see :func:`point_label`."""
        return point_label(self.method, self.variant)

    @property
    def key(self) -> CurveKey:
        return (self.activation, self.method, self.variant, self.target_sparsity)


def run_key(run: RunRecord) -> CurveKey:
    """The grid point (or imp level) a run belongs to."""
    return (run.activation, run.method, run.variant, run.target_sparsity)


def summarize(runs: Iterable[RunRecord]) -> list[Cell]:
    """Group runs by grid point (in first-seen order) and average the finished ones.
    Every point is kept, imp levels between grid sparsities too (:func:`load_results`
    sets those apart)."""
    groups: dict[CurveKey, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run_key(run), []).append(run)
    cells = []
    for (activation, method, variant, sparsity), members in groups.items():
        done = [r for r in members if r.status == "done"]
        levels = {r.level for r in members}
        stats = {name: seed_stat(getattr(r, name) for r in done) for name in STAT_METRICS}
        cells.append(
            Cell(
                activation=activation,
                method=method,
                target_sparsity=sparsity,
                runs=len(members),
                done=len(done),
                val_acc=stats["val_acc"].mean,
                best_val_acc=stats["best_val_acc"].mean,
                test_acc=stats["test_acc"].mean,
                actual_sparsity=stats["actual_sparsity"].mean,
                stability=stats["stability"].mean,
                statuses=tuple(sorted({r.status for r in members})),
                flags=tuple(f for f in FLAGS if any(f in r.flags for r in members)),
                flagged=sum(1 for r in members if r.flags),
                unchecked=sum(1 for r in members if not r.checked),
                variant=variant,
                level=levels.pop() if len(levels) == 1 else None,
                stats=stats,
                mixed_numerics=len({_numerics_signature(r) for r in done} - {None}) > 1,
            )
        )
    return cells


def numerics_in(runs: Iterable[RunRecord]) -> list[dict]:
    """The distinct numerics settings ({"device", "precision", "threads"}) among runs
    that recorded them, in first-seen order: more than one means a table mixes runs
    whose numbers were made under different settings."""
    seen: list[dict] = []
    for run in runs:
        if run.numerics and run.numerics not in seen:
            seen.append(run.numerics)
    return seen


def _numerics_signature(run: RunRecord) -> tuple | None:
    """The settings of ``run`` that change numbers without being job inputs (None:
    not recorded, a run from an older release)."""
    found = {**(run.numerics or {}), **(run.provenance or {})}
    if not found:
        return None
    return tuple(str(found.get(k)) for k in NUMERICS_KEYS)


def mean_curves(
    runs: Iterable[RunRecord],
    curve_of: Callable[[int], list[EpochMetrics]],
    metric: str = "train_acc",
    *,
    include_running: bool = False,
) -> dict[CurveKey, list[tuple[int, float]]]:
    """Per grid point, ``metric`` by epoch averaged over the finished seeds (and, with
    ``include_running``, the running ones, so live views see curves grow).

    ``curve_of(run_id)`` returns a run's curve (e.g. ``Store.curve``). An epoch is
    kept only when every averaged run has it.
    """
    return {key: [(epoch, stat.mean) for epoch, stat in points]  # type: ignore[misc]
            for key, points in curve_stats(runs, curve_of, metric, include_running=include_running).items()}


def curve_stats(
    runs: Iterable[RunRecord],
    curve_of: Callable[[int], list[EpochMetrics]],
    metric: str = "train_acc",
    *,
    include_running: bool = False,
) -> dict[CurveKey, list[tuple[int, Stat]]]:
    """Like :func:`mean_curves`, with each epoch's :class:`Stat` over the seeds (the
    band a chart draws around the mean)."""
    groups: dict[CurveKey, list[list[EpochMetrics]]] = {}
    for run in runs:
        if run.status == "done" or (include_running and run.status == "running"):
            groups.setdefault(run_key(run), []).append(curve_of(run.id))
    out: dict[CurveKey, list[tuple[int, Stat]]] = {}
    for key, curves in groups.items():
        length = min(len(c) for c in curves)
        out[key] = [(curves[0][i].epoch, seed_stat(getattr(c[i], metric) for c in curves)) for i in range(length)]
    return out


def best_points(cells: Iterable[Cell]) -> frozenset[CurveKey]:
    """Per (activation, target sparsity), the pruned point(s) with the highest mean
    validation accuracy (ties: all of them). Selected on validation, never on test.
    A point whose every finished run is flagged (at chance, exploded, collapsed) is
    never the best: among nets that did not train, the highest mean is noise."""
    best: dict[tuple[str, float], tuple[float, list[CurveKey]]] = {}
    for cell in cells:
        if cell.method == "dense" or cell.val_acc is None or cell.flagged >= cell.runs:
            continue
        at = (cell.activation, cell.target_sparsity)
        top = best.get(at)
        if top is None or cell.val_acc > top[0]:
            best[at] = (cell.val_acc, [cell.key])
        elif cell.val_acc == top[0]:
            top[1].append(cell.key)
    return frozenset(key for _, keys in best.values() for key in keys)


@dataclass(frozen=True)
class GridAxes:
    """An experiment's grid as its config lists it: the order tables follow and the
    sparsities that are grid points. Empty axes (a config that does not say) leave
    the order to the runs and every sparsity on the grid."""

    activations: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    #: None: not known, every sparsity is a grid point
    sparsities: tuple[float, ...] | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> GridAxes:
        """The axes of a stored config (a plain mapping: it may come from another release)."""
        grid = config.get("grid")
        if not isinstance(grid, Mapping):
            return cls()

        def names(axis: str) -> tuple[str, ...]:
            value = grid.get(axis)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        sparsities = grid.get("sparsities")
        numbers = (tuple(float(v) for v in sparsities)
                   if isinstance(sparsities, list) and all(isinstance(v, (int, float)) for v in sparsities) else None)
        return cls(names("activations"), names("methods"), names("variants"), numbers)

    def on_grid(self, cell: Cell) -> bool:
        """Whether a point is one of the grid's (dense always is); an imp level between
        two grid sparsities is not. Levels that land on a grid sparsity have exactly
        the grid's float as their target, so the test is exact."""
        return self.sparsities is None or cell.method == "dense" or cell.target_sparsity in self.sparsities


def _ranks(configured: Sequence[str], seen: Iterable[str]) -> dict[str, int]:
    """Configured names first, in config order, then any others in first-seen order."""
    return {name: i for i, name in enumerate(dict.fromkeys((*configured, *seen)))}


def ordered_cells(cells: Sequence[Cell], axes: GridAxes | None = None) -> list[Cell]:
    """Grid order: activations, then dense, then methods, each with its variants ("none"
    first), each by sparsity ascending. Names follow the config's order (``axes``),
    then first-seen order."""
    axes = axes or GridAxes()
    act_rank = _ranks(axes.activations, (c.activation for c in cells))
    method_rank = _ranks(axes.methods, (c.method for c in cells if c.method != "dense"))
    variant_rank = _ranks(("none", *axes.variants), (c.variant for c in cells))
    return sorted(
        cells,
        key=lambda c: (act_rank[c.activation], c.method != "dense", method_rank.get(c.method, -1),
                       variant_rank[c.variant], c.target_sparsity),
    )


@dataclass(frozen=True)
class ResultsData:
    """An experiment's results as tables and charts need them."""

    experiment_id: int | None
    #: the grid's points in grid order (:func:`ordered_cells`): what tables and the
    #: charts against sparsity show (charts give colours in this order)
    cells: list[Cell] = field(default_factory=list)
    #: metric -> grid point or imp level -> [(epoch, mean value)]: every level is here
    curves: dict[str, dict[CurveKey, list[tuple[int, float]]]] = field(default_factory=dict)
    #: the latest attempt of every pruned run at a grid point that has a mask, with its per-layer sparsity
    masks: list[tuple[RunRecord, list[LayerSparsity]]] = field(default_factory=list)
    #: the distinct numerics settings ({"device", "precision", "threads"}) of its runs
    numerics: list[dict] = field(default_factory=list)
    #: imp levels between grid sparsities (0.2, 0.36, ... before 0.5), in grid order:
    #: left out of tables and sparsity charts, in curves and exports
    intermediate: list[Cell] = field(default_factory=list)
    #: the experiment's grid as configured
    axes: GridAxes = field(default_factory=GridAxes)
    #: metric -> point -> [(epoch, lo, hi)]: mean -/+ 95% CI over seeds (lo == hi for one seed)
    bands: dict[str, dict[CurveKey, list[tuple[int, float, float]]]] = field(default_factory=dict)
    #: the grid points with the highest mean validation accuracy at their (activation, sparsity)
    best: frozenset[CurveKey] = frozenset()
    #: accuracy of guessing (1/K for the experiment's dataset); None when unknown
    chance: float | None = None
    #: the experiment's provenance records (one per grid invocation), oldest first
    provenance: list[dict] = field(default_factory=list)
    #: the experiment's stored config ({} when unknown) and name
    config: dict = field(default_factory=dict)
    name: str = ""

    @property
    def layer_stats(self) -> dict[CurveKey, dict[str, Stat]]:
        """Per grid point, each prunable layer's sparsity over the seeds (layers in the
        net's order): what a per-layer heatmap shows."""
        values: dict[CurveKey, dict[str, list[float]]] = {}
        for run, layers in self.masks:
            if run.status != "done":
                continue
            point = values.setdefault(run_key(run), {})
            for layer in layers:
                point.setdefault(layer.name, []).append(layer.sparsity)
        return {key: {name: seed_stat(v) for name, v in layers.items()} for key, layers in values.items()}

    def is_best(self, cell: Cell) -> bool:
        """Whether ``cell`` has the highest mean validation accuracy at its sparsity."""
        return cell.key in self.best

    @property
    def curve_groups(self) -> list[tuple[str, str]]:
        """(activation, variant) pairs in grid order, "none" first: one training-curve
        chart each (the method's own runs with the dense one, then each variant's),
        so a chart holds the curves of one sanity check, not every run of the grid."""
        cells = [*self.cells, *self.intermediate]
        variant_rank = _ranks(("none", *self.axes.variants), (c.variant for c in cells))
        pairs = {(c.activation, "none" if c.method == "dense" else c.variant): None for c in cells}
        act_rank = _ranks(self.axes.activations, (c.activation for c in cells))
        return sorted(pairs, key=lambda p: (act_rank[p[0]], variant_rank[p[1]]))

    @property
    def levels(self) -> dict[CurveKey, int]:
        """The imp level of every imp point (grid or intermediate), for labels (``L3``)."""
        return {c.key: c.level for c in (*self.cells, *self.intermediate) if c.level is not None}

    @property
    def activations(self) -> list[str]:
        return list(dict.fromkeys(c.activation for c in self.cells))

    @property
    def any_done(self) -> bool:
        """Whether some grid point has a finished run (else there is nothing to chart)."""
        return any(c.done for c in self.cells)


def load_results(
    store: Store | None,
    experiment_id: int | None,
    *,
    metrics: Sequence[str] = CURVE_METRICS,
    include_running: bool = True,
    masks: bool = True,
) -> ResultsData:
    """Read an experiment's results (latest attempts) in one pass over the store.

    ``metrics``: the curves to average (see :data:`CURVE_METRICS`); ``include_running``:
    running runs join the mean curves, so live views see them grow (a finished report
    leaves them out); ``masks``: read every pruned run's per-layer sparsity too.
    Nothing to read (no store yet, no experiment) gives empty results.
    """
    if store is None or experiment_id is None:
        return ResultsData(experiment_id)
    from ..config import DATASET_CLASSES

    runs = store.runs(experiment_id)
    try:
        record = store.experiment(experiment_id)
        config, name = record.config, record.name
    except LottoError:  # no such experiment: no runs either
        config, name = {}, ""
    axes = GridAxes.of(config)
    data_section = config.get("data")
    classes = DATASET_CLASSES.get(str(data_section.get("dataset"))) if isinstance(data_section, Mapping) else None

    @lru_cache(maxsize=None)
    def curve_of(run_id: int) -> list[EpochMetrics]:
        return store.curve(run_id)

    stats = {metric: curve_stats(runs, curve_of, metric, include_running=include_running) for metric in metrics}
    curves = {metric: {key: [(epoch, st.mean) for epoch, st in points] for key, points in by_key.items()}
              for metric, by_key in stats.items()}
    bands = {metric: {key: [(epoch, st.lo, st.hi) for epoch, st in points] for key, points in by_key.items()}
             for metric, by_key in stats.items()}
    cells = ordered_cells(summarize(runs), axes)
    grid = {c.key for c in cells if axes.on_grid(c)}
    pruned = [run for run in runs if run.kind == "pruned" and run_key(run) in grid] if masks else []
    layers = [(run, store.layers(run.id)) for run in pruned]
    return ResultsData(
        experiment_id,
        cells=[c for c in cells if c.key in grid],
        curves=curves,
        masks=[(run, found) for run, found in layers if found],
        numerics=numerics_in(runs),
        intermediate=[c for c in cells if c.key not in grid],
        axes=axes,
        bands=bands,  # type: ignore[arg-type]
        best=best_points(c for c in cells if c.key in grid),
        chance=1.0 / classes if classes else None,
        provenance=store.provenance(experiment_id),
        config=config,
        name=name,
    )


@dataclass(frozen=True)
class ComparedPoint:
    """One grid point of two experiments side by side: ``a`` or ``b`` is None where
    that experiment lacks the point."""

    key: CurveKey
    a: Cell | None
    b: Cell | None

    def difference(self, metric: str) -> float | None:
        """B's mean of ``metric`` minus A's; None where either has none. Read it against
        both sides' intervals before calling it an effect."""
        x = self.a.stat(metric).mean if self.a else None
        y = self.b.stat(metric).mean if self.b else None
        return None if x is None or y is None else y - x


def compare_results(a: ResultsData, b: ResultsData) -> list[ComparedPoint]:
    """Both experiments' grid points aligned by (activation, method, variant, target
    sparsity), in grid order (A's config first, then points only B has)."""
    cells_a = {c.key: c for c in a.cells}
    cells_b = {c.key: c for c in b.cells}
    union = [*a.cells, *(c for c in b.cells if c.key not in cells_a)]
    return [ComparedPoint(c.key, cells_a.get(c.key), cells_b.get(c.key)) for c in ordered_cells(union, a.axes)]
