"""The fast engine: the graph-ready SGD step, its fallbacks and cache, and parallel jobs.

The CUDA graph itself needs a GPU (the last test runs only where one exists); on CPU
the tests run the very step a graph captures, eagerly, and hold it to the plain path.
"""

from __future__ import annotations

import threading

import pytest
import torch

from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import Split, load_dataset
from lotto_engine.errors import DeviceError
from lotto_engine.events import EpochFinished, GridStarted, JobFailed, JobFinished, JobStarted, Notice
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.runner import Runner
from lotto_engine.step import CaptureUnsupported, GraphedSgdStep, StepCache, graphed_step
from lotto_engine.store import Store
from lotto_engine.training import LoopOptions, TrainOutcome, _run_epochs, lr_at, train

from conftest import LEARNS, TINY


def masked_model(cfg, digits, activation="relu", sparsity=0.8):
    model = build_model(cfg.model, digits.input_shape, digits.num_classes, activation, 0)
    return model, compute_masks(model, "magnitude", sparsity)


def step_for(model, masks, cfg, digits):
    """The graph-ready step, not captured (this is CPU), loaded with ``model``."""
    with torch.no_grad():  # train() zeroes masked weights before the first step
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            params[name].mul_(mask)
    step, why = graphed_step(
        model, masks, batch_size=cfg.train.batch_size, input_shape=digits.input_shape,
        momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay, precision="fp32",
        channels_last=False, capture=False, cache=None,
    )
    assert why is None
    return step


def curve(outcome: TrainOutcome) -> list[tuple[float, float, float, float]]:
    return [(m.train_loss, m.train_acc, m.val_loss, m.val_acc) for m in outcome.curve]


@pytest.mark.parametrize("extra", [[], ["train.momentum=0.0", "train.weight_decay=0.0"]], ids=["momentum", "plain"])
def test_the_graph_step_trains_like_the_plain_path_and_keeps_masked_weights_zero(digits, extra):
    cfg = load_config(preset="demo", overrides=[*LEARNS, *extra])
    plain_model, masks = masked_model(cfg, digits, sparsity=0.5)
    plain = train(plain_model, digits.train, digits.val, cfg.train,
                  loop=LoopOptions(epochs=4, seed=1, masks=masks, snapshot_epochs=(1,)))

    model, masks = masked_model(cfg, digits, sparsity=0.5)
    step = step_for(model, masks, cfg, digits)
    seen = []
    fast = TrainOutcome("done")
    _run_epochs(step, model, digits.train, digits.val, cfg.train, fast,
                LoopOptions(epochs=4, seed=1, snapshot_epochs=(1,), on_epoch=lambda m: seen.append(float(step.lr))))

    # this setup learns (chance is 0.1), so the comparison means something
    assert plain.curve[-1].val_acc > 0.5 and fast.curve[-1].val_acc > 0.5
    # The fused SGD update rounds once, the graph step twice: the first epoch's 21 steps
    # agree to float rounding (measured 3e-7 relative on AVX-512 and AVX2 kernels), so
    # 1e-3 on its losses and 1e-4 on its weights. Later epochs are not compared to
    # rounding: there a difference of 1e-7 grows to ReLU units and predictions that
    # flip (on AVX2 kernels, 3 of 4 metrics of epoch 2 are off by more than 1e-4).
    (first_plain, first_fast) = (plain.curve[0], fast.curve[0])
    assert first_fast.train_loss == pytest.approx(first_plain.train_loss, rel=1e-3)
    assert first_fast.val_loss == pytest.approx(first_plain.val_loss, rel=1e-3)
    one_image = 1 / len(digits.val)  # at most one prediction may flip on the way
    assert abs(first_fast.val_acc - first_plain.val_acc) <= one_image
    for name, weights in plain.snapshots[1].items():
        assert float((fast.snapshots[1][name] - weights).norm()) <= 1e-4 * float(weights.norm()), name
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
    # the schedule reaches the graph through the lr tensor, epoch by epoch
    assert seen == pytest.approx([lr_at(cfg.train, e, 4) for e in range(4)])


