"""core.train.optim (optimizers, per-batch LR schedules), core.devices and core.train.rng."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.devices import resolve_amp, resolve_channels_last, resolve_device
from core.train import (
    LRSchedule,
    capture_rng_state,
    default_param_groups,
    make_optimizer,
    restore_rng_state,
    seed_everything,
)


def _sched(name: str, epochs: int = 10, steps: int = 10, **kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    return opt, LRSchedule(opt, name, epochs=epochs, steps_per_epoch=steps, **kw)


def _lrs(opt, sched, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        sched.step()
    return out


def test_constant_with_linear_warmup():
    opt, sched = _sched("constant", warmup_epochs=1)
    lrs = _lrs(opt, sched, 100)
    assert lrs[:10] == pytest.approx([0.1 * (i + 1) / 11 for i in range(10)]), f"warmup ramp: {lrs[:10]}"
    assert set(lrs[10:]) == {0.1}, "after warmup the constant schedule must hold the base LR"


def test_cosine_ends_near_zero_and_is_monotone_after_warmup():
    opt, sched = _sched("cosine", warmup_epochs=2)
    lrs = _lrs(opt, sched, 100)
    assert lrs[20] == pytest.approx(0.1), "cosine starts at the base LR right after warmup"
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:])), "cosine must not rise after warmup"
    assert lrs[-1] < 1e-4, f"cosine should end near zero, ends at {lrs[-1]}"
    assert lrs[60] == pytest.approx(0.1 * (1 + math.cos(math.pi * 40 / 80)) / 2), "midpoint value"


def test_onecycle_matches_torch_shape():
    opt, sched = _sched("onecycle")
    lrs = _lrs(opt, sched, 100)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, total_steps=101, pct_start=0.3,
                                              anneal_strategy="cos", cycle_momentum=False, three_phase=False)
    ref_lrs = []
    for _ in range(100):
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 30, "peak at 30% of the steps"
    assert lrs[0] == pytest.approx(0.1 / 25), "one-cycle starts at max / 25"
    assert np.allclose(lrs, ref_lrs, rtol=0.05, atol=2e-3), "one-cycle should follow torch's OneCycleLR curve"


def test_step_decays_every_step_size_epochs():
    opt, sched = _sched("step", epochs=9, step_size=3, gamma=0.5)
    lrs = _lrs(opt, sched, 90)
    assert [lrs[i] for i in (0, 29, 30, 59, 60, 89)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025]), lrs


def test_a_group_added_later_joins_the_schedule_and_state_round_trips():
    opt, sched = _sched("cosine")
    _lrs(opt, sched, 50)
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01})
    sched.step()
    factor = sched.multiplier(51)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * factor), "the new group must follow the schedule"
    state = sched.state_dict()
    opt2, sched2 = _sched("cosine")
    opt2.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01})
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups]), "resume LRs"
    with pytest.raises(ValueError, match="scheduler state is for 'cosine'"):
        _sched("step")[1].load_state_dict(state)


def test_unknown_names_and_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown scheduler 'linear'; expected one of \['constant'"):
        _sched("linear")
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'; expected one of \['adam', 'adamw', 'sgd'"):
        make_optimizer("lion", [{"params": [nn.Parameter(torch.zeros(1))]}], lr=0.1)
    with pytest.raises(ValueError, match="warmup_epochs must be in"):
        _sched("cosine", epochs=2, warmup_epochs=2)


def test_param_groups_decay_weights_only():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = default_param_groups(model, 0.1, 0.01)
    assert [p.ndim for p in decay["params"]] == [4, 2], "only conv/linear weights are decayed"
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4, "biases and BN scales: no decay"
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        default_param_groups(model, 0.1, 0.0)


def test_device_amp_and_memory_format_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu, "auto without CUDA must be the CPU"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="amp 'fp16' needs a CUDA device"):
        resolve_amp("fp16", cpu)
    assert resolve_channels_last("off", cpu) is False and resolve_channels_last("on", cpu) is True
    with pytest.raises(ValueError, match="unknown channels_last mode 'yes'"):
        resolve_channels_last("yes", cpu)


def test_rng_snapshot_restores_every_source():
    loader = DataLoader(TensorDataset(torch.arange(20)), batch_size=5, shuffle=True, generator=torch.Generator())
    loaders = type("L", (), {"train": loader})()
    seed_everything(7, loaders)
    state = capture_rng_state(loaders)

    def draw():
        order = [b[0].tolist() for b in loader]
        return random.random(), float(np.random.rand()), float(torch.rand(1)), order

    first = draw()
    restore_rng_state(state, loaders)
    assert draw() == first, "python, numpy, torch and the loader order must all replay after restore"
    seed_everything(7, loaders)
    assert draw() == first, "the same seed must give the same draws"
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(-1)


def test_plateau_decays_after_patience_like_torchs_reduce_lr_on_plateau():
    losses = [1.0, 0.9, 0.95, 0.91, 0.92, 0.5, 0.6, 0.6, 0.6, 0.6, 0.7]
    opt, sched = _sched("plateau", epochs=len(losses), steps=2, gamma=0.5, patience=2)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", factor=0.5, patience=2)
    for loss in losses:
        sched.step()
        sched.step()  # two batches per epoch: the LR holds within an epoch
        sched.observe(loss)
        ref.step(loss)
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"]), \
            f"after val_loss {loss}: {opt.param_groups[0]['lr']} vs torch's {ref_opt.param_groups[0]['lr']}"
    assert sched.reductions == 2, f"two plateaus in {losses}"
    state = sched.state_dict()
    opt2, again = _sched("plateau", epochs=len(losses), steps=2, gamma=0.5, patience=2)
    again.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) and again.best == sched.best


def test_observe_is_ignored_by_per_batch_schedules():
    opt, sched = _sched("cosine")
    sched.observe(5.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and "reductions" not in sched.state_dict()
