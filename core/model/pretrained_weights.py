"""Pretrained weights on disk: torch hub's cache (download when missing) or a state dict the user gives.

Kept apart from :mod:`core.model.backbones` (which arch, which layout, which preprocessing) because this is
the part that meets the network and the file system, and the part whose failures must name the file to place.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

logger = logging.getLogger(__name__)


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable; the message says where to put them."""


def weights_cache_path(member: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub caches ``member``: ``$TORCH_HOME/hub/checkpoints/<basename of its url>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)


def ensure_weights_cached(member: torchvision.models.WeightsEnum, progress: bool = False) -> Path:
    """Download ``member`` into the hub cache unless it is there; offline → WeightsUnavailableError."""
    path = weights_cache_path(member)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(path.name)
    logger.info("downloading %s to %s", member.url, path)
    try:
        torch.hub.download_url_to_file(member.url, str(path), match.group(1) if match else None,
                                       progress=progress)
    except (URLError, OSError, TimeoutError) as exc:
        raise WeightsUnavailableError(
            f"cannot download pretrained weights {member} from {member.url} ({exc}). "
            f"Place that file at {path} (the torch hub cache; set TORCH_HOME to move it), "
            f"or pass a state dict with --weights-file PATH, or train from scratch with --weights none"
        ) from exc
    return path


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container


def read_torch_file(path: Path, fix: str, error: type[Exception] = ValueError) -> Any:
    """``torch.load(path, weights_only=True)``, refused in one line ending in ``fix`` (never with torch's advice to load
    unsafely): a folder or special file, a file that is not torch's zip or pickle (ONNX, text), a damaged one, one
    holding pickled code (refused without running it). The caller says what a missing path means."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file; {fix}")
    if not path.is_file():
        raise error(f"{path} is not a regular file (a FIFO, socket or device); {fix}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != ZIP_MAGIC and not head.startswith(b"\x80"):  # torch's zip format, or a legacy raw pickle
        raise error(f"{path} is not a torch checkpoint file (it starts with {head!r}, not a torch zip archive or "
                    f"pickle); {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"GLOBAL ([\w.]+)", str(err))  # the refused name, without torch's unsafe advice
        detail = f"it references {match.group(1)}" if match else "objects outside the tensor/plain-data allow-list"
        raise error(f"{path} holds pickled Python objects that could run code when loaded ({detail}); refused without "
                    f"executing anything. inat-cnn checkpoints hold only tensors and plain data: {fix}") from None
    except Exception as err:  # torch raises many types for a damaged file (RuntimeError, EOFError, IndexError, ...)
        reason = str(err).split(". ")[0]  # torch's first sentence; the rest is generic advice
        raise error(f"{path} is not a torch checkpoint file (truncated or damaged: {reason}); copy it again from "
                    f"where it was written, or {fix}") from err


def _read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path} (a state_dict of torchvision {arch}); check the "
                                "path, or drop --weights-file to use the torchvision weights (cache or download)")
    obj = read_torch_file(path, f"pass a state_dict of torchvision {arch} (torch.save(model.state_dict(), path)), "
                                "or drop --weights-file to use the torchvision weights")
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):  # a training checkpoint that wraps the state dict
            if isinstance(obj.get(key), dict):
                logger.info("%s: using its %r entry as the state dict", path, key)
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return obj


def load_weights_file(model: nn.Module, path: Path, arch: str) -> None:
    """Strictly load a stock-torchvision state dict (1000-class head) into ``model``."""
    state = _read_state_dict(path, arch)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit torchvision {arch} (1000-class head): {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}, {len(shapes)} shape "
            f"mismatches {shapes[:3]}; it must be the state_dict of torchvision.models.{arch}()"
        )
    model.load_state_dict(state, strict=True)
