"""A training batch that cannot fit is refused before any image is decoded (``core.devices.check_batch_fits``).

The check runs a forward pass on a meta-device twin and sums what autograd saves for the backward pass. The oracle
is a real forward on the CPU: the storages autograd saves there, per image, times the batch the check refuses
(activations grow with the batch; weights are left out on both sides). The meta count is at most the CPU's.
"""

from __future__ import annotations

import math
import os
import re

import pytest
import torch

from core.devices import check_batch_fits
from core.finetune import make_strategy
from core.model import build_backbone, build_cnn, make_spec

RAM = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _saved_per_image(model: torch.nn.Module, size: int, batch: int = 2) -> float:
    saved: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(torch.randn(batch, 3, size, size))
    return sum(saved.values()) / batch


def _cnn():
    return build_cnn(make_spec(image_size=64, num_classes=2))


def _mobilenet_full():
    model = build_backbone("mobilenet_v2", 2, weights=None)
    make_strategy("full").setup(model, quiet=True)
    return model


@pytest.mark.parametrize(("build", "size"), [(_cnn, 64), (_mobilenet_full, 32)])
def test_the_refused_batch_needs_what_autograd_saves_on_the_cpu(build, size):
    torch.manual_seed(0)
    per_image = _saved_per_image(build(), size)
    n = math.ceil(2 * RAM / per_image)  # twice this machine's memory: must be refused
    with torch.device("meta"):
        twin = build()
    with pytest.raises(ValueError, match=rf"a training batch of {n} images at {size}x{size} px keeps") as err:
        check_batch_fits(twin, (n, 3, size, size), torch.device("cpu"))
    need = float(re.search(r"keeps ([\d,.]+) GB", str(err.value))[1].replace(",", ""))
    cpu = per_image * n / 1e9  # the meta backend saves the same tensors (the CNN) or a little less (MobileNetV2's
    assert 0.9 * cpu <= need <= 1.01 * cpu, (need, cpu)  # depthwise convs): a refusal is never wrong
    assert "lower --batch-size or --image-size" in str(err.value)


def test_a_batch_that_fits_passes_and_a_frozen_backbone_keeps_little():
    with torch.device("meta"):
        check_batch_fits(_cnn(), (32, 3, 64, 64), torch.device("cpu"))  # no error
        head_only = build_backbone("mobilenet_v2", 2, weights=None)
        make_strategy("head").setup(head_only, quiet=True)
    full = _saved_per_image(_mobilenet_full(), 32)
    n = math.ceil(2 * RAM / full)  # refused when everything trains ...
    check_batch_fits(head_only, (n, 3, 32, 32), torch.device("cpu"))  # ... not when only the head does