@pytest.mark.parametrize("extra", [[], ["train.momentum=0.0", "train.weight_decay=0.0"]], ids=["momentum", "plain"])
def test_across_epochs_the_graph_step_keeps_its_state_like_the_plain_path(digits, extra):
    """What carries from one epoch to the next (momentum, weights, the lr) matches the
    plain path over three short epochs of 3 batches: 9 steps leave rounding differences
    near where they start (measured <= 4e-7 relative over seeds 0-2 on AVX-512 and AVX2
    kernels; with a partial fourth batch one AVX2 run reached 1.3e-4, a ReLU unit
    flipping). 1e-3 covers that, while forgetting momentum at an epoch moves the
    losses by 1e-2 and the weights by 0.4."""
    cfg = load_config(preset="demo", overrides=[*LEARNS, *extra])
    short = Split(digits.train.x[:192], digits.train.y[:192])
    plain_model, masks = masked_model(cfg, digits, sparsity=0.5)
    plain = train(plain_model, short, digits.val, cfg.train, loop=LoopOptions(epochs=3, seed=1, masks=masks))
    model, masks = masked_model(cfg, digits, sparsity=0.5)
    fast = TrainOutcome("done")
    _run_epochs(step_for(model, masks, cfg, digits), model, short, digits.val, cfg.train, fast,
                LoopOptions(epochs=3, seed=1))
    for a, b in zip(plain.curve, fast.curve, strict=True):
        assert (b.train_loss, b.val_loss) == pytest.approx((a.train_loss, a.val_loss), rel=1e-3), a.epoch
    params = dict(model.named_parameters())
    for name, weights in plain_model.named_parameters():
        assert float((params[name] - weights).detach().norm()) <= 1e-3 * float(weights.detach().norm()), name


