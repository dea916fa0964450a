"""The ``train`` section of ``experiments/benchmark.py``: training throughput of the Part A CNN, ours vs a
notebook loop (NCHW, fp32, eager Adam), and achieved FLOP/s as a fraction of this machine's measured matmul peak.

Ours is :func:`core.train.train_one_epoch` with what :func:`core.train.fit` resolves on this device (and, on
the CPU, the opt-in bf16 and the defaults without the allocator policy of :mod:`core.train.memory`). Both
start from the same weights on the same in-memory batches, and their first-batch losses must agree before
timing, so a fast-but-wrong path cannot win. A training step counts as 3 x forward FLOPs; the peak is a large
``torch.mm`` timed in the same interleaved rounds, and a fraction above 100% is reported as a fault.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.train import ENV_SWITCH, glibc, keep_freed_for_process, policy_enabled
from experiments.bench.common import BenchConfig, Comparison, SectionResult, compare_many, synchronize
from experiments.bench.process import ChildStepper

log = logging.getLogger(__name__)

_PLAIN = {"batch_norm": False, "dropout": 0.0, "dense_units": 256}  # as measured: k=3, relu, no BN, dense 256
TRAIN_MODELS = {"cnn 32-64-128-256-512 (doubling)": {"filters": 32, "organisation": "double", **_PLAIN},  # make_spec
                "cnn 32 everywhere": {"filters": 32, "organisation": "same", **_PLAIN}}
STEP_FLOPS_FACTOR = 3  # training step ~ forward + backward (input grads + weight grads)


def bf16_cpu_supported() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX); emulated bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def matmul_step(device: torch.device, n: int, dtype: torch.dtype = torch.float32) -> Callable[[], object]:
    """One ``n x n @ n x n`` matmul (2 n^3 FLOPs) per call, synchronised: a peak to time beside the steps."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return lambda: (torch.mm(a, b), synchronize(device))


def measure_matmul_peak(device: torch.device, *, n: int, dtype: torch.dtype = torch.float32,
                        repeats: int = 5) -> float:
    """Best FLOP/s of :func:`matmul_step` over ``repeats`` runs after one warm-up."""
    step = matmul_step(device, n, dtype)
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@dataclass(frozen=True)
class Variant:
    """One setting of ours to time against the baseline."""

    label: str
    amp: str  # TrainConfig.amp
    tolerance: float  # first-batch loss vs the baseline's, relative
    keep_freed: bool = False  # run in a child process where glibc keeps freed memory (as fit sets it)


