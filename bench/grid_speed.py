"""The seed-paper grid's speed, three ways, measured in one run and projected to the grid.

Measured on synthetic CIFAR-10-shaped data (``--images`` training images), one after
the other in this process:

- **typical**: a hand-written loop (``bench/throughput.py``'s: per-item PIL transforms,
  a ``DataLoader``, ``.to(device)`` per batch, the mask as ``torch.nn.utils.prune``
  hooks, ``loss.item()`` every step), with 0 loader workers and with ``--workers``;
- **engine, one job at a time**: the real protocol (:func:`lotto_engine.protocol.prepare_job`,
  :func:`lotto_engine.training.train`, ``finish``) for a dense job and its pruned jobs
  (magnitude and GraSP masks cut from the dense job's tensors), checkpoints and
  artifacts written to a real :class:`lotto_engine.store.Store` in a temporary folder;
- **engine, lockstep**: groups of ``--models`` sibling pruned jobs (one parent, so one
  data order) trained by :func:`lotto_engine.lockstep.train_together`, as the local
  executor's ``_train`` does with ``run.lockstep = on``.

Every run does one warm-up epoch and ``--epochs`` timed ones; each epoch evaluates
``--val-images``. From these it reports images per second per net and in total
(training steps only: the epoch less its evaluation), peak memory (CUDA max
allocated per measurement; on CPU the process's peak RSS, which only grows) and the
seed-paper grid's wall time, PROJECTED: 3 dense jobs x 50 epochs and 18 pruned jobs
(9 magnitude, 9 GraSP) x 20 epochs of 45,000 images, 5,000 validation images an
epoch, 10,000 test images a job, plus the measured fixed costs: process start and
imports (a fresh interpreter, timed), CUDA start-up, loading a real-format CIFAR-10
folder (``bench/cifar_folder.py``, timed), each job's preparation (mask cut), first
epoch's extra (capture, warm-up), per-epoch checkpoint and its finish (test
evaluation, stability, artifacts). Lockstep is projected as the executor groups
the grid: the runner submits the ready siblings of one parent together
(``itertools.groupby`` on ``job.parent`` in ``GridRunner._drive``) and the local
executor splits them by ``_sibling_key``, which includes the activation: the three
dense nets (no parent; three activations) train one at a time, the six pruned jobs
of each dense net in one group of 6.

    python bench/grid_speed.py --device cpu --images 2048 --epochs 1 --models 1,3      # 75.6 s on 2 cores at load 2 (README)
    python bench/grid_speed.py --device cuda --images 20000 --models 1,3,6,18 --workers 8 --out grid.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts

from cifar_folder import write_cifar10  # noqa: E402
from throughput import MEAN, STD, TypicalCifar, synthetic_cifar, typical_epoch, typical_net  # noqa: E402

from lotto_engine import devices  # noqa: E402
from lotto_engine.config import ConfigError, DataConfig, load_config  # noqa: E402
from lotto_engine.data import Dataset, Split, load_dataset  # noqa: E402
from lotto_engine.files import write_text_atomic  # noqa: E402
from lotto_engine.lockstep import group_key, train_together  # noqa: E402
from lotto_engine.plan import build_plan  # noqa: E402
from lotto_engine.protocol import JobHooks, JobSpec  # noqa: E402
from lotto_engine.protocol.jobs import prepare_job  # noqa: E402
from lotto_engine.store import Store  # noqa: E402
from lotto_engine.training import evaluate, train  # noqa: E402

#: the seed-paper grid (config preset "seed-paper"): what the projection multiplies out
GRID = {"activations": 3, "dense_epochs": 50, "pruned_per_dense": 6, "pruned_epochs": 20,
        "magnitude_share": 0.5, "train_images": 45_000, "val_images": 5_000, "test_images": 10_000}
#: the pruned siblings of one dense net the executor trains in one step (see the module doc)
RUNNER_GROUP = 6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def timed(fn, device: torch.device):  # type: ignore[no-untyped-def]
    """(fn(), wall seconds), the device synced on both ends."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------- fixed costs


