"""How far do the captured SGD step and eager training drift apart on CUDA, and why?

Trains the same masked net (the tests' LEARNS config, batch 32, 3 epochs) eagerly and
with the captured step, in fp32, with cuDNN's TF32 convolutions allowed (torch's
default) and not, and prints each epoch's (train loss, val loss, val acc) and the
largest relative gap per epoch. Deterministic kernels, as the runner uses.

    python bench/cuda_rounding.py
"""

from __future__ import annotations

import sys

import torch

from lotto_engine import devices
from lotto_engine.config import load_config
from lotto_engine.data import load_dataset
from lotto_engine.models import build_model
from lotto_engine.pruning import compute_masks
from lotto_engine.step import StepCache
from lotto_engine.training import LoopOptions, train

LEARNS = ['grid.activations=["relu"]', 'grid.methods=["magnitude"]', "grid.sparsities=[0.5]", "model.width=8",
          "model.hidden=16", "train.batch_size=32", "train.lr=0.05", 'train.lr_schedule="cosine"',
          "train.weight_decay=0.001", 'run.device="cuda"', "run.threads=1"]


def curve(tf32: bool, graphs: bool) -> list[tuple[float, float, float]]:
    torch.backends.cudnn.allow_tf32 = tf32
    cfg = load_config(preset="demo", overrides=LEARNS)
    data = load_dataset(cfg.data, torch.device("cuda"))
    model = build_model(cfg.model, data.input_shape, data.num_classes, "relu", 0)
    masks = compute_masks(model, "magnitude", 0.5)
    model.to("cuda")
    out = train(model, data.train, data.val, cfg.train, devices.FastPath(cuda_graphs=graphs),
                LoopOptions(epochs=3, seed=1, masks=masks, step_cache=StepCache()))
    assert not out.notes, out.notes
    return [(m.train_loss, m.val_loss, m.val_acc) for m in out.curve]


def main() -> int:
    devices.configure(1, True)
    for tf32 in (True, False):
        eager, graphed = curve(tf32, False), curve(tf32, True)
        gaps = [max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(e, g)) for e, g in zip(eager, graphed)]
        print(f"cudnn.allow_tf32={tf32}: eager {eager}\n  graphed {graphed}\n  max relative gap per epoch "
              + ", ".join(f"{x:.2e}" for x in gaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
