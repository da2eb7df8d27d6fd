"""The protocol: masks stay enforced, runs are deterministic, rewinding works."""

from __future__ import annotations

import math
import statistics
from dataclasses import astuple

import pytest
import torch

from lotto_engine.config import load_config
from lotto_engine.data import Split
from lotto_engine.devices import FastPath
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_engine.training import LoopOptions, lr_at, train

from conftest import LEARNS, tiny_config


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_are_exactly_zero_before_the_first_step_and_after_every_step(digits, optimizer):
    cfg = tiny_config(f"train.optimizer=\"{optimizer}\"", "train.momentum=0.9", "train.weight_decay=0.1")
    model = build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", 0)
    masks = compute_masks(model, "random", 0.8, seed=3)
    params = dict(model.named_parameters())
    assert any(bool((params[n][~m] != 0).any()) for n, m in masks.items())  # theta0 is not already sparse

    violations = []

    def check(epoch, batch, batches):
        for name, mask in masks.items():
            if bool((params[name].detach()[~mask] != 0).any()):
                violations.append((epoch, batch, name))

    outcome = train(model, digits.train, digits.val, cfg.train,
                    loop=LoopOptions(epochs=2, seed=0, masks=masks, on_batch=check, snapshot_epochs=(0,)))
    assert outcome.status == "done"
    start = outcome.snapshots[0]
    assert all(bool((start[n][~m] == 0).all()) for n, m in masks.items())
    assert violations == []
    # kept weights did train
    assert any(not torch.equal(start[n][m], params[n].detach()[m]) for n, m in masks.items())


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    cfg = tiny_config('grid.activations=["tanh"]', 'grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.8]")
    results = []
    for name in ("a", "b"):
        with Store(tmp_path / name) as store:
            summary = Runner(cfg, store).run()
            assert summary.ok and summary.counts == {"done": 3}
            runs = store.runs(summary.experiment_id)
            results.append([(r.job_key, r.val_acc, r.test_acc, r.stability, r.actual_sparsity,
                             [(m.train_loss, m.val_acc) for m in store.curve(r.id)]) for r in runs])
    assert results[0] == results[1]


def test_a_nan_loss_marks_the_run_diverged_and_the_grid_goes_on(tmp_path):
    cfg = tiny_config('grid.activations=["relu","tanh"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]",
                      "train.lr=1e30", "train.momentum=0.0")
    events = []
    with Store(tmp_path) as store:
        summary = Runner(cfg, store, on_event=events.append).run()
        runs = store.runs(summary.experiment_id)
    assert not summary.ok
    dense = [r for r in runs if r.method == "dense"]
    assert {r.status for r in dense} == {"diverged"}
    assert len(dense) == 2  # the second activation still ran
    pruned = [r for r in runs if r.method != "dense"]
    assert {r.status for r in pruned} == {"failed"} and all("dense" in r.error for r in pruned)


def test_rewind_to_epoch_k_starts_the_pruned_net_from_the_dense_weights_after_k_epochs(tmp_path, digits):
    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]",
                      'prune.rewind="epoch:1"')
    with Store(tmp_path) as store:
        summary = Runner(cfg, store).run()
        assert summary.ok
        dense_key = next(r.job_key for r in store.runs(summary.experiment_id) if r.method == "dense")
        rewind = store.load_tensors(dense_key, "rewind")
    model = build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", 0)
    train(model, digits.train, digits.val, cfg.train, loop=LoopOptions(epochs=1, seed=0))
    assert all(torch.equal(rewind[k], v) for k, v in model.state_dict().items())