def start_seconds() -> float:
    """Wall seconds of a fresh interpreter importing what ``python -m lotto_tui --batch``
    imports before it trains (CLI, runner, torch)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import lotto_tui.cli, lotto_tui.batch, lotto_engine.runner"],
                   check=True, env=os.environ.copy())
    return time.perf_counter() - start


def data_load_seconds(root: str | None, device: torch.device) -> tuple[float, str]:
    """Seconds to load CIFAR-10 from a real-format folder onto ``device`` as the runner
    does (read, validation split, normalise); the folder is ``root`` or one written
    to a temporary folder first (not timed)."""
    with tempfile.TemporaryDirectory(prefix="grid-speed-cifar-") as tmp:
        where = root or tmp
        if root is None:
            write_cifar10(tmp)
        cfg = DataConfig(dataset="cifar10", root=where, download=False, val_size=GRID["val_images"])
        _, seconds = timed(lambda: load_dataset(cfg, device), device)
    return seconds, "given folder" if root else "written to a temporary folder, then timed"


# ---------------------------------------------------------------------- the typical loop


def typical_eval(model, loader, device) -> int:  # type: ignore[no-untyped-def]
    model.eval()
    seen, total = 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            total += F.cross_entropy(model(x), y).item()
            seen += y.shape[0]
    model.train()
    return seen


def measure_typical(cfg, images, labels, val_images, val_labels, workers: int, epochs: int, device):  # type: ignore[no-untyped-def]
    """The typical loop with ``workers`` DataLoader workers: its setup, warm-up epoch,
    timed epochs and evaluation speed."""
    reset_peak(device)
    sync(device)
    started = time.perf_counter()
    model, optimizer = typical_net(cfg, (3, 32, 32), 10, 0.8, device)
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    loader = torch.utils.data.DataLoader(TypicalCifar(images, labels, False), batch_size=cfg.train.batch_size,
                                         shuffle=True, **common)
    val_loader = torch.utils.data.DataLoader(TypicalCifar(val_images, val_labels, False),
                                             batch_size=cfg.train.eval_batch_size, **common)
    setup = time.perf_counter() - started
    _, warm = timed(lambda: typical_epoch(model, loader, optimizer, device), device)
    seen, seconds = timed(lambda: sum(typical_epoch(model, loader, optimizer, device) for _ in range(epochs)), device)
    typical_eval(model, val_loader, device)  # warm the validation workers
    evaluated, eval_seconds = timed(lambda: typical_eval(model, val_loader, device), device)
    per_epoch = seconds / epochs
    out = {
        "workers": workers,
        "images_per_s": round(seen / seconds, 1),
        "eval_images_per_s": round(evaluated / eval_seconds, 1),
        "setup_s": round(setup, 3),
        "first_epoch_extra_s": round(max(warm - per_epoch, 0.0), 3),
        "peak_memory_mib": peak_mib(device),
    }
    return out


# ---------------------------------------------------------------------- the engine


class Recorder:
    """JobHooks whose checkpoints go to a real store, timed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seconds = 0.0
        self.count = 0

    def hooks(self, key: str) -> JobHooks:
        def on_checkpoint(checkpoint) -> None:  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            self.store.save_checkpoint(key, checkpoint.to_payload())
            self.seconds += time.perf_counter() - start
            self.count += 1

        return JobHooks(on_checkpoint=on_checkpoint)


def finish_job(prepared, outcome, store: Store, device) -> tuple[object, float]:  # type: ignore[no-untyped-def]
    """The job's output and the seconds of its finish plus writing its artifacts."""
    sync(device)
    start = time.perf_counter()
    output = prepared.finish(outcome)
    for name, tensors in output.artifacts.items():
        store.save_tensors(prepared.spec.job.key, name, tensors)
    return output, time.perf_counter() - start


def epoch_costs(curves, k: int, val: int, eval_ips: float, train_images: int) -> dict[str, float]:
    """Steady epoch seconds (the group's: the longest of its nets' epoch clocks), its
    training part, and the first epoch's extra, from the nets' curves."""
    group_epochs = [max(c[e].seconds for c in curves) for e in range(len(curves[0]))]
    steady = sum(group_epochs[1:]) / max(len(group_epochs) - 1, 1)
    train_part = max(steady - k * val / eval_ips, 1e-9)
    return {
        "epochs_s": [round(t, 4) for t in group_epochs],
        "epoch_s": round(steady, 4),
        "train_part_s": round(train_part, 4),
        "first_epoch_extra_s": round(max(group_epochs[0] - steady, 0.0), 4),
        "images_per_s": round(k * train_images / train_part, 1),
        "per_net_images_per_s": round(train_images / train_part, 1),
    }


