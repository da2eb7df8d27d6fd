"""Training throughput: a typical hand-written PyTorch loop vs the lotto engine.

Both train the same ``shallow-cnn`` (CIFAR-10 shape, the ``seed-paper`` model) on the
same synthetic CIFAR-10-shaped data, in one process, one after the other:

- **typical**: a torchvision-style dataset of uint8 HWC images with per-sample
  transforms (PIL image, ``ToTensor``, ``Normalize``; plus crop/flip with
  ``--augment``), a ``DataLoader``, ``.to(device)`` per batch, the mask applied by
  ``torch.nn.utils.prune`` forward hooks, and ``loss.item()`` every step.
- **engine**: :func:`lotto_engine.training.train` as the runner calls it (data
  normalised once on the device, batches as slices of a seeded permutation, metrics
  read once per epoch, the mask enforced with foreach ops), with the fast-path
  options of the config (precision, channels_last, compile, CUDA graphs) and
  ``--parallel`` jobs at once, as ``run.parallel`` trains them.

It prints images per second for each, the ratio, peak memory, the projected wall
time of the ``seed-paper`` grid and the **convolution ceiling**: the images per
second the model's convolutions alone allow (forward and backward in the engine's
layout, every other op free), an upper bound for any loop using these kernels. It
writes the same as JSON (``--out``).

    python bench/throughput.py --device cpu --threads 2 --images 4096
    python bench/throughput.py --device cpu --threads 2 --images 4096 --parallel 2 --set run.channels_last=on
    python bench/throughput.py --device cuda --images 50000 --workers 8 --out bench/out/h100.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune

from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import Split
from lotto_engine.devices import fast_path
from lotto_engine.files import write_text_atomic
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks, prunable_names
from lotto_engine.training import LoopOptions, evaluate, train

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def synthetic_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int64 labels, as torchvision's CIFAR10 holds them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


class TypicalCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: PIL image, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool) -> None:
        import torchvision.transforms as T

        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        self.transform = T.Compose([*steps, T.ToTensor(), T.Normalize(MEAN, STD)])
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def typical_epoch(model, loader, optimizer, device) -> int:  # type: ignore[no-untyped-def]
    model.train()
    seen = 0
    running = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()  # the usual per-step logging (a host sync on GPU)
        seen += y.shape[0]
    return seen


def typical_net(cfg, shape: tuple[int, ...], classes: int, sparsity: float,  # type: ignore[no-untyped-def]
                device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The typical loop's net, masked the way tutorials do it (``torch.nn.utils.prune``
    forward hooks), and its ``torch.optim.SGD``."""
    model = build_model(cfg.model, shape, classes, "relu", 0)
    masks = compute_masks(model, "magnitude", sparsity)
    modules = dict(model.named_modules())
    for name in prunable_names(model):
        prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", masks[name])
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    return model, optimizer


