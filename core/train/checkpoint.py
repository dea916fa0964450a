"""Self-describing checkpoints: one ``.pt`` file rebuilds the model, its classes and its preprocessing.

Tensors and plain Python data only, so it loads with ``torch.load(path, weights_only=True)`` (no code runs on
load); the keys are listed in docs/CONTRACTS.md. Writes are atomic, so a crash mid-save leaves the previous
checkpoint intact; a file that is not ours, or weights for another model, raise :class:`CheckpointError` saying
what the file is.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.runfiles import atomic_writer, to_plain

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "MODEL_KINDS",
    "build_model",
    "describe_difference",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "make_payload",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "inat-cnn/1"
MODEL_KINDS = ("cnn", "backbone")
REQUIRED_KEYS = ("format", "model_desc", "state_dict", "class_names", "preprocessing", "train_config",
                 "metrics", "epoch")


PASS_OURS = "pass a best.pt / last.pt written by this project's training scripts"


class CheckpointError(ValueError):
    """A file is not a checkpoint of ours, or does not fit the model it is loaded into."""


def make_payload(
    model: nn.Module,
    *,
    model_desc: dict,
    class_names: list[str] | tuple[str, ...],
    preprocessing: Any,
    train_config: dict,
    metrics: dict,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: dict | None = None,
) -> dict:
    """Assemble a checkpoint dict; ``preprocessing`` is a ``Preprocessing`` or its ``to_dict()``."""
    _check_model_desc(model_desc)
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "model_desc": to_plain(model_desc),
        "state_dict": state_dict,
        "class_names": [str(c) for c in class_names],
        "preprocessing": to_plain(preprocessing),
        "train_config": to_plain(train_config),
        "metrics": to_plain(metrics),
        "epoch": int(epoch),
        # torch's own optimizer state is weights_only-safe as is (tuples of betas included)
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": to_plain(scheduler.state_dict()) if scheduler is not None else None,
        "extra": to_plain(extra or {}),
    }


def save_checkpoint(path: Path | str, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"refusing to save {path}: payload has no format {CHECKPOINT_FORMAT!r}; "
                              "build it with core.train.checkpoint.make_payload")
    try:
        with atomic_writer(path, "wb") as handle:
            torch.save(payload, handle)
    except RuntimeError as err:  # torch says "[enforce fail at inline_container.cc]" for a failed write (disk full)
        why = str(err).splitlines()[0][:200]
        raise OSError(errno.EIO, f"writing the checkpoint failed ({why}); is the disk full?", str(path)) from err
    log.debug("saved checkpoint %s (epoch %s)", path, payload.get("epoch"))


def load_checkpoint(path: Path | str) -> dict:
    """Load and validate a checkpoint with ``weights_only=True``; tensors land on the CPU."""
    from core.model import read_torch_file  # torchvision loads only when a checkpoint is read

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with experiments/partA_train.py "
                                "or pass the path of a best.pt / last.pt")
    payload = read_torch_file(path, PASS_OURS, CheckpointError)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not an inat-cnn checkpoint dict; {PASS_OURS}")
    if "format" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(f"{path} is a bare state dict ({len(payload)} tensors) without a model "
                                  f"description, so no script can rebuild its model; {PASS_OURS} (or save with "
                                  "core.train.checkpoint.save_checkpoint)")
        raise CheckpointError(f"{path} is a dict without a 'format' key (keys: {sorted(map(str, payload))[:10]}); "
                              f"not an inat-cnn checkpoint ({CHECKPOINT_FORMAT}); {PASS_OURS}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {payload['format']!r}; this code reads "
                              f"{CHECKPOINT_FORMAT!r}: use the inat-cnn version that wrote it, or retrain")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path} is missing checkpoint keys {missing}; {PASS_OURS}")
    _check_model_desc(payload["model_desc"], source=str(path))
    desc, names, prep = payload["model_desc"], payload["class_names"], payload["preprocessing"]
    outputs = desc["spec"].get("head", {}).get("num_classes") if desc["kind"] == "cnn" else desc["num_classes"]
    if outputs is not None and outputs != len(names):  # the same refusal from evaluate, export and resume
        raise CheckpointError(f"{path} is inconsistent: its model has {outputs} outputs but it lists {len(names)} "
                              f"class names; {PASS_OURS}")
    size, side = desc["spec"].get("image_size") if desc["kind"] == "cnn" else None, dict(prep).get("image_size")
    if size is not None and size not in (side, [side] * 2):
        raise CheckpointError(f"{path} is inconsistent: its model takes {size} px images but its preprocessing "
                              f"says {side} px; {PASS_OURS}")
    return payload


def _check_model_desc(model_desc: Any, source: str = "model_desc") -> None:
    if not isinstance(model_desc, dict) or model_desc.get("kind") not in MODEL_KINDS:
        kind = model_desc.get("kind") if isinstance(model_desc, dict) else model_desc
        raise CheckpointError(f"{source}: unknown model kind {kind!r}; expected one of {list(MODEL_KINDS)}")
    needed = {"cnn": ("spec",), "backbone": ("arch", "num_classes")}[model_desc["kind"]]
    absent = [k for k in needed if k not in model_desc]
    if absent:
        raise CheckpointError(f"{source}: model_desc of kind {model_desc['kind']!r} lacks {absent}")


def build_model(model_desc: dict, weights_from: str | None = None) -> nn.Module:
    """Rebuild the (untrained) module a ``model_desc`` describes; ``weights_from`` (the checkpoint the
    caller loads next) is what the backbone's log line names instead of "random init"."""
    _check_model_desc(model_desc)
    if model_desc["kind"] == "cnn":
        from core.model import CNNSpec, build_cnn

        return build_cnn(CNNSpec.from_dict(model_desc["spec"]))
    from core.model import build_backbone  # Part B module; imported only when a backbone is asked for

    return build_backbone(model_desc["arch"], int(model_desc["num_classes"]), weights=None, weights_from=weights_from)


