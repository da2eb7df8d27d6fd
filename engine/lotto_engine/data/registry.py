"""Dataset name -> reader. Adding a dataset is one reader returning RawData and one entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .cifar import load_cifar10
from .digits import load_digits
from .idx import load_fashion_mnist, load_mnist
from .raw import RawData

Loader = Callable[[Path, bool], RawData]  # (data.root, data.download) -> RawData

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
}
