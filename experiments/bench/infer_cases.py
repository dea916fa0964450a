"""Cases for the ``infer`` section of ``experiments/benchmark.py``: torch eager, torch channels_last,
onnxruntime fp32 and onnxruntime INT8, at batch 1 and 32, for a Part A CNN and MobileNetV2.

The benchmark script owns timing and reporting; this module builds comparable runners. Each gets the same input
and is checked against torch eager before any timing, so a fast-but-wrong path cannot win; the models are
untrained, so INT8's agreement is only recorded (tests/test_export.py checks a trained one). All runners use the
CPU with the same thread count, the CPU provider forced; on a shared machine use ``OMP_NUM_THREADS=1``
(docs/performance.md).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.bench.common import BenchConfig, SectionResult, compare
from export.metadata import ModelMetadata
from export.onnx_export import export_onnx
from export.ort_session import create_session, run_logits
from export.quantize import quantize_int8

log = logging.getLogger(__name__)

BENCH_MODELS = ("cnn", "mobilenet_v2")


@dataclass(frozen=True)
class Case:
    """One baseline-vs-ours pair; each callable processes ``items`` images per call."""

    name: str
    baseline_label: str
    ours_label: str
    baseline: Callable[[], object]
    ours: Callable[[], object]
    items: int


def _build(name: str, image_size: int) -> torch.nn.Module:
    if name == "cnn":
        from core.model import build_cnn, make_spec

        model = build_cnn(make_spec(filters=32, organisation="double", batch_norm=True, dense_units=256,
                                    image_size=image_size, num_classes=10))
    elif name == "mobilenet_v2":
        import torchvision

        model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    else:
        raise ValueError(f"unknown benchmark model {name!r}; expected one of {list(BENCH_MODELS)}")
    return model.eval()


def _calibration_images(work_dir: Path) -> list[Path]:
    from core.data import IMAGE_EXTENSIONS, ensure_demo_dataset

    root = ensure_demo_dataset(work_dir / "demo", train_per_class=4, val_per_class=1)
    return sorted(p for p in (root / "train").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def _runner(fn: Callable[[torch.Tensor], object], batch: torch.Tensor, calls: int) -> Callable[[], object]:
    def run() -> object:
        out = None
        for _ in range(calls):
            out = fn(batch)
        return out
    return run


def infer_cases(work_dir: Path, *, image_size: int = 224, batch_sizes: Sequence[int] = (1, 32),
                models: Sequence[str] = BENCH_MODELS, quick: bool = False) -> tuple[list[Case], dict]:
    """Export/quantize each model under ``work_dir`` and return the timing cases plus settings to record."""
    from core.data import Preprocessing

    unknown = [m for m in models if m not in BENCH_MODELS]
    if unknown:
        raise ValueError(f"unknown benchmark models {unknown}; expected some of {list(BENCH_MODELS)}")
    prep = Preprocessing(image_size=image_size)
    calibration = _calibration_images(work_dir)
    cases: list[Case] = []
    info: dict = {"image_size": image_size, "batch_sizes": list(batch_sizes), "models": list(models),
                  "calibration_images": len(calibration), "torch_threads": torch.get_num_threads()}
    gen = torch.Generator().manual_seed(0)
    for name in models:
        model = _build(name, image_size)
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        meta = ModelMetadata(class_names=tuple(f"c{i}" for i in range(10)), preprocessing=prep,
                             model_desc={"kind": "benchmark", "arch": name})
        fp32_path, _ = export_onnx(model, work_dir / f"{name}.onnx", meta)
        int8_path, _ = quantize_int8(fp32_path, work_dir / f"{name}.int8.onnx", calibration)
        # Same intra-op thread count as torch, and no busy-waiting onnxruntime threads stealing the cores
        # from the torch run timed next.
        threads = torch.get_num_threads()
        fp32, report = create_session(fp32_path, "cpu", intra_op_threads=threads, allow_spinning=False)
        int8, _ = create_session(int8_path, "cpu", intra_op_threads=threads, allow_spinning=False)
        info[f"{name}_provider"] = report.provider

        def eager(x: torch.Tensor, m=model) -> object:
            with torch.inference_mode():
                return m(x)

        def channels_last(x: torch.Tensor, m=cl_model) -> object:
            with torch.inference_mode():
                return m(x.contiguous(memory_format=torch.channels_last))

        def ort(session) -> Callable[[torch.Tensor], object]:
            return lambda inp: run_logits(session, inp.numpy())

        for b in batch_sizes:
            x = torch.randn(b, 3, image_size, image_size, generator=gen)
            ref = eager(x).numpy()
            for label, out in (("channels_last", channels_last(x).numpy()), ("onnxruntime fp32", ort(fp32)(x))):
                diff = float(np.abs(out - ref).max())
                if diff > 1e-3:
                    raise RuntimeError(f"{name} {label} differs from torch eager by {diff:.3g} at batch {b}")
            agree = float((ort(int8)(x).argmax(1) == ref.argmax(1)).mean())
            info[f"{name}_b{b}_int8_top1_agreement_random_inputs"] = agree
            target_images = (8 if quick else 32) if b == 1 else (b if quick else 2 * b)
            calls = max(1, target_images // b)
            items = calls * b
            base = _runner(eager, x, calls)
            for label, fn in (("torch channels_last", channels_last), ("onnxruntime fp32 (CPU EP)", ort(fp32)),
                              ("onnxruntime INT8 QDQ (CPU EP)", ort(int8))):
                cases.append(Case(f"{name} batch {b}: {label}", "torch eager fp32", label, base,
                                  _runner(fn, x, calls), items))
    return cases, info


def bench_infer(cfg: BenchConfig) -> SectionResult:
    for noisy in ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx"):  # exporter chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    batches = (1, cfg.batch_size) if cfg.batch_size and cfg.batch_size != 1 else (1, 32)
    models = ("cnn",) if cfg.quick else BENCH_MODELS  # quick: skip MobileNetV2's export (~half of all --quick)
    cases, info = infer_cases(cfg.work_dir, image_size=cfg.image_size or (64 if cfg.quick else 224),
                              batch_sizes=batches, models=models, quick=cfg.quick)
    return SectionResult([compare(c.name, c.baseline, c.ours, items=c.items, repeats=cfg.repeats, warmup=cfg.warmup,
                                  baseline_label=c.baseline_label, ours_label=c.ours_label) for c in cases], info)
