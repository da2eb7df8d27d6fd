"""Checkpoints and resume: a run interrupted after an epoch and continued from the
TrainState it checkpointed (through a file, as a job stores it) is bit for bit the run
that was never interrupted: losses, accuracies, learning rates, snapshots with their
data orders, and final weights. Everything here is real training on the digits (CPU, one thread)."""

from __future__ import annotations

import copy
from dataclasses import astuple

import pytest
import torch

from lotto_engine.config import load_config
from lotto_engine.devices import FastPath
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.step import EagerStep, GraphedSgdStep, StepCache, TrainStep, graphed_step
from lotto_engine.training import LoopOptions, TrainState, train

from conftest import LEARNS, TINY, Flag

EPOCHS = 3


class EagerReplay:
    """Stands in for a CUDA graph on CPU (as in test_fast_engine.py): replaying re-runs
    the captured step on the step's static buffers, the only inputs a graph would see."""

    def __init__(self, step) -> None:
        self.step = step
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.step._step(self.step.x, self.step.y)


def points(outcome) -> list[tuple]:
    """The curve without ``seconds`` (wall time, which naturally differs)."""
    return [astuple(m)[:6] for m in outcome.curve]


def fresh(cfg, digits, masked: bool):
    """The net and mask a job builds from its seed: what a new process would have."""
    model = build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", 0)
    return model, compute_masks(model, "magnitude", 0.5) if masked else None


# name: (config overrides, masked, fast path, loop options)
CASES = {
    # cosine schedule (LEARNS): a resume counting epochs from 0 would use other learning rates
    "sgd-momentum-wd": ([], False, FastPath(), {}),
    "sgd-masked": ([], True, FastPath(), {}),
    "adam": (['train.optimizer="adam"', "train.lr=0.01"], False, FastPath(), {}),
    "adam-masked": (['train.optimizer="adam"', "train.lr=0.01"], True, FastPath(), {}),
    "augment": ([], True, FastPath(), {"augment": True, "padding": 1}),
    "rewind-snapshot": ([], True, FastPath(), {"snapshot_epochs": (0, 1)}),
    # off CUDA the capture fails and the graph step runs uncaptured (with a note)
    "graphed-uncaptured": ([], True, FastPath(cuda_graphs=True), {}),
    # capture replaced by EagerReplay: full batches replayed, the cached step reused
    "graphed-replayed": ([], True, FastPath(cuda_graphs=True), {"snapshot_epochs": (1,)}),
}