def describe_difference(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Paths where two plain-data trees differ, e.g. ``spec.blocks[0].out_channels: 32 != 16``."""
    a, b = to_plain(a), to_plain(b)
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(f"{where}: {'absent' if key not in a else repr(a[key])} != "
                           f"{'absent' if key not in b else repr(b[key])}")
            else:
                out.extend(describe_difference(a[key], b[key], where))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in describe_difference(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [f"{prefix or '<root>'}: {a!r} != {b!r}"]


def load_weights(model: nn.Module, payload: dict, model_desc: dict | None = None, source: str = "checkpoint") -> None:
    """Load ``payload``'s weights into ``model``, first checking the checkpoint describes this model.

    ``model_desc`` is the description of ``model``; when given and different from the checkpoint's,
    the error names both (and where they differ) instead of a wall of shape mismatches.
    """
    if model_desc is not None:
        diff = describe_difference(payload["model_desc"], model_desc)
        if diff:
            raise CheckpointError(
                f"{source} was saved for a different model: checkpoint model_desc {payload['model_desc']} "
                f"vs this model's {to_plain(model_desc)}; differences: {'; '.join(diff[:8])}")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        own = model.state_dict()
        theirs = payload["state_dict"]
        missing = sorted(set(own) - set(theirs))[:5]
        unexpected = sorted(set(theirs) - set(own))[:5]
        shapes = [f"{k}: {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in theirs and theirs[k].shape != own[k].shape][:5]
        raise CheckpointError(f"{source} weights do not fit this model (checkpoint model_desc "
                              f"{payload['model_desc']}): missing {missing}, unexpected {unexpected}, "
                              f"shape mismatches {shapes}") from err


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, load its weights, move it to ``device``, eval mode."""
    payload = load_checkpoint(path)
    model = build_model(payload["model_desc"], weights_from=str(path))
    load_weights(model, payload, source=str(path))
    model.to(device).eval()
    return model, payload
