"""Where and how to run: device (auto | cpu | cuda | cuda:N), AMP, memory format, compile, and whether a batch fits.

``amp=auto``: bf16 on a GPU that supports it, else fp16 with a grad scaler; off on the CPU. ``channels_last=auto``
is on for CUDA (tensor cores want NHWC) and for the CPU too, where it was measured faster; ``compile=auto`` is on
only where a whole run, compile time included, was measured faster (:data:`COMPILE_AUTO`). The measurements:
docs/performance.md, "Training on the CPU: the defaults and why".
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AMP_MODES", "CHANNELS_LAST_MODES", "COMPILE_AUTO", "COMPILE_MODES", "check_batch_fits", "resolve_amp",
           "resolve_channels_last", "resolve_compile", "resolve_device"]

AMP_MODES = ("auto", "bf16", "fp16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
CPU_CHANNELS_LAST = True  # measured; see the module docstring
COMPILE_MODES = ("auto", "on", "off")
COMPILE_AUTO = {"cpu": False, "cuda": False}  # what "auto" means per device type; see the module docstring


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` -> a torch device, failing clearly when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name or ""):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full fp32."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; expected one of {list(AMP_MODES)}")
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if amp == "bf16":
            raise ValueError(f"amp 'bf16' requested but {torch.cuda.get_device_name(device)} does not support "
                             "bfloat16; use --amp fp16 or auto")
        return torch.float16
    if amp == "auto":
        return None  # CPU autocast rarely pays off for small convnets; ask for bf16 explicitly to try it
    if amp == "bf16":
        return torch.bfloat16
    raise ValueError(f"amp 'fp16' needs a CUDA device (got {device}); use --amp bf16 or off on CPU")


def resolve_channels_last(mode: str, device: torch.device) -> bool:
    """Whether to keep the model and inputs in NHWC (``torch.channels_last``) memory format."""
    if mode not in CHANNELS_LAST_MODES:
        raise ValueError(f"unknown channels_last mode {mode!r}; expected one of {list(CHANNELS_LAST_MODES)}")
    if mode != "auto":
        return mode == "on"
    return True if device.type == "cuda" else CPU_CHANNELS_LAST


def resolve_compile(mode: str, device: torch.device) -> bool:
    """Whether to ``torch.compile`` the model for this run (see the module docstring)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {list(COMPILE_MODES)}")
    if mode != "auto":
        return mode == "on"
    return COMPILE_AUTO.get(device.type, False)


def check_batch_fits(model: nn.Module, input_shape: Sequence[int], device: torch.device) -> None:
    """ValueError (exit 2) when autograd saves more for a batch's backward than the device holds (``model``: meta)."""
    kept: dict[int, torch.UntypedStorage] = {}  # a storage's Python object is one per storage, views included

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.setdefault(id(s := t.untyped_storage()), s)  # held here, so no id is reused
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(torch.empty(tuple(input_shape), device="meta"))
    weights = {id(p.untyped_storage()) for p in model.parameters()}
    need = sum(s.nbytes() for k, s in kept.items() if k not in weights)
    have = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ValueError(f"a training batch of {input_shape[0]} images at {input_shape[2]}x{input_shape[3]} px keeps "
                         f"{need / 1e9:,.1f} GB for the backward pass, but {device} has {have / 1e9:,.1f} GB in all; "
                         "lower --batch-size or --image-size")