@pytest.mark.parametrize("name", [  # two cases stay in the fast loop
    pytest.param(name, marks=[] if name in ("sgd-masked", "graphed-replayed") else [pytest.mark.slow]) for name in CASES
])
def test_a_run_resumed_from_a_saved_checkpoint_is_bit_for_bit_the_uninterrupted_run(digits, tmp_path, monkeypatch,
                                                                                    name):
    overrides, masked, fast, options = CASES[name]
    cfg = load_config(preset="demo", overrides=[*LEARNS, *overrides])
    if name == "graphed-replayed":
        monkeypatch.setattr(GraphedSgdStep, "capture", lambda self: setattr(self, "graph", EagerReplay(self)))
        cache = StepCache()  # one cache for all three runs: the resumed run gets a used step back

        def step_cache() -> StepCache:
            return cache
    else:
        step_cache = StepCache

    model, masks = fresh(cfg, digits, masked)
    whole = train(model, digits.train, digits.val, cfg.train, fast,
                  LoopOptions(epochs=EPOCHS, seed=1, masks=masks, step_cache=step_cache(), **options))
    # it learns (chance is 0.1; 3 augmented epochs reach 0.28): the comparison means something
    assert whole.status == "done" and whole.curve[-1].val_acc > 2 / digits.num_classes
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    # interrupted: cancelled right after the first epoch's checkpoint
    saved = []
    cancel = Flag()

    def checkpoint(state: TrainState) -> None:
        path = tmp_path / f"epoch{state.epoch}.pt"
        torch.save(state.to_payload(), path)
        saved.append(path)
        cancel.set()

    model, masks = fresh(cfg, digits, masked)
    cut = train(model, digits.train, digits.val, cfg.train, fast,
                LoopOptions(epochs=EPOCHS, seed=1, masks=masks, step_cache=step_cache(), cancel=cancel,
                            on_checkpoint=checkpoint, **options))
    assert cut.status == "cancelled" and [p.name for p in saved] == ["epoch1.pt"]

    state = TrainState.from_payload(torch.load(saved[0], weights_only=True))
    kept = copy.deepcopy(state)
    model, masks = fresh(cfg, digits, masked)  # a new process: same seed, weights from the file
    resumed = train(model, digits.train, digits.val, cfg.train, fast,
                    LoopOptions(epochs=EPOCHS, seed=1, masks=masks, step_cache=step_cache(), resume=state, **options))

    assert resumed.status == "done" and resumed.notes == whole.notes
    assert points(resumed) == points(whole)
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in expected.items())
    assert sorted(resumed.snapshots) == sorted(whole.snapshots) == sorted(options.get("snapshot_epochs", ()))
    for epoch, weights in whole.snapshots.items():  # a rewind point taken before the interruption survives it
        assert all(torch.equal(resumed.snapshots[epoch][k], v) for k, v in weights.items())
        assert torch.equal(resumed.snapshot_orders[epoch], whole.snapshot_orders[epoch])
    assert sorted(resumed.snapshot_orders) == sorted(whole.snapshots)
    if masks:
        params = dict(model.named_parameters())
        assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
    # training from the state never wrote into it: it can be resumed from again
    assert _same(state.to_payload(), kept.to_payload())
    if name == "graphed-replayed":
        (step,) = cache.idle()
        assert step.graph.replays > 0  # the replayed path really ran


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_checkpoints_come_after_each_epoch_but_the_last_as_cpu_copies(digits):
    cfg = load_config(preset="demo", overrides=list(TINY))
    model, masks = fresh(cfg, digits, True)
    seen = []
    states = []

    def checkpoint(state: TrainState) -> None:
        seen.append(("checkpoint", state.epoch))
        states.append(state)

    out = train(model, digits.train, digits.val, cfg.train,
                loop=LoopOptions(epochs=4, seed=0, masks=masks, snapshot_epochs=(2,), on_checkpoint=checkpoint,
                                 on_epoch=lambda m: seen.append(("epoch", m.epoch))))
    assert out.status == "done"
    assert seen == [("epoch", 1), ("checkpoint", 1), ("epoch", 2), ("checkpoint", 2), ("epoch", 3),
                    ("checkpoint", 3), ("epoch", 4)]
    for state in states:
        assert [m.epoch for m in state.curve] == list(range(1, state.epoch + 1))
        assert sorted(state.snapshots) == sorted(state.snapshot_orders) == ([2] if state.epoch >= 2 else [])
        tensors = [*state.weights.values(), state.generator, *state.snapshot_orders.values()]
        assert all(t.device.type == "cpu" for t in tensors)
    # copies, not views of the training weights: each epoch's state holds its own weights
    assert not torch.equal(states[0].weights["conv1.weight"], states[1].weights["conv1.weight"])
    assert torch.equal(states[1].weights["conv1.weight"], out.snapshots[2]["conv1.weight"])
    assert not torch.equal(states[0].generator, states[1].generator)


def test_no_checkpoint_for_a_diverged_epoch(digits):
    cfg = load_config(preset="demo", overrides=list(TINY))
    model, _ = fresh(cfg, digits, False)
    params = dict(model.named_parameters())
    checkpoints = []

    def poison(epoch, batch, batches):  # a weight turns NaN early in epoch 2: its loss is NaN
        if (epoch, batch) == (2, 1):
            with torch.no_grad():
                params["conv1.weight"][0, 0, 0, 0] = float("nan")

    out = train(model, digits.train, digits.val, cfg.train,
                loop=LoopOptions(epochs=4, seed=0, on_batch=poison,
                                 on_checkpoint=lambda state: checkpoints.append(state.epoch)))
    assert out.status == "diverged" and len(out.curve) == 2
    assert checkpoints == [1]


def test_a_resume_with_no_epochs_left_trains_nothing_and_returns_its_curve(digits):
    cfg = load_config(preset="demo", overrides=list(TINY))
    model, _ = fresh(cfg, digits, False)
    states = []
    train(model, digits.train, digits.val, cfg.train,
          loop=LoopOptions(epochs=3, seed=0, snapshot_epochs=(1,), on_checkpoint=states.append))
    last = states[-1]  # after epoch 2
    batches = []
    model, _ = fresh(cfg, digits, False)
    out = train(model, digits.train, digits.val, cfg.train,
                loop=LoopOptions(epochs=2, seed=0, resume=last, on_batch=lambda *a: batches.append(a)))
    assert out.status == "done" and batches == []
    assert out.curve == last.curve and sorted(out.snapshots) == sorted(out.snapshot_orders) == [1]
    assert torch.equal(out.snapshot_orders[1], last.snapshot_orders[1])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in last.weights.items())


