"""core.train.epoch without per-step host syncs: device-side accumulation, the device-side NaN skip, compile.

Oracles: the number of read-backs is counted on torch's own conversion methods (a per-step sync would make it
grow with the number of batches); a skipped step must leave exactly the weights of a run that never saw that
batch (trained by the same torch optimizer); compiled training must match eager training.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

from core.model import build_cnn, make_spec
from core.train import (
    NonFiniteLossError,
    TrainConfig,
    default_param_groups,
    evaluate,
    fit,
    make_optimizer,
    supports_device_skip,
    train_one_epoch,
)

READ_BACKS = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy", "__index__")


def _batches(n: int, size: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, size, size, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def _model(seed: int = 0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return build_cnn(make_spec(filters=4, image_size=32, num_classes=3, dense_units=8, batch_norm=batch_norm,
                               dropout=0.0))


@pytest.fixture
def read_backs(monkeypatch):
    """Counts every device-to-host read of a tensor value (the calls that make the host wait for the device)."""
    counts = {"n": 0}
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_no_read_back_per_step(read_backs, optimizer):
    def epoch_reads(n_batches: int) -> int:
        model = _model()
        opt = make_optimizer(optimizer, default_param_groups(model, 1e-3, 0.0), lr=1e-3)
        assert supports_device_skip(opt), f"{optimizer} should be built with a fused kernel"
        read_backs["n"] = 0
        train_one_epoch(model, nn.CrossEntropyLoss(), opt, _batches(n_batches), torch.device("cpu"), desc="t")
        evaluate(model, _batches(n_batches, seed=1), "cpu")
        return read_backs["n"]

    few, many = epoch_reads(2), epoch_reads(12)
    assert few == many, f"read-backs grew with the batch count ({few} for 2 batches, {many} for 12): a per-step sync"
    assert many <= 8, f"{many} read-backs for one epoch + one evaluation; expected a handful at the ends"


def _poisoned(batches, index: int):
    out = list(batches)
    x, y = out[index]
    out[index] = (torch.full_like(x, float("nan")), y)
    return out


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "nadam"])
def test_a_nan_step_is_skipped_and_raised_at_the_end_of_the_epoch(optimizer):
    batches = _batches(4)
    model, reference = _model(), _model()
    opt = make_optimizer(optimizer, default_param_groups(model, 1e-2, 1e-3), lr=1e-2, weight_decay=1e-3)
    ref_opt = make_optimizer(optimizer, default_param_groups(reference, 1e-2, 1e-3), lr=1e-2, weight_decay=1e-3)
    with pytest.raises(NonFiniteLossError, match=r"nan/inf in 1 of 4 batches, first at batch 3/4 .*skipped"):
        train_one_epoch(model, nn.CrossEntropyLoss(), opt, _poisoned(batches, 2), torch.device("cpu"), desc="t")
    # the reference never sees the poisoned batch; no dropout, no BatchNorm: nothing else depends on it
    train_one_epoch(reference, nn.CrossEntropyLoss(), ref_opt, [b for i, b in enumerate(batches) if i != 2],
                    torch.device("cpu"), desc="ref")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.isfinite(p).all(), f"{name} holds NaN/inf after a skipped step"
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=f"{name}: the skipped step changed the weights")
    steps = [s.get("step") for s in opt.state.values() if "step" in s]
    assert all(float(s) == 3 for s in steps), f"the optimizer counted the skipped step: {steps}"


def test_fit_with_a_nan_batch_keeps_the_last_good_checkpoint(tmp_path):
    from core.train import load_checkpoint

    model = _model(batch_norm=True)
    spec = model.spec
    poison = {"on": False}

    class Poison:  # once on_epoch_end says so, the third batch is NaN
        def __init__(self, batches):
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __iter__(self):
            return iter(_poisoned(self.batches, 2) if poison["on"] else self.batches)

    loaders = types.SimpleNamespace(train=Poison(_batches(4)), val=_batches(2, seed=1))
    meta = {"model_desc": {"kind": "cnn", "spec": spec.to_dict()}, "class_names": ["a", "b", "c"],
            "preprocessing": {"image_size": 32}}
    with pytest.raises(NonFiniteLossError, match=r"epoch 2: .*1 of 4 batches.*last good checkpoint .*\(epoch 1\)"):
        fit(model, loaders, TrainConfig(epochs=3, device="cpu"), run_dir=tmp_path, checkpoint_meta=meta,
            on_epoch_end=lambda epoch, stats: poison.update(on=True))
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["state_dict"].values())


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    pytest.importorskip("torch._inductor")
    batches, val = _batches(3), _batches(1, seed=1)
    results = {}
    for mode in ("off", "on"):
        model = _model()
        meta = {"model_desc": {"kind": "cnn", "spec": model.spec.to_dict()}, "class_names": ["a", "b", "c"],
                "preprocessing": {"image_size": 32}}
        loaders = types.SimpleNamespace(train=copy.deepcopy(batches), val=val)
        result = fit(model, loaders, TrainConfig(epochs=2, device="cpu", compile=mode, channels_last="off"),
                     run_dir=tmp_path / mode, checkpoint_meta=meta)
        results[mode] = (result.history, model.state_dict())
    for eager, compiled in zip(results["off"][0], results["on"][0]):
        for key in ("train_loss", "val_loss"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4), f"epoch {eager['epoch']} {key}"
    for name, value in results["off"][1].items():
        torch.testing.assert_close(results["on"][1][name], value, atol=1e-4, rtol=1e-4,
                                   msg=f"{name}: compiled training diverged from eager")
    assert not any(k.startswith("_orig_mod") for k in results["on"][1]), "checkpoint keys must not see the wrapper"
