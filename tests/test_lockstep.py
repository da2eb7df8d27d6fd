"""Sibling nets trained in lockstep (``run.lockstep``), each still its own job.

- ``on`` trains the pruned siblings of a dense net in one step, each as if alone up to
  float rounding (first-epoch train loss within 1e-3 relative), masked weights exactly
  zero after every step, with its own store rows, epochs, artifacts and events;
- a net that diverges ends diverged while its siblings go on;
- a cancelled group is recorded cancelled job by job, each with its checkpoint, and
  continues (in lockstep or alone) to the numbers of an uninterrupted run; a plain
  checkpoint continues in lockstep;
- a group of one is the plain path, bit for bit;
- ``auto`` is off on CPU (no note); on CUDA a probe decides once per architecture and
  device, with a note (tested here with its clock injected).
"""

from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import LEARNS, tiny_config
from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import load_dataset
from lotto_engine.devices import FastPath
from lotto_engine.events import EpochFinished, JobFinished, JobStarted, Notice
from lotto_engine.executors import LocalExecutor, local
from lotto_engine.lockstep import Choices, GroupStep, train_together
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.runner import Runner
from lotto_engine.step import EagerStep
from lotto_engine.store import Store
from lotto_engine.training import LoopOptions, train

# the LEARNS net with four pruned siblings (two methods x two sparsities) of one dense net
SIBLINGS = (*LEARNS, 'grid.methods=["magnitude","random"]', "grid.sparsities=[0.5,0.8]")
TOLERANCE = 1e-3  # relative, on the first epoch's train loss (the bound)


@dataclass
class Wiring:
    #: each group trained in one step, as its nets' seeds
    groups: list[list[int]] = field(default_factory=list)
    #: the executor's lockstep choices (auto)
    choices: Choices = field(default_factory=Choices)


def wire(monkeypatch: pytest.MonkeyPatch) -> Wiring:
    """Record the groups trained in one step, and give the executors a fresh memo of
    auto's choices (the real one lives for the process)."""
    wiring = Wiring()
    real = local.train_together

    def recording(models, train_split, val_split, cfg, fast, loops):
        wiring.groups.append([loop.seed for loop in loops])
        return real(models, train_split, val_split, cfg, fast, loops)

    monkeypatch.setattr(local, "train_together", recording)
    monkeypatch.setattr(local, "CHOICES", wiring.choices)
    return wiring


@pytest.fixture
def wired(monkeypatch) -> Wiring:
    return wire(monkeypatch)


def run_grid(root: Path, *extra: str, cancel_at=None, config=None):
    """Run a grid into ``root``; returns (every number by job key, wall times aside;
    events). ``cancel_at(event)``
    says when to cancel."""
    config = config or tiny_config(*extra)
    events: list = []
    flag = threading.Event()

    def on_event(event):
        events.append(event)
        if cancel_at is not None and cancel_at(event):
            flag.set()

    with Store(root) as store:
        summary = Runner(config, store, on_event=on_event, cancel=flag).run()
        numbers = {
            r.job_key: (r.status, r.test_acc, r.stability, r.actual_sparsity,
                        [replace(m, seconds=0.0) for m in store.curve(r.id)])
            for r in store.runs(summary.experiment_id)
        }
    return numbers, events


def artifacts(root: Path) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    return {(p.parent.name, p.stem): load_file(str(p)) for p in sorted((root / "artifacts").glob("*/*.safetensors"))}


def close(a: float, b: float, tolerance: float = TOLERANCE) -> bool:
    return abs(a - b) <= tolerance * abs(b)


# ---------------------------------------------------------------------- on vs off


