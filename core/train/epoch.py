"""One epoch of training and one pass of evaluation: the inner loops ``core.train.trainer.fit`` runs.

Explicit arguments, like torchvision's reference scripts, so Part B and tests call them directly. A CUDA
out-of-memory error becomes a :class:`TrainingError` naming the batch size; a NaN/inf loss never reaches the
weights (its step is skipped on the device and the epoch ends in :class:`NonFiniteLossError`, so the last
checkpoint stays the last good epoch). Neither loop reads the device back per batch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from core.train.stopping import StopRequest

__all__ = ["EpochStats", "EvalStats", "NonFiniteLossError", "TrainStats", "TrainingError", "evaluate",
           "format_epoch_line", "format_lr", "supports_device_skip", "train_one_epoch"]


class TrainingError(RuntimeError):
    """Training cannot go on (CUDA out of memory, ...); the message says what to change."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; weights were not updated with it."""


@dataclass
class EvalStats:
    loss: float
    acc: float
    correct: int
    total: int


@dataclass
class TrainStats:
    loss: float
    acc: float
    total: int
    seconds: float


@dataclass
class EpochStats:
    epoch: int  # completed epochs, 1-based
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # first parameter group's LR at the start of the epoch
    seconds: float  # train + validation wall time
    images_per_sec: float  # training throughput
    best_val_acc: float  # val_acc of the kept (best, by TrainConfig.monitor) epoch so far

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_lr(lr: float) -> str:
    """``0.001 -> '1e-3'``, ``0.00025 -> '2.5e-4'``."""
    if lr == 0:
        return "0"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def format_epoch_line(s: EpochStats) -> str:
    """The one readable line per epoch."""
    return (f"epoch {s.epoch}/{s.epochs}  train_loss {s.train_loss:.3f}  train_acc {s.train_acc:.1%}  "
            f"val_loss {s.val_loss:.3f}  val_acc {s.val_acc:.1%}  lr {format_lr(s.lr)}  {s.seconds:.0f} s  "
            f"{s.images_per_sec:.0f} img/s")


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool):
    non_blocking = device.type == "cuda"  # async copies from pinned memory
    images = images.to(device, non_blocking=non_blocking)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=non_blocking)


def _oom_error(err: BaseException, images: torch.Tensor) -> TrainingError:
    n = images.shape[0]
    return TrainingError(f"CUDA out of memory at batch size {n} (input {tuple(images.shape)}); lower --batch-size "
                         f"(e.g. {max(1, n // 2)}) or the image size, or use --amp bf16/fp16: {err}")


def progress(loader, desc: str):
    """A progress bar over *one* pass of ``loader``.

    ``tqdm.auto`` calls ``iter()`` on what it wraps in its constructor and again when iterated; on a
    DataLoader with workers each ``iter()`` starts a pass and prefetches from the sampler, so wrapping the
    loader itself drew two epochs' order per epoch (and a resumed run then drew differently). One
    iterator, made here, is one pass.
    """
    return tqdm(iter(loader), total=len(loader), desc=desc, leave=False, disable=None, dynamic_ncols=True)


def supports_device_skip(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step`` can skip itself on the device (fused kernels take ``found_inf``)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _guarded_step(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``found_inf`` (a 0-dim device tensor) is set: decided on the device when the
    optimizer supports it (as ``GradScaler`` does), else by reading the flag back (one host sync)."""
    if supports_device_skip(optimizer):
        optimizer.found_inf = found_inf.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(found_inf):
        optimizer.step()


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader,
                    device: torch.device, *, scheduler=None,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    grad_clip: float | None = None, channels_last: bool = False, desc: str = "train",
                    stop: StopRequest | None = None, mixer=None, ema=None) -> TrainStats:
    """One pass over ``loader``. The caller sets the mode (``model.train()`` + strategy hooks) first.

    Nothing is read back per step: loss and accuracy accumulate on the device, a non-finite loss skips its step
    there (``found_inf``, as ``GradScaler`` does) and the one read-back at the end raises
    :class:`NonFiniteLossError`. ``stop`` is checked before each batch; ``mixer`` gives mixed images and soft
    targets (accuracy stays on the hard labels); ``ema`` folds the weights in after every step.
    """
    device = torch.device(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    skipped = torch.zeros((), dtype=torch.int64, device=device)
    first_skipped = torch.full((), -1, dtype=torch.int64, device=device)
    seen, steps, start = 0, 0, time.perf_counter()
    bar = progress(loader, desc)
    for step, (images, targets) in enumerate(bar):
        if stop is not None:
            stop.check()
        images, targets = _to_device(images, targets, device, channels_last)
        loss_targets = targets
        if mixer is not None:
            images, loss_targets = mixer(images, targets)
        try:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
                loss = criterion(logits, loss_targets)
            found_inf = ~torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: the scaler skips steps whose gradients overflow (a NaN loss does too)
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                _guarded_step(optimizer, found_inf)
            if ema is not None:
                ema.update(model)
        except torch.cuda.OutOfMemoryError as err:
            raise _oom_error(err, images) from err
        if scheduler is not None:
            scheduler.step()
        n = targets.shape[0]
        loss_sum += torch.where(found_inf, 0.0, loss.detach().double()) * n
        correct += (logits.detach().argmax(1) == targets).sum()
        first_skipped = torch.where(found_inf & (first_skipped < 0), step, first_skipped)
        skipped += found_inf
        seen, steps = seen + n, steps + 1
        if not bar.disable and step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", refresh=False)
    if seen == 0:
        raise ValueError(f"the {desc} loader yielded no batches; the split is empty or drop_last ate it")
    bad = int(skipped)  # the epoch's one read-back
    if bad:
        raise NonFiniteLossError(f"loss became nan/inf in {bad} of {steps} batches, first at batch "
                                 f"{int(first_skipped) + 1}/{steps} ({desc}); those steps were skipped, so the "
                                 "weights hold no NaN/inf update. Lower --lr, set --grad-clip, or turn off --amp fp16")
    return TrainStats(float(loss_sum) / seen, int(correct) / seen, seen, time.perf_counter() - start)


def evaluate(model: nn.Module, loader, device: torch.device | str, criterion: nn.Module | None = None, *,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False, desc: str = "eval",
             stop: StopRequest | None = None) -> EvalStats:
    """Mean loss (plain cross-entropy unless ``criterion``) and accuracy over ``loader``; leaves eval mode on.

    ``stop`` is checked before each batch, as in :func:`train_one_epoch`.
    """
    device = torch.device(device)
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.inference_mode():
        for images, targets in progress(loader, desc):
            if stop is not None:
                stop.check()
            images, targets = _to_device(images, targets, device, channels_last)
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)
                    loss = criterion(logits.float(), targets)
            except torch.cuda.OutOfMemoryError as err:
                raise _oom_error(err, images) from err
            n = targets.shape[0]
            total_loss += loss.double() * n
            correct += (logits.argmax(1) == targets).sum()
            seen += n
    if seen == 0:
        raise ValueError(f"the {desc} loader yielded no batches; the split is empty")
    right = int(correct)  # the one read-back
    return EvalStats(float(total_loss) / seen, right / seen, right, seen)
