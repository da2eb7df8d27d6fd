"""The protocol: a dense job and a pruned job, each a function of its inputs.

Per activation and seed (the write-up's protocol, generalised):

1. **Dense**: build the net from the seed (theta0), train it for
   ``train.dense_epochs``, keep theta0, the trained weights and, for
   ``prune.rewind = "epoch:K"``, the weights after epoch K with the data-order
   generator's state at that point.
2. **Pruned**, per method, sparsity and variant, from the dense net's tensors: score
   the weights (magnitude and imp: the trained dense weights; the pruning-at-init
   methods: theta0; an imp level after the first: the previous level's trained
   weights, within its mask), cut a mask (inverted for ``invert``, each layer
   permuted for ``shuffle``), start from the rewind point (theta0; or the weights
   after epoch K with the lr schedule and data order going on from epoch K; for
   ``reinit`` freshly drawn weights instead) times the mask, retrain for
   ``train.pruned_epochs`` with the mask enforced (a fresh optimizer), and measure
   test accuracy, mask sparsity, stability D against the dense net (with its floor
   and the kept weights' change, :func:`~lotto_engine.metrics.stability_parts`), and
   the run's health.

A job never touches the store or a scheduler: it takes a :class:`JobSpec`, the data
(on the device it trains on), its parent's tensors and an optional checkpoint to
continue from, reports through :class:`JobHooks`, stops when ``hooks.cancel`` is set,
and returns a :class:`JobOutput` of plain records and CPU tensors. Seeds come from
the job, never from execution order, so a job gives the same numbers wherever and
whenever it runs (same device, precision and threads).

A job runs in three phases: :func:`prepare_job` (the net, a pruned job's mask, the
loop with its hooks and resume point), training, and :attr:`PreparedJob.finish`
(the record and the tensors to keep). :func:`run_job` trains the net alone; the local
executor may train the nets of several siblings together in one step
(:mod:`lotto_engine.lockstep`), each still prepared and finished as its own job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..data import Dataset
from ..data.batches import class_balanced_sample
from ..health import diagnose
from ..metrics import mask_sparsity, stability_parts
from ..models import build_model
from ..provenance import device_label, run_provenance
from ..pruning import Masks, compute_masks, prunable_names, shuffle_masks
from ..records import LayerSparsity, RunResult
from ..statuses import FINAL
from ..scores import METHODS
from ..training import (
    BatchCallback, CancelFlag, EpochCallback, LoopOptions, TrainOutcome, batches_per_epoch, evaluate, train,
)
from .checkpoint import JobCheckpoint
from .spec import JobSpec

Tensors = dict[str, torch.Tensor]


@dataclass
class JobHooks:
    """How a running job reports; every hook is optional and called from the job's thread."""

    cancel: CancelFlag | None = None
    #: (epochs, batches per epoch, epochs already trained before a resume)
    on_start: Callable[[int, int, int], None] | None = None
    #: a pruned job's mask is cut: (fraction removed, per-layer detail)
    on_mask: Callable[[float, list[LayerSparsity]], None] | None = None
    on_batch: BatchCallback | None = None
    on_epoch: EpochCallback | None = None
    #: after every epoch but the last: the state to continue from
    on_checkpoint: Callable[[JobCheckpoint], None] | None = None


@dataclass
class JobOutput:
    """What a job returns: its record and the tensors to keep (by artifact name, on CPU)."""

    result: RunResult
    artifacts: dict[str, Tensors] = field(default_factory=dict)
    #: what the fast path could not do (e.g. a CUDA graph fell back), for the user
    notes: list[str] = field(default_factory=list)


@dataclass
class PreparedJob:
    """A job ready to train: its net (on the data's device, where the job starts), its
    loop (mask, hooks, resume point) and how its output is made from the outcome.

    ``run_job`` is ``prepared.finish(train(prepared.model, ..., prepared.loop))``; the
    local executor trains the nets of several prepared siblings in one step instead
    (:mod:`lotto_engine.lockstep`) and finishes each on its own."""

    spec: JobSpec
    model: torch.nn.Module
    loop: LoopOptions
    #: the job's output from how its training went (artifacts, test accuracy, stability...)
    finish: Callable[[TrainOutcome], JobOutput]