@pytest.fixture(scope="module")
def payload(digits):
    """A real checkpoint payload (SGD with momentum, a mask, a snapshot) after epoch 1."""
    cfg = load_config(preset="demo", overrides=list(TINY))
    model, masks = fresh(cfg, digits, True)
    states = []
    train(model, digits.train, digits.val, cfg.train,
          loop=LoopOptions(epochs=2, seed=0, masks=masks, snapshot_epochs=(0,), on_checkpoint=states.append))
    return states[0].to_payload()


def test_a_payload_round_trips_through_a_weights_only_file(payload, tmp_path):
    torch.save(payload, tmp_path / "state.pt")
    state = TrainState.from_payload(torch.load(tmp_path / "state.pt", weights_only=True))
    assert state.epoch == 1 and sorted(state.snapshots) == sorted(state.snapshot_orders) == [0]
    assert torch.equal(state.snapshot_orders[0], torch.Generator().manual_seed(0).get_state())
    assert _same(state.to_payload(), payload)
    assert state.step["optimizer"] == "sgd" and state.step["params"]  # momentum buffers by name


def _without(payload, key):
    return {k: v for k, v in payload.items() if k != key}


MALFORMED = {
    "not a dict": lambda p: [p],
    "missing version": lambda p: _without(p, "version"),
    "missing epoch": lambda p: _without(p, "epoch"),
    "missing weights": lambda p: _without(p, "weights"),
    "missing step": lambda p: _without(p, "step"),
    "missing generator": lambda p: _without(p, "generator"),
    "missing curve": lambda p: _without(p, "curve"),
    "missing snapshots": lambda p: _without(p, "snapshots"),
    "missing snapshot_orders": lambda p: _without(p, "snapshot_orders"),
    # version 1 had no snapshot orders; its late-rewound runs restarted the schedule at epoch 0
    "version 1": lambda p: {**_without(p, "snapshot_orders"), "version": 1},
    "version 3": lambda p: {**p, "version": 3},
    "epoch a str": lambda p: {**p, "epoch": "1"},
    "epoch a bool": lambda p: {**p, "epoch": True},
    "weights a list": lambda p: {**p, "weights": list(p["weights"].values())},
    "a weight not a tensor": lambda p: {**p, "weights": {**p["weights"], "conv1.weight": [0.0]}},
    "step a list": lambda p: {**p, "step": []},
    "step holding an object": lambda p: {**p, "step": {**p["step"], "extra": object()}},
    "generator of floats": lambda p: {**p, "generator": p["generator"].float()},
    "curve a dict": lambda p: {**p, "curve": {}},
    "curve point missing a field": lambda p: {**p, "curve": [_without(p["curve"][0], "val_acc")]},
    "curve loss a str": lambda p: {**p, "curve": [{**p["curve"][0], "train_loss": "0.5"}]},
    "curve too short": lambda p: {**p, "curve": []},
    "snapshot epoch a str": lambda p: {**p, "snapshots": {"0": p["snapshots"][0]}},
    "snapshot after the epoch": lambda p: {**p, "snapshots": {5: p["snapshots"][0]}},
    "snapshot_orders a list": lambda p: {**p, "snapshot_orders": list(p["snapshot_orders"].values())},
    "snapshot order of floats": lambda p: {**p, "snapshot_orders": {0: p["snapshot_orders"][0].float()}},
    "snapshot order 2-d": lambda p: {**p, "snapshot_orders": {0: p["snapshot_orders"][0][None]}},
    "snapshot order epoch a str": lambda p: {**p, "snapshot_orders": {"0": p["snapshot_orders"][0]}},
    "snapshot order without its snapshot": lambda p: {**p, "snapshot_orders": {**p["snapshot_orders"],
                                                                              1: p["snapshot_orders"][0]}},
    "snapshot without its order": lambda p: {**p, "snapshot_orders": {}},
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_payload_is_a_one_line_value_error(payload, case):
    with pytest.raises(ValueError, match="^train state: ") as err:
        TrainState.from_payload(MALFORMED[case](payload))
    assert "\n" not in str(err.value)


def test_a_version_1_payload_is_refused_by_its_version_not_a_missing_key(payload):
    """A checkpoint written before snapshot orders: its job starts over (the runner's
    note shows this line) rather than continuing a late-rewound run under new rules."""
    old = {**_without(payload, "snapshot_orders"), "version": 1}
    with pytest.raises(ValueError, match=r"^train state: version 1 \(written before snapshot data orders\) is not 2$"):
        TrainState.from_payload(old)


def test_both_steps_keep_sgd_state_in_one_format_and_refuse_another_optimizers(digits):
    """A checkpoint of an SGD run names momentum buffers by parameter, whichever step
    trained it; Adam's state is refused by an SGD step (one-line ValueError)."""
    cfg = load_config(preset="demo", overrides=list(TINY))
    model, masks = fresh(cfg, digits, True)
    eager = EagerStep(model, cfg.train, masks)
    graphed, _ = graphed_step(model, masks, batch_size=cfg.train.batch_size, input_shape=digits.input_shape,
                              momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay, precision="fp32",
                              channels_last=False, capture=False, cache=None)
    assert isinstance(eager, TrainStep) and isinstance(graphed, TrainStep)
    for step in (eager, graphed):
        step.start_epoch(0.05)
        step(digits.train.x[:32], digits.train.y[:32])
    a, b = eager.state(), graphed.state()
    assert a["optimizer"] == b["optimizer"] == "sgd"
    assert a["params"].keys() == b["params"].keys() == dict(model.named_parameters()).keys()
    graphed.load_state(a)  # the eager step's buffers, by name
    assert all(torch.equal(graphed.state()["params"][n]["momentum_buffer"], v["momentum_buffer"])
               for n, v in a["params"].items())

    adam = load_config(preset="demo", overrides=[*TINY, 'train.optimizer="adam"'])
    adam_step = EagerStep(build_model(adam.model, digits.input_shape, digits.num_classes, "relu", 0), adam.train, {})
    adam_step.start_epoch(0.01)
    adam_step(digits.train.x[:32], digits.train.y[:32])
    for step in (eager, graphed):
        with pytest.raises(ValueError, match="optimizer 'adam' given to a sgd step"):
            step.load_state(adam_step.state())


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
def test_on_cuda_a_captured_run_resumed_from_a_checkpoint_trains_like_the_uninterrupted_one(digits, tmp_path):
    """The real graph: the resumed run gets the cached step back and its momentum
    buffers restored in place, where the graph reads them. Training replays bit for
    bit; validation is held to rounding, as in test_fast_engine.py (the same weights
    may be evaluated with other cuDNN kernels while a cached graph holds memory)."""
    from lotto_engine.data import load_dataset

    cuda = torch.device("cuda")
    cfg = load_config(preset="demo", overrides=[*LEARNS, "train.batch_size=32"])
    data = load_dataset(cfg.data, cuda)
    cache = StepCache()

    def run(**options):
        model, masks = fresh(cfg, digits, True)
        model.to(cuda)
        out = train(model, data.train, data.val, cfg.train, FastPath(cuda_graphs=True),
                    LoopOptions(epochs=EPOCHS, seed=1, masks=masks, step_cache=cache, **options))
        assert out.notes == []  # captured
        return out, model

    whole, model = run()
    expected = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    cancel, saved = Flag(), []

    def checkpoint(state: TrainState) -> None:
        torch.save(state.to_payload(), tmp_path / "state.pt")
        saved.append(state.epoch)
        cancel.set()

    cut, _ = run(cancel=cancel, on_checkpoint=checkpoint)
    assert cut.status == "cancelled" and saved == [1]
    state = TrainState.from_payload(torch.load(tmp_path / "state.pt", weights_only=True))
    resumed, model = run(resume=state)
    assert [astuple(m)[:3] + (m.lr,) for m in resumed.curve] == [astuple(m)[:3] + (m.lr,) for m in whole.curve]
    for a, b in zip(resumed.curve, whole.curve, strict=True):
        assert (a.val_loss, a.val_acc) == pytest.approx((b.val_loss, b.val_acc), rel=1e-5)
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in expected.items())