def test_lockstep_on_trains_each_sibling_as_if_alone_with_its_own_rows_artifacts_and_events(tmp_path, wired):
    alone, alone_events = run_grid(tmp_path / "off", *SIBLINGS, "run.lockstep=\"off\"")
    assert wired.groups == []  # off: nothing trains together
    together, events = run_grid(tmp_path / "on", *SIBLINGS, "run.lockstep=\"on\"")
    assert wired.groups == [[0, 0, 0, 0]]  # the four pruned siblings in one step; the dense net alone

    assert alone.keys() == together.keys() and len(together) == 5
    for key, (status, test_acc, stability, sparsity, curve) in together.items():
        a_status, _, a_stability, a_sparsity, a_curve = alone[key]
        assert status == a_status == "done"
        assert [m.epoch for m in curve] == [m.epoch for m in a_curve]
        assert close(curve[0].train_loss, a_curve[0].train_loss), (key, curve[0].train_loss, a_curve[0].train_loss)
        assert sparsity == a_sparsity
        assert (stability is None) == (a_stability is None)
    # each job saved its own tensors, and every masked weight is exactly zero
    saved = artifacts(tmp_path / "on")
    assert {name for _, name in saved} == {"theta0", "dense", "mask", "final"}
    assert saved.keys() == artifacts(tmp_path / "off").keys()
    for (key, name), mask in saved.items():
        if name == "mask":
            final = saved[(key, "final")]
            assert all(torch.all(final[n][~m] == 0) for n, m in mask.items())
    # and its own events: started once, every epoch, finished once
    for collected in (events, alone_events):
        for key in together:
            assert sum(isinstance(e, JobStarted) and e.job.key == key for e in collected) == 1
            assert sum(isinstance(e, JobFinished) and e.job.key == key for e in collected) == 1
            epochs = [e.metrics.epoch for e in collected if isinstance(e, EpochFinished) and e.job.key == key]
            assert epochs == [m.epoch for m in together[key][4]]
    # no probe note (on CPU, on is forced); only that it is slower here
    lockstep_notes = [e.message for e in events if isinstance(e, Notice) and "lockstep" in e.message]
    assert len(lockstep_notes) == 1 and lockstep_notes[0].startswith("run.lockstep = on, on a CPU")
    # each run says how it was trained: with how many nets in its step (1: alone)
    for root, sizes in ((tmp_path / "on", {4, 1}), (tmp_path / "off", {1})):
        with Store(root) as store:
            runs = store.runs(store.experiments()[0].id)
            assert {r.provenance["lockstep"] for r in runs} == sizes
            assert all(r.provenance["lockstep"] == 1 for r in runs if r.job_key.startswith("dense"))


def test_a_group_of_one_is_the_plain_path_bit_for_bit(tmp_path, wired):
    off, _ = run_grid(tmp_path / "off", "run.lockstep=\"off\"")
    on, _ = run_grid(tmp_path / "on", "run.lockstep=\"on\"")
    assert wired.groups == []  # one pruned job per dense net: nothing to train together
    assert on == off
    a, b = artifacts(tmp_path / "on"), artifacts(tmp_path / "off")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k][n], b[k][n]) for k in a for n in a[k])


def test_with_several_slots_each_worker_takes_a_whole_group(tmp_path, wired):
    numbers, events = run_grid(tmp_path / "runs", *SIBLINGS, "run.lockstep=\"on\"", "run.parallel=2")
    assert wired.groups == [[0, 0, 0, 0]]
    assert {status for status, *_ in numbers.values()} == {"done"} and len(numbers) == 5
    assert sorted(e.job.key for e in events if isinstance(e, JobFinished)) == sorted(numbers)


# ---------------------------------------------------------------------- the step


@pytest.fixture(scope="module")
def digits():
    config = load_config(preset="demo", overrides=list(LEARNS))
    return config, load_dataset(config.data, torch.device("cpu"))


def siblings(config, data, n: int = 3):
    """A dense net and ``n`` masks of it (magnitude at rising sparsities)."""
    dense = build_model(config.model, data.input_shape, data.num_classes, "relu", 0)
    masks = [compute_masks(dense, "magnitude", s) for s in (0.5, 0.7, 0.9, 0.95)[:n]]
    return dense, masks


def test_masked_weights_stay_exactly_zero_after_every_step(digits):
    config, data = digits
    dense, masks = siblings(config, data)
    cfg = config.train.model_copy(update={"weight_decay": 0.01, "momentum": 0.9})
    nets = [copy.deepcopy(dense) for _ in masks]
    for net, mask in zip(nets, masks):  # as train() starts a masked run
        with torch.no_grad():
            for name, m in mask.items():
                dict(net.named_parameters())[name].mul_(m)
    step = GroupStep(nets, cfg, masks)
    step.start_epoch(0.5)
    for i in range(5):
        step(data.train.x[i * 64 : (i + 1) * 64], data.train.y[i * 64 : (i + 1) * 64])
        for row, mask in enumerate(masks):
            assert all(torch.all(step.params[n][row][~m] == 0) for n, m in mask.items())


def test_a_diverging_net_ends_diverged_and_its_siblings_go_on(digits):
    config, data = digits
    dense, masks = siblings(config, data)
    loops = [LoopOptions(epochs=3, seed=0, masks=m) for m in masks]
    nets = [copy.deepcopy(dense) for _ in masks]
    with torch.no_grad():
        nets[1].classifier.weight.fill_(float("nan"))
    outcomes = train_together(nets, data.train, data.val, config.train, FastPath(), loops)
    assert [o.status for o in outcomes] == ["done", "diverged", "done"]
    assert len(outcomes[1].curve) == 1  # it stopped after the epoch that went bad
    for i in (0, 2):  # the others trained as if alone, the NaN net never touched them
        net = copy.deepcopy(dense)
        alone = train(net, data.train, data.val, config.train, FastPath(), loops[i])
        assert [close(a.train_loss, b.train_loss) for a, b in zip(outcomes[i].curve, alone.curve)] == [True] * 3
        assert all(torch.allclose(p, q, rtol=1e-3, atol=1e-5)
                   for p, q in zip(nets[i].parameters(), net.parameters()))


