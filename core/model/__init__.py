"""The Part A CNN and the Part B backbones as data and modules: the torch-free spec, the builder, exact counts,
pretrained torchvision backbones by name.

Names load on first use (PEP 562) so that ``core.model.spec`` — and a sweep config checked against it —
stays importable without torch.
"""

from __future__ import annotations

import importlib

_NAMES = {  # module -> the names it exports
    "backbones": ("BackboneLayout", "Block", "FIXED_INPUT_FAMILIES", "backbone_preprocessing", "build_backbone",
                  "check_layout", "family_of", "layout_of", "replace_head", "supported_archs"),
    "builder": ("ACTIVATIONS", "SmallCNN", "build_cnn", "make_activation"),
    "counting": ("CLOSED_FORMULA", "closed_form", "count_flops", "count_layers", "count_params",
                 "count_totals", "format_count", "measured_flops", "uniform_knobs"),
    "pretrained_weights": ("WeightsUnavailableError", "read_torch_file", "weights_cache_path"),
    "spec": ("ACTIVATION_NAMES", "CNNKnobs", "CNNSpec", "ConvBlockSpec", "HeadSpec", "ORGANISATIONS",
             "filters_per_block", "make_spec"),
}
_HOME = {name: f"core.model.{module}" for module, names in _NAMES.items() for name in names}

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
