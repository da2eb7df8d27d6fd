"""Write a CIFAR-10 folder in the real on-disk format, with synthetic pixels.

What ``lotto_engine.data.cifar`` reads (the official "python version"):
``<root>/cifar-10-batches-py/`` holding ``data_batch_1`` .. ``data_batch_5`` and
``test_batch``, each a protocol-2 pickle of a dict with bytes keys (``b"data"``: uint8
``(10000, 3072)``, channel-major rows; ``b"labels"``: a list of 10,000 ints 0..9;
``b"batch_label"``, ``b"filenames"``), and ``batches.meta``. The reader insists on
exactly 10,000 images a batch, so the folder is full size (about 185 MB) and the real
``seed-paper`` grid can run on it offline (``data.download = false``).

    python bench/cifar_folder.py /tmp/cifar      # then --set data.root="/tmp/cifar"
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
PER_BATCH = 10_000


def write_cifar10(root: str | Path, seed: int = 0) -> Path:
    """The folder ``root/cifar-10-batches-py`` (made, or left as it is when it already
    holds every batch); returns it."""
    folder = Path(root) / FOLDER
    if all((folder / name).is_file() for name in BATCHES) and (folder / "batches.meta").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in BATCHES:
        batch = {
            b"batch_label": f"synthetic {name}".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, PER_BATCH)],
            b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
            b"filenames": [f"synthetic_{i}.png".encode() for i in range(PER_BATCH)],
        }
        tmp = folder / f"{name}.tmp"
        with tmp.open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        tmp.replace(folder / name)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return folder


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python bench/cifar_folder.py ROOT", file=sys.stderr)
        return 2
    try:
        print(write_cifar10(args[0]))
    except OSError as err:
        print(f"cannot write the CIFAR-10 folder under {args[0]}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
