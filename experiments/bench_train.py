"""The ``train`` section of ``experiments/benchmark.py``: training throughput of the Part A CNN, ours vs a
notebook loop, and achieved FLOP/s as a fraction of this machine's measured matmul peak.

* **baseline**: the loop an assignment notebook writes: NCHW, fp32, eager, ``torch.optim.Adam``,
  ``zero_grad / forward / loss / backward / step``, with the same per-step bookkeeping as ours
  (``loss.item()``, argmax accuracy).
* **ours**: :func:`core.train.train_one_epoch` with the settings :func:`core.train.fit` resolves from the
  default :class:`core.train.TrainConfig` on this device (CPU: channels_last, fp32; CUDA: channels_last +
  AMP) and the optimizer ``fit`` builds. On a CPU with native bf16 an extra row times the opt-in
  ``--amp bf16``, which the defaults leave off.

Both start from the same weights and train on the same in-memory batches (data loading is the ``data`` and
``sweep`` sections' business); before timing, their first-batch losses must agree (fp32 within 1e-4 relative,
bf16 within 5e-2), so a fast-but-wrong path cannot win.

FLOP convention: :func:`core.counting.count_flops` counts one forward pass (2 x MACs of conv and linear
layers, like ``torch.utils.flop_counter.FlopCounterMode``); a training step is taken as 3 x forward (the
backward pass computes input and weight gradients, each about one forward's worth). Achieved FLOP/s =
images/s x 3 x forward FLOPs per image. The peak is the best of several large fp32 ``torch.mm`` runs at the
same thread count, measured before and after the timings in the same process.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from experiments.bench_common import BenchConfig, Comparison, SectionResult, compare, synchronize

log = logging.getLogger(__name__)

TRAIN_MODELS = {  # name -> make_spec keywords (Part A defaults otherwise: k=3, relu, no BN, dense 256)
    "cnn 32-64-128-256-512 (doubling)": {"filters": 32, "organisation": "double"},
    "cnn 32 everywhere": {"filters": 32, "organisation": "same"},
}
STEP_FLOPS_FACTOR = 3  # training step ~ forward + backward (input grads + weight grads)


def bf16_cpu_supported() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX); emulated bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def measure_matmul_peak(device: torch.device, *, n: int, dtype: torch.dtype = torch.float32,
                        repeats: int = 5) -> float:
    """Best FLOP/s of an ``n x n @ n x n`` matmul (2 n^3 FLOPs) over ``repeats`` runs after one warm-up."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@dataclass
class _Trainer:
    """One model + optimizer + the batches it trains on; ``step()`` trains once over all batches."""

    step: Callable[[], object]
    first_loss: Callable[[], float]


def _baseline_trainer(model: nn.Module, batches: list, device: torch.device) -> _Trainer:
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()

    def step() -> float:
        model.train()
        total, correct = 0.0, 0
        for images, targets in batches:
            images, targets = images.to(device), targets.to(device)
            optimizer.zero_grad()
            logits = model(images)
            loss = criterion(logits, targets)
            loss.backward()
            optimizer.step()
            total += loss.item()
            correct += int((logits.argmax(1) == targets).sum())
        synchronize(device)
        return total

    def first_loss() -> float:
        with torch.no_grad():
            images, targets = batches[0]
            return float(criterion(model(images.to(device)), targets.to(device)))

    return _Trainer(step, first_loss)


def _our_trainer(model: nn.Module, batches: list, device: torch.device, amp: str) -> tuple[_Trainer, dict]:
    from core.devices import resolve_amp, resolve_channels_last
    from core.optim import default_param_groups, make_optimizer
    from core.train import TrainConfig, train_one_epoch

    config = TrainConfig(device=str(device), amp=amp)
    amp_dtype = resolve_amp(config.amp, device)
    channels_last = resolve_channels_last(config.channels_last, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config.optimizer, default_param_groups(model, config.lr, config.weight_decay),
                               lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum,
                               nesterov=config.nesterov)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    if device.type == "cuda":  # our loaders pin host memory on CUDA
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]

    def step() -> object:
        model.train()
        stats = train_one_epoch(model, criterion, optimizer, batches, device, amp_dtype=amp_dtype,
                                channels_last=channels_last, desc="bench train")
        synchronize(device)
        return stats

    def first_loss() -> float:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            images, targets = batches[0]
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return float(criterion(model(images).float(), targets.to(device)))

    settings = {"channels_last": channels_last, "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
                "optimizer": config.optimizer, "lr": config.lr}
    return _Trainer(step, first_loss), settings