def masked_zero(prepared_jobs) -> bool:  # type: ignore[no-untyped-def]
    """Every masked weight of every job's net is exactly zero."""
    return all(bool((param.detach()[~p.loop.masks[name].to(param.device)] == 0).all())
               for p in prepared_jobs for name, param in p.model.named_parameters() if name in p.loop.masks)


def measure_engine(cfg, data: Dataset, fast, models: list[int], store_root: str, device) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The real protocol: a dense job, then its pruned jobs one at a time and in
    lockstep groups of each size in ``models``."""
    store = Store(store_root)
    plan = build_plan(cfg, precision=fast.precision)
    dense = next(job for job in plan.jobs if job.kind == "dense")
    siblings = [job for job in plan.jobs if job.kind == "pruned" and job.parent == dense.key]
    n, val = len(data.train), len(data.val)
    rec = Recorder(store)
    out: dict[str, object] = {}

    # the dense job, alone
    reset_peak(device)
    spec = JobSpec.of(dense, cfg, fast)
    prepared, prep = timed(lambda: prepare_job(spec, data, hooks=rec.hooks(dense.key)), device)
    outcome, _ = timed(lambda: train(prepared.model, data.train, data.val, spec.train, spec.fast, prepared.loop), device)
    output, finish = finish_job(prepared, outcome, store, device)
    model = prepared.model
    evaluate(model, data.val, cfg.train.eval_batch_size, precision=fast.precision)
    _, eval_seconds = timed(lambda: evaluate(model, data.val, cfg.train.eval_batch_size, precision=fast.precision),
                            device)
    eval_ips = val / eval_seconds
    out["eval_images_per_s"] = round(eval_ips, 1)
    dense_costs = epoch_costs([outcome.curve], 1, val, eval_ips, n)
    out["dense"] = {"prepare_s": round(prep, 4), "finish_s": round(finish, 4), **dense_costs,
                    "status": outcome.status, "peak_memory_mib": peak_mib(device)}
    parent = {name: output.artifacts[artifact] for name, (_, artifact) in JobSpec.of(siblings[0], cfg, fast).inputs.items()}

    # a magnitude job alone; a GraSP job's mask cut (its training costs what any pruned net's does)
    alone: dict[str, dict[str, object]] = {}
    job = next(j for j in siblings if j.method == "magnitude")
    reset_peak(device)
    spec = JobSpec.of(job, cfg, fast)
    prepared, prep = timed(lambda: prepare_job(spec, data, parent=parent, hooks=rec.hooks(job.key)), device)
    outcome, _ = timed(lambda: train(prepared.model, data.train, data.val, spec.train, spec.fast, prepared.loop),
                       device)
    _, finish = finish_job(prepared, outcome, store, device)
    alone["magnitude"] = {"prepare_s": round(prep, 4), "finish_s": round(finish, 4),
                          **epoch_costs([outcome.curve], 1, val, eval_ips, n), "status": outcome.status,
                          "masked_weights_zero": masked_zero([prepared]), "peak_memory_mib": peak_mib(device)}
    job = next(j for j in siblings if j.method == "grasp")
    _, prep = timed(lambda: prepare_job(JobSpec.of(job, cfg, fast), data, parent=parent), device)
    alone["grasp"] = {**alone["magnitude"], "prepare_s": round(prep, 4), "trained": "no: costed as magnitude"}
    out["pruned_alone"] = alone

    # lockstep groups of siblings, as the local executor's _train runs them
    groups = []
    for k in models:
        if k == 1:  # train_together of one net is train() itself: the pruned job alone
            one = alone["magnitude"]
            groups.append({"models": 1, **{key: one[key] for key in (
                "epoch_s", "train_part_s", "first_epoch_extra_s", "images_per_s", "per_net_images_per_s",
                "masked_weights_zero", "peak_memory_mib")}, "status": one["status"], "same_as": "pruned_alone.magnitude"})
            continue
        jobs = siblings[:k]
        reset_peak(device)
        prepared_jobs = [prepare_job(JobSpec.of(job, cfg, fast), data, parent=parent, hooks=rec.hooks(job.key))
                         for job in jobs]
        keys = {group_key(p.model, p.loop) for p in prepared_jobs}
        if len(keys) != 1:
            raise RuntimeError(f"the {k} siblings would not train in one step (group keys differ)")
        outcomes, _ = timed(lambda: train_together([p.model for p in prepared_jobs], data.train, data.val, cfg.train,
                                                   fast, [p.loop for p in prepared_jobs]), device)
        groups.append({"models": k, **epoch_costs([o.curve for o in outcomes], k, val, eval_ips, n),
                       "masked_weights_zero": masked_zero(prepared_jobs), "peak_memory_mib": peak_mib(device),
                       "status": ",".join(sorted({o.status for o in outcomes}))})
    out["lockstep"] = groups
    out["checkpoint_s"] = round(rec.seconds / max(rec.count, 1), 4)
    out["checkpoints_timed"] = rec.count
    store.close()
    return out


# ---------------------------------------------------------------------- the projection


def project(fixed: dict[str, float], typical: list[dict], engine: dict, images: int, test_measured: int) -> dict:  # type: ignore[type-arg]
    """The seed-paper grid's wall seconds for each way of training it (see the module doc)."""
    g = GRID
    scale = g["train_images"] / images
    dense_jobs = g["activations"]
    pruned_jobs = g["activations"] * g["pruned_per_dense"]
    mag_jobs = round(pruned_jobs * g["magnitude_share"])
    grasp_jobs = pruned_jobs - mag_jobs
    process = fixed["start_import_s"] + fixed["cuda_init_s"] + (fixed["data_load_s"] or 0.0)
    eval_ips = engine["eval_images_per_s"]
    ckpt = engine["checkpoint_s"]
    val_epoch = g["val_images"] / eval_ips
    test_extra = (g["test_images"] - test_measured) / eval_ips  # finish measured on the smaller test split

    def engine_job(costs: dict, epochs: int, per_net_train: float, first_extra: float) -> float:  # type: ignore[type-arg]
        return (costs["prepare_s"] + first_extra + epochs * (per_net_train * scale + val_epoch + ckpt)
                + costs["finish_s"] + test_extra)

    dense, mag, grasp = engine["dense"], engine["pruned_alone"]["magnitude"], engine["pruned_alone"]["grasp"]
    dense_total = dense_jobs * engine_job(dense, g["dense_epochs"], dense["train_part_s"], dense["first_epoch_extra_s"])
    alone = (process + dense_total
             + mag_jobs * engine_job(mag, g["pruned_epochs"], mag["train_part_s"], mag["first_epoch_extra_s"])
             + grasp_jobs * engine_job(grasp, g["pruned_epochs"], grasp["train_part_s"], grasp["first_epoch_extra_s"]))
    out = {"engine_one_at_a_time_s": round(alone, 1)}

    measured = [grp for grp in engine["lockstep"] if 2 <= grp["models"] <= RUNNER_GROUP]
    if measured:
        grp = max(measured, key=lambda item: item["models"])
        k = grp["models"]
        per_net_train = grp["train_part_s"] / k  # the group's training step time, shared by its k nets
        per_net_first = grp["first_epoch_extra_s"] / k
        lockstep = (process + dense_total
                    + mag_jobs * engine_job(mag, g["pruned_epochs"], per_net_train, per_net_first)
                    + grasp_jobs * engine_job(grasp, g["pruned_epochs"], per_net_train, per_net_first))
        out["engine_lockstep_s"] = round(lockstep, 1)
        out["lockstep_grouping"] = (
            f"dense nets one at a time (3 activations: no shared parent, and _sibling_key holds the activation); "
            f"the {g['pruned_per_dense']} pruned siblings of each dense net in groups of {RUNNER_GROUP} as the executor "
            f"makes them, costed from the measured group of {k}"
            + ("" if k == RUNNER_GROUP else f" (6 not measured: each net costs 1/{k} of a {k}-net step)"))
    epochs_total = dense_jobs * g["dense_epochs"] + pruned_jobs * g["pruned_epochs"]
    prep_masks = mag_jobs * mag["prepare_s"] + grasp_jobs * grasp["prepare_s"]  # the same mask work in any loop
    for loop in typical:
        per_epoch = g["train_images"] / loop["images_per_s"] + g["val_images"] / loop["eval_images_per_s"]
        jobs = dense_jobs + pruned_jobs
        total = (process + prep_masks + jobs * (loop["setup_s"] + loop["first_epoch_extra_s"]
                                                + g["test_images"] / loop["eval_images_per_s"])
                 + epochs_total * per_epoch)
        out[f"typical_{loop['workers']}_workers_s"] = round(total, 1)
    return out


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the cores, as run.threads)")
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--val-images", type=int, default=512, help="validation images evaluated every epoch")
    parser.add_argument("--test-images", type=int, default=1024, help="test images each job's finish evaluates")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="1,3", help="lockstep group sizes, comma-separated (1,3,6,18)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the typical loop's second run")
    parser.add_argument("--cifar-root", help="time loading this real-format CIFAR-10 folder (default: write one)")
    parser.add_argument("--no-data-load", action="store_true", help="do not time loading CIFAR-10 (left out)")
    parser.add_argument("--no-typical", action="store_true", help="skip the typical loop")
    parser.add_argument("--nondeterministic", action="store_true", help="as run.deterministic = false")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        models = sorted({int(v) for v in args.models.split(",")})
    except ValueError:
        parser.error(f"--models: comma-separated whole numbers, got {args.models!r}")
    if not models or min(models) < 1 or max(models) > 32:
        parser.error("--models: group sizes from 1 to 32")
    for name in ("images", "val_images", "test_images", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.threads < 0:
        parser.error("--workers and --threads must be >= 0")
    try:
        device = devices.resolve_device(args.device)
    except Exception as err:  # one line, as the CLI says it
        print(f"grid_speed: --device: {err}", file=sys.stderr)
        return 2

    began = time.perf_counter()
    load_before = os.getloadavg()
    fixed: dict[str, float] = {"cuda_init_s": 0.0}
    if device.type == "cuda":
        _, fixed["cuda_init_s"] = timed(lambda: torch.zeros(1, device=device), device)
    sections: dict[str, float] = {}
    mark = time.perf_counter()
    fixed["start_import_s"] = start_seconds()
    data_note = "not measured (--no-data-load): left out of the projection"
    fixed["data_load_s"] = None  # type: ignore[assignment]
    if not args.no_data_load:
        fixed["data_load_s"], data_note = data_load_seconds(args.cifar_root, device)
    sections["fixed"], mark = round(time.perf_counter() - mark, 1), time.perf_counter()

    # enough siblings (2 methods x sparsities) for the largest group
    count = max(1, math.ceil(max(models) / 2))
    sparsities = [round(0.5 + 0.45 * i / max(count - 1, 1), 4) for i in range(count)]
    try:
        cfg = load_config(preset="seed-paper", overrides=[
            f"train.batch_size={args.batch_size}", f"train.dense_epochs={args.epochs + 1}",
            f"train.pruned_epochs={args.epochs + 1}", 'grid.activations=["relu"]', f"grid.sparsities={sparsities}",
            f"run.device=\"{device}\"", f"run.deterministic={str(not args.nondeterministic).lower()}",
        ])
    except ConfigError as err:
        print(f"grid_speed: {'; '.join(err.problems)}", file=sys.stderr)
        return 2
    images, labels = synthetic_cifar(args.images)
    val_images, val_labels = synthetic_cifar(args.val_images, seed=1)
    test_images, test_labels = synthetic_cifar(args.test_images, seed=2)

    # the typical loop first, under torch's own defaults (threads only), as its users run it
    cores = devices.available_cores()
    torch.set_num_threads(min(args.threads, cores) if args.threads else cores)
    typical = []
    if not args.no_typical:
        for workers in sorted({0, args.workers}):
            typical.append(measure_typical(cfg, images, labels, val_images, val_labels, workers, args.epochs, device))
    sections["typical"], mark = round(time.perf_counter() - mark, 1), time.perf_counter()

    # the engine under the runner's settings (deterministic unless --nondeterministic)
    threads = devices.configure(args.threads, not args.nondeterministic)
    fast = devices.fast_path(cfg.run.precision, cfg.run.channels_last, cfg.run.compile, device, cfg.run.cuda_graphs)

    def split(x, y) -> Split:  # type: ignore[no-untyped-def]
        t = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(255)
        t = (t - torch.tensor(MEAN, device=device).view(1, 3, 1, 1)) / torch.tensor(STD, device=device).view(1, 3, 1, 1)
        return Split(t.contiguous(), torch.from_numpy(y).to(device))

    data = Dataset("synthetic-cifar10", split(images, labels), split(val_images, val_labels),
                   split(test_images, test_labels), 10, (3, 32, 32), MEAN, STD)
    with tempfile.TemporaryDirectory(prefix="grid-speed-store-") as store_root:
        engine = measure_engine(cfg, data, fast, models, store_root, device)
    sections["engine"] = round(time.perf_counter() - mark, 1)

    projected = project(fixed, typical, engine, args.images, args.test_images)
    # the targets, as far as this run can tell (the real grid's wall is gpu_check's seed_on)
    best = max([engine["dense"]["images_per_s"], *(grp["images_per_s"] for grp in engine["lockstep"])])
    peaks = [engine["dense"]["peak_memory_mib"], *(grp["peak_memory_mib"] for grp in engine["lockstep"])]
    targets = {
        "engine_best_images_per_s": best,
        "vs_typical": {f"{loop['workers']}_workers": round(best / loop["images_per_s"], 2) for loop in typical},
        "engine_peak_memory_mib": max(peaks),
        "projected_lockstep_s": projected.get("engine_lockstep_s"),
    }
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": threads,
        "cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "deterministic": not args.nondeterministic,
        "fast_path": fast.__dict__,
        "images_per_epoch": args.images, "val_images": args.val_images, "test_images": args.test_images,
        "timed_epochs": args.epochs, "batch_size": args.batch_size,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS (only grows)",
        "fixed": {key: None if value is None else round(value, 3) for key, value in fixed.items()},
        "data_load": data_note,
        "typical": typical,
        "engine": engine,
        "grid": GRID,
        "projected_seed_paper_s": projected,
        "targets": targets,
        "bench_wall_s": round(time.perf_counter() - began, 1),
        "bench_sections_s": sections,
    }
    print(table(result))
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