def run_job(
    spec: JobSpec,
    data: Dataset,
    *,
    parent: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    resume: JobCheckpoint | None = None,
    hooks: JobHooks | None = None,
) -> JobOutput:
    """Run one job: dense, or pruned from ``parent`` (its artifacts by name, see
    :attr:`JobSpec.inputs`); continue from ``resume`` when given."""
    job = prepare_job(spec, data, parent=parent, resume=resume, hooks=hooks)
    return job.finish(train(job.model, data.train, data.val, spec.train, spec.fast, job.loop))


def prepare_job(
    spec: JobSpec,
    data: Dataset,
    *,
    parent: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    resume: JobCheckpoint | None = None,
    hooks: JobHooks | None = None,
) -> PreparedJob:
    """Everything of :func:`run_job` before training: the net, a pruned job's mask
    (``hooks.on_mask``), ``hooks.on_start``, and the loop to train with. A checkpoint
    made under other numerics is dropped (the job starts over, with a note)."""
    hooks = hooks or JobHooks()
    note = None
    if resume is not None and resume.numerics is not None:
        now = _numerics(data.train.x.device, spec.fast.precision)
        if resume.numerics != now:  # its numbers would not continue: start over
            note = (f"{spec.job.label}: its checkpoint was made with {_words(resume.numerics)}, this run uses "
                    f"{_words(now)}; the job starts over")
            resume = None
    if spec.job.kind == "dense":
        prepared = _prepare_dense(spec, data, resume, hooks)
    elif parent is None:
        raise ValueError(f"a pruned job needs its parent's tensors ({', '.join(spec.inputs)})")
    else:
        prepared = _prepare_pruned(spec, data, parent, resume, hooks)
    if note is not None:
        finish = prepared.finish

        def finish_with_note(outcome: TrainOutcome) -> JobOutput:
            output = finish(outcome)
            output.notes.insert(0, note)
            return output

        prepared.finish = finish_with_note
    return prepared


def run_dense(spec: JobSpec, data: Dataset, *, resume: JobCheckpoint | None = None, hooks: JobHooks | None = None) -> JobOutput:
    """Train the dense net of ``spec.job`` from its seed."""
    job = _prepare_dense(spec, data, resume, hooks or JobHooks())
    return job.finish(train(job.model, data.train, data.val, spec.train, spec.fast, job.loop))


def run_pruned(
    spec: JobSpec,
    data: Dataset,
    parent: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    resume: JobCheckpoint | None = None,
    hooks: JobHooks | None = None,
) -> JobOutput:
    """Cut the mask of ``spec.job`` (method, sparsity, variant, imp level) from its
    inputs (:attr:`JobSpec.inputs`) and retrain the ticket."""
    job = _prepare_pruned(spec, data, parent, resume, hooks or JobHooks())
    return job.finish(train(job.model, data.train, data.val, spec.train, spec.fast, job.loop))


def _prepare_dense(spec: JobSpec, data: Dataset, resume: JobCheckpoint | None, hooks: JobHooks) -> PreparedJob:
    """The dense net of ``spec.job`` from its seed; its output keeps theta0, the
    trained weights and, for a late rewind, the weights and data order after epoch K."""
    job, rewind = spec.job, spec.prune.rewind_epoch
    model = build_model(spec.model, data.input_shape, data.num_classes, job.activation, job.seed)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(data.train.x.device)
    loop = _loop(spec, data, resume, hooks, masks=None, snapshot_epochs=() if rewind is None else (rewind,))

    def finish(outcome: TrainOutcome) -> JobOutput:
        names = prunable_names(model, exclude_classifier=spec.prune.exclude_classifier)
        params = dict(model.named_parameters())
        _, layers = mask_sparsity({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})
        result = _result(spec, outcome, model, data, actual_sparsity=0.0, layers=layers)
        artifacts: dict[str, Tensors] = {}
        if outcome.status == "done":
            artifacts["theta0"] = theta0
            if rewind is not None:
                artifacts["rewind"] = outcome.snapshots[rewind]
                artifacts["rewind_order"] = {"generator": outcome.snapshot_orders[rewind]}
            artifacts["dense"] = _cpu(model)
        return JobOutput(result, artifacts, outcome.notes)

    return PreparedJob(spec, model, loop, finish)


