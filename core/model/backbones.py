"""Pretrained torchvision backbones by name, with the 1000-way ImageNet head replaced.

A module of its own because three things from torchvision must agree: the network (``get_model``), its
weights (torch hub cache or download, a state dict on disk, or none) and the preprocessing those weights were
trained with (the enum's ``transforms()``). :mod:`core.finetune.strategies` only sees the resulting
:class:`BackboneLayout`: the blocks ``top-k`` and ``gradual`` unfreeze, which with the head cover every
parameter exactly once (``check_layout``). Weights that are neither cached nor downloadable fail before any
training with :class:`WeightsUnavailableError`, naming the file to place. The blocks of each family:
docs/partB.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from core.data import Preprocessing
from core.model.pretrained_weights import ensure_weights_cached, load_weights_file

logger = logging.getLogger(__name__)

# family -> tests on the (lower-case) torchvision arch name; the registry the CLI help lists.
FAMILY_PREFIXES: dict[str, tuple[str, ...]] = {
    "vgg": ("vgg",),
    "alexnet": ("alexnet",),
    "resnet": ("resnet", "resnext", "wide_resnet"),
    "mobilenet_v2": ("mobilenet_v2",),
    "mobilenet_v3": ("mobilenet_v3",),
    "efficientnet": ("efficientnet_",),
    "convnext": ("convnext_",),
    "vit": ("vit_",),
}
FIXED_INPUT_FAMILIES = frozenset({"vit"})  # position embeddings fix the input size


@dataclass(frozen=True)
class Block:
    """One unfreezable unit: dotted names of modules (or bare parameters, e.g. ViT's class token)."""

    name: str
    prefixes: tuple[str, ...]

    def owns(self, param_name: str) -> bool:
        return any(param_name == p or param_name.startswith(p + ".") for p in self.prefixes)


@dataclass(frozen=True)
class BackboneLayout:
    """Where a model's head is and how its body splits into blocks (input → output order)."""

    family: str
    head: str  # dotted module name of the replaced nn.Linear
    blocks: tuple[Block, ...]

    def head_block(self) -> Block:
        return Block("head", (self.head,))


def supported_archs() -> list[str]:
    """torchvision classification archs whose head and blocks this module knows."""
    return sorted(a for a in list_models(module=torchvision.models) if _match_family(a) is not None)


def _match_family(arch: str) -> str | None:
    for family, prefixes in FAMILY_PREFIXES.items():
        if arch.startswith(prefixes):
            return family
    return None


def family_of(arch: str) -> str:
    """The family of a torchvision arch name; ValueError naming the supported archs otherwise."""
    name = str(arch).lower()
    known = list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(f"unknown arch {arch!r}; expected one of {supported_archs()}")
    family = _match_family(name)
    if family is None:
        raise ValueError(
            f"torchvision has {name!r}, but its head and blocks are not known here; "
            f"supported archs: {supported_archs()}"
        )
    return family


def _seq_names(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(start, stop))


def _vgg_like(model: nn.Module, family: str, ends: Callable[[list, int], bool]) -> BackboneLayout:
    """Conv blocks of ``features`` end where ``ends`` says; then fc6 / fc7; head ``classifier[6]``."""
    blocks, start = [], 0
    feats = list(model.features)
    for i in range(len(feats)):
        if ends(feats, i):
            blocks.append(Block(f"conv{len(blocks) + 1}", _seq_names("features", start, i + 1)))
            start = i + 1
    blocks += [Block("fc6", _seq_names("classifier", 0, 3)), Block("fc7", _seq_names("classifier", 3, 6))]
    return BackboneLayout(family, "classifier.6", tuple(blocks))


def _after_pool(feats: list, i: int) -> bool:
    return isinstance(feats[i], nn.MaxPool2d)


def _before_conv(feats: list, i: int) -> bool:
    return i + 1 == len(feats) or isinstance(feats[i + 1], nn.Conv2d)


def layout_of(model: nn.Module) -> BackboneLayout:
    """Head and blocks of a torchvision model instance (any size variant of a supported family)."""
    tvm = torchvision.models
    if isinstance(model, tvm.VGG):
        return _vgg_like(model, "vgg", _after_pool)
    if isinstance(model, tvm.AlexNet):
        return _vgg_like(model, "alexnet", _before_conv)
    if isinstance(model, tvm.ResNet):
        blocks = [Block("stem", ("conv1", "bn1"))] + [Block(f"layer{i}", (f"layer{i}",)) for i in range(1, 5)]
        return BackboneLayout("resnet", "fc", tuple(blocks))
    if isinstance(model, (tvm.MobileNetV2, tvm.EfficientNet)):
        family = "mobilenet_v2" if isinstance(model, tvm.MobileNetV2) else "efficientnet"
        blocks = [Block(f"features.{i}", (f"features.{i}",)) for i in range(len(model.features))]
        return BackboneLayout(family, "classifier.1", tuple(blocks))
    if isinstance(model, tvm.MobileNetV3):
        blocks = [Block(f"features.{i}", (f"features.{i}",)) for i in range(len(model.features))]
        blocks.append(Block("pre_logits", _seq_names("classifier", 0, 3)))
        return BackboneLayout("mobilenet_v3", "classifier.3", tuple(blocks))
    if isinstance(model, tvm.ConvNeXt):
        n = len(model.features)  # stem, stage, (downsample, stage) * 3
        blocks = [Block("stem", ("features.0",)), Block("stage1", ("features.1",))]
        for s, i in enumerate(range(2, n, 2), start=2):
            blocks.append(Block(f"stage{s}", _seq_names("features", i, min(i + 2, n))))
        last = blocks[-1]
        blocks[-1] = Block(last.name, last.prefixes + ("classifier.0", "classifier.1"))
        return BackboneLayout("convnext", "classifier.2", tuple(blocks))
    if isinstance(model, tvm.VisionTransformer):
        embed = Block("embed", ("conv_proj", "class_token", "encoder.pos_embedding", "encoder.dropout"))
        names = [n for n, _ in model.encoder.layers.named_children()]
        blocks = [embed] + [Block(n, (f"encoder.layers.{n}",)) for n in names]
        blocks[-1] = Block(names[-1], blocks[-1].prefixes + ("encoder.ln",))
        if hasattr(model.heads, "pre_logits"):
            blocks.append(Block("pre_logits", ("heads.pre_logits", "heads.act")))
        return BackboneLayout("vit", "heads.head", tuple(blocks))
    raise ValueError(
        f"no block layout for {type(model).__name__}; supported families: {sorted(FAMILY_PREFIXES)}"
    )


def check_layout(model: nn.Module, layout: BackboneLayout) -> None:
    """Every parameter must belong to exactly one block or the head (guards the table above)."""
    owners = list(layout.blocks) + [layout.head_block()]
    for name, _ in model.named_parameters():
        hits = [b.name for b in owners if b.owns(name)]
        if len(hits) != 1:
            raise ValueError(f"{layout.family} layout: parameter {name!r} is owned by {hits or 'no block'}")


def replace_head(model: nn.Module, layout: BackboneLayout, num_classes: int) -> nn.Linear:
    """Swap the head ``nn.Linear`` for a fresh ``num_classes``-way one (default PyTorch init)."""
    parent_name, _, attr = layout.head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise ValueError(
            f"{layout.family}: expected nn.Linear at {layout.head!r}, found {type(old).__name__}")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, attr, new)
    return new


