"""Training: ``fit`` runs epochs of ``train_one_epoch`` + ``evaluate`` with checkpoints, early stopping, resume.

``fit`` owns ``metrics.jsonl``, ``best.pt`` and ``last.pt`` (all that resuming needs, every RNG included), so a
resumed CPU run ends with the same weights and metrics as an uninterrupted one. W&B is reached only through the
``tracker``. ``EpochStats.epoch`` counts completed epochs (1-based, as printed); a strategy's
``on_epoch_start`` gets the epochs completed before the one starting (0-based).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.devices import resolve_amp, resolve_channels_last, resolve_compile, resolve_device
from core.runfiles import append_jsonl, to_plain, write_jsonl
from core.train.checkpoint import (
    CheckpointError,
    describe_difference,
    load_checkpoint,
    load_weights,
    make_payload,
    save_checkpoint,
)
from core.train.ema import WeightEMA
from core.train.epoch import (
    EpochStats,
    EvalStats,
    NonFiniteLossError,
    TrainingError,
    TrainStats,
    evaluate,
    format_epoch_line,
    format_lr,
    train_one_epoch,
)
from core.train.memory import apply_cpu_training_policy
from core.train.mixing import make_batch_mixer
from core.train.optim import LRSchedule, default_param_groups, make_optimizer
from core.train.recipe import TrainConfig
from core.train.result import RunResult
from core.train.rng import capture_rng_state, restore_rng_state, seed_everything
from core.train.stopping import StopRequest, StopRequested
from core.train.tta import with_tta

__all__ = ["EarlyStopping", "EpochStats", "EvalStats", "RunResult", "NonFiniteLossError", "StopTraining",
           "TrainConfig", "TrainStats", "TrainingError", "check_resumable", "evaluate", "fit", "format_epoch_line",
           "format_lr", "train_one_epoch"]

log = logging.getLogger(__name__)

# TrainConfig fields that may differ between an interrupted run and its resume (the rest must match).
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "min_delta", "device", "amp", "channels_last", "compile"})


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raise from ``on_epoch_end`` to end training after this epoch (e.g. an Optuna prune); the message is kept."""


class EarlyStopping:
    """Stop when the monitored score (higher is better: val_acc, or minus val_loss) has not beaten the best by more
    than ``min_delta`` for ``patience`` epochs; the best epoch is the kept checkpoint."""

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.bad_epochs = -math.inf, 0, 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``epoch``'s metric; True when it is a new best."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


def _check_meta(meta: dict) -> dict:
    required = ("model_desc", "class_names", "preprocessing")
    missing = [k for k in required if k not in meta]
    unknown = sorted(set(meta) - set(required) - {"extra"})
    if missing or unknown:
        raise ValueError(f"checkpoint_meta needs keys {list(required)} (+ optional 'extra'); "
                         f"missing {missing}, unknown {unknown}")
    return meta


def check_resumable(payload: dict, model_desc: dict, config: TrainConfig, source: Path | str) -> None:
    """CheckpointError unless ``payload`` (a ``last.pt``) can be resumed with this model and training config."""
    model_diff = describe_difference(payload["model_desc"], model_desc)
    if model_diff:
        raise CheckpointError(f"cannot resume from {source}: it was saved for a different model "
                              f"(checkpoint model_desc {payload['model_desc']} vs this model's {to_plain(model_desc)}; "
                              f"differences: {'; '.join(model_diff[:8])}); start a new run instead")
    try:  # keys added since the checkpoint was written compare as their defaults
        saved = TrainConfig.from_dict(payload["train_config"]).to_dict()
    except (TypeError, ValueError):
        saved = payload["train_config"]
    diff = [d for d in describe_difference(saved, config.to_dict())
            if d.split(":")[0] not in RESUMABLE_CHANGES]
    if diff:
        raise CheckpointError(f"cannot resume from {source}: its training config differs in {'; '.join(diff)} "
                              f"(only {sorted(RESUMABLE_CHANGES)} may change); start a new run instead")


def check_run_start(run_dir: Path, resume: bool, model_desc: dict | None = None,
                    config: TrainConfig | None = None) -> None:
    """Before a run writes ``run_dir``: a run already there (``last.pt``) continues only with ``resume``
    (FileExistsError otherwise), and only with the same model and training config when they are given."""
    last = Path(run_dir) / "last.pt"
    if last.is_file() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --name")
    if last.is_file() and model_desc is not None and config is not None:
        check_resumable(load_checkpoint(last), model_desc, config, last)