def _prepare_pruned(
    spec: JobSpec,
    data: Dataset,
    parent: Mapping[str, Mapping[str, torch.Tensor]],
    resume: JobCheckpoint | None,
    hooks: JobHooks,
) -> PreparedJob:
    """The ticket of ``spec.job``: its mask cut (or the one of its checkpoint), the net
    at its rewind point; its output measures it against the dense net."""
    job, prune = spec.job, spec.prune
    missing = [name for name in spec.inputs if name not in parent]
    if missing:
        raise ValueError(f"its parent's tensors lack {', '.join(missing)}")
    device = data.train.x.device
    model = build_model(spec.model, data.input_shape, data.num_classes, job.activation, job.seed)
    theta0, dense = parent["theta0"], parent["dense"]
    if resume is not None and resume.masks is not None:
        masks = {n: m.to(device) for n, m in resume.masks.items()}  # the mask cut before the interruption
    else:
        masks = _cut_mask(spec, data, model, parent)
    actual, layers = mask_sparsity(masks)
    if hooks.on_mask is not None:
        hooks.on_mask(actual, layers)
    rewind = prune.rewind_epoch
    if job.variant == "reinit":  # the same mask on weights drawn from another seed
        model = build_model(spec.model, data.input_shape, data.num_classes, job.activation, variant_seed(job.seed, "reinit"))
    else:
        model.load_state_dict(theta0 if rewind is None else parent["rewind"])
    model.to(device)
    order = None if rewind is None else parent["rewind_order"]["generator"]
    loop = _loop(spec, data, resume, hooks, masks=masks, schedule_offset=rewind or 0, data_order=order)

    def finish(outcome: TrainOutcome) -> JobOutput:
        result = _result(spec, outcome, model, data, actual_sparsity=actual, layers=layers)
        artifacts: dict[str, Tensors] = {}
        if outcome.status == "done":
            final = _cpu(model)
            result.stability, result.stability_floor, result.kept_change = stability_parts(
                {n: dense[n] for n in masks}, {n: final[n] for n in masks}, masks
            )
            artifacts["mask"] = {n: m.to("cpu") for n, m in masks.items()}
            artifacts["final"] = final
        return JobOutput(result, artifacts, outcome.notes)

    return PreparedJob(spec, model, loop, finish)