def resolve_weights(arch: str, weights: str) -> torchvision.models.WeightsEnum:
    """``"DEFAULT"`` or an enum member name (case-insensitive) → the weights enum member."""
    enum = get_model_weights(arch)
    names = ["DEFAULT"] + [w.name for w in enum]
    key = str(weights).upper()
    if key not in names:
        raise ValueError(f"unknown weights {weights!r} for {arch}; expected one of {names} or 'none'")
    member = enum.DEFAULT if key == "DEFAULT" else enum[key]
    if family_of(arch) in FIXED_INPUT_FAMILIES and _crop(member) != _crop(enum.DEFAULT):
        raise ValueError(
            f"weights {member.name} need a {_crop(member)}px {arch}, which a checkpoint cannot rebuild "
            f"(it rebuilds the {_crop(enum.DEFAULT)}px model); use one of "
            f"{[w.name for w in enum if _crop(w) == _crop(enum.DEFAULT)]}"
        )
    return member


def _crop(member: torchvision.models.WeightsEnum) -> int:
    return int(member.transforms().crop_size[0])


def build_backbone(arch: str, num_classes: int | None, weights: str | None = None,
                   weights_file: str | Path | None = None, progress: bool = False,
                   weights_from: str | None = None) -> nn.Module:
    """torchvision ``arch`` with pretrained (or random) weights and a new ``num_classes`` head.

    ``weights``: ``"DEFAULT"``, a weights enum name, or ``None``/``"none"``; ``weights_file``: a
    state dict of the 1000-class model (exclusive with ``weights``). ``weights_from`` names where the
    caller loads the real weights from next (a checkpoint), so the log does not say "random init".
    ``num_classes=None`` keeps the pretrained ImageNet head (checks against known labels). Fails before
    returning — so before any training — when weights are missing, and names the file to place.
    """
    family = family_of(arch)
    arch = str(arch).lower()
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int (or None: keep the ImageNet head), "
                         f"got {num_classes!r}")
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    if weights is not None and weights_file is not None:
        raise ValueError(f"give weights={weights!r} or weights_file={str(weights_file)!r}, not both")
    if weights is not None:
        member = resolve_weights(arch, weights)
        path = ensure_weights_cached(member, progress=progress)
        try:
            model = get_model(arch, weights=member, progress=progress)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(f"cached weights {path} could not be loaded into {arch} ({exc}); "
                             f"delete the file to download it again") from exc
        source = f"{member} ({path})"
    else:
        model = get_model(arch, weights=None)
        source = f"loaded next from {weights_from}" if weights_from else "random init"
        if weights_file is not None:
            load_weights_file(model, Path(weights_file), arch)
            source = str(weights_file)
    layout = layout_of(model)
    if layout.family != family:
        raise ValueError(f"{arch} built a {type(model).__name__}, expected the {family} family")
    if num_classes is not None:
        replace_head(model, layout, num_classes)
    check_layout(model, layout)
    head = model.get_submodule(layout.head)
    logger.info("backbone %s (%s) with a %d-class head; weights: %s", arch, family, head.out_features, source)
    return model


def backbone_preprocessing(arch: str, weights: str | None = "DEFAULT",
                           image_size: int | None = None) -> Preprocessing:
    """Preprocessing of ``arch``'s weights (the DEFAULT ones when ``weights`` is None/"none").

    ``image_size`` smaller than the weights' crop (e.g. 64-128 px for CPU runs) keeps the same
    resize/crop ratio; below the weights' ``min_size``, or any change for a fixed-input ViT, is an error.
    """
    family = family_of(arch)
    arch = str(arch).lower()
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        weights = "DEFAULT"
    member = resolve_weights(arch, weights)
    tf = member.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    if image_size is None or image_size == crop:
        return Preprocessing(crop, resize, tuple(tf.mean), tuple(tf.std))
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if family in FIXED_INPUT_FAMILIES:
        raise ValueError(f"{arch} takes exactly {crop}x{crop} inputs (position embeddings); got {image_size}")
    min_size = int(member.meta.get("min_size", (1, 1))[0])
    if image_size < min_size:
        raise ValueError(f"image_size {image_size} is below {arch}'s minimum input size {min_size}")
    return Preprocessing(image_size, round(image_size * resize / crop), tuple(tf.mean), tuple(tf.std))
