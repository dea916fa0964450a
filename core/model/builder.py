"""Turn a :class:`core.model.spec.CNNSpec` into an ``nn.Module`` — the only place that does.

Every use of an activation gets its own fresh module (never shared, never ``inplace=True``): Captum's
guided backprop and DeepLift attach hooks per module, and refuse or misbehave when one module is
called twice, and in-place activations break backward hooks. Pretrained torchvision backbones for
Part B live in :mod:`core.model.backbones`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.model.spec import ACTIVATION_NAMES, CNNSpec, ConvBlockSpec, canonical_activation

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}
if set(ACTIVATIONS) != set(ACTIVATION_NAMES):  # the pure spec and the registry must agree
    raise ImportError(f"ACTIVATIONS {sorted(ACTIVATIONS)} != spec.ACTIVATION_NAMES {sorted(ACTIVATION_NAMES)}")


def make_activation(name: str) -> nn.Module:
    """A new activation module by (case-insensitive, alias-aware) name."""
    return ACTIVATIONS[canonical_activation(name)]()


class ConvBlock(nn.Module):
    """``conv → bn (Identity when off) → act → max-pool``; attributes are named for explainers."""

    def __init__(self, in_channels: int, block: ConvBlockSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, block.out_channels, block.kernel_size, padding=block.padding)
        self.bn: nn.Module = nn.BatchNorm2d(block.out_channels) if block.batch_norm else nn.Identity()
        self.act = make_activation(block.activation)
        self.pool = nn.MaxPool2d(kernel_size=block.pool_size, stride=block.pool_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class SmallCNN(nn.Module):
    """The Part A network: ``features`` (5 :class:`ConvBlock`) then ``classifier``.

    ``spec`` is kept so checkpoints and counters can describe the model without guessing.
    """

    def __init__(self, spec: CNNSpec) -> None:
        super().__init__()
        self.spec = spec
        self.features = nn.Sequential(
            *(ConvBlock(spec.block_in_channels(i), b) for i, b in enumerate(spec.blocks))
        )
        c, h, w = spec.feature_shape()
        head = spec.head
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, head.dense_units),
            make_activation(head.activation),
            nn.Dropout(head.dropout),
            nn.Linear(head.dense_units, head.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.spec.in_channels, *self.spec.height_width)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input of shape [N, {expected[0]}, {expected[1]}, {expected[2]}] for this spec, "
                f"got {list(x.shape)}; resize images to image_size={self.spec.image_size}"
            )
        return self.classifier(self.features(x))

    def conv_layers(self) -> list[nn.Conv2d]:
        """The five conv layers in order; ``conv_layers()[4]`` is CONV5."""
        return [block.conv for block in self.features]


def build_cnn(spec: CNNSpec) -> SmallCNN:
    """The ``nn.Module`` for ``spec`` (PyTorch's default initialisation)."""
    if not isinstance(spec, CNNSpec):
        raise TypeError(f"build_cnn needs a CNNSpec (see core.model.spec.make_spec), got {type(spec).__name__}")
    return SmallCNN(spec)