def test_lr_schedules():
    cfg = load_config(overrides=["train.lr=0.1", 'train.lr_schedule="cosine"']).train
    assert lr_at(cfg, 0, 10) == pytest.approx(0.1) and lr_at(cfg, 5, 10) == pytest.approx(0.05)
    step = load_config(overrides=['train.lr_schedule="step"', "train.lr_step_epochs=2", "train.lr_gamma=0.5",
                                  "train.lr=1.0"]).train
    assert [lr_at(step, e, 6) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_the_runner_records_what_the_write_up_reports(tmp_path):
    cfg = tiny_config('grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.5,0.9]")
    assert (cfg.train.dense_epochs, cfg.train.pruned_epochs) == (2, 1)
    events = []
    with Store(tmp_path) as store:
        summary = Runner(cfg, store, on_event=events.append).run()
        runs = store.runs(summary.experiment_id)
        assert summary.ok and len(runs) == 5
        for run in runs:
            curve = store.curve(run.id)
            epochs = cfg.train.dense_epochs if run.method == "dense" else cfg.train.pruned_epochs
            assert [m.epoch for m in curve] == list(range(1, epochs + 1))
            assert all(0.0 <= m.val_acc <= 1.0 and math.isfinite(m.train_loss) for m in curve)
            assert run.val_acc == curve[-1].val_acc and run.best_val_acc == max(m.val_acc for m in curve)
            assert 0.0 <= run.test_acc <= 1.0 and run.wall_time > 0
            if run.method == "dense":
                assert run.stability is None and run.actual_sparsity == 0.0
            else:
                layers = store.layers(run.id)
                total = sum(layer.numel for layer in layers)
                assert run.actual_sparsity == pytest.approx(round(run.target_sparsity * total) / total)
                assert run.stability > 0
                mask = store.load_tensors(run.job_key, "mask")
                final = store.load_tensors(run.job_key, "final")
                assert all(bool((final[n][~m] == 0).all()) for n, m in mask.items())
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "GridStarted" and kinds[-1] == "GridFinished"
    assert kinds.count("JobStarted") == 5 and kinds.count("JobFinished") == 5
    assert kinds.count("EpochFinished") == 2 + 4 * 1 and "BatchProgress" in kinds


def test_cancel_stops_the_job_in_flight_and_records_it(tmp_path):
    import threading

    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]")
    cancel = threading.Event()

    def on_event(event):
        if type(event).__name__ == "BatchProgress" and event.job.kind == "pruned":
            cancel.set()

    with Store(tmp_path) as store:
        summary = Runner(cfg, store, on_event=on_event, cancel=cancel, progress_interval=0).run()
        statuses = {r.method: r.status for r in store.runs(summary.experiment_id)}
        assert summary.cancelled and statuses == {"dense": "done", "magnitude": "cancelled"}
        resumed = Runner(cfg, store).run()
        assert resumed.ok and resumed.counts == {"done": 2}
        history = store.runs(summary.experiment_id, history=True)
        assert [(r.method, r.status) for r in history] == [
            ("dense", "done"), ("magnitude", "cancelled"), ("magnitude", "done")
        ]


def masked_run(cfg, digits, split, *, epochs: int, seed: int = 0, **options):
    """Train a half-pruned ReLU net; (outcome, weight change) with every masked weight
    checked to be zero at the end."""
    model = build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", seed)
    masks = compute_masks(model, "magnitude", 0.5)
    # train() zeroes the masked weights first: the update starts from there
    start = {n: p.detach() * masks[n] if n in masks else p.detach().clone() for n, p in model.named_parameters()}
    out = train(model, split, digits.val, cfg.train, FastPath(**options),
                LoopOptions(epochs=epochs, seed=seed, masks=masks))
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items()), options
    return out, torch.cat([(p.detach() - start[n]).flatten() for n, p in params.items()])


# Unit roundoff: fp32 rounds at 2**-24, bf16 (autocast's matmuls and convs) at 2**-8.
FP32_U, BF16_U = 2.0**-24, 2.0**-8
# How far an opt-in's first update may be from the plain one: (error, size), as a
# fraction of the plain update's norm. Measured over seeds 0-3 and three batches, on
# AVX-512(-BF16) and on AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2):
# - channels_last adds the same fp32 products in another order: error 3-16 fp32 u.
#   Bound: 1e3 u for both.
# - bf16 rounds each conv/matmul input, forward and backward, through six layers:
#   error 3.5-20 bf16 u (ReLU units near 0 flip), bound 32 u. That noise is nearly
#   orthogonal to the update, so the update's size moves by at most 2 u: bound 4 u,
#   which a learning rate off by 2% or more already breaks.
FIRST_UPDATE = {
    "channels_last": ({"channels_last": True}, 1e3 * FP32_U, 1e3 * FP32_U),
    "bf16": ({"precision": "bf16"}, 32 * BF16_U, 4 * BF16_U),
}