def fit(model: nn.Module, loaders: Any, config: TrainConfig, *, run_dir: Path | str, checkpoint_meta: dict,
        tracker: Any = None, strategy: Any = None, resume: bool = False,
        on_epoch_end: Callable[[int, EpochStats], None] | None = None,
        device: torch.device | None = None, stop: StopRequest | None = None) -> RunResult:
    """Train ``model`` on ``loaders.train``, select on ``loaders.val``; write metrics.jsonl, best.pt, last.pt.

    ``checkpoint_meta``: ``model_desc``, ``class_names``, ``preprocessing`` (+ optional ``extra``).
    ``resume=True`` continues from ``run_dir/last.pt`` when it exists. A NaN/inf loss raises
    :class:`NonFiniteLossError` (the last good epoch's checkpoints stay); a ``stop`` request ends training before
    the next batch with ``stopped_by="request"``. With ``ema_decay`` the EMA is what validation scores and
    ``best.pt`` holds. A ``strategy``'s ``epoch_view`` (head-only training on cached features) is asked only when
    no MixUp/CutMix, EMA or TTA is on.
    """
    meta = _check_meta(checkpoint_meta)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path, metrics_path = run_dir / "best.pt", run_dir / "last.pt", run_dir / "metrics.jsonl"
    device = resolve_device(config.device) if device is None else device
    amp_dtype = resolve_amp(config.amp, device)
    channels_last = resolve_channels_last(config.channels_last, device)
    if device.type == "cpu":
        apply_cpu_training_policy()  # glibc keeps freed activations: no page faults every step (core/train/memory.py)

    saved = None
    if resume and last_path.is_file():
        saved = load_checkpoint(last_path)
        check_resumable(saved, meta["model_desc"], config, last_path)
    elif resume:
        log.info("no %s yet: starting from scratch", last_path)
    if saved is None:
        seed_everything(config.seed, loaders)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if strategy is not None:
        strategy.setup(model)
    if saved is not None:
        load_weights(model, saved, meta["model_desc"], source=str(last_path))
    groups = strategy.param_groups(model, config.lr) if strategy is not None else \
        default_param_groups(model, config.lr, config.weight_decay)
    optimizer = make_optimizer(config.optimizer, groups, lr=config.lr, weight_decay=config.weight_decay,
                               momentum=config.momentum, nesterov=config.nesterov)
    scheduler = LRSchedule(optimizer, config.scheduler, epochs=config.epochs, steps_per_epoch=len(loaders.train),
                           warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
                           patience=config.plateau_patience)
    runner = torch.compile(model) if resolve_compile(config.compile, device) else model  # same parameters
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and amp_dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)  # also takes soft (mixed) targets
    mixer = make_batch_mixer(config.mixup_alpha, config.cutmix_alpha, len(meta["class_names"]))
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay > 0 else None
    eval_model = with_tta(ema.module if ema is not None else runner, config.tta)
    saved_model = ema.module if ema is not None else model  # best.pt holds the weights that were scored
    may_view = strategy is not None and hasattr(strategy, "epoch_view") and mixer is None and ema is None \
        and not config.tta
    early = EarlyStopping(config.patience, config.min_delta)
    history: list[dict[str, Any]] = []
    start_epoch, stopped_reason, stopped_by = 0, None, None

    if saved is not None:
        start_epoch = int(saved["epoch"])
        extra = saved["extra"]
        if strategy is not None:  # replay unfreezing so the optimizer has the groups its saved state refers to
            for epoch_index in range(start_epoch):
                model.train()
                strategy.on_epoch_start(epoch_index, model, optimizer)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        early.load_state_dict(extra["early_stopping"])
        if ema is not None:
            if not extra.get("ema"):
                raise CheckpointError(f"cannot resume from {last_path}: it holds no EMA state for ema_decay "
                                      f"{config.ema_decay}; start a new run instead")
            ema.load_state_dict(extra["ema"])
        history = list(extra["history"])
        stopped_reason, stopped_by = extra.get("stopped_reason"), extra.get("stopped_by")
        write_jsonl(metrics_path, history)  # drop lines an interrupted run wrote after its last checkpoint
        restore_rng_state(extra["rng"], loaders)
        log.info("resumed from %s at epoch %d/%d", last_path, start_epoch, config.epochs)
    elif metrics_path.exists():
        metrics_path.unlink()  # a fresh run in a reused folder starts a fresh log

    def result() -> RunResult:
        kept = next((h for h in history if h["epoch"] == early.best_epoch), None)
        return RunResult(kept["val_acc"] if kept else float("nan"), early.best_epoch, tuple(history),
                         best_path if best_path.is_file() else None, last_path if last_path.is_file() else None,
                         stopped_reason, stopped_by, run_dir=run_dir)

    if stopped_reason is not None or start_epoch >= config.epochs:
        log.info("nothing to resume: %s", stopped_reason or f"all {config.epochs} epochs already ran")
        return result()

    user_extra = to_plain(meta.get("extra", {}))
    epoch = saved_epoch = start_epoch
    try:
        for epoch_index in range(start_epoch, config.epochs):
            epoch = epoch_index + 1
            model.train()
            if strategy is not None:
                strategy.on_epoch_start(epoch_index, model, optimizer)
            lr = optimizer.param_groups[0]["lr"]
            started = time.perf_counter()
            view = strategy.epoch_view(epoch_index, model, loaders, device=device, amp_dtype=amp_dtype) \
                if may_view else None
            net, data, nhwc = (view.module, view, False) if view is not None else (runner, loaders, channels_last)
            train = train_one_epoch(net, criterion, optimizer, data.train, device, scheduler=scheduler,
                                    scaler=scaler, amp_dtype=amp_dtype, grad_clip=config.grad_clip,
                                    channels_last=nhwc, desc=f"epoch {epoch}/{config.epochs}", mixer=mixer,
                                    ema=ema, stop=stop)
            val = evaluate(net if view is not None else eval_model, data.val, device, amp_dtype=amp_dtype,
                           channels_last=nhwc, desc="val", stop=stop)
            scheduler.observe(val.loss)  # "plateau" decays here; the others ignore it
            improved = early.update(val.acc if config.monitor == "val_acc" else -val.loss, epoch)
            kept_acc = val.acc if improved else next(h["val_acc"] for h in history
                                                     if h["epoch"] == early.best_epoch)
            stats = EpochStats(epoch, config.epochs, train.loss, train.acc, val.loss, val.acc, lr,
                               time.perf_counter() - started, train.total / max(train.seconds, 1e-9), kept_acc)
            rng_state = capture_rng_state(loaders)  # the point a resume restarts from
            record = stats.to_dict()
            history.append(record)
            append_jsonl(metrics_path, record)
            if tracker is not None:
                tracker.log({k: v for k, v in record.items() if k != "epochs"}, step=epoch)
            common = dict(model_desc=meta["model_desc"], class_names=meta["class_names"],
                          preprocessing=meta["preprocessing"], train_config=config.to_dict(), epoch=epoch,
                          metrics={"val_acc": val.acc, "val_loss": val.loss, "train_acc": train.acc,
                                   "train_loss": train.loss, "epoch": epoch})
            if improved:
                save_checkpoint(best_path, make_payload(saved_model, **common, extra=user_extra))
            if early.should_stop:
                stopped_by = "early_stopping"
                best = f"{early.best:.1%}" if config.monitor == "val_acc" else f"{-early.best:.4f}"
                stopped_reason = (f"early stopping: {config.monitor} did not improve for {config.patience} epochs "
                                  f"(best {best} at epoch {early.best_epoch})")
            last_extra = {**user_extra, "history": history, "early_stopping": early.state_dict(), "rng": rng_state,
                          "scaler": scaler.state_dict() if scaler is not None else None,
                          "stopped_reason": stopped_reason, "stopped_by": stopped_by,
                          "ema": ema.state_dict() if ema is not None else None}
            last = make_payload(model, **common, optimizer=optimizer, scheduler=scheduler, extra=last_extra)
            save_checkpoint(last_path, last)
            saved_epoch = epoch
            log.info("%s", format_epoch_line(stats))
            if on_epoch_end is not None:
                try:
                    on_epoch_end(epoch, stats)
                except StopTraining as prune:
                    stopped_by = "callback"
                    stopped_reason = f"stopped: {prune}" if str(prune) else "stopped by on_epoch_end"
                    last["extra"].update(stopped_reason=stopped_reason, stopped_by=stopped_by)
                    save_checkpoint(last_path, last)
                restore_rng_state(rng_state, loaders)  # callbacks must not change what the next epoch draws
            if stopped_reason is not None:
                log.info("%s", stopped_reason)
                break
    except NonFiniteLossError as err:
        kept = f"last good checkpoint {last_path} (epoch {saved_epoch})" if saved_epoch else "no checkpoint kept"
        raise NonFiniteLossError(f"epoch {epoch}: {err}; {kept}") from err
    except StopRequested as request:
        kept = (f"epoch{'s 1-' if saved_epoch > 1 else ' '}{saved_epoch} kept" if saved_epoch
                else "no epoch had finished")
        stopped_by, stopped_reason = "request", f"stopped by {request} during epoch {epoch}; {kept}"
        log.info("%s", stopped_reason)
    except KeyboardInterrupt:
        kept = f"{last_path} holds epoch {saved_epoch}" if saved_epoch else "no epoch finished, nothing saved"
        log.warning("interrupted in epoch %d; %s; continue it with resume (--resume)", epoch, kept)
        raise
    return result()
