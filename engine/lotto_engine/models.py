"""Networks by name, with seeded, documented initialisation.

``shallow-cnn`` (default), for an input of C x H x W and K classes, with width w and
hidden size h (``model.width``, ``model.hidden``)::

    conv1   Conv2d(C -> w, 3x3, pad 1)   + act
    conv2   Conv2d(w -> w, 3x3, pad 1)   + act, MaxPool 2x2
    conv3   Conv2d(w -> 2w, 3x3, pad 1)  + act
    conv4   Conv2d(2w -> 2w, 3x3, pad 1) + act, MaxPool 2x2
    fc1     Linear(2w * (H/4) * (W/4) -> h) + act
    classifier Linear(h -> K)

On CIFAR-10 with w=32, h=256 that is 1.2 M weights, about 26 M multiply-adds
per image forward (about 0.15 GFLOP per image for a training step).

``lenet-300-100``: flatten, fc1 Linear(C*H*W -> 300) + act, fc2 Linear(300 -> 100)
+ act, classifier Linear(100 -> K).

Initialisation (``model.init``): ``kaiming_normal`` draws conv and linear weights
from N(0, gain^2 / fan_in) with the gain of the activation (relu sqrt(2), tanh 5/3,
sigmoid 1, ...); ``xavier_normal`` from N(0, gain^2 * 2 / (fan_in + fan_out));
``torch_default`` keeps PyTorch's layer defaults. Biases start at zero except under
``torch_default``. Weights are always drawn on the CPU from ``torch.manual_seed(seed)``
inside a forked RNG, so theta0 is the same on every device and leaves the global RNG
untouched. The global RNG is process-wide, so building is serialised by a lock:
jobs that train in parallel threads still get their own seed's weights.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

from .activations import ACTIVATIONS
from .config import ModelConfig
from .registry import Registry

ModelFactory = Callable[[ModelConfig, tuple[int, int, int], int, str], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
_GLOBAL_RNG = threading.Lock()  # held while the global RNG is seeded and drawn from


class ShallowCNN(nn.Module):
    """Two conv blocks of two 3x3 convs each, then two linear layers."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, activation: str,
        width: int = 32, hidden: int = 256,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        act = ACTIVATIONS.get(activation).build
        self.conv1 = nn.Conv2d(c, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (h // 4) * (w // 4), hidden)
        self.classifier = nn.Linear(hidden, num_classes)
        self.act1, self.act2, self.act3, self.act4, self.act5 = (act() for _ in range(5))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        x = self.pool(self.act4(self.conv4(self.act3(self.conv3(x)))))
        x = self.act5(self.fc1(torch.flatten(x, 1)))
        return self.classifier(x)


class LeNet300100(nn.Module):
    """The fully connected LeNet-300-100 of the lottery-ticket paper."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, activation: str) -> None:
        super().__init__()
        c, h, w = input_shape
        act = ACTIVATIONS.get(activation).build
        self.fc1 = nn.Linear(c * h * w, 300)
        self.fc2 = nn.Linear(300, 100)
        self.classifier = nn.Linear(100, num_classes)
        self.act1, self.act2 = act(), act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(torch.flatten(x, 1)))
        return self.classifier(self.act2(self.fc2(x)))


@MODELS.register("shallow-cnn")
def _shallow_cnn(cfg: ModelConfig, shape: tuple[int, int, int], classes: int, act: str) -> nn.Module:
    if shape[1] < 4 or shape[2] < 4:
        raise ValueError(f"shallow-cnn needs images of at least 4x4, got {shape[1]}x{shape[2]}")
    return ShallowCNN(shape, classes, act, cfg.width, cfg.hidden)


@MODELS.register("lenet-300-100")
def _lenet(cfg: ModelConfig, shape: tuple[int, int, int], classes: int, act: str) -> nn.Module:
    return LeNet300100(shape, classes, act)


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, activation: str,
    seed: int,
) -> nn.Module:
    """A freshly initialised network on the CPU; same seed, same weights, any machine."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS.get(cfg.name)(cfg, input_shape, num_classes, activation)
        if cfg.init != "torch_default":
            _initialise(model, cfg.init, activation)
    return model


def _initialise(model: nn.Module, scheme: str, activation: str) -> None:
    spec = ACTIVATIONS.get(activation)
    gain = nn.init.calculate_gain(spec.gain, spec.gain_param)  # type: ignore[arg-type]
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
            if scheme == "kaiming_normal":
                std = gain / fan_in**0.5
            else:  # xavier_normal
                std = gain * (2.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear layer (the classifier)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("model has no Linear layer")
    return last