def sync_stream(device: torch.device) -> None:
    """Wait for this thread's current CUDA stream (nothing off CUDA)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def conv_seconds(conv: torch.nn.Conv2d, batch: int, shape: tuple[int, ...], nhwc: bool, repeats: int,
                 input_grad: bool, precision: str = "fp32") -> float:
    """Seconds of one forward and backward pass of ``conv`` alone (best of 3 rounds)."""
    autocast = torch.autocast(conv.weight.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    x = torch.randn(batch, *shape, device=conv.weight.device)
    if nhwc:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    with autocast:
        grad = torch.randn_like(conv(x))  # in the output's layout, as autograd passes it
    for _ in range(3):
        with autocast:
            out = conv(x)
        out.backward(grad)
    best = float("inf")
    for _ in range(3):
        sync(x.device)
        start = time.perf_counter()
        for _ in range(repeats):
            with autocast:
                out = conv(x)
            out.backward(grad)
        sync(x.device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def conv_ceiling(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int, nhwc: bool,
                 device: torch.device, precision: str = "fp32", repeats: int = 5) -> float:
    """Images/s the model's convolutions alone allow (forward and backward, every other
    op free): an upper bound on training throughput with these kernels."""
    import copy

    shapes: list[tuple[torch.nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, tuple(i[0].shape[1:]))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    for hook in hooks:
        hook.remove()
    total = sum(conv_seconds(copy.deepcopy(conv), batch, shape, nhwc, repeats, input_grad=i > 0, precision=precision)
                for i, (conv, shape) in enumerate(shapes))
    return batch / total if total else float("inf")


def engine_throughput(cfg, split, val, fast, args, parallel):  # type: ignore[no-untyped-def]
    """Images/s of ``parallel`` engine runs training at once (one thread each, as the
    runner's job slots do), each a different seed's masked net: one warm-up epoch
    (and capture or compilation), then ``args.epochs`` timed epochs."""
    device = split.x.device
    models, all_masks = [], []
    for seed in range(parallel):
        model = build_model(cfg.model, (3, 32, 32), 10, "relu", seed)
        all_masks.append(compute_masks(model, "magnitude", args.sparsity))
        models.append(model.to(device))
    barrier = threading.Barrier(parallel + 1)
    outcomes = [None] * parallel
    errors: list[BaseException] = []

    def job(i: int) -> None:
        # as the runner's job slots: a stream of its own, and a wait for that stream
        # only (a device-wide sync here would break another slot's graph capture)
        try:
            with devices.on_device(device):
                warm_up = LoopOptions(epochs=1, seed=i, masks=all_masks[i], augment=args.augment, padding=4)
                train(models[i], split, val, cfg.train, fast, warm_up)
                sync_stream(device)
                barrier.wait()  # everyone warm: start the clock
                timed = LoopOptions(epochs=args.epochs, seed=i, masks=all_masks[i], augment=args.augment, padding=4)
                outcomes[i] = train(models[i], split, val, cfg.train, fast, timed)
                sync_stream(device)
                barrier.wait()
        except threading.BrokenBarrierError:
            pass
        except BaseException as err:  # stop the others and the clock: report it, do not hang
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=job, args=(i,)) for i in range(parallel)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
        start = time.perf_counter()
        barrier.wait()
        elapsed = time.perf_counter() - start
    except threading.BrokenBarrierError:
        elapsed = 0.0
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    # each epoch also evaluates the 64 validation images: counted as overhead, conservatively
    return parallel * args.epochs * len(split) / elapsed, outcomes, models, all_masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4096, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the typical loop")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--sparsity", type=float, default=0.8, help="mask applied in both loops")
    parser.add_argument("--parallel", type=int, default=1,
                        help="engine: jobs trained at once in threads (as run.parallel); throughput is their sum")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="engine config overrides")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(preset="seed-paper", overrides=[f"train.batch_size={args.batch_size}", *args.overrides])
    images, labels = synthetic_cifar(args.images)
    shape, classes = (3, 32, 32), 10

    # ---- the typical loop
    model, optimizer = typical_net(cfg, shape, classes, args.sparsity, device)
    loader = torch.utils.data.DataLoader(
        TypicalCifar(images, labels, args.augment), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )
    typical_epoch(model, loader, optimizer, device)  # warm-up
    sync(device)
    start = time.perf_counter()
    seen = sum(typical_epoch(model, loader, optimizer, device) for _ in range(args.epochs))
    sync(device)
    typical_ips = seen / (time.perf_counter() - start)
    del loader

    # ---- the engine, with torch set up as the runner sets it (run.deterministic and the
    # rest: --set run.deterministic=false to see what determinism costs)
    devices.configure(args.threads, cfg.run.deterministic)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255).contiguous()
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    split = Split(x, torch.from_numpy(labels).to(device))
    val = Split(x[:64], split.y[:64])  # the typical loop does not evaluate: keep this negligible
    fast = fast_path(cfg.run.precision, cfg.run.channels_last, cfg.run.compile, device, cfg.run.cuda_graphs)
    parallel = max(1, args.parallel)
    if device.type == "cpu":  # the job slots share the threads, as the runner does
        torch.set_num_threads(max(1, args.threads // parallel))
    engine_ips, outcomes, models, all_masks = engine_throughput(cfg, split, val, fast, args, parallel)
    torch.set_num_threads(args.threads)
    model = models[0]
    sync(device)
    start = time.perf_counter()
    evaluate(model, split, cfg.train.eval_batch_size, precision=fast.precision)
    sync(device)
    eval_ips = len(split) / (time.perf_counter() - start)
    peak = peak_memory_mib(device)
    ceiling = conv_ceiling(models[0], shape, args.batch_size, fast.channels_last, device, fast.precision)
    zero = all(bool((dict(net.named_parameters())[n].detach()[~m.to(device)] == 0).all())
               for net, masks in zip(models, all_masks) for n, m in masks.items())

    # ---- the seed-paper grid, projected (with --parallel: as if every slot stays busy):
    # 3 x (50 + 6 x 20) epochs of 45k images,
    # each epoch also evaluating 5k validation images, each run 10k test images once.
    runs, epochs = 3 * 7, 3 * (50 + 6 * 20)
    train_images, eval_images = epochs * 45_000, epochs * 5_000 + runs * 10_000
    projected = train_images / engine_ips + eval_images / eval_ips
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "images_per_epoch": args.images,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "typical_workers": args.workers,
        "engine_options": {"precision": fast.precision, "channels_last": fast.channels_last,
                           "compile": fast.compile, "cuda_graphs": fast.cuda_graphs},
        "engine_parallel_jobs": parallel,
        "engine_deterministic": cfg.run.deterministic,
        "engine_notes": sorted({note for o in outcomes for note in o.notes}),
        "typical_images_per_s": round(typical_ips, 1),
        "engine_images_per_s": round(engine_ips, 1),
        "engine_eval_images_per_s": round(eval_ips, 1),
        "ratio": round(engine_ips / typical_ips, 2),
        "conv_ceiling_images_per_s": round(ceiling, 1),
        "conv_ceiling_ratio": round(ceiling / typical_ips, 2),
        "peak_memory_mib": round(peak, 1),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
        "masked_weights_zero": zero,
        "engine_status": ",".join(sorted({o.status for o in outcomes})),
        "projected_seed_paper_grid_s": round(projected, 1),
    }
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
