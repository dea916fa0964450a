"""core.train.trainer.fit on in-memory loaders: overfitting, early stopping, exact resume, NaN, callbacks."""

from __future__ import annotations

import json
import logging
import math
import re
import types

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import core.train.trainer as train_mod
from core.model import build_cnn, make_spec
from core.train import (
    CheckpointError,
    EarlyStopping,
    EvalStats,
    NonFiniteLossError,
    StopTraining,
    TrainConfig,
    fit,
    format_lr,
    load_checkpoint,
)


def _data(n: int = 32, num_classes: int = 3, size: int = 32, seed: int = 0):
    """Class-coloured noise: class c has channel c bright, so a tiny CNN can learn it."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, size, size, generator=gen) * 0.5
    x[torch.arange(n), y] += 1.0
    return x, y


def _loaders(n: int = 32, batch_size: int = 8, generator: bool = True):
    x, y = _data(n)
    gen = torch.Generator() if generator else None
    return types.SimpleNamespace(
        train=DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=gen),
        val=DataLoader(TensorDataset(*_data(12, seed=1)), batch_size=batch_size))


def _model(seed: int = 0, dropout: float = 0.3):
    torch.manual_seed(seed)
    spec = make_spec(filters=4, organisation="same", image_size=32, num_classes=3, dense_units=16, dropout=dropout,
                     batch_norm=True)
    return build_cnn(spec), {"model_desc": {"kind": "cnn", "spec": spec.to_dict()}, "class_names": ["a", "b", "c"],
                             "preprocessing": {"image_size": 32}}


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "device": "cpu", "seed": 3, **kw})


def test_tiny_model_overfits_a_fixed_batch(tmp_path):
    x, y = _data(8)
    batch = DataLoader(TensorDataset(x, y), batch_size=8)
    loaders = types.SimpleNamespace(train=batch, val=batch)
    model, meta = _model(dropout=0.0)
    result = fit(model, loaders, _cfg(epochs=40, lr=1e-2), run_dir=tmp_path, checkpoint_meta=meta)
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < first / 10, f"loss fell only from {first:.3f} to {last:.3f} (expected a 10x drop)"
    assert result.history[-1]["train_acc"] == 1.0, "a tiny CNN should fit 8 images perfectly"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == list(result.history), "metrics.jsonl differs from the history"


def test_early_stopping_on_a_scripted_metric(tmp_path, monkeypatch):
    scripted = iter([0.30, 0.50, 0.50, 0.40, 0.45, 0.90, 0.95])
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: EvalStats(1.0, next(scripted), 0, 12))
    model, meta = _model()
    result = fit(model, _loaders(), _cfg(epochs=7, patience=3), run_dir=tmp_path, checkpoint_meta=meta)
    assert result.epochs_run == 5, f"patience 3 after a best at epoch 2 stops after epoch 5, ran {result.epochs_run}"
    assert (result.best_epoch, result.best_val_acc) == (2, 0.5), f"best {result.best_epoch}/{result.best_val_acc}"
    assert result.stopped_reason.startswith("early stopping"), f"stopped_reason {result.stopped_reason!r}"
    assert load_checkpoint(result.best_path)["epoch"] == 2, "best.pt must hold the epoch with the best val_acc"
    assert load_checkpoint(result.last_path)["epoch"] == 5, "last.pt must hold the final epoch"


def test_early_stopping_counts_min_delta():
    stopper = EarlyStopping(patience=2, min_delta=0.05)
    flags = [stopper.update(v, e) for e, v in enumerate([0.5, 0.54, 0.56, 0.57], start=1)]
    assert flags == [True, False, True, False], f"improvements by > min_delta only, got {flags}"
    assert not stopper.should_stop, "one bad epoch is below patience 2"
    stopper.update(0.58, 5)
    assert stopper.should_stop and stopper.best_epoch == 3, "two epochs without +0.05 after epoch 3 must stop"


def _interrupt_at(k: int):
    def callback(epoch, stats):
        if epoch == k:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("generator", [True, False], ids=["loader-generator", "global-rng"])
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, generator):
    cfg = _cfg(optimizer="sgd", momentum=0.9, nesterov=True, scheduler="cosine", warmup_epochs=1,
               label_smoothing=0.1, grad_clip=1.0, weight_decay=1e-3)
    model, meta = _model()
    full = fit(model, _loaders(generator=generator), cfg, run_dir=tmp_path / "full", checkpoint_meta=meta)

    model, meta = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, _loaders(generator=generator), cfg, run_dir=tmp_path / "cut", checkpoint_meta=meta,
            on_epoch_end=_interrupt_at(2))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2, "Ctrl-C after epoch 2 must leave last.pt at 2"
    torch.manual_seed(1234)  # a new process: different global RNG, different fresh init
    model, meta = _model(seed=99)
    resumed = fit(model, _loaders(generator=generator), cfg, run_dir=tmp_path / "cut", checkpoint_meta=meta,
                  resume=True)

    strip = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_sec")} for h in full.history]
    got = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_sec")} for h in resumed.history]
    assert got == strip, f"resumed metrics differ from the uninterrupted run:\n{got}\nvs\n{strip}"
    a = load_checkpoint(full.last_path)["state_dict"]
    b = load_checkpoint(resumed.last_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed final weights differ from the uninterrupted run"
    logged = [json.loads(x)["epoch"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4], f"metrics.jsonl epochs after resume: {logged}"


class _UnfreezeHead:
    """A stand-in FinetuneStrategy: head frozen at first, added as a new param group at epoch index 1."""

    def setup(self, model):
        for p in model.classifier.parameters():
            p.requires_grad_(False)

    def param_groups(self, model, lr):
        return [{"params": [p for p in model.features.parameters()], "lr": lr}]

    def on_epoch_start(self, epoch, model, optimizer):
        head = list(model.classifier.parameters())
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if epoch >= 1 and id(head[0]) not in known:
            for p in head:
                p.requires_grad_(True)
            optimizer.add_param_group({"params": head, "lr": optimizer.param_groups[0]["lr"] / 10})


def test_resume_with_a_strategy_that_adds_param_groups(tmp_path):
    cfg = _cfg(epochs=3, optimizer="adamw", scheduler="onecycle")
    model, meta = _model()
    full = fit(model, _loaders(), cfg, run_dir=tmp_path / "full", checkpoint_meta=meta, strategy=_UnfreezeHead())
    model, meta = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, _loaders(), cfg, run_dir=tmp_path / "cut", checkpoint_meta=meta, strategy=_UnfreezeHead(),
            on_epoch_end=_interrupt_at(2))
    model, meta = _model(seed=5)
    resumed = fit(model, _loaders(), cfg, run_dir=tmp_path / "cut", checkpoint_meta=meta, strategy=_UnfreezeHead(),
                  resume=True)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history], \
        "resume with a group-adding strategy diverged from the uninterrupted run"
    groups = load_checkpoint(resumed.last_path)["optimizer"]["param_groups"]
    assert len(groups) == 2, f"the unfrozen head should be a second param group, found {len(groups)}"


def test_resume_refuses_a_different_model_or_config(tmp_path):
    model, meta = _model()
    fit(model, _loaders(), _cfg(epochs=1), run_dir=tmp_path, checkpoint_meta=meta)
    other = make_spec(filters=8, image_size=32, num_classes=3, dense_units=16)
    with pytest.raises(CheckpointError, match="different model"):
        fit(build_cnn(other), _loaders(), _cfg(epochs=2), run_dir=tmp_path, resume=True,
            checkpoint_meta={**meta, "model_desc": {"kind": "cnn", "spec": other.to_dict()}})
    with pytest.raises(CheckpointError, match=r"lr: 0.001 != 0.1"):
        fit(_model()[0], _loaders(), _cfg(epochs=2, lr=0.1), run_dir=tmp_path, checkpoint_meta=meta, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model, meta = _model()

    def poison(epoch, stats):
        with torch.no_grad():
            model.classifier[-1].weight.fill_(math.nan)

    expected = r"epoch 2: loss became nan/inf in 4 of 4 batches.* last good checkpoint .*last.pt \(epoch 1\)"
    with pytest.raises(NonFiniteLossError, match=expected):
        fit(model, _loaders(), _cfg(epochs=3), run_dir=tmp_path, checkpoint_meta=meta, on_epoch_end=poison)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1, f"last.pt should still hold epoch 1, holds {kept['epoch']}"
    assert all(torch.isfinite(t).all() for t in kept["state_dict"].values()), "last.pt holds non-finite weights"


def test_stop_training_ends_the_run_and_resume_respects_it(tmp_path):
    def prune(epoch, stats):
        if epoch == 2:
            raise StopTraining("pruned by optuna at epoch 2")

    model, meta = _model()
    result = fit(model, _loaders(), _cfg(), run_dir=tmp_path, checkpoint_meta=meta, on_epoch_end=prune)
    assert result.epochs_run == 2 and result.stopped_reason == "stopped: pruned by optuna at epoch 2", \
        f"got {result.epochs_run} epochs, reason {result.stopped_reason!r}"
    assert load_checkpoint(tmp_path / "last.pt")["extra"]["stopped_reason"] == result.stopped_reason
    again = fit(_model()[0], _loaders(), _cfg(), run_dir=tmp_path, checkpoint_meta=meta, resume=True)
    assert again.epochs_run == 2, "resuming a stopped run must not train further"


def test_summary_line_tracker_and_extra(tmp_path, caplog):
    logged = []
    tracker = types.SimpleNamespace(log=lambda metrics, step=None: logged.append((step, metrics)))
    model, meta = _model()
    with caplog.at_level(logging.INFO, logger="core.train.trainer"):
        fit(model, _loaders(), _cfg(epochs=2, lr=1e-3), run_dir=tmp_path, tracker=tracker,
            checkpoint_meta={**meta, "extra": {"params": 123}})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2, f"expected one summary line per epoch, got {lines}"
    pattern = (r"epoch 2/2  train_loss \d\.\d{3}  train_acc \d+\.\d%  val_loss \d\.\d{3}  val_acc \d+\.\d%  "
               r"lr 1e-3  \d+ s  \d+ img/s")
    assert re.fullmatch(pattern, lines[1]), f"summary line format: {lines[1]!r}"
    assert [s for s, _ in logged] == [1, 2] and "val_acc" in logged[0][1], f"tracker.log calls: {logged}"
    assert load_checkpoint(tmp_path / "best.pt")["extra"] == {"params": 123}, "checkpoint_meta extra not stored"


def test_bad_config_fails_at_construction():
    with pytest.raises(ValueError, match=r"TrainConfig.optimizer='rmsprop' is invalid; expected one of \['adam'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(optimizer="adam", nesterov=True)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epochs": 2, "learning_rate": 0.1})


@pytest.mark.parametrize(("lr", "text"), [(1e-3, "1e-3"), (2.5e-4, "2.5e-4"), (0.1, "1e-1"), (0.0, "0")])
def test_format_lr(lr, text):
    assert format_lr(lr) == text, f"format_lr({lr}) = {format_lr(lr)!r}, expected {text!r}"


class _OutOfMemoryNet(torch.nn.Module):
    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_cuda_out_of_memory_names_the_batch_size():
    from core.train import train_one_epoch

    model = _OutOfMemoryNet()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    loader = _loaders(batch_size=8).train
    with pytest.raises(train_mod.TrainingError, match=r"CUDA out of memory at batch size 8 .*--batch-size \(e.g. 4\)"):
        train_one_epoch(model, torch.nn.CrossEntropyLoss(), optimizer, loader, torch.device("cpu"))


def test_bf16_autocast_path_trains_on_cpu(tmp_path):
    """bf16 autocast really runs (conv outputs are bfloat16) and really learns: the loss of the trained weights,
    measured in fp32 by the test, is a fraction of the initial weights' loss measured the same way."""
    x, y = _data(8)
    batch = DataLoader(TensorDataset(x, y), batch_size=8)
    model, meta = _model(dropout=0.0)
    with torch.no_grad():
        initial = torch.nn.functional.cross_entropy(model.eval()(x), y).item()
    dtypes = set()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype) if mod.training else None)
    try:
        fit(model, types.SimpleNamespace(train=batch, val=batch), _cfg(epochs=30, lr=1e-2, amp="bf16",
                                                                        channels_last="off"),
            run_dir=tmp_path, checkpoint_meta=meta)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}, f"training convolutions ran in {dtypes}, not under bf16 autocast"
    with torch.no_grad():
        final = torch.nn.functional.cross_entropy(model.eval()(x), y).item()
    assert final < initial / 4, f"bf16 training must learn: fp32 loss {initial:.3f} at init, {final:.3f} after"


def test_monitor_val_loss_keeps_the_lowest_loss_epoch(tmp_path, monkeypatch):
    scripted = iter([(0.6, 1.0), (0.7, 0.9), (0.8, 0.95), (0.5, 0.97)])  # (val_acc, val_loss) per epoch

    def fake_evaluate(*args, **kwargs):
        acc, loss = next(scripted)
        return EvalStats(loss, acc, int(acc * 10), 10)

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    model, meta = _model()
    result = fit(model, _loaders(), _cfg(monitor="val_loss", patience=2), run_dir=tmp_path, checkpoint_meta=meta)
    assert result.best_epoch == 2 and result.best_val_acc == 0.7, "kept: epoch 2, the lowest val_loss (0.9)"
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert result.stopped_reason == "early stopping: val_loss did not improve for 2 epochs (best 0.9000 at epoch 2)"
    assert [h["best_val_acc"] for h in result.history] == [0.6, 0.7, 0.7, 0.7], "the kept epoch's val_acc"
