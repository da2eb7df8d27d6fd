"""Does training several nets in one step pay? ``--models`` copies of the ``seed-paper``
net in one ``torch.func.vmap`` step (grouped convolutions) against one net alone:
forward and backward only, images per second, measured in one run.

    python bench/lockstep.py --threads 2 --models 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from lotto_engine.files import write_text_atomic


def lockstep(models: int, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """(vmapped img/s over ``models`` nets, one net's img/s), forward and backward."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    from lotto_engine.config import load_config
    from lotto_engine.models import build_model

    cfg = load_config(preset="seed-paper")
    nets = [build_model(cfg.model, (3, 32, 32), 10, "relu", seed).to(device) for seed in range(models)]
    params, _ = stack_module_state(nets)
    base = build_model(cfg.model, (3, 32, 32), 10, "relu", 0).to("meta")

    def loss(p, x, y):  # type: ignore[no-untyped-def]
        return F.cross_entropy(functional_call(base, p, (x,)), y)

    step = vmap(grad_and_value(loss))
    x = torch.randn(models, batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (models, batch), device=device)
    for _ in range(2):
        step(params, x, y)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        step(params, x, y)
    sync()
    together = models * batch * repeats / (time.perf_counter() - start)
    net = nets[0]
    for _ in range(2):
        F.cross_entropy(net(x[0]), y[0]).backward()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        F.cross_entropy(net(x[0]), y[0]).backward()
    sync()
    return together, batch * repeats / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", type=int, default=2, help="nets in the lockstep step")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    result: dict[str, object] = {"device": str(device), "threads": args.threads, "batch_size": args.batch_size, "torch": torch.__version__}
    together, alone = lockstep(args.models, args.batch_size, args.repeats, device)
    result.update(lockstep_models=args.models, lockstep_images_per_s=round(together, 1),
                  single_images_per_s=round(alone, 1))
    print(f"lockstep: {args.models} nets in one vmapped step {together:.0f} img/s; one net alone {alone:.0f} img/s")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
