"""Late rewinding as open_lth does it: a run started from the dense weights after epoch
K, with ``schedule_offset=K`` and the data order the dense run had reached there
(``snapshot_orders[K]``), continues the dense run's learning-rate schedule and its
batches (and augmentations) from epoch K + 1, with a fresh optimizer state. With SGD
without momentum (no optimizer state to lose) the continuation is bit for bit the
dense run's epochs K + 1 .. E. Real training on the digits (CPU, one thread)."""

from __future__ import annotations

from dataclasses import astuple

import pytest
import torch

from lotto_engine.config import load_config
from lotto_engine.data import Split
from lotto_engine.data.batches import epoch_batches
from lotto_engine.models import build_model
from lotto_engine.training import LoopOptions, TrainState, lr_at, train

from conftest import LEARNS, Flag

E, K = 3, 1  # the dense run's epochs and the rewind epoch


def config(*extra: str):
    # SGD without momentum by default: a fresh optimizer then loses nothing at the rewind
    return load_config(preset="demo", overrides=[*LEARNS, "train.momentum=0.0", "train.lr=0.1", *extra])


def net(cfg, digits):
    return build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", 0)


def points(curve) -> list[tuple]:
    """(epoch, train_loss, train_acc, val_loss, val_acc, lr): the curve without wall time."""
    return [astuple(m)[:6] for m in curve]


def rewound(cfg, digits, dense):
    """A net loaded with the dense run's weights after epoch K."""
    model = net(cfg, digits)
    model.load_state_dict(dense.snapshots[K])
    return model


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augment"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_continuation_from_epoch_k_is_bit_for_bit_the_dense_runs_later_epochs(digits, schedule, augment):
    cfg = config(f'train.lr_schedule="{schedule}"')
    aug = {"augment": augment, "padding": 1}
    model = net(cfg, digits)
    dense = train(model, digits.train, digits.val, cfg.train,
                  loop=LoopOptions(epochs=E, seed=1, snapshot_epochs=(K,), **aug))
    assert dense.status == "done" and sorted(dense.snapshot_orders) == [K]
    # it learns (chance is 0.1): the comparison means something
    assert dense.curve[-1].train_loss < dense.curve[0].train_loss
    assert max(m.val_acc for m in dense.curve) > 1.5 / digits.num_classes
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model = rewound(cfg, digits, dense)
    late = train(model, digits.train, digits.val, cfg.train,
                 loop=LoopOptions(epochs=E - K, seed=1, schedule_offset=K, data_order=dense.snapshot_orders[K], **aug))
    assert late.status == "done"
    assert [m.epoch for m in late.curve] == list(range(1, E - K + 1))  # its own numbering
    later = [(m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in dense.curve[K:]]
    assert [(m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in late.curve] == later
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in expected.items())
    assert not torch.equal(dense.snapshots[K]["conv1.weight"], expected["conv1.weight"])  # it trained after K


def test_the_order_at_epoch_0_is_the_seeded_generator_and_at_epoch_k_that_generator_after_k_epochs(digits):
    cfg = config()
    batch_size = cfg.train.batch_size
    out = train(net(cfg, digits), digits.train, digits.val, cfg.train,
                loop=LoopOptions(epochs=2, seed=5, snapshot_epochs=(0, 2), augment=True, padding=1))
    assert sorted(out.snapshot_orders) == sorted(out.snapshots) == [0, 2]
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(out.snapshot_orders[0], generator.get_state())
    for _ in range(2):  # two epochs of augmented batches drawn from that generator
        for _ in epoch_batches(digits.train.x, digits.train.y, batch_size, generator, augment=True, padding=1):
            pass
    assert torch.equal(out.snapshot_orders[2], generator.get_state())
    assert not torch.equal(out.snapshot_orders[0], out.snapshot_orders[2])
    # a run started from a data order reports that order as its epoch-0 order
    again = train(net(cfg, digits), digits.train, digits.val, cfg.train,
                  loop=LoopOptions(epochs=1, seed=0, snapshot_epochs=(0,), data_order=out.snapshot_orders[2]))
    assert torch.equal(again.snapshot_orders[0], out.snapshot_orders[2])


def _interrupted(run, tmp_path, after: int) -> TrainState:
    """``run(cancel=..., on_checkpoint=...)`` cancelled after epoch ``after``'s checkpoint,
    its state read back from a weights-only file, as a job's runner stores it."""
    cancel = Flag()
    path = tmp_path / f"epoch{after}.pt"

    def checkpoint(state: TrainState) -> None:
        if state.epoch == after:
            torch.save(state.to_payload(), path)
            cancel.set()

    assert run(cancel=cancel, on_checkpoint=checkpoint).status == "cancelled"
    return TrainState.from_payload(torch.load(path, weights_only=True))


def test_snapshot_orders_survive_an_interruption_after_their_epoch(digits, tmp_path):
    cfg = config()

    def run(**options):
        return train(net(cfg, digits), digits.train, digits.val, cfg.train,
                     loop=LoopOptions(epochs=E, seed=1, snapshot_epochs=(0, K), augment=True, padding=1, **options))

    whole = run()
    state = _interrupted(run, tmp_path, after=K + 1)
    assert sorted(state.snapshot_orders) == [0, K]
    resumed = run(resume=state)
    assert resumed.status == "done" and sorted(resumed.snapshot_orders) == [0, K]
    for epoch in (0, K):
        assert torch.equal(resumed.snapshot_orders[epoch], whole.snapshot_orders[epoch])
    assert not torch.equal(whole.snapshot_orders[K], state.generator)  # the order moved on after K


def test_an_interrupted_continuation_resumes_bit_for_bit_counting_its_own_epochs(digits, tmp_path):
    cfg = config('train.lr_schedule="cosine"', "train.momentum=0.9", "train.lr=0.05")
    dense = train(net(cfg, digits), digits.train, digits.val, cfg.train,
                  loop=LoopOptions(epochs=K, seed=1, snapshot_epochs=(K,)))
    order = dense.snapshot_orders[K]
    models = []

    def run(**options):
        models.append(rewound(cfg, digits, dense))
        # the same options every time, data_order too: with a resume it is ignored
        return train(models[-1], digits.train, digits.val, cfg.train,
                     loop=LoopOptions(epochs=3, seed=1, schedule_offset=K, data_order=order, **options))

    whole = run()
    state = _interrupted(run, tmp_path, after=1)
    assert state.epoch == 1 and [m.epoch for m in state.curve] == [1]
    resumed = run(resume=state)
    assert [m.epoch for m in resumed.curve] == [1, 2, 3]
    assert points(resumed.curve) == points(whole.curve)
    assert all(torch.equal(models[2].state_dict()[k], v) for k, v in models[0].state_dict().items())


def _recorder(model, seen: list[torch.Tensor]):
    """Records every training batch the net is given (its inputs, augmented)."""
    return model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()) if module.training else None)


