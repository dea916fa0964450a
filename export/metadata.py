"""The metadata an exported ``.onnx`` file carries, so inference needs that file and nothing else.

ONNX ``metadata_props``, not a side-car JSON: a model file is copied, renamed and uploaded on its own, and every
ONNX tool preserves the map (onnxruntime exposes it as ``custom_metadata_map``). Structured values are JSON; the
key ``format`` marks a file as ours, and a "foreign" file needs its preprocessing from the user
(:func:`metadata_from_flags`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import Preprocessing

FORMAT_VERSION = "inat-cnn-onnx/1"
PRECISIONS = ("fp32", "fp16", "int8")
FOREIGN_HINT = "--image-size S [--resize-size R] --mean R G B --std R G B"
_JSON_KEYS = ("class_names", "preprocessing", "model_desc")


class MissingMetadataError(ValueError):
    """An ONNX file without our metadata (exported elsewhere): its preprocessing must be given by hand."""


@dataclass(frozen=True)
class ModelMetadata:
    """What inference needs from an exported model, plus where the model came from.

    ``class_names`` empty means "unknown": labels are the class indices (see :meth:`label`).
    The export-time fields (``opset`` … ``onnx_version``) are filled in by ``export_onnx``.
    """

    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    model_desc: dict[str, Any] = field(default_factory=dict)  # checkpoint's model description
    source_name: str = ""  # file name of the source checkpoint
    source_sha256: str = ""  # its sha256: which training run this file is
    precision: str = "fp32"  # fp32 | fp16 | int8
    opset: int = 0
    export_batch: int = 0  # batch size the graph was traced with (the parity check avoids it)
    exported_at: str = ""  # ISO-8601 UTC
    torch_version: str = ""
    onnx_version: str = ""
    foreign: bool = False  # True: built from command-line flags, the file had no metadata of ours

    def __post_init__(self) -> None:
        if not isinstance(self.preprocessing, Preprocessing):
            raise ValueError(f"preprocessing must be a core.data.preprocess.Preprocessing, got "
                             f"{type(self.preprocessing).__name__}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {list(PRECISIONS)}")
        names = tuple(self.class_names)
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be strings, got {list(names)!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names must be unique, got {list(names)!r}")
        object.__setattr__(self, "class_names", names)

    def label(self, index: int) -> str:
        """Class name for ``index``, or the index itself when names are unknown."""
        if 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` map written into the ``.onnx`` file (all values are strings)."""
        return {
            "format": FORMAT_VERSION,
            "class_names": json.dumps(list(self.class_names)),
            "preprocessing": json.dumps(self.preprocessing.to_dict()),
            "model_desc": json.dumps(self.model_desc, sort_keys=True),
            "source_checkpoint": self.source_name,
            "source_sha256": self.source_sha256,
            "precision": self.precision,
            "opset": str(self.opset),
            "export_batch": str(self.export_batch),
            "exported_at": self.exported_at,
            "torch_version": self.torch_version,
            "onnx_version": self.onnx_version,
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, where: str = "the ONNX file") -> ModelMetadata:
        """Inverse of :meth:`to_props`; :class:`MissingMetadataError` when the file is not ours."""
        fmt = props.get("format")
        if fmt is None:
            raise MissingMetadataError(
                f"{where} has no inat-cnn metadata (it was not written by export/to_onnx.py), so its "
                f"preprocessing is unknown; give it explicitly: {FOREIGN_HINT} "
                f"(class names then default to indices)"
            )
        if fmt != FORMAT_VERSION:
            raise MissingMetadataError(
                f"{where} has metadata format {fmt!r}; this version reads {FORMAT_VERSION!r}. Re-export it "
                f"with export/to_onnx.py, or give the preprocessing explicitly: {FOREIGN_HINT}"
            )
        parsed: dict[str, Any] = {}
        for key in _JSON_KEYS:
            if key not in props:
                raise MissingMetadataError(f"{where}: metadata key {key!r} is missing; re-export the model")
            try:
                parsed[key] = json.loads(props[key])
            except json.JSONDecodeError as exc:
                raise MissingMetadataError(f"{where}: metadata {key!r} is not valid JSON ({exc})") from exc
        return cls(
            class_names=tuple(parsed["class_names"]),
            preprocessing=Preprocessing.from_dict(parsed["preprocessing"]),
            model_desc=parsed["model_desc"],
            source_name=props.get("source_checkpoint", ""),
            source_sha256=props.get("source_sha256", ""),
            precision=props.get("precision", "fp32"),
            opset=_int_prop(props, "opset", where),
            export_batch=_int_prop(props, "export_batch", where),
            exported_at=props.get("exported_at", ""),
            torch_version=props.get("torch_version", ""),
            onnx_version=props.get("onnx_version", ""),
        )


def _int_prop(props: Mapping[str, str], key: str, where: str) -> int:
    raw = props.get(key, "0") or "0"
    try:
        return int(raw)
    except ValueError as exc:
        raise MissingMetadataError(f"{where}: metadata {key!r} should be an integer, got {raw!r}") from exc


def check_model_file(path: Path) -> Path:
    """``path`` if it is a file; else the one error every script gives for a missing, folder or special model path."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an ONNX model; pass the .onnx file inside it (export "
                                "one with export/to_onnx.py)")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file (a FIFO, socket or device); pass an .onnx file written by "
                         "export/to_onnx.py")
    if not path.exists():
        raise FileNotFoundError(f"ONNX model not found: {path}; export one with export/to_onnx.py")
    return path


def read_metadata(onnx_path: str | Path) -> ModelMetadata:
    """Metadata of an ``.onnx`` file on disk (external data files, if any, are not read)."""
    import onnx

    path = check_model_file(Path(onnx_path))
    proto = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props}, where=str(path))


def metadata_from_flags(
    *,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    resize_size: int | None = None,
    class_names: Sequence[str] = (),
    where: str = "the ONNX file",
) -> ModelMetadata:
    """Metadata for a foreign ONNX file from what the user typed; every required flag must be present."""
    missing = [flag for flag, value in (("--image-size", image_size), ("--mean", mean), ("--std", std))
               if value is None]
    if missing:
        raise MissingMetadataError(
            f"{where} has no inat-cnn metadata and {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} "
            f"not given; foreign models need {FOREIGN_HINT}"
        )
    prep = Preprocessing(image_size=image_size, resize_size=resize_size, mean=tuple(mean), std=tuple(std))
    return ModelMetadata(class_names=tuple(class_names), preprocessing=prep, foreign=True)