def _check_same_loss(name: str, b: float, ours: _Trainer, tolerance: float) -> tuple[float, float]:
    """``b`` = the baseline's loss on the first batch with the initial weights, before any step."""
    o = ours.first_loss()
    if not abs(b - o) <= tolerance * max(1.0, abs(b)):
        raise RuntimeError(f"{name}: ours computes loss {o:.6g} where the baseline computes {b:.6g} on the same "
                           f"weights and batch (tolerance {tolerance:g} relative); refusing to time a wrong path")
    return b, o


def _flop_extra(comp: Comparison, step_flops: int, peaks: dict[str, float], ours_peak_key: str) -> dict:
    base = statistics.median(comp.baseline) * step_flops
    ours = statistics.median(comp.ours) * step_flops
    return {"train_flops_per_image": step_flops, "flops_convention": "3 x forward FLOPs (2 x MACs, conv+linear)",
            "baseline_gflops": base / 1e9, "ours_gflops": ours / 1e9,
            "baseline_fraction_of_fp32_peak": base / peaks["fp32"],
            "ours_fraction_of_fp32_peak": ours / peaks["fp32"],
            **({"ours_fraction_of_bf16_peak": ours / peaks["bf16"]} if ours_peak_key == "bf16" else {})}


def bench_train(cfg: BenchConfig) -> SectionResult:
    """Time one training step per call (``steps`` batches), baseline vs ours, for each model in ``TRAIN_MODELS``."""
    from core.counting import count_flops
    from core.models import build_cnn
    from core.spec import make_spec

    device = torch.device(cfg.device)
    size = cfg.image_size or (32 if cfg.quick else 224)
    batch = cfg.batch_size or (4 if cfg.quick else 32)
    steps = 1  # one optimizer step per timed call: the unit of the target
    mm_n = 512 if cfg.quick else (8192 if device.type == "cuda" else 2048)
    with_bf16 = device.type == "cpu" and bf16_cpu_supported()

    peaks = {"fp32_before": measure_matmul_peak(device, n=mm_n)}
    if with_bf16:
        peaks["bf16"] = measure_matmul_peak(device, n=mm_n, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    comparisons: list[tuple[Comparison, int, str]] = []
    info: dict = {"image_size": size, "batch_size": batch, "steps_per_call": steps, "models": {},
                  "device": str(device), "threads": torch.get_num_threads(), "matmul_n": mm_n}
    for name, knobs in TRAIN_MODELS.items():
        spec = make_spec(image_size=size, num_classes=10, **knobs)
        step_flops = STEP_FLOPS_FACTOR * count_flops(spec)
        batches = [(torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, 10, (batch,), generator=gen))
                   for _ in range(steps)]
        torch.manual_seed(0)
        model = build_cnn(spec)
        variants = [("defaults", "auto", 1e-4)] + ([("--amp bf16", "bf16", 5e-2)] if with_bf16 and "doubling" in name
                                                    else [])
        base = _baseline_trainer(copy.deepcopy(model), batches, device)
        reference_loss = base.first_loss()
        info["models"][name] = {"spec": knobs, "forward_flops_per_image": step_flops // STEP_FLOPS_FACTOR}
        for label, amp, tol in variants:
            ours, settings = _our_trainer(copy.deepcopy(model), batches, device, amp)
            loss_b, loss_o = _check_same_loss(f"{name} ({label})", reference_loss, ours, tol)
            log.info("train: %s, ours %s %s; first-batch loss %.5f vs %.5f", name, label, settings, loss_b, loss_o)
            comp = compare(f"{name}, {size}px batch {batch}: training step", base.step, ours.step,
                           items=batch * steps, repeats=cfg.repeats, warmup=cfg.warmup,
                           baseline_label="NCHW fp32 eager loop",
                           ours_label=f"train_one_epoch {label} ({', '.join(f'{k}={v}' for k, v in settings.items())})")
            comparisons.append((comp, step_flops, "bf16" if amp == "bf16" else "fp32"))
    peaks["fp32_after"] = measure_matmul_peak(device, n=mm_n)
    peaks["fp32"] = max(peaks["fp32_before"], peaks["fp32_after"])  # the best the machine showed in this run
    for comp, step_flops, peak_key in comparisons:
        comp.extra = _flop_extra(comp, step_flops, peaks, peak_key)
    info["matmul_peak_gflops"] = {k: round(v / 1e9, 2) for k, v in peaks.items()}
    return SectionResult([c for c, _, _ in comparisons], info)
