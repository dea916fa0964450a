"""Pure description of the Part A CNN: five conv blocks and a dense head, with shape inference.

The architecture is data (as in torchvision's VGG configs), so counting, building, logging and checkpointing
read the same object; no torch here, so a spec is validated, counted and stored before any tensor exists. A block
is ``conv(k×k, padding=k//2) → [BN] → activation → max-pool``: odd ``k`` keeps the map's size, even ``k`` grows it
by one pixel; pooling floors, and a map smaller than the pool window is an error. The head is
``flatten → linear(dense_units) → activation → dropout → linear(num_classes)``: dropout once, where it
regularises the dense layer that holds most of the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

NUM_BLOCKS = 5
ACTIVATION_NAMES: tuple[str, ...] = (
    "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "mish", "selu", "tanh", "softplus",
)
ACTIVATION_ALIASES = {"swish": "silu", "leakyrelu": "leaky_relu", "lrelu": "leaky_relu"}
ORGANISATIONS: tuple[str, ...] = ("same", "double", "half")


def canonical_activation(name: str) -> str:
    """Lower-cased, alias-resolved activation name, or a ValueError listing the valid names."""
    if not isinstance(name, str):
        raise ValueError(f"activation must be a string, got {name!r}; expected one of {list(ACTIVATION_NAMES)}")
    key = name.strip().lower().replace("-", "_")
    key = ACTIVATION_ALIASES.get(key, key)
    if key not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTIVATION_NAMES)}")
    return key


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ConvBlockSpec:
    """One ``conv → [BN] → activation → max-pool`` block; input channels come from the previous block."""

    out_channels: int
    kernel_size: int
    activation: str = "relu"
    batch_norm: bool = False
    pool_size: int = 2
    pool_stride: int = 2

    def __post_init__(self) -> None:
        _positive_int(self.out_channels, "out_channels")
        _positive_int(self.kernel_size, "kernel_size")
        _positive_int(self.pool_size, "pool_size")
        _positive_int(self.pool_stride, "pool_stride")
        object.__setattr__(self, "activation", canonical_activation(self.activation))
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"batch_norm must be True or False, got {self.batch_norm!r}")

    @property
    def padding(self) -> int:
        return self.kernel_size // 2


@dataclass(frozen=True)
class HeadSpec:
    """Dense layer, its activation and dropout, then the ``num_classes``-way output layer."""

    dense_units: int = 256
    dropout: float = 0.0
    num_classes: int = 10
    activation: str = "relu"

    def __post_init__(self) -> None:
        _positive_int(self.dense_units, "dense_units")
        _positive_int(self.num_classes, "num_classes")
        numeric = isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
        if not numeric or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "activation", canonical_activation(self.activation))


@dataclass(frozen=True)
class LayerShape:
    """One layer's place in the network: what it is and the per-image shapes around it."""

    name: str  # e.g. "block3.conv", "head.fc"
    kind: str  # conv | bn | act | pool | flatten | linear | dropout
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class CNNSpec:
    """The whole Part A network. Construction validates it, including that no feature map vanishes."""

    blocks: tuple[ConvBlockSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    in_channels: int = 3
    image_size: int | tuple[int, int] = 224  # square side (stored as int), or (height, width)

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        if len(blocks) != NUM_BLOCKS:
            raise ValueError(f"a Part A CNN has exactly {NUM_BLOCKS} conv blocks, got {len(blocks)}")
        for i, b in enumerate(blocks):
            if not isinstance(b, ConvBlockSpec):
                raise ValueError(f"blocks[{i}] must be a ConvBlockSpec, got {type(b).__name__}")
        object.__setattr__(self, "blocks", blocks)
        _positive_int(self.in_channels, "in_channels")
        size = self.image_size
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise ValueError(f"image_size must be an int or (height, width), got {size!r}")
            size = (_positive_int(size[0], "image height"), _positive_int(size[1], "image width"))
            if size[0] == size[1]:
                size = size[0]  # square images are stored as one int, like everywhere else
        else:
            size = _positive_int(size, "image_size")
        object.__setattr__(self, "image_size", size)
        self.layer_shapes()  # raises if a feature map shrinks below 1×1

    @property
    def height_width(self) -> tuple[int, int]:
        size = self.image_size
        return (size, size) if isinstance(size, int) else size  # type: ignore[return-value]

    def block_in_channels(self, index: int) -> int:
        return self.in_channels if index == 0 else self.blocks[index - 1].out_channels

    def feature_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the last block's output, i.e. what the head flattens."""
        flatten = next(layer for layer in self.layer_shapes() if layer.kind == "flatten")
        return flatten.in_shape  # type: ignore[return-value]

    def layer_shapes(self) -> list[LayerShape]:
        """Per-image shapes through every layer, in forward order."""
        h, w = self.height_width
        c = self.in_channels
        out: list[LayerShape] = []
        for i, b in enumerate(self.blocks, start=1):
            k, p = b.kernel_size, b.padding
            ch, cw = h + 2 * p - k + 1, w + 2 * p - k + 1  # = h (odd k) or h + 1 (even k): never shrinks
            out.append(LayerShape(f"block{i}.conv", "conv", (c, h, w), (b.out_channels, ch, cw)))
            c = b.out_channels
            if b.batch_norm:
                out.append(LayerShape(f"block{i}.bn", "bn", (c, ch, cw), (c, ch, cw)))
            out.append(LayerShape(f"block{i}.act", "act", (c, ch, cw), (c, ch, cw)))
            if ch < b.pool_size or cw < b.pool_size:
                raise ValueError(
                    f"block {i}: the feature map is {ch}x{cw} before a {b.pool_size}x{b.pool_size} max-pool, "
                    f"so it would shrink below 1x1; raise image_size (now {self.height_width[0]}x"
                    f"{self.height_width[1]}) or lower the pool size"
                )
            ph, pw = (ch - b.pool_size) // b.pool_stride + 1, (cw - b.pool_size) // b.pool_stride + 1
            out.append(LayerShape(f"block{i}.pool", "pool", (c, ch, cw), (c, ph, pw)))
            h, w = ph, pw
        flat = c * h * w
        hd = self.head
        out.append(LayerShape("head.flatten", "flatten", (c, h, w), (flat,)))
        out.append(LayerShape("head.fc", "linear", (flat,), (hd.dense_units,)))
        out.append(LayerShape("head.act", "act", (hd.dense_units,), (hd.dense_units,)))
        out.append(LayerShape("head.dropout", "dropout", (hd.dense_units,), (hd.dense_units,)))
        out.append(LayerShape("head.out", "linear", (hd.dense_units,), (hd.num_classes,)))
        return out

    def to_dict(self) -> dict:
        """Plain data (lists, ints, strs) — safe for YAML, JSON and ``torch.load(weights_only=True)``."""
        return {
            "blocks": [asdict(b) for b in self.blocks],
            "head": asdict(self.head),
            "in_channels": self.in_channels,
            "image_size": self.image_size if isinstance(self.image_size, int) else list(self.image_size),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CNNSpec:
        unknown = set(data) - {"blocks", "head", "in_channels", "image_size"}
        if unknown:
            raise ValueError(f"unknown CNNSpec keys {sorted(unknown)}; expected blocks, head, in_channels, image_size")
        try:
            blocks = tuple(ConvBlockSpec(**b) for b in data["blocks"])
            head = HeadSpec(**data.get("head", {}))
        except TypeError as exc:  # unexpected field names inside a block/head dict
            raise ValueError(f"malformed CNNSpec dict: {exc}") from exc
        size = data.get("image_size", 224)
        return cls(blocks=blocks, head=head, in_channels=data.get("in_channels", 3),
                   image_size=tuple(size) if isinstance(size, list) else size)


def filters_per_block(filters: int, organisation: str | Sequence[int]) -> list[int]:
    """Channels of the 5 blocks from a base count and an organisation.

    ``same``: m everywhere; ``double``: m, 2m, 4m, 8m, 16m; ``half``: m, m/2, ... (floored, at least 1);
    a list of 5 positive ints is used as is ("custom").
    """
    if isinstance(organisation, str):
        org = organisation.strip().lower()
        if org == "custom":
            raise ValueError("organisation 'custom' needs the list itself: pass organisation=[c1, c2, c3, c4, c5]")
        if org not in ORGANISATIONS:
            raise ValueError(
                f"unknown filter organisation {organisation!r}; expected one of {list(ORGANISATIONS)} "
                f"or a list of {NUM_BLOCKS} channel counts"
            )
        _positive_int(filters, "filters")
        if org == "same":
            return [filters] * NUM_BLOCKS
        if org == "double":
            return [filters * 2**i for i in range(NUM_BLOCKS)]
        return [max(1, filters // 2**i) for i in range(NUM_BLOCKS)]
    channels = list(organisation)
    if len(channels) != NUM_BLOCKS:
        raise ValueError(f"a custom filter organisation needs {NUM_BLOCKS} channel counts, got {channels!r}")
    return [_positive_int(c, f"filters of block {i + 1}") for i, c in enumerate(channels)]


def _per_block(value, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != NUM_BLOCKS:
            raise ValueError(f"{what} needs one value or {NUM_BLOCKS} values, got {list(value)!r}")
        return list(value)
    return [value] * NUM_BLOCKS


@dataclass(frozen=True)
class CNNKnobs:
    """The assignment's model knobs and their one set of defaults (chosen by the search in docs/results.md):
    ``PartAConfig`` extends it, and :func:`make_spec` and every flag's default read it."""

    filters: int = 16
    organisation: str | tuple[int, ...] = "double"  # same | double | half | 5 channel counts
    kernel_size: int | tuple[int, ...] = 3  # one size, or 5
    activation: str = "relu"
    batch_norm: bool = True
    dropout: float = 0.12
    dense_units: int = 512


def make_spec(
    filters: int = CNNKnobs.filters,
    organisation: str | Sequence[int] = CNNKnobs.organisation,
    kernel_size: int | Sequence[int] = CNNKnobs.kernel_size,
    activation: str = CNNKnobs.activation,
    batch_norm: bool = CNNKnobs.batch_norm,
    dropout: float = CNNKnobs.dropout,
    dense_units: int = CNNKnobs.dense_units,
    image_size: int | tuple[int, int] = 224,
    in_channels: int = 3,
    num_classes: int = 10,
) -> CNNSpec:
    """Build a :class:`CNNSpec` from the sweep-level knobs of the assignment."""
    channels = filters_per_block(filters, organisation)
    kernels = _per_block(kernel_size, "kernel_size")
    act = canonical_activation(activation)
    blocks = tuple(
        ConvBlockSpec(out_channels=c, kernel_size=k, activation=act, batch_norm=batch_norm)
        for c, k in zip(channels, kernels)
    )
    head = HeadSpec(dense_units=dense_units, dropout=dropout, num_classes=num_classes, activation=act)
    return CNNSpec(blocks=blocks, head=head, in_channels=in_channels, image_size=image_size)