def table(r: dict) -> str:  # type: ignore[type-arg]
    """A short human summary of ``r``."""
    eng = r["engine"]
    lines = [f"{r['device']} ({r['device_name']}), torch {r['torch']}, {r['threads']} threads, "
             f"{r['images_per_epoch']} images x {r['timed_epochs']} timed epoch(s), "
             f"{'deterministic' if r['deterministic'] else 'NOT deterministic (run.deterministic = false)'}, load "
             f"{r['load_average_before'][0]} -> {r['load_average_after'][0]}",
             f"{'way':<28}{'img/s total':>12}{'img/s per net':>15}{'peak MiB':>10}"]
    for loop in r["typical"]:
        lines.append(f"{'typical, ' + str(loop['workers']) + ' workers':<28}{loop['images_per_s']:>12.0f}"
                     f"{loop['images_per_s']:>15.0f}{loop['peak_memory_mib']:>10.0f}")
    lines.append(f"{'engine dense, alone':<28}{eng['dense']['images_per_s']:>12.0f}{eng['dense']['images_per_s']:>15.0f}"
                 f"{eng['dense']['peak_memory_mib']:>10.0f}")
    for grp in eng["lockstep"]:
        lines.append(f"{'engine lockstep x' + str(grp['models']):<28}{grp['images_per_s']:>12.0f}"
                     f"{grp['per_net_images_per_s']:>15.0f}{grp['peak_memory_mib']:>10.0f}")
    fixed = r["fixed"]
    lines.append("fixed: " + ", ".join(f"{k} {v}" for k, v in fixed.items())
                 + f"; per job: prepare dense {eng['dense']['prepare_s']} s, magnitude "
                 f"{eng['pruned_alone']['magnitude']['prepare_s']} s, grasp {eng['pruned_alone']['grasp']['prepare_s']} s; "
                 f"checkpoint {eng['checkpoint_s']} s/epoch")
    lines.append("seed-paper grid, projected wall: " + ", ".join(
        f"{k.removesuffix('_s')} {v:.0f} s" for k, v in r["projected_seed_paper_s"].items() if k.endswith("_s")))
    t = r["targets"]
    versus = ", ".join(f"{v}x typical with {k.replace('_', ' ')}" for k, v in t["vs_typical"].items())
    lines.append(f"engine's best {t['engine_best_images_per_s']:.0f} img/s in total"
                 + (f": {versus}" if versus else "")
                 + f"; engine peak memory {t['engine_peak_memory_mib']:.0f} MiB ({r['peak_memory_kind']})")
    if "lockstep_grouping" in r["projected_seed_paper_s"]:
        lines.append("lockstep assumed: " + r["projected_seed_paper_s"]["lockstep_grouping"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