def test_a_cached_step_loaded_with_a_new_run_trains_exactly_like_a_fresh_step(digits):
    cfg = load_config(preset="demo", overrides=LEARNS)
    cache = StepCache(size=2)

    model, masks = masked_model(cfg, digits, "tanh")
    used = step_for(model, masks, cfg, digits)
    _run_epochs(used, model, digits.train, digits.val, cfg.train, TrainOutcome("done"), LoopOptions(epochs=1, seed=0))
    cache.checkin(used)

    other, other_masks = masked_model(cfg, digits, "tanh", sparsity=0.5)
    fresh_model = build_model(cfg.model, digits.input_shape, digits.num_classes, "tanh", 0)
    fresh = step_for(fresh_model, {n: m.clone() for n, m in other_masks.items()}, cfg, digits)
    assert fresh.key == used.key  # same architecture and settings: the cache would hand it out
    again = cache.checkout(fresh.key)
    assert again is used and cache.checkout(fresh.key) is None  # one run at a time
    with torch.no_grad():
        for name, mask in other_masks.items():
            dict(other.named_parameters())[name].mul_(mask)
    again.load(other, other_masks)

    results = []
    for step, target in ((again, other), (fresh, fresh_model)):
        out = TrainOutcome("done")
        _run_epochs(step, target, digits.train, digits.val, cfg.train, out,
                    LoopOptions(epochs=2, seed=3, augment=True, padding=1))
        results.append((curve(out), [p.detach().clone() for p in target.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_the_step_cache_keeps_the_newest_steps_and_matches_on_the_whole_key(digits):
    cfg = load_config(preset="demo", overrides=TINY)
    cache = StepCache(size=2)
    steps = []
    for activation in ("relu", "tanh", "sigmoid"):
        model, masks = masked_model(cfg, digits, activation)
        steps.append(step_for(model, masks, cfg, digits))
        cache.checkin(steps[-1])
    assert cache.checkout(steps[0].key) is None  # the oldest went
    assert cache.checkout(steps[2].key) is steps[2]
    model, _ = masked_model(cfg, digits, "tanh")
    dense = step_for(model, {}, cfg, digits)  # no mask: another key
    assert dense.key != steps[1].key and cache.checkout(dense.key) is None


class EagerReplay:
    """Stands in for a CUDA graph on CPU: replaying re-runs the captured step on the
    step's static buffers, the only inputs a real graph would see."""

    def __init__(self, step) -> None:
        self.step = step
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.step._step(self.step.x, self.step.y)


def test_train_with_cuda_graphs_replays_full_batches_and_reuses_the_step_across_runs(digits, monkeypatch):
    """The CUDA path of train(), on CPU: capture is replaced by EagerReplay."""
    captured = []

    def capture(self):
        self.graph = EagerReplay(self)
        captured.append(self)

    monkeypatch.setattr(GraphedSgdStep, "capture", capture)
    cfg = load_config(preset="demo", overrides=LEARNS)
    cache = StepCache()

    def run(sparsity, graphs, step_cache):
        model, masks = masked_model(cfg, digits, sparsity=sparsity)
        # one epoch: eager and replayed steps agree to rounding before differences compound
        out = train(model, digits.train, digits.val, cfg.train, devices.FastPath(cuda_graphs=graphs),
                    LoopOptions(epochs=1, seed=5, masks=masks, step_cache=step_cache))
        assert out.notes == []
        params = dict(model.named_parameters())  # the trained weights came back to the model
        assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
        return curve(out), [p.detach().clone() for p in model.parameters()]

    eager = run(0.5, False, cache)
    first = run(0.5, True, cache)
    assert len(captured) == 1
    full, partial = divmod(len(digits.train), cfg.train.batch_size)
    assert partial and captured[0].graph.replays == full  # the last partial batch ran eagerly
    for a, b in zip(eager[0], first[0], strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-4)

    second = run(0.8, True, cache)  # same architecture, another mask: the cached step again
    assert len(captured) == 1 and captured[0].graph.replays == 2 * full
    fresh = run(0.8, True, StepCache())  # a step of its own
    assert len(captured) == 2
    assert second[0] == fresh[0] and all(torch.equal(a, b) for a, b in zip(second[1], fresh[1]))


def test_a_failed_capture_trains_the_same_step_uncaptured_with_a_note_and_adam_trains_eagerly(digits, monkeypatch):
    """Whether capture works never changes a run's numbers; only Adam (no graph step) differs in kind."""
    cfg = load_config(preset="demo", overrides=TINY)
    model, masks = masked_model(cfg, digits)
    uncaptured = TrainOutcome("done")
    _run_epochs(step_for(model, masks, cfg, digits), model, digits.train, digits.val, cfg.train, uncaptured,
                LoopOptions(epochs=1, seed=0))

    model, masks = masked_model(cfg, digits)  # here, off CUDA, capture itself is what fails
    out = train(model, digits.train, digits.val, cfg.train, devices.FastPath(cuda_graphs=True),
                LoopOptions(epochs=1, seed=0, masks=masks, step_cache=StepCache()))
    assert out.notes == ["CUDA graphs need a CUDA device, not cpu; the same step runs uncaptured"]
    assert curve(out) == curve(uncaptured)

    def fail(self):
        calls.append(self)
        raise CaptureUnsupported("CUDA graph capture failed: simulated")

    calls = []
    monkeypatch.setattr(GraphedSgdStep, "capture", fail)
    cache = StepCache()
    for _ in range(3):  # a key that failed twice is not captured again (once may be bad luck)
        model, masks = masked_model(cfg, digits)
        out = train(model, digits.train, digits.val, cfg.train, devices.FastPath(cuda_graphs=True),
                    LoopOptions(epochs=1, seed=0, masks=masks, step_cache=cache))
        assert out.notes == ["CUDA graph capture failed: simulated; the same step runs uncaptured"]
        assert curve(out) == curve(uncaptured)
    assert len(calls) == 2

    adam = load_config(preset="demo", overrides=[*TINY, 'train.optimizer="adam"'])
    model, masks = masked_model(adam, digits)
    out = train(model, digits.train, digits.val, adam.train, devices.FastPath(cuda_graphs=True),
                LoopOptions(epochs=1, seed=0, masks=masks, step_cache=StepCache()))
    assert out.notes == ["CUDA graphs cover SGD only, not adam; training eagerly"]
    model, masks = masked_model(adam, digits)
    assert curve(out) == curve(train(model, digits.train, digits.val, adam.train,
                                     loop=LoopOptions(epochs=1, seed=0, masks=masks)))


def test_the_grid_lets_its_captured_steps_go_when_it_ends(tmp_path, monkeypatch, digits):
    # a captured step holds its graph's memory: kept for the grid's later runs, not
    # for the life of the process
    from lotto_engine import step as step_module

    kept = []
    monkeypatch.setattr(step_module.STEPS, "clear", lambda: kept.append(len(step_module.STEPS)))
    config = load_config(preset="demo", overrides=[*TINY, "grid.activations=[\"relu\"]", "grid.sparsities=[0.5]"])
    with Store(tmp_path / "runs.sqlite") as store:
        Runner(config, store).run()
    assert kept == [0]  # cleared once, at the end (nothing captured on a CPU)
    cache = StepCache()
    cfg = load_config(preset="demo", overrides=TINY)
    model, masks = masked_model(cfg, digits)
    cache.checkin(step_for(model, masks, cfg, digits))
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_a_step_cache_of_size_zero_keeps_nothing(digits):
    cfg = load_config(preset="demo", overrides=TINY)
    model, masks = masked_model(cfg, digits)
    step = step_for(model, masks, cfg, digits)
    cache = StepCache(size=0)
    cache.checkin(step)
    assert cache.checkout(step.key) is None


def test_fast_path_resolution_and_cuda_graphs_on_without_cuda_is_an_error():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.fast_path("auto", "auto", False, cpu, "auto").cuda_graphs is False
    assert devices.fast_path("auto", "auto", False, cuda, "auto").cuda_graphs is True
    assert devices.fast_path("auto", "auto", True, cuda, "auto").cuda_graphs is False  # compile captures itself
    with pytest.raises(DeviceError, match="run.cuda_graphs: on needs a CUDA device"):
        devices.fast_path("auto", "auto", False, cpu, "on")


def test_job_slots_spread_over_visible_gpus(monkeypatch):
    cpu = torch.device("cpu")
    assert devices.job_devices("cpu", cpu, 0) == [cpu]
    assert devices.job_devices("auto", cpu, 3) == [cpu] * 3
    assert devices.describe_slots([cpu]) == "cpu"
    assert devices.describe_slots([cpu, cpu]) == "cpu (2 jobs at once)"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    gpu = [torch.device("cuda", i) for i in range(2)]
    assert devices.job_devices("auto", torch.device("cuda"), 0) == gpu
    assert devices.job_devices("cuda", torch.device("cuda"), 3) == [gpu[0], gpu[1], gpu[0]]
    assert devices.job_devices("cuda:1", gpu[1], 0) == [gpu[1]]
    assert devices.describe_slots(gpu) == "cuda:0, cuda:1"


def _autocast_reference_step(model, masks, cfg, lr):
    """The captured step's bf16 arithmetic as autocast alone does it: every weight cast
    to bf16 at each use, its gradient cast back (what the step did before it kept
    bf16 copies of its weights)."""
    params = dict(model.named_parameters())
    names = list(params)
    bufs = {name: torch.zeros_like(p) for name, p in params.items()}

    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = list(torch.autograd.grad(loss, list(params.values())))
        with torch.no_grad():  # the update as the step makes it (the same foreach ops: the same rounding)
            for i, name in enumerate(names):
                if name in masks:
                    grads[i].mul_(masks[name])
            grads = torch._foreach_add(grads, list(params.values()), alpha=cfg.train.weight_decay)
            torch._foreach_mul_(list(bufs.values()), cfg.train.momentum)
            torch._foreach_add_(list(bufs.values()), grads)
            torch._foreach_add_(list(params.values()), torch._foreach_mul(list(bufs.values()), -torch.tensor(lr)))
            for name in masks:
                params[name].mul_(masks[name])

    return step


def test_the_bf16_step_keeps_bf16_weights_and_gives_autocasts_numbers(digits):
    # autocast without its cache casts every weight at every use (and every gradient
    # back): a third of a captured step's ops were dtype copies. The step keeps bf16
    # copies of the weights instead, refreshed by one foreach copy per update.
    from torch.utils._python_dispatch import TorchDispatchMode

    cfg = load_config(preset="demo", overrides=list(LEARNS))
    model, masks = masked_model(cfg, digits, sparsity=0.5)
    reference_model, _ = masked_model(cfg, digits, sparsity=0.5)
    with torch.no_grad():
        for name, p in reference_model.named_parameters():
            p.mul_(masks.get(name, torch.ones_like(p)))
    step, _ = graphed_step(
        model, masks, batch_size=32, input_shape=digits.input_shape, momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay, precision="bf16", channels_last=False, capture=False, cache=None,
    )
    assert len(step.half) == len(step.params) >= 4  # convolutions and the linear layer
    reference = _autocast_reference_step(reference_model, masks, cfg, lr=0.05)
    step.start_epoch(0.05)

    class Casts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                Casts.count += 1
            return func(*args, **(kwargs or {}))

    for i in range(6):
        x, y = digits.train.x[32 * i : 32 * i + 32], digits.train.y[32 * i : 32 * i + 32]
        if i == 5:
            with Casts():
                step(x, y)
        else:
            step(x, y)
        reference(x, y)
    for name, p in reference_model.named_parameters():
        assert torch.equal(dict(step.model.named_parameters())[name], p), name
        assert torch.equal(step.half[step.names.index(name)], p.to(torch.bfloat16))
    # the batch in, the logits out to the loss: no cast per weight, either way
    assert Casts.count <= 3 < len(step.params)


@pytest.mark.parametrize("lockstep", [False, True])
def test_an_epoch_reads_its_numbers_from_the_device_once(digits, monkeypatch, lockstep):
    # each read (.item(), .tolist()) waits for the GPU to drain: the train and
    # validation loss and accuracy of an epoch (of every net of a group) come in one
    from lotto_engine.lockstep import train_together

    cfg = load_config(preset="demo", overrides=list(LEARNS))
    reads = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, real=real, name=name: reads.append(name) or real(self))
    nets = [masked_model(cfg, digits, sparsity=s) for s in (0.5, 0.8)]
    loops = [LoopOptions(epochs=2, seed=0, masks=masks) for _, masks in nets]
    if lockstep:
        train_together([m for m, _ in nets], digits.train, digits.val, cfg.train, devices.FastPath(), loops)
    else:
        train(nets[0][0], digits.train, digits.val, cfg.train, loop=loops[0])
    assert reads == ["tolist", "tolist"]


def test_fp32_means_fp32_on_cuda_too(monkeypatch):
    # torch's default lets cuDNN run fp32 convolutions as TF32: measured on an H200,
    # that moved a run's validation loss by 1.5% after one epoch (bench/cuda_rounding.py)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    devices.configure(1, True)
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_deterministic_mode_does_not_nan_fill_every_new_tensor(monkeypatch):
    # torch.use_deterministic_algorithms(True) also fills each torch.empty with NaN:
    # a kernel per allocation on CUDA, for reads of uninitialised memory the engine
    # never makes. The runner's setup keeps determinism and drops the fill.
    import torch.utils.deterministic

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        devices.configure(1, True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        devices.set_deterministic(was)


def test_peak_memory_reset_before_any_cuda_allocation_is_skipped_not_an_error(monkeypatch):
    # Seen on an H200 with torch 2.11: `lotto-tui --batch --device cuda` exited 70 with
    # "Invalid device argument", because the runner reset CUDA's peak-memory counters
    # before the process had touched the GPU (the allocator does not exist yet then).
    def refuse(device=None):
        raise RuntimeError("Invalid device argument ")

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", refuse)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    devices.reset_peak_memory([torch.device("cuda", 0)])  # nothing to reset yet
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError):  # once CUDA is up, the reset really happens
        devices.reset_peak_memory([torch.device("cuda", 0)])


def test_models_built_in_parallel_threads_get_their_own_seeds_weights():
    cfg = load_config(preset="demo", overrides=TINY)
    expected = {seed: build_model(cfg.model, (1, 8, 8), 10, "relu", seed).state_dict() for seed in range(4)}
    built: dict[int, list] = {seed: [] for seed in range(4)}

    def build(seed: int) -> None:
        for _ in range(25):
            built[seed].append(build_model(cfg.model, (1, 8, 8), 10, "relu", seed).state_dict())

    threads = [threading.Thread(target=build, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, states in built.items():
        assert all(torch.equal(s[k], v) for s in states for k, v in expected[seed].items())


def grid_results(store: Store, experiment_id: int) -> dict[str, tuple]:
    return {
        r.job_key: (r.status, r.val_acc, r.test_acc, r.stability, r.actual_sparsity,
                    [(m.train_loss, m.val_acc) for m in store.curve(r.id)])
        for r in store.runs(experiment_id)
    }


def test_parallel_jobs_give_the_numbers_of_one_job_at_a_time_and_respect_dependencies(tmp_path):
    grid = ['grid.activations=["relu","tanh"]', 'grid.methods=["magnitude","grasp"]', "grid.sparsities=[0.8]"]
    serial = load_config(preset="demo", overrides=[*TINY, *grid])
    parallel = load_config(preset="demo", overrides=[*TINY, *grid, "run.parallel=2", "run.threads=2"])
    with Store(tmp_path / "serial") as store:
        summary = Runner(serial, store).run()
        expected = grid_results(store, summary.experiment_id)

    events = []
    with Store(tmp_path / "parallel") as store:
        runner = Runner(parallel, store, on_event=events.append)
        summary = runner.run()
        assert torch.get_num_threads() == 1  # two slots share the two threads
        assert summary.ok and summary.counts == {"done": 6}
        assert grid_results(store, summary.experiment_id) == expected
        assert summary.peak_memory["cpu"] > 50 * 2**20  # torch alone is bigger than that

    running: set[str] = set()
    finished: set[str] = set()
    peak = 0
    parents = {job.key: job.parent for job in runner.plan}
    for event in events:
        if isinstance(event, JobStarted):
            assert parents[event.job.key] is None or parents[event.job.key] in finished
            running.add(event.job.key)
            peak = max(peak, len(running))
        elif isinstance(event, (JobFinished, JobFailed)):
            running.discard(event.job.key)
            finished.add(event.job.key)
        elif isinstance(event, EpochFinished):
            assert event.job.key in running
    assert peak == 2  # the two dense runs trained side by side


def test_in_parallel_a_diverged_dense_run_fails_its_pruned_runs_and_the_rest_goes_on(tmp_path):
    cfg = load_config(preset="demo", overrides=[
        *TINY, 'grid.activations=["relu","tanh"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5, 0.8]",
        "train.lr=1e30", "train.momentum=0.0", "run.parallel=3",
    ])
    with Store(tmp_path) as store:
        summary = Runner(cfg, store).run()
        runs = store.runs(summary.experiment_id)
    assert {r.status for r in runs if r.method == "dense"} == {"diverged"}
    pruned = [r for r in runs if r.method != "dense"]
    assert len(pruned) == 4 and {r.status for r in pruned} == {"failed"}
    assert {r.error for r in pruned} == {"its dense run did not finish"}


@pytest.mark.parametrize("parallel", [1, 2])
def test_an_error_outside_a_job_stops_the_grid_and_reaches_the_caller(tmp_path, parallel):
    """A broken event handler (or store) is not a failed job: run() raises, as it does sequentially."""
    cfg = load_config(preset="demo", overrides=[
        *TINY, 'grid.activations=["relu","tanh"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.8]",
        f"run.parallel={parallel}",
    ])

    def on_event(event):
        if isinstance(event, JobFinished) and event.job.kind == "dense":
            raise RuntimeError("handler broke")

    with Store(tmp_path) as store:
        with pytest.raises(RuntimeError, match="handler broke"):
            Runner(cfg, store, on_event=on_event).run()
        experiment = store.experiment()
        statuses = store.latest_statuses(experiment.id)
    assert "running" not in statuses.values()
    assert len(statuses) < 4  # the grid stopped


def test_compile_trains_one_job_at_a_time_and_says_so(tmp_path):
    grid = ['grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]"]
    events = []
    with Store(tmp_path) as store:
        Runner(load_config(preset="demo", overrides=[*TINY, *grid]), store).run()
        # the same experiment (run.* is not part of it), all done: nothing compiles
        cfg = load_config(preset="demo", overrides=[*TINY, *grid, "run.compile=true", "run.parallel=2"])
        summary = Runner(cfg, store, on_event=events.append).run()
    assert summary.counts == {"done": 2}
    assert [e.device for e in events if isinstance(e, GridStarted)] == ["cpu"]
    assert [e.message for e in events if isinstance(e, Notice)] == [
        "run.compile trains one job at a time (run.parallel asked for 2 at once)"
    ]


def test_cancel_stops_every_slot_and_a_resume_finishes_the_grid(tmp_path):
    cfg = load_config(preset="demo", overrides=[
        *TINY, 'grid.activations=["relu","tanh"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.8]",
        "train.dense_epochs=30", "data.subset=240", "run.parallel=2",  # many short epochs: cancel lands mid-run
    ])
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, EpochFinished) and event.metrics.epoch == 2:
            cancel.set()

    with Store(tmp_path) as store:
        summary = Runner(cfg, store, on_event=on_event, cancel=cancel).run()
        assert summary.cancelled
        statuses = store.latest_statuses(summary.experiment_id)
        assert sorted(statuses.values()) == ["cancelled", "cancelled"]  # both dense runs, nothing pruned
        summary = Runner(cfg, store).run()
        assert summary.ok and summary.counts == {"done": 4}


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
@pytest.mark.parametrize("fast", [{}, {"precision": "bf16", "channels_last": True}], ids=["fp32", "bf16-nhwc"])
def test_on_cuda_the_captured_step_matches_the_uncaptured_one_and_eager_training(digits, fast):
    # deterministic kernels, as the runner trains by default: without them, an H200
    # replaying the same captured graph gave a second epoch's loss 2e-7 apart
    devices.configure(1, True)
    cuda = torch.device("cuda")
    cfg = load_config(preset="demo", overrides=[*LEARNS, "train.batch_size=32"])
    data = load_dataset(cfg.data, cuda)
    cache = StepCache()

    def run(cuda_graphs=False, step_cache=None):
        model, masks = masked_model(cfg, digits, sparsity=0.5)
        model.to(cuda)
        out = train(model, data.train, data.val, cfg.train, devices.FastPath(**fast, cuda_graphs=cuda_graphs),
                    LoopOptions(epochs=3, seed=1, masks=masks, step_cache=step_cache))
        params = dict(model.named_parameters())
        assert all(bool((params[n].detach()[~m.to(cuda)] == 0).all()) for n, m in masks.items())
        return out

    eager = run()
    captured = run(cuda_graphs=True, step_cache=cache)
    assert captured.notes == []
    (step,) = cache.idle()  # the captured step went back to the cache
    assert step.graph is not None
    reused = run(cuda_graphs=True, step_cache=cache)  # a second run replays the cached graph
    assert reused.notes == [] and cache.idle() == [step]
    # training replays bit for bit; validation only to rounding: on an H200 (torch 2.11)
    # one val_loss differed by 6e-7 relative (the same weights evaluated with other
    # cuDNN kernels, chosen while the cached graph held memory)
    assert [c[:2] for c in curve(reused)] == [c[:2] for c in curve(captured)]
    for a, b in zip(curve(reused), curve(captured), strict=True):
        assert a[2:] == pytest.approx(b[2:], rel=1e-5)
    rel, tol = (1e-3, 1e-3) if not fast else (0.1, 0.05)  # bf16 rounds at about 4e-3 per op
    for a, b in zip(curve(eager), curve(captured), strict=True):
        assert b == pytest.approx(a, rel=rel, abs=tol)
    assert captured.curve[-1].val_acc > 0.5


@CUDA
def test_on_cuda_parallel_jobs_capture_one_at_a_time_and_match_sequential(tmp_path):
    grid = ['grid.activations=["relu","tanh"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.8]"]
    results = []
    for parallel in (1, 3):
        cfg = load_config(preset="demo", overrides=[*LEARNS, *grid, 'run.device="cuda:0"', f"run.parallel={parallel}"])
        events = []
        with Store(tmp_path / str(parallel)) as store:
            summary = Runner(cfg, store, on_event=events.append).run()
            assert summary.ok and summary.peak_memory
            assert not [e for e in events if isinstance(e, Notice)]  # every capture worked
            results.append(grid_results(store, summary.experiment_id))
    # one GPU, deterministic kernels, the same step whether captured alone or beside
    # other jobs: any difference would be one job's capture or replay touching another's
    assert results[1] == results[0]