def test_with_momentum_the_continuation_draws_the_dense_runs_later_batches_at_its_learning_rates(digits):
    cfg = config('train.lr_schedule="cosine"', "train.momentum=0.9", "train.lr=0.05")
    aug = {"augment": True, "padding": 1}
    model = net(cfg, digits)
    dense_batches: list[torch.Tensor] = []
    _recorder(model, dense_batches)
    dense = train(model, digits.train, digits.val, cfg.train,
                  loop=LoopOptions(epochs=E, seed=1, snapshot_epochs=(K,), **aug))
    per_epoch = len(dense_batches) // E
    assert per_epoch * E == len(dense_batches) and per_epoch > 1

    def continuation(**options):
        model = rewound(cfg, digits, dense)
        seen: list[torch.Tensor] = []
        _recorder(model, seen)
        out = train(model, digits.train, digits.val, cfg.train,
                    loop=LoopOptions(epochs=E - K, seed=1, schedule_offset=K, **aug, **options))
        return out, seen

    late, seen = continuation(data_order=dense.snapshot_orders[K])
    assert [m.lr for m in late.curve] == [m.lr for m in dense.curve[K:]]
    assert late.curve[0].lr != cfg.train.lr  # epoch K + 1 of the cosine, not its start
    assert len(seen) == len(dense_batches[K * per_epoch:])
    assert all(torch.equal(a, b) for a, b in zip(seen, dense_batches[K * per_epoch:]))
    # the same start without the data order draws the seed's first batches, not the dense run's later ones
    _, seeded = continuation()
    assert torch.equal(seeded[0], dense_batches[0]) and not torch.equal(seeded[0], seen[0])
    # the optimizer starts fresh: with momentum the weights part from the dense run's
    assert late.curve[-1].train_loss != dense.curve[-1].train_loss


def test_the_schedule_offset_counts_absolute_epochs(digits):
    small = Split(digits.train.x[:64], digits.train.y[:64])
    val = Split(digits.val.x[:32], digits.val.y[:32])
    cases = {
        # step: lr * gamma ** (absolute epoch // 2) over absolute epochs 3, 4, 5
        ('train.lr_schedule="step"', "train.lr_step_epochs=2", "train.lr_gamma=0.5"): (3, 3, [0.05, 0.025, 0.025]),
        # cosine over 4 absolute epochs, this run its last 2: it ends where the cosine does
        ('train.lr_schedule="cosine"',): (2, 2, [0.05, 0.05 * (1 - 2 ** -0.5)]),
    }
    for overrides, (offset, epochs, expected) in cases.items():
        cfg = config(*overrides, "train.lr=0.1")
        out = train(net(cfg, digits), small, val, cfg.train,
                    loop=LoopOptions(epochs=epochs, seed=0, schedule_offset=offset))
        lrs = [m.lr for m in out.curve]
        assert lrs == [lr_at(cfg.train, offset + e, offset + epochs) for e in range(epochs)]
        assert lrs == pytest.approx(expected, rel=1e-12)
        assert [m.epoch for m in out.curve] == list(range(1, epochs + 1))


@pytest.mark.parametrize("options", [
    {"schedule_offset": -1},
    {"data_order": torch.zeros(8)},  # floats, not a generator state
    {"data_order": torch.Generator().get_state()[None]},  # 2-d
], ids=["negative offset", "float order", "2-d order"])
def test_a_bad_offset_or_data_order_is_a_value_error(digits, options):
    cfg = config()
    with pytest.raises(ValueError, match="^loop\\."):
        train(net(cfg, digits), digits.train, digits.val, cfg.train, loop=LoopOptions(epochs=1, seed=0, **options))
