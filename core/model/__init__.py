"""The Part A CNN and the Part B backbones as data and modules: the torch-free spec, the builder, exact counts,
pretrained torchvision backbones by name.

Names load on first use (PEP 562) so that ``core.model.spec`` — and a sweep config checked against it —
stays importable without torch.
"""

from __future__ import annotations

import importlib

_HOME = {
    "ACTIVATIONS": "core.model.builder",
    "ACTIVATION_NAMES": "core.model.spec",
    "BackboneLayout": "core.model.backbones",
    "Block": "core.model.backbones",
    "CLOSED_FORMULA": "core.model.counting",
    "CNNSpec": "core.model.spec",
    "FIXED_INPUT_FAMILIES": "core.model.backbones",
    "ConvBlockSpec": "core.model.spec",
    "HeadSpec": "core.model.spec",
    "ORGANISATIONS": "core.model.spec",
    "SmallCNN": "core.model.builder",
    "WeightsUnavailableError": "core.model.pretrained_weights",
    "backbone_preprocessing": "core.model.backbones",
    "build_backbone": "core.model.backbones",
    "build_cnn": "core.model.builder",
    "check_layout": "core.model.backbones",
    "closed_form": "core.model.counting",
    "count_flops": "core.model.counting",
    "count_layers": "core.model.counting",
    "count_params": "core.model.counting",
    "count_totals": "core.model.counting",
    "family_of": "core.model.backbones",
    "filters_per_block": "core.model.spec",
    "format_count": "core.model.counting",
    "layout_of": "core.model.backbones",
    "make_activation": "core.model.builder",
    "make_spec": "core.model.spec",
    "measured_flops": "core.model.counting",
    "measured_params": "core.model.counting",
    "read_torch_file": "core.model.pretrained_weights",
    "replace_head": "core.model.backbones",
    "supported_archs": "core.model.backbones",
    "uniform_knobs": "core.model.counting",
    "weights_cache_path": "core.model.pretrained_weights",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    try:
        module = _HOME[name]
    except KeyError:
        raise AttributeError(f"module 'core.model' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
