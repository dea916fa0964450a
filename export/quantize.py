"""fp32 ``.onnx`` → INT8 ``.onnx`` by onnxruntime **static** quantization (QDQ format, per-channel weights).

Static, not dynamic: on conv nets dynamic quantization falls back to slow ConvInteger kernels, while static
ranges (from calibration on real images through the model's own preprocessing) let onnxruntime fuse QDQ
pairs into its INT8 kernels. Weights use 7 bits (``reduce_range``) so the fused x86 kernels without VNNI
cannot saturate and compute what the graph says on any CPU. The first two convs and the ``logits`` layer stay
fp32: quantized logits tie near-equal classes, the early convs' few 7-bit weights flipped the most predictions.
``to_onnx.py --quantize int8`` refuses a model whose held-out accuracy drops by more than
``--max-int8-loss`` points (:func:`accuracy_loss`). The measurements behind each choice: docs/export.md.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.data import ImageDecodeError, Preprocessing, load_image_tensor
from export.metadata import read_metadata
from export.onnx_export import INPUT_NAME, check_model, save_model_atomic, set_metadata
from export.ort_session import create_session, session_metadata
from export.predict import ImageItem, predict_images, score

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # entropy: onnxruntime's 128 bins make it minmax
# percentile (onnxruntime's 99.999th, outliers clipped) on 256 images with FP32_CONVS convs in fp32: on flowers5
# every Part A activation and MobileNetV2 lost <= 0.5 points, held out and on test (docs/export.md: the others)
DEFAULT_CALIBRATION, FP32_CONVS = "percentile", 2


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` (duck-typed: ``get_next``) over image files.

    Images are decoded lazily, one batch at a time, with the preprocessing the model was trained with;
    undecodable files are logged and skipped, and an all-unreadable list is an error, not an empty
    calibration.
    """

    def __init__(self, image_paths: Sequence[Path], prep: Preprocessing, *, batch_size: int = 8,
                 input_name: str = INPUT_NAME) -> None:
        if not image_paths:
            raise ValueError("no calibration images given; pass --calibration-images DIR with real images "
                             "from the training distribution")
        if batch_size < 1:
            raise ValueError(f"calibration batch_size must be >= 1, got {batch_size}")
        self.paths = [Path(p) for p in image_paths]
        self.prep, self.batch_size, self.input_name = prep, batch_size, input_name
        self.used = 0
        self.skipped: list[Path] = []
        self._cursor = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = []
        while len(batch) < self.batch_size and self._cursor < len(self.paths):
            path = self.paths[self._cursor]
            self._cursor += 1
            try:
                batch.append(load_image_tensor(path, self.prep).numpy())
            except ImageDecodeError as exc:
                log.warning("calibration: skipping %s", exc)
                self.skipped.append(path)
        if not batch or (self.used and len(batch) < self.batch_size):  # a short last batch is dropped: onnxruntime's
            if self.used == 0:  # histograms (percentile, entropy) stack equal batches (onnxruntime#18792)
                raise ValueError(f"none of the {len(self.paths)} calibration images could be decoded")
            return None
        self.used += len(batch)
        return {self.input_name: np.stack(batch).astype(np.float32)}


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_images: Sequence[Path],
    *,
    method: str = DEFAULT_CALIBRATION,
    per_channel: bool = True,
    batch_size: int = 8,
    reduce_range: bool = True,
) -> tuple[Path, int]:
    """Write the INT8 model to ``out_path``; returns it and the number of calibration images used.

    The preprocessing comes from ``fp32_path``'s metadata, so calibration sees what training saw.
    ``reduce_range=False`` (8-bit weights) only for a target known to have VNNI or a GPU (module docstring).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {list(CALIBRATION_METHODS)}")
    fp32_path = Path(fp32_path)
    meta = read_metadata(fp32_path)  # FileNotFoundError when missing
    if meta.precision != "fp32":
        raise ValueError(f"{fp32_path} is {meta.precision}; INT8 quantization starts from the fp32 export")
    reader = ImageCalibrationReader(calibration_images, meta.preprocessing, batch_size=batch_size)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="inat-cnn-quant-") as tmp:
        prepped = Path(tmp) / "preprocessed.onnx"
        quantized = Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=False)
        keep_fp32 = _name_fp32_layers(prepped)
        quantize_static(
            str(prepped), str(quantized), reader,
            nodes_to_exclude=keep_fp32,
            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        proto = onnx.load(str(quantized))
    set_metadata(proto, replace(meta, precision="int8"))
    check_model(proto, num_classes=len(meta.class_names) or None, image_size=meta.preprocessing.image_size)
    save_model_atomic(proto, out_path)
    log.debug("INT8 model: %s (calibrated on %d images, %d skipped, %s)", out_path, reader.used,
             len(reader.skipped), method)
    return Path(out_path), reader.used


def _name_fp32_layers(model_path: Path) -> list[str]:
    """Names of the first :data:`FP32_CONVS` convs (graph order) and of the nodes writing the graph's outputs
    (naming unnamed ones in the file), to keep them fp32."""
    import onnx

    model = onnx.load(str(model_path))
    outputs = {o.name for o in model.graph.output}
    names, convs = [], [i for i, node in enumerate(model.graph.node) if node.op_type == "Conv"][:FP32_CONVS]
    for i, node in enumerate(model.graph.node):
        if outputs.intersection(node.output) or i in convs:
            if not node.name:
                node.name = f"inat_cnn_fp32_{i}"
            names.append(node.name)
    onnx.save(model, str(model_path))
    return names


@dataclass(frozen=True)
class AccuracyLoss:
    """Top-1 accuracy of the fp32 and INT8 files on the same held-out labelled images."""

    num_images: int
    fp32_acc: float
    int8_acc: float

    @property
    def points(self) -> float:
        """Accuracy lost by INT8, in percentage points (negative: INT8 happened to do better)."""
        return round(100.0 * (self.fp32_acc - self.int8_acc), 9)  # 24.5% - 24.0% is 0.5, not 0.500000000000004


def held_out_split(paths: Sequence[Path], class_names: Sequence[str], holdout_count: int,
                   seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(calibration candidates, held-out labelled images): a seeded third of the images whose folder is a class
    (``<dir>/<Class>/*.jpg``), at most ``holdout_count``, is kept out of calibration to measure accuracy."""
    names = set(class_names)
    labelled = sorted(p for p in paths if p.parent.name in names)
    held = sorted(random.Random(seed).sample(labelled, min(holdout_count, len(labelled) // 3)))
    if not held:
        raise ValueError(f"INT8's accuracy loss is measured on labelled images held out of calibration, and "
                         f"{len(labelled)} of the {len(paths)} calibration images sit in a folder named as a "
                         f"class of the model; pass --calibration-images DIR with DIR/<Class>/*.jpg (at least 3)")
    kept = set(held)
    return [p for p in paths if p not in kept], held


def accuracy_loss(fp32_path: Path, int8_path: Path, images: Sequence[Path], *,
                  threads: int | None = None) -> AccuracyLoss:
    """Top-1 accuracy of both files on ``images``, labelled by their folder names (the model's classes)."""
    items = [ImageItem(Path(p), Path(p).parent.name) for p in images]
    scores = []
    for path in (fp32_path, int8_path):
        session, _ = create_session(path, "cpu", intra_op_threads=threads)
        meta = session_metadata(session, where=str(path))
        scores.append(score(predict_images(session, items, meta, progress=False), meta, len(meta.class_names)))
    return AccuracyLoss(scores[0].num_scored, scores[0].accuracy, scores[1].accuracy)
