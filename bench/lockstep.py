"""Does training sibling nets in lockstep pay? The engine's own steps, measured in one run.

For each group size in ``--models`` (say ``1,3,6,18``): that many ``seed-paper`` nets
(CIFAR-10 shaped input, each with its own magnitude mask) trained in one
:class:`lotto_engine.lockstep.GroupStep` (vmapped forward, backward, SGD with the
mask enforced), against one net trained by the step it gets alone
(:func:`lotto_engine.training.make_step`: on CUDA the captured bf16 step). The fast
path is what ``run.* = auto`` resolves to on the device, torch is set up as the
runner sets it (threads, deterministic mode, full fp32), and every step is a whole
training step on the first full batch. Reports images per second in total and per
net, and the peak GPU memory of each group (CUDA only).

    python bench/lockstep.py --threads 2 --models 1,3,6
    python bench/lockstep.py --device cuda --models 1,3,6,18 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import Split
from lotto_engine.files import write_text_atomic
from lotto_engine.lockstep import GroupStep
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.training import LoopOptions, make_step, release_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step, x: torch.Tensor, y: torch.Tensor, repeats: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds of one step, after two untimed ones."""
    for _ in range(2):
        step(x, y)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step(x, y)
    sync(device)
    return (time.perf_counter() - start) / repeats


def measure(sizes: list[int], batch: int, repeats: int, device: torch.device) -> dict[str, object]:
    """Images per second of each group size in lockstep, and of one net alone."""
    cfg = load_config(preset="seed-paper", overrides=[f"train.batch_size={batch}"])
    fast = devices.fast_path("auto", "auto", False, device, "auto")
    nets = [build_model(cfg.model, (3, 32, 32), 10, "relu", seed).to(device) for seed in range(max(sizes))]
    masks = [compute_masks(net, "magnitude", 0.8) for net in nets]
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    split = Split(x, y)

    alone_net = nets[0]
    loop = LoopOptions(epochs=1, seed=0, masks=masks[0])
    alone, notes = make_step(alone_net, split, cfg.train, fast, loop)
    alone.start_epoch(cfg.train.lr)
    one = batch / seconds_per_step(alone, x, y, repeats, device)
    release_step(alone, alone_net, loop.step_cache)

    groups = []
    for size in sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = GroupStep(nets[:size], cfg.train, masks[:size], fast)
        step.start_epoch(cfg.train.lr)
        total = size * batch / seconds_per_step(step, x, y, repeats, device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        groups.append({"models": size, "images_per_s": round(total, 1), "per_net_images_per_s": round(total / size, 1),
                       "vs_one_at_a_time": round(total / one, 2), "peak_memory_mib": peak and round(peak, 1)})
        del step
    return {"fast_path": fast.__dict__, "single_images_per_s": round(one, 1), "single_notes": notes, "groups": groups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="2", help="group sizes, comma-separated (1,3,6,18)")
    parser.add_argument("--nondeterministic", action="store_true", help="as run.deterministic = false")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.models.split(",")]
    device = torch.device(args.device)
    threads = devices.configure(args.threads, not args.nondeterministic)

    result: dict[str, object] = {"device": str(device), "threads": threads, "batch_size": args.batch_size,
                                 "deterministic": not args.nondeterministic, "torch": torch.__version__}
    result.update(measure(sizes, args.batch_size, args.repeats, device))
    largest = result["groups"][-1]  # type: ignore[index]
    result.update(lockstep_models=largest["models"], lockstep_images_per_s=largest["images_per_s"])
    print(f"one net alone ({result['fast_path']}): {result['single_images_per_s']:.0f} img/s")
    for group in result["groups"]:  # type: ignore[attr-defined]
        memory = f", peak {group['peak_memory_mib']:.0f} MiB" if group["peak_memory_mib"] else ""
        print(f"lockstep: {group['models']} nets in one step {group['images_per_s']:.0f} img/s "
              f"({group['per_net_images_per_s']:.0f} per net, {group['vs_one_at_a_time']}x one at a time{memory})")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