def measure_conv_peak(device: torch.device, *, batch: int = 32) -> float:
    """Best FLOP/s of one large 3x3 conv forward (256->512 channels, 14x14, channels_last): a second reference,
    because oneDNN's convolutions can beat MKL's sgemm on some CPUs, which makes "fraction of matmul peak"
    exceed what the matmul shows."""
    conv = nn.Conv2d(256, 512, 3, padding=1).to(device=device, memory_format=torch.channels_last)
    x = torch.randn(batch, 256, 14, 14, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * 512 * 14 * 14 * 256 * 9
    best = float("inf")
    with torch.no_grad():
        conv(x)
        synchronize(device)
        for _ in range(3):
            start = time.perf_counter()
            conv(x)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return flops / best


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
    from core.train import TrainConfig, default_param_groups, make_optimizer, train_one_epoch

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


def _child_trainer(model: nn.Module, batches: list, device: str, amp: str) -> tuple[Callable[[], object], dict]:
    """:class:`ChildStepper` factory: our trainer inside the child, plus what the parent checks before timing."""
    trainer, settings = _our_trainer(model, batches, torch.device(device), amp)
    return trainer.step, {"first_loss": trainer.first_loss(), "settings": settings}


def _check_same_loss(name: str, b: float, o: float, tolerance: float) -> tuple[float, float]:
    """``b`` = the baseline's loss on the first batch with the initial weights, ``o`` = ours', before any step."""
    if not abs(b - o) <= tolerance * max(1.0, abs(b)):
        raise RuntimeError(f"{name}: ours computes loss {o:.6g} where the baseline computes {b:.6g} on the same "
                           f"weights and batch (tolerance {tolerance:g} relative); refusing to time a wrong path")
    return b, o


def _fraction(rates: list[float], step_flops: int, peak: list[float]) -> float:
    """Median over rounds of (step FLOP/s) / (the same round's peak FLOP/s)."""
    return statistics.median(r * step_flops / p for r, p in zip(rates, peak))


def _flop_extra(comp: Comparison, step_flops: int, peaks: dict[str, list[float]], amp: str) -> dict:
    """GFLOP/s of each side and its fraction of the peak timed in the same rounds (``peaks``: FLOP/s per round)."""
    base = statistics.median(comp.baseline) * step_flops
    ours = statistics.median(comp.ours) * step_flops
    extra = {"train_flops_per_image": step_flops, "flops_convention": "3 x forward FLOPs (2 x MACs, conv+linear)",
             "baseline_gflops": base / 1e9, "ours_gflops": ours / 1e9,
             "baseline_fraction_of_fp32_peak": _fraction(comp.baseline, step_flops, peaks["fp32"]),
             "ours_fraction_of_fp32_peak": _fraction(comp.ours, step_flops, peaks["fp32"])}
    if amp == "bf16" and "bf16" in peaks:
        extra["ours_fraction_of_bf16_peak"] = _fraction(comp.ours, step_flops, peaks["bf16"])
    return extra


def _variants(device: torch.device, model_name: str, quick: bool) -> list[Variant]:
    """Ours as ``fit`` runs by default, plus (CPU) the opt-in bf16 (32->512 model) and the defaults without the
    allocator policy, to show what that policy buys (``quick``: for the 32->512 model only).

    On a glibc CPU ``fit`` makes glibc keep freed memory for the whole process (:mod:`core.train.memory`), so the
    defaults run in a child process that has the policy, never in this process, where it would leak into the
    baseline timed next.
    """
    policy = device.type == "cpu" and glibc() is not None and policy_enabled()
    variants = [Variant("defaults", "auto", 1e-4, keep_freed=policy)]
    if device.type != "cpu":
        return variants
    if "doubling" in model_name and bf16_cpu_supported():
        variants.append(Variant("--amp bf16", "bf16", 5e-2, keep_freed=policy))
    if policy and not (quick and "doubling" not in model_name):
        variants.append(Variant(f"defaults, {ENV_SWITCH}=0 (allocator untouched)", "auto", 1e-4))
    return variants


def bench_train(cfg: BenchConfig) -> SectionResult:
    """Time one training step per call, baseline vs each variant of ours, for each model in ``TRAIN_MODELS``."""
    from core.model import build_cnn, count_flops, make_spec

    device = torch.device(cfg.device)
    size = cfg.image_size or (32 if cfg.quick else 224)
    batch = cfg.batch_size or (4 if cfg.quick else 32)
    mm_n = 512 if cfg.quick else (8192 if device.type == "cuda" else 4096)
    peak_steps = {"fp32": matmul_step(device, mm_n)}
    if device.type == "cpu" and bf16_cpu_supported():
        peak_steps["bf16"] = matmul_step(device, mm_n, torch.bfloat16)
    conv_peak = measure_conv_peak(device, batch=4 if cfg.quick else 32)
    peaks: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(0)
    comparisons: list[Comparison] = []
    info: dict = {"image_size": size, "batch_size": batch, "steps_per_call": 1, "models": {}, "device": str(device),
                  "threads": torch.get_num_threads(), "matmul_n": mm_n}
    for name, knobs in TRAIN_MODELS.items():
        spec = make_spec(image_size=size, num_classes=10, **knobs)
        step_flops = STEP_FLOPS_FACTOR * count_flops(spec)
        batches = [(torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, 10, (batch,), generator=gen))]
        torch.manual_seed(0)
        model = build_cnn(spec)
        base = _baseline_trainer(copy.deepcopy(model), batches, device)
        reference_loss = base.first_loss()
        info["models"][name] = {"spec": knobs, "forward_flops_per_image": step_flops // STEP_FLOPS_FACTOR}
        variants = _variants(device, name, cfg.quick)
        with contextlib.ExitStack() as stack:
            steps: dict[str, Callable[[], object]] = {}
            labels: dict[str, str] = {}
            for v in variants:
                if v.keep_freed:
                    child = stack.enter_context(ChildStepper(_child_trainer, copy.deepcopy(model), batches,
                                                             str(device), v.amp, setup=keep_freed_for_process))
                    steps[v.label], loss, settings = child, child.info["first_loss"], child.info["settings"]
                else:
                    ours, settings = _our_trainer(copy.deepcopy(model), batches, device, v.amp)
                    steps[v.label], loss = ours.step, ours.first_loss()
                _check_same_loss(f"{name} ({v.label})", reference_loss, loss, v.tolerance)
                where = ["own process, glibc keeps freed memory"] if v.keep_freed else []
                labels[v.label] = (f"train_one_epoch {v.label} "
                                   f"({', '.join(where + [f'{k}={x}' for k, x in settings.items()])})")
                log.info("train: %s, ours %s; first-batch loss %.5f vs baseline %.5f", name, labels[v.label], loss,
                         reference_loss)
            wanted = ["fp32"] + (["bf16"] if any(v.amp == "bf16" for v in variants) else [])
            steps.update({f"{k} matmul peak": peak_steps[k] for k in wanted})  # timed in the same rounds
            comps = compare_many(f"{name}, {size}px batch {batch}, training step", base.step, steps, items=batch,
                                 repeats=cfg.repeats, warmup=cfg.warmup, baseline_label="NCHW fp32 eager loop")
        peak_comps, comps = comps[len(variants):], comps[:len(variants)]
        round_peaks = {k: [rate / batch * 2 * mm_n**3 for rate in c.ours] for k, c in zip(wanted, peak_comps)}
        for v, comp in zip(variants, comps):
            comp.ours_label = labels[v.label]
            if v.keep_freed:
                comp.ours_cpu = []  # the child's CPU time is invisible to this process
            comp.extra = _flop_extra(comp, step_flops, round_peaks, v.amp)
            comparisons.append(comp)
        peaks.update({f"{k} ({name})": v for k, v in round_peaks.items()})
    info["matmul_peak_gflops"] = {k: round(statistics.median(v) / 1e9, 2) for k, v in peaks.items()}
    info["matmul_peak_gflops_per_round"] = {k: [round(x / 1e9, 3) for x in v] for k, v in peaks.items()}
    info["matmul_peak_gflops"]["conv_fp32"] = round(conv_peak / 1e9, 2)
    return SectionResult(comparisons, info)