def test_adam_state_in_the_plain_format_loads_into_a_plain_step_and_back(digits):
    config, data = digits
    dense, masks = siblings(config, data, 2)
    cfg = config.train.model_copy(update={"optimizer": "adam", "lr": 0.01})
    x, y = data.train.x[:64], data.train.y[:64]
    nets = [copy.deepcopy(dense) for _ in masks]
    group = GroupStep(nets, cfg, masks)
    group.start_epoch(cfg.lr)
    for _ in range(3):
        group(x, y)
    plain = EagerStep(copy.deepcopy(dense), cfg, masks[1])
    plain.load_state(group.state(1))  # a lockstep net's state goes on alone...
    again = GroupStep([copy.deepcopy(dense) for _ in masks], cfg, masks)
    again.load_states([group.state(0), plain.state()])  # ...and a plain state in lockstep
    assert all(torch.equal(again.state(r)["params"][n][k], group.state(r)["params"][n][k])
               for r in (0, 1) for n in group.state(r)["params"] for k in ("exp_avg", "exp_avg_sq", "step"))


# ---------------------------------------------------------------------- cancel and resume

LONGER = (*SIBLINGS, "train.pruned_epochs=3")


def first_pruned_epoch(event) -> bool:
    return isinstance(event, EpochFinished) and event.job.kind == "pruned" and event.metrics.epoch == 1


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The numbers of the grid run in lockstep without interruption."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        wire(monkeypatch)
        numbers, _ = run_grid(tmp_path_factory.mktemp("straight"), *LONGER, "run.lockstep=\"on\"")
    return numbers


@pytest.mark.parametrize("then", ["off", "on"])
def test_a_cancelled_group_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path, wired, straight, then):
    root = tmp_path / "runs"
    stopped, _ = run_grid(root, *LONGER, "run.lockstep=\"on\"", cancel_at=first_pruned_epoch)
    pruned = [key for key, (_, _, _, sparsity, _) in stopped.items() if sparsity]
    # every sibling stopped at the next batch, each recorded cancelled with its checkpoint after epoch 1
    assert len(pruned) == 4 and {stopped[key][0] for key in pruned} == {"cancelled"}
    with Store(root) as store:
        assert all(store.load_checkpoint(key)["train"]["epoch"] == 1 for key in pruned)
    resumed, events = run_grid(root, *LONGER, f"run.lockstep=\"{then}\"")
    assert wired.groups == [[0, 0, 0, 0]] * (1 + (then == "on"))  # on: they go on together
    assert sorted(e.job.key for e in events if isinstance(e, JobStarted) and e.resumed_from == 1) == sorted(pruned)
    assert {k: v[0] for k, v in resumed.items()} == {k: "done" for k in straight}
    for key, (_, _, _, _, curve) in resumed.items():
        expected = straight[key][4]
        assert [m.epoch for m in curve] == [m.epoch for m in expected]
        for m, e in zip(curve, expected):
            assert close(m.train_loss, e.train_loss) and close(m.val_loss, e.val_loss), (key, m, e)


def test_checkpoints_of_plain_runs_continue_in_lockstep(digits):
    config, data = digits
    dense, masks = siblings(config, data)
    alone, states = [], []
    for mask in masks:
        saved: list = []
        alone.append(train(copy.deepcopy(dense), data.train, data.val, config.train, FastPath(),
                           LoopOptions(epochs=3, seed=0, masks=mask, on_checkpoint=saved.append)))
        states.append(saved[0])  # after epoch 1
    fresh = [build_model(config.model, data.input_shape, data.num_classes, "relu", 9) for _ in masks]
    loops = [LoopOptions(epochs=3, seed=0, masks=m, resume=state) for m, state in zip(masks, states)]
    outcomes = train_together(fresh, data.train, data.val, config.train, FastPath(), loops)
    for outcome, expected in zip(outcomes, alone):
        assert outcome.status == "done" and outcome.curve[0] == expected.curve[0]  # the resume's epoch
        assert [m.epoch for m in outcome.curve] == [1, 2, 3]
        assert all(close(m.train_loss, e.train_loss) for m, e in zip(outcome.curve, expected.curve))


# ---------------------------------------------------------------------- auto