def variant_seed(seed: int, variant: str) -> int:
    """The seed a sanity-check variant draws from (the shuffle's permutations, the
    reinit's weights): derived from the job's seed, never equal to it by design."""
    digest = hashlib.sha256(f"lotto-tui:{variant}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _cut_mask(spec: JobSpec, data: Dataset, model: torch.nn.Module, parent: Mapping[str, Mapping[str, torch.Tensor]]) -> Masks:
    """The job's mask: its method's scores on the weights it scores (the dense net's
    trained weights or theta0; for an imp level after the first, the previous level's
    trained weights within its mask), inverted or shuffled for those variants.
    ``model`` is left with the scored weights."""
    job, prune = spec.job, spec.prune
    device = data.train.x.device
    scorer = METHODS.get(job.method)
    within = None
    if "parent_final" in parent:
        model.load_state_dict(parent["parent_final"])
        within = {n: m.to(device) for n, m in parent["parent_mask"].items()}
    else:
        model.load_state_dict(parent["dense"] if scorer.scores_at == "trained" else parent["theta0"])
    model.to(device)
    score_data = None
    if scorer.needs_data:
        x, y = class_balanced_sample(data.train.x, data.train.y, prune.score_samples, job.seed)
        step = spec.train.eval_batch_size
        score_data = [(x[i : i + step], y[i : i + step]) for i in range(0, len(y), step)]
    masks = compute_masks(
        model, job.method, job.sparsity,
        data=score_data, scope=prune.scope, tie_mode=prune.tie_mode,
        exclude_classifier=prune.exclude_classifier, seed=job.seed,
        invert=job.variant == "invert", within=within, input_shape=data.input_shape,
        temperature=prune.grasp_temperature, rounds=prune.rounds,
    )
    if job.variant == "shuffle":
        masks = shuffle_masks(masks, variant_seed(job.seed, "shuffle"))
    return masks


# ---------------------------------------------------------------------- helpers


def _loop(
    spec: JobSpec,
    data: Dataset,
    resume: JobCheckpoint | None,
    hooks: JobHooks,
    *,
    masks: Mapping[str, torch.Tensor] | None,
    snapshot_epochs: tuple[int, ...] = (),
    schedule_offset: int = 0,
    data_order: torch.Tensor | None = None,
) -> LoopOptions:
    """The one training loop of both jobs: the spec's epochs and seed, the hooks, the
    resume point. Calls ``hooks.on_start``: the job starts here."""
    epochs = spec.epochs
    if hooks.on_start is not None:
        hooks.on_start(epochs, batches_per_epoch(len(data.train), spec.train.batch_size), 0 if resume is None else resume.epoch)
    on_checkpoint = None
    if hooks.on_checkpoint is not None:
        report, key = hooks.on_checkpoint, spec.job.key
        kept = None if masks is None else {n: m.to("cpu") for n, m in masks.items()}
        numerics = _numerics(data.train.x.device, spec.fast.precision)
        on_checkpoint = lambda state: report(JobCheckpoint(key, state, kept, numerics))  # noqa: E731
    return LoopOptions(
        epochs=epochs,
        seed=spec.job.seed,
        masks=masks,
        augment=spec.data.augment,
        padding=spec.data.crop_padding,
        snapshot_epochs=snapshot_epochs,
        schedule_offset=schedule_offset,
        data_order=data_order,
        cancel=hooks.cancel,
        on_batch=hooks.on_batch,
        on_epoch=hooks.on_epoch,
        on_checkpoint=on_checkpoint,
        resume=None if resume is None else resume.train,
    )


def _result(
    spec: JobSpec,
    outcome: TrainOutcome,
    model: torch.nn.Module,
    data: Dataset,
    *,
    actual_sparsity: float,
    layers: list[LayerSparsity],
) -> RunResult:
    """The run's record: curve, accuracies, test accuracy when done, health, numerics, provenance."""
    curve = outcome.curve
    result = RunResult(status=outcome.status, curve=list(curve), actual_sparsity=actual_sparsity, layers=layers)
    if curve:
        result.val_acc = curve[-1].val_acc
        result.best_val_acc = max(m.val_acc for m in curve)
    if outcome.status == "done":
        _, result.test_acc = evaluate(model, data.test, spec.train.eval_batch_size, precision=spec.fast.precision)
    elif outcome.status == "diverged":
        result.error = "loss became NaN or infinite"
    elif outcome.status == "cancelled":
        result.error = "cancelled"
    if outcome.status in FINAL:  # a stopped run's partial curve is no result to judge
        result.flags = diagnose(
            num_classes=data.num_classes,
            curve=result.curve,
            layers=result.layers,
            val=None if result.val_acc is None else (result.val_acc, len(data.val)),
            test=None if result.test_acc is None else (result.test_acc, len(data.test)),
        )
    result.numerics = _numerics(data.train.x.device, spec.fast.precision)
    result.provenance = run_provenance(data.train.x.device, spec.fast.precision, torch.get_num_threads(), fast=spec.fast)
    result.provenance["lockstep"] = outcome.group  # nets trained in one step with it (1: alone)
    if outcome.group > 1:  # the group's step is eager and contiguous: what ran, not what was asked
        result.provenance.update(channels_last=False, cuda_graphs=False)
    return result


def _numerics(device: torch.device, precision: str) -> dict[str, object]:
    """The settings that changed this run's numbers without being inputs of its job."""
    return {"device": device_label(device), "precision": precision, "threads": torch.get_num_threads()}


def _words(numerics: Mapping[str, object]) -> str:
    return f"{numerics.get('device')} {numerics.get('precision')} {numerics.get('threads')} thread(s)"


def _cpu(model: torch.nn.Module) -> Tensors:
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