def test_fast_path_auto_is_the_plain_fp32_path_on_cpu(digits):
    from lotto_engine.devices import fast_path

    cpu = torch.device("cpu")
    assert fast_path("auto", "auto", False, cpu) == fast_path("fp32", "off", False, cpu)
    cuda = fast_path("auto", "auto", False, torch.device("cuda"))
    assert cuda.precision == "bf16" and cuda.channels_last
    # asking for the plain path by name runs the very same code: equal to the bit
    cfg = tiny_config()
    plain, _ = masked_run(cfg, digits, digits.train, epochs=1)
    named, _ = masked_run(cfg, digits, digits.train, epochs=1, precision="fp32", channels_last=False)
    assert [astuple(m)[:6] for m in named.curve] == [astuple(m)[:6] for m in plain.curve]  # not seconds


@pytest.mark.parametrize("name", FIRST_UPDATE)
def test_an_opt_in_makes_the_plain_first_update_up_to_its_rounding(digits, name):
    """One SGD step on one batch from the same weights: the quantity that must agree up
    to rounding (a whole run compounds each rounding difference into a different net).
    A wrong learning rate or gradient in the opt-in path is off by far more."""
    options, error, size = FIRST_UPDATE[name]
    cfg = load_config(preset="demo", overrides=list(LEARNS))
    batch = Split(digits.train.x[: cfg.train.batch_size], digits.train.y[: cfg.train.batch_size])
    plain, update = masked_run(cfg, digits, batch, epochs=1)
    opt_in, opt_update = masked_run(cfg, digits, batch, epochs=1, **options)
    norm = float(update.norm())
    assert norm > 0
    assert float((opt_update - update).norm()) <= error * norm
    assert float(opt_update.norm()) == pytest.approx(norm, rel=size)
    # the loss of that batch at the same weights: one forward pass, rounded once a layer
    assert opt_in.curve[0].train_loss == pytest.approx(plain.curve[0].train_loss, rel=size)


@pytest.mark.slow
def test_opt_ins_learn_like_the_plain_path_within_its_seed_spread(digits):
    """Over whole runs an opt-in may end anywhere a different seed could: compare mean
    final accuracies over seeds, with a tolerance taken from the plain path's spread."""
    cfg = load_config(preset="demo", overrides=list(LEARNS))
    seeds = (0, 1, 2)

    def final_accuracies(**options) -> list[float]:
        return [masked_run(cfg, digits, digits.train, epochs=6, seed=s, **options)[0].curve[-1].val_acc
                for s in seeds]

    plain = final_accuracies()
    assert min(plain) > 5 / digits.num_classes  # it learns: chance is 1/K
    mean = statistics.mean(plain)
    # a run's accuracy varies from seed to seed by its standard deviation, and by at
    # least the binomial error of counting correct images on a validation set this size
    spread = max(statistics.stdev(plain), math.sqrt(mean * (1 - mean) / len(digits.val)))
    tolerance = 3 * spread * math.sqrt(2 / len(seeds))  # 3 sigma of a difference of two means
    for options in ({"channels_last": True}, {"precision": "bf16"}):
        assert statistics.mean(final_accuracies(**options)) == pytest.approx(mean, abs=tolerance), options


def test_moving_the_data_folder_resumes_the_same_experiment():
    base = load_config(preset="demo")
    moved = load_config(preset="demo", overrides=['data.root="/elsewhere"', "data.download=false"])
    assert base.identity() == moved.identity()
    assert base.identity() != load_config(preset="demo", overrides=["data.val_size=0.2"]).identity()


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu", "gelu", "elu", "silu"])
def test_every_registered_activation_trains_both_models(digits, activation):
    for name in ("shallow-cnn", "lenet-300-100"):
        cfg = tiny_config(f'model.name="{name}"')
        model = build_model(cfg.model, digits.input_shape, digits.num_classes, activation, 0)
        out = train(model, digits.train, digits.val, cfg.train, loop=LoopOptions(epochs=1, seed=0))
        assert out.status == "done" and math.isfinite(out.curve[0].train_loss)
    from lotto_engine.pruning import prunable_names

    assert prunable_names(model) == ["fc1.weight", "fc2.weight", "classifier.weight"]