def test_auto_is_off_on_cpu_and_says_nothing(tmp_path, wired):
    assert devices.lockstep_mode("auto", torch.device("cpu")) == "off"
    assert devices.lockstep_mode("auto", torch.device("cuda", 0)) == "probe"
    assert devices.lockstep_mode("on", torch.device("cpu")) == "on"
    executor = LocalExecutor([torch.device("cpu")], lambda d: None, threads=1, cancel=None, lockstep="auto")
    assert (executor.lockstep, executor.capacity) == ("off", 1)
    _, events = run_grid(tmp_path / "runs", *SIBLINGS)  # run.lockstep defaults to auto
    assert wired.groups == []
    assert not [e for e in events if isinstance(e, Notice) and "lockstep" in e.message]


def test_on_says_where_it_cannot_apply_and_nets_that_cannot_share_batches_are_refused(digits):
    notes = devices.execution(tiny_config('run.lockstep="on"', "run.compile=true").run).notes
    assert "run.lockstep does not combine with run.compile: each job trains alone" in notes
    notes = devices.execution(tiny_config('run.lockstep="on"').run).notes
    assert any(n.startswith("run.lockstep = on, on a CPU: siblings train in one step, which measured slower") for n in notes)
    assert not [n for n in devices.execution(tiny_config().run).notes if "lockstep" in n]
    notes = devices.execution(tiny_config('run.lockstep="on"', 'run.executor="ray"').run).notes
    assert "run.lockstep is for the local executor: on ray each job trains alone" in notes
    config, data = digits
    dense, masks = siblings(config, data, 2)
    loops = [LoopOptions(epochs=1, seed=0, masks=masks[0]), LoopOptions(epochs=1, seed=1, masks=masks[1])]
    with pytest.raises(ValueError, match="do not share their batches"):
        train_together([copy.deepcopy(dense) for _ in loops], data.train, data.val, config.train, FastPath(), loops)


class Ticks:
    """A clock for the probe: each phase (lockstep, then one at a time) takes the
    seconds given, whatever the machine does."""

    def __init__(self, together: float, alone: float) -> None:
        self.readings = itertools.cycle([0.0, together, 100.0, 100.0 + alone])  # each probe reads four
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return next(self.readings)


def test_the_probe_decides_once_per_architecture_and_device_with_a_note(digits):
    config, data = digits
    dense, masks = siblings(config, data)
    nets = [copy.deepcopy(dense) for _ in masks]
    loops = [LoopOptions(epochs=1, seed=0, masks=m) for m in masks]
    before = [p.clone() for p in nets[0].parameters()]
    fast = Choices(clock=Ticks(together=1.0, alone=1.0))  # 3 nets in the time of one
    chosen, note = fast.choose(nets, loops, data.train, config.train, FastPath(), label="shallow-cnn relu")
    assert chosen and note is not None
    assert note.startswith("run.lockstep = auto: shallow-cnn relu on cpu: 3 nets in one step ")
    assert "576 img/s, one at a time 192 img/s; siblings train together" in note  # 3 steps x 64 images
    assert fast.choose(nets, loops, data.train, config.train, FastPath(), label="x") == (True, None)  # remembered
    assert fast.clock.calls == 4  # probed once
    # another batch size (or fast path, or group size) sets another ratio: probed again
    bigger = config.train.model_copy(update={"batch_size": 2 * config.train.batch_size})
    assert fast.choose(nets, loops, data.train, bigger, FastPath(), label="x")[1] is not None
    assert fast.clock.calls == 8
    assert all(torch.equal(p, q) for p, q in zip(before, nets[0].parameters()))  # on copies
    slow = Choices(clock=Ticks(together=4.0, alone=1.0))
    chosen, note = slow.choose(nets, loops, data.train, config.train, FastPath(), label="shallow-cnn relu")
    assert not chosen and note.endswith("one at a time 192 img/s; each net trains alone")


@pytest.mark.parametrize("faster", [True, False])
def test_auto_on_cuda_probes_the_first_group_and_says_so(tmp_path, wired, monkeypatch, faster):
    monkeypatch.setattr(devices, "lockstep_mode", lambda setting, device: "probe")  # as on CUDA
    monkeypatch.setattr(local, "CHOICES", Choices(clock=Ticks(together=1.0 if faster else 8.0, alone=1.0)))
    numbers, events = run_grid(tmp_path / "runs", *SIBLINGS)
    notes = [e.message for e in events if isinstance(e, Notice) and "lockstep" in e.message]
    verdict = "siblings train together" if faster else "each net trains alone"
    assert len(notes) == 1 and "4 nets in one step" in notes[0] and notes[0].endswith(verdict)
    assert wired.groups == ([[0, 0, 0, 0]] if faster else [])
    assert {status for status, *_ in numbers.values()} == {"done"}
