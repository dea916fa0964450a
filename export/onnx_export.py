"""torch ``nn.Module`` → one self-contained, checked ``.onnx`` file with a dynamic batch axis and our metadata.

The dynamo exporter by default (the maintained path; the batch axis is a checked ``torch.export.Dim``),
TorchScript selectable for models torch.export cannot trace. Pitfalls handled here: torch.export specialises
sizes 0 and 1, so the example batch is >= 2 and the written graph is checked for a symbolic batch; a silent
opset fallback is caught by comparing opsets; weights are inline (no ``.data`` file, < 2 GiB) and the file is
written atomically; opset 20 (native ``Gelu``, which OpenCV's DNN needs); ``check_model(full_check=True)`` on
every file written. Timings and consumers: docs/export.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.runfiles import atomic_writer
from export.metadata import ModelMetadata

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
EXPORTERS = ("dynamo", "torchscript")
SUPPORTED_OPSETS = range(17, 24)  # 17..23: what both exporters emit and onnxruntime >= 1.18 runs
DEFAULT_OPSET = 20  # native Gelu (OpenCV crashes on 18's Erf spelling); onnxruntime >= 1.17 and OpenCV 5 run it
_PROTOBUF_LIMIT = 2**31 - 1


class ExportError(RuntimeError):
    """The exporter produced something we cannot ship (static batch, wrong opset, wrong output shape)."""


@dataclass(frozen=True)
class ExportConfig:
    """How to export; the defaults are what ``export/to_onnx.py`` uses."""

    opset: int = DEFAULT_OPSET
    export_batch: int = 2  # example batch traced; >= 2 because torch.export specialises size-1 dims
    exporter: str = "dynamo"  # "dynamo" (torch.export) | "torchscript" (deprecated tracer)

    def __post_init__(self) -> None:
        if self.opset not in SUPPORTED_OPSETS:
            raise ValueError(f"unsupported opset {self.opset!r}; expected "
                             f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
        if isinstance(self.export_batch, bool) or not isinstance(self.export_batch, int) or self.export_batch < 2:
            raise ValueError(f"export_batch must be an int >= 2 (torch.export specialises a batch of 1 into "
                             f"the graph), got {self.export_batch!r}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"unknown exporter {self.exporter!r}; expected one of {list(EXPORTERS)}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (identifies the checkpoint an ONNX file came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_model_atomic(proto: onnx.ModelProto, out_path: str | Path) -> Path:
    """Write ``proto`` as one self-contained file, atomically (``core.runfiles.atomic_writer``)."""
    out_path = Path(out_path)
    size = proto.ByteSize()
    if size > _PROTOBUF_LIMIT:
        raise ExportError(f"model is {size / 2**30:.2f} GiB, past protobuf's 2 GiB limit for a single "
                          f".onnx file; this exporter writes self-contained files only")
    with atomic_writer(out_path, "wb") as handle:
        handle.write(proto.SerializeToString())  # every tensor inline: no external .data file
    return out_path


def set_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace ``proto.metadata_props`` by ``metadata.to_props()`` (in place)."""
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def check_model(proto: onnx.ModelProto, *, num_classes: int | None, image_size: int) -> None:
    """``onnx.checker`` full check, then our interface: ``images [N,3,S,S]`` → ``logits [N,C]``, N symbolic."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got inputs "
                          f"{[i.name for i in graph.input]} and outputs {[o.name for o in graph.output]}")
    in_dims = _dims(graph.input[0])
    out_dims = _dims(graph.output[0])
    if len(in_dims) != 4 or not isinstance(in_dims[0], str) or in_dims[1:] != [3, image_size, image_size]:
        raise ExportError(f"input {INPUT_NAME!r} has shape {in_dims}; expected [<symbolic batch>, 3, "
                          f"{image_size}, {image_size}] (a number in place of the batch means the batch axis "
                          f"was baked in)")
    if len(out_dims) != 2 or out_dims[0] != in_dims[0]:
        raise ExportError(f"output {OUTPUT_NAME!r} has shape {out_dims}; expected [<symbolic batch>, C] with the "
                          f"input's batch {in_dims[0]!r}")
    if num_classes is not None and out_dims[1] != num_classes:
        raise ExportError(f"output {OUTPUT_NAME!r} has {out_dims[1]} classes but the metadata lists "
                          f"{num_classes} class names")


def _dims(value_info) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def _trace(model: nn.Module, example: torch.Tensor, config: ExportConfig) -> onnx.ModelProto:
    """Run the chosen exporter and return the model proto (nothing written to disk)."""
    import io

    import onnx

    with warnings.catch_warnings():
        # The TorchScript path warns that it is deprecated (see the module docstring for why it is kept).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        if config.exporter == "dynamo":
            batch = torch.export.Dim(BATCH_DIM, min=1)
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, opset_version=config.opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},), external_data=False, optimize=True, verbose=False,
            )
            proto = program.model_proto
            # torch.export may name the symbol "s0" instead of "batch": rename exactly that symbol, never
            # an expression such as "2*s0" on the output (check_model must still see those).
            symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
            for value in (*proto.graph.input, *proto.graph.output):
                dim0 = value.type.tensor_type.shape.dim[0]
                if symbol and dim0.dim_param == symbol:
                    dim0.dim_param = BATCH_DIM
            return proto
        buffer = io.BytesIO()
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=config.opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
        )
        return onnx.load_from_string(buffer.getvalue())


def export_onnx(model: nn.Module, out_path: str | Path, metadata: ModelMetadata,
                config: ExportConfig | None = None) -> tuple[Path, ModelMetadata]:
    """Export ``model`` (eval mode) to ``out_path``; returns the path and the metadata written into it.

    The input size comes from ``metadata.preprocessing.image_size``; the export-time fields of the
    metadata (opset, example batch, time, versions, precision ``fp32``) are filled in here.
    """
    import onnx

    config = config or ExportConfig()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output path must end in .onnx, got {out_path}")
    size = metadata.preprocessing.image_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.randn(config.export_batch, 3, size, size, device=device)
    was_training = model.training
    model.eval()
    try:
        log.info("exporting %s with the %s exporter, opset %d, example batch %d, %dx%d px",
                 type(model).__name__, config.exporter, config.opset, config.export_batch, size, size)
        proto = _trace(model, example, config)
    finally:
        model.train(was_training)
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != config.opset:
        raise ExportError(f"asked for opset {config.opset} but the {config.exporter} exporter produced "
                          f"{opsets}; choose an opset in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    written = replace(
        metadata, precision="fp32", opset=config.opset, export_batch=config.export_batch,
        exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__, onnx_version=onnx.__version__,
    )
    set_metadata(proto, written)
    proto.producer_name, proto.producer_version = "inat-cnn export/onnx_export.py", torch.__version__
    check_model(proto, num_classes=len(written.class_names) or None, image_size=size)
    save_model_atomic(proto, out_path)
    log.debug("wrote %s (%d bytes)", out_path, out_path.stat().st_size)
    return out_path, written


def export_checkpoint_file(checkpoint_path: str | Path, out_path: str | Path,
                           config: ExportConfig | None = None) -> tuple[nn.Module, Path, ModelMetadata]:
    """A checkpoint of ours → ``out_path`` (.onnx), its metadata taken from the checkpoint.

    Returns the rebuilt torch model (eval mode, for parity checks), the written path and its metadata.
    A file that is not one of our checkpoints raises ``core.train.checkpoint.CheckpointError``.
    """
    from core.data import Preprocessing
    from core.train import load_model

    checkpoint_path = Path(checkpoint_path)
    model, payload = load_model(checkpoint_path)
    meta = ModelMetadata(class_names=tuple(payload["class_names"]),
                         preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
                         model_desc=payload["model_desc"], source_name=checkpoint_path.name,
                         source_sha256=sha256_file(checkpoint_path))
    path, written = export_onnx(model, out_path, meta, config)
    return model, path, written


def convert_fp16(src_path: str | Path, out_path: str | Path) -> Path:
    """fp32 ``.onnx`` → fp16 weights and compute, fp32 ``images``/``logits`` kept (``keep_io_types``).

    Meant for GPUs (tensor cores); onnxruntime's CPU provider runs it too but gains nothing. The
    converter appends its Cast nodes at the end of the node list, so the graph is re-sorted
    topologically (onnx_ir) before the checker sees it.
    """
    import onnx
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src_path = Path(src_path)
    proto = onnx.load(str(src_path))
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props}, where=str(src_path))
    half = convert_float_to_float16(proto, keep_io_types=True)
    ir_model = onnx_ir.from_proto(half)
    ir_model.graph.sort()
    half = onnx_ir.to_proto(ir_model)
    set_metadata(half, replace(meta, precision="fp16"))
    check_model(half, num_classes=len(meta.class_names) or None, image_size=meta.preprocessing.image_size)
    return save_model_atomic(half, out_path)
