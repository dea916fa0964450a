"""Part B's device-dependent defaults, one rule for the CLI and for a sweep's Part B trials.

A pretrained backbone at its weights' own input size (224 px, 384 for some) takes minutes per epoch on
a CPU, so a CPU run defaults to small images and few epochs; a GPU run to the weights' size and more
epochs. Only what the user (flag) or the sweep (parameter) left unset is filled in, and the choice is
logged. A fixed-input ViT keeps its own size (its position embeddings allow no other).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection

from core.devices import resolve_device
from core.model import FIXED_INPUT_FAMILIES, family_of

logger = logging.getLogger(__name__)

CPU_IMAGE_SIZE, CPU_EPOCHS, GPU_EPOCHS = 64, 3, 10


def device_defaults(arch: str, device: str, image_size: int | None, epochs: int | None
                    ) -> tuple[int | None, int, list[str]]:
    """(image size, epochs, what was chosen) for ``arch`` on ``device`` (auto | cpu | cuda[:N]).

    ``None`` means "not given": on a CPU the image size becomes :data:`CPU_IMAGE_SIZE` (``None``, i.e. the
    weights' own, for a fixed-input ViT) and the epochs :data:`CPU_EPOCHS`; on a GPU the image size stays
    the weights' own and the epochs become :data:`GPU_EPOCHS`.
    """
    on_cpu = resolve_device(device).type == "cpu"
    chosen: list[str] = []
    if on_cpu and image_size is None and family_of(arch) not in FIXED_INPUT_FAMILIES:
        image_size = CPU_IMAGE_SIZE
        chosen.append(f"image size {image_size} px")
    if epochs is None:
        epochs = CPU_EPOCHS if on_cpu else GPU_EPOCHS
        if on_cpu:
            chosen.append(f"{epochs} epochs")
    return image_size, epochs, chosen


def with_device_defaults(cfg, given: Collection[str]):
    """``cfg`` (a ``PartBConfig``) with the defaults of its device for ``image_size``/``epochs`` not in ``given``.

    ``given``: the flat keys someone set on purpose (a sweep's parameters); an ``image_size`` already in
    ``cfg`` counts as given too.
    """
    size = cfg.image_size if ("image_size" in given or cfg.image_size is not None) else None
    epochs = cfg.train.epochs if "epochs" in given else None
    size, epochs, chosen = device_defaults(cfg.arch, cfg.train.device, size, epochs)
    if chosen:
        logger.info("%s on the CPU: %s by default (set image_size / epochs to change)", cfg.arch, " and ".join(chosen))
    return dataclasses.replace(cfg, image_size=size, train=dataclasses.replace(cfg.train, epochs=epochs))
