"""The protocol: masks stay enforced, runs are deterministic, rewinding works."""

from __future__ import annotations

import math

import pytest
import torch

from lotto_engine.config import load_config
from lotto_engine.data import load_dataset
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_engine.training import lr_at, train

TINY = [
    "model.width=4", "model.hidden=16", "run.threads=1",
    "train.dense_epochs=2", "train.pruned_epochs=2", "train.batch_size=64",
]


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset(load_config(preset="demo").data)


def tiny_config(*extra: str):
    return load_config(preset="demo", overrides=[*TINY, *extra])


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

    outcome = train(model, digits.train, digits.val, cfg.train, epochs=2, seed=0, masks=masks,
                    on_batch=check, snapshot_epochs=(0,))
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
    train(model, digits.train, digits.val, cfg.train, epochs=1, seed=0)
    assert all(torch.equal(rewind[k], v) for k, v in model.state_dict().items())


def test_lr_schedules():
    cfg = load_config(overrides=["train.lr=0.1", 'train.lr_schedule="cosine"']).train
    assert lr_at(cfg, 0, 10) == pytest.approx(0.1) and lr_at(cfg, 5, 10) == pytest.approx(0.05)
    step = load_config(overrides=['train.lr_schedule="step"', "train.lr_step_epochs=2", "train.lr_gamma=0.5",
                                  "train.lr=1.0"]).train
    assert [lr_at(step, e, 6) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_the_runner_records_what_the_write_up_reports(tmp_path):
    cfg = tiny_config('grid.activations=["relu"]', 'grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.5,0.9]")
    events = []
    with Store(tmp_path) as store:
        summary = Runner(cfg, store, on_event=events.append).run()
        runs = store.runs(summary.experiment_id)
        assert summary.ok and len(runs) == 5
        for run in runs:
            curve = store.curve(run.id)
            epochs = 2
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
    assert kinds.count("EpochFinished") == 10 and "BatchProgress" in kinds


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


def test_fast_path_auto_is_the_plain_fp32_path_on_cpu_and_opt_ins_stay_close(digits):
    from lotto_engine.devices import fast_path

    cpu = torch.device("cpu")
    assert fast_path("auto", "auto", False, cpu) == fast_path("fp32", "off", False, cpu)
    cuda = fast_path("auto", "auto", False, torch.device("cuda"))
    assert cuda.precision == "bf16" and cuda.channels_last

    cfg = tiny_config()

    def curve(**options):
        model = build_model(cfg.model, digits.input_shape, digits.num_classes, "relu", 0)
        masks = compute_masks(model, "magnitude", 0.5)
        out = train(model, digits.train, digits.val, cfg.train, epochs=2, seed=0, masks=masks, **options)
        params = dict(model.named_parameters())
        assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
        return [(m.train_loss, m.val_acc) for m in out.curve]

    plain = curve()
    assert curve(precision="fp32", channels_last=False) == plain
    for options in ({"channels_last": True}, {"precision": "bf16"}):
        close = curve(**options)
        for (loss_a, acc_a), (loss_b, acc_b) in zip(plain, close):
            assert loss_b == pytest.approx(loss_a, rel=0.05) and abs(acc_a - acc_b) <= 0.05, options


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
        out = train(model, digits.train, digits.val, cfg.train, epochs=1, seed=0)
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