def test_models_are_seeded_and_device_independent():
    cfg = tiny_config()
    a = build_model(cfg.model, (1, 8, 8), 10, "relu", 7).state_dict()
    b = build_model(cfg.model, (1, 8, 8), 10, "relu", 7).state_dict()
    c = build_model(cfg.model, (1, 8, 8), 10, "relu", 8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert all(torch.count_nonzero(v) == 0 for k, v in a.items() if k.endswith("bias"))


def test_a_grid_with_augmentation_runs_and_is_reproducible(tmp_path):
    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["random"]', "grid.sparsities=[0.5]",
                      "data.augment=true", "data.crop_padding=1")
    accs = []
    for name in ("a", "b"):
        with Store(tmp_path / name) as store:
            summary = Runner(cfg, store).run()
            assert summary.ok
            accs.append([r.val_acc for r in store.runs(summary.experiment_id)])
    assert accs[0] == accs[1]


def test_an_edited_grid_reuses_finished_jobs_from_earlier_experiments(tmp_path):
    first = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]")
    wider = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5,0.8]")
    with Store(tmp_path) as store:
        a = Runner(first, store).run()
        events = []
        b = Runner(wider, store, on_event=events.append).run()
        assert a.experiment_id != b.experiment_id and b.ok
        started = [e.job for e in events if type(e).__name__ == "JobStarted"]
        assert [(j.method, j.sparsity) for j in started] == [("magnitude", 0.8)]  # only the new job trained
        grid_started = events[0]
        assert len(grid_started.reused) == 2
        old = {r.job_key: r for r in store.runs(a.experiment_id)}
        new = {r.job_key: r for r in store.runs(b.experiment_id)}
        for key, run in old.items():
            assert new[key].reused_from == run.id and new[key].test_acc == run.test_acc
            assert store.curve(new[key].id) == store.curve(run.id)
            assert store.layers(new[key].id) == store.layers(run.id)


def test_a_diverged_grid_is_final_and_resume_runs_nothing(tmp_path):
    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]",
                      "train.lr=1e30", "train.momentum=0.0")
    with Store(tmp_path) as store:
        first = Runner(cfg, store).run()
        assert first.counts == {"diverged": 1, "failed": 1}
        events = []
        again = Runner(cfg, store, on_event=events.append).run()
        assert again.counts == first.counts and not again.ok
        assert not [e for e in events if type(e).__name__ == "JobStarted"]
        assert len(store.runs(first.experiment_id, history=True)) == 2


def test_bf16_results_never_mix_with_fp32_ones(tmp_path):
    fp32 = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]")
    bf16 = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]",
                       'run.precision="bf16"')
    assert fp32.identity() == bf16.identity()  # same science config...
    with Store(tmp_path) as store:
        a = Runner(fp32, store).run()
        b = Runner(bf16, store).run()
        # ...but bf16 is its own experiment with its own job keys: nothing reused or mixed
        assert a.experiment_id != b.experiment_id
        keys_a = {r.job_key for r in store.runs(a.experiment_id)}
        runs_b = store.runs(b.experiment_id)
        assert keys_a.isdisjoint(r.job_key for r in runs_b)
        assert all(r.reused_from is None for r in runs_b) and len(runs_b) == 2


def test_the_default_experiment_is_the_latest_one_with_runs(tmp_path):
    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]")
    with Store(tmp_path) as store:
        done = Runner(cfg, store).run()
        empty = store.experiment_for(tiny_config("train.lr=0.2"))
        assert empty.id > done.experiment_id
        assert store.experiment().id == done.experiment_id
