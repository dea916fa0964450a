"""A real SIGTERM at any moment of ``fit`` (mid-batch, mid-validation, mid-checkpoint) stops it at a safe point.

The signal is sent to this process (``os.kill``) from inside the real code path: a forward hook on the
model (training or validation batch) or a wrapper that signals and then calls the real
``save_checkpoint``. The oracle is the uninterrupted run with the same seed: the stopped run's
finished epochs equal its first epochs, ``best.pt``/``last.pt`` load with ``weights_only=True`` and
hold those epochs, and resuming from ``last.pt`` ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import core.train.trainer as train_mod
from core.train import StopRequest, StopRequested, fit, load_checkpoint
from tests.test_train import _cfg, _loaders, _model

CFG = _cfg(lr=0.01)  # val_acc 0.33, 0.33, 0.67, 1.0: best.pt is rewritten at epochs 1, 3 and 4

IGNORED = ("seconds", "images_per_sec")


def _strip(history):
    return [{k: v for k, v in h.items() if k not in IGNORED} for h in history]


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(autouse=True)
def _python_default_handlers():
    """The handlers a plain ``python`` starts with, whatever the parent left: a shell that starts the
    suite in the background (``cmd &``, ``nohup``, some CI runners) hands it SIGINT as SIG_IGN, and then
    Python installs no ``default_int_handler``. Restored afterwards."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


class _SignalInForward:
    """Forward hook: SIGTERM during the ``nth`` forward pass of epoch ``epoch`` in training or eval mode."""

    def __init__(self, epoch_of, epoch: int, training: bool, nth: int = 2):
        self.epoch_of, self.epoch, self.training, self.nth, self.seen = epoch_of, epoch, training, nth, 0

    def __call__(self, module, args, output):
        if module.training == self.training and self.epoch_of() == self.epoch:
            self.seen += 1
            if self.seen == self.nth:
                _sigterm()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test runs (conftest): the same float rounding as the stopped runs
    try:
        model, meta = _model()
        return fit(model, _loaders(), CFG, run_dir=tmp_path_factory.mktemp("full"), checkpoint_meta=meta)
    finally:
        torch.set_num_threads(threads)


def _epochs_logged(run_dir):
    return [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("moment", "finished"), [
    ("train batch, epoch 1", 0), ("train batch, epoch 3", 2), ("validation batch, epoch 2", 1),
    ("best.pt write, epoch 3", 3), ("last.pt write, epoch 4 (the last)", 4)])
def test_sigterm_at_any_moment_stops_at_a_safe_point(tmp_path, monkeypatch, uninterrupted, moment, finished):
    model, meta = _model()
    run_dir = tmp_path / "run"
    progress = {"epoch": 0}
    real_save = train_mod.save_checkpoint

    def counting_log(metrics, step=None):  # the tracker hook fit calls once per finished epoch
        progress["epoch"] = step

    tracker = type("EpochCounter", (), {"log": staticmethod(counting_log)})()
    if moment.startswith(("train", "validation")):
        epoch = int(moment[-1])
        training = moment.startswith("train")  # 4 training batches, 2 validation ones: not in the last one
        model.register_forward_hook(_SignalInForward(lambda: progress["epoch"] + 1, epoch, training=training,
                                                     nth=2 if training else 1))
    else:
        target = "best.pt" if moment.startswith("best") else "last.pt"
        epoch = int(moment.split("epoch ")[1][0])

        def save_then_maybe_signal(path, payload):
            if path.name == target and payload["epoch"] == epoch:
                _sigterm()  # arrives while the checkpoint is being written
            return real_save(path, payload)

        monkeypatch.setattr(train_mod, "save_checkpoint", save_then_maybe_signal)

    stop = StopRequest()
    with stop.on_signals():
        result = fit(model, _loaders(), CFG, run_dir=run_dir, checkpoint_meta=meta, tracker=tracker, stop=stop)
    assert stop.reason == "SIGTERM", f"the handler records the signal, got {stop.reason!r}"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "on_signals must restore the previous handler"

    full = _strip(uninterrupted.history)
    assert _strip(result.history) == full[:finished], f"{moment}: finished epochs must equal the uninterrupted run's"
    if finished < 4:
        assert result.stopped_by == "request" and "SIGTERM" in result.stopped_reason, result.stopped_reason
        assert f"during epoch {finished + 1}" in result.stopped_reason, result.stopped_reason
    else:  # the request came after the last batch: training is complete, the caller sees stop.requested
        assert result.stopped_by is None, result.stopped_reason
    if finished == 0:
        assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()
        return
    assert _epochs_logged(run_dir) == list(range(1, finished + 1))
    best = torch.load(run_dir / "best.pt", weights_only=True)
    last = torch.load(run_dir / "last.pt", weights_only=True)
    best_epoch = max(full[:finished], key=lambda h: h["val_acc"])["epoch"]
    assert best["epoch"] == best_epoch == result.best_epoch, (best["epoch"], best_epoch, result.best_epoch)
    assert last["epoch"] == finished, f"last.pt must hold epoch {finished}, holds {last['epoch']}"
    assert not list(run_dir.glob("*.tmp*")), f"no half-written file: {sorted(p.name for p in run_dir.iterdir())}"

    model2, meta2 = _model(seed=99)
    resumed = fit(model2, _loaders(), CFG, run_dir=run_dir, checkpoint_meta=meta2, resume=True)
    assert _strip(resumed.history) == full, "resuming a stopped run must give the uninterrupted run"
    a = load_checkpoint(uninterrupted.last_path)["state_dict"]
    b = load_checkpoint(resumed.last_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"


def test_the_same_signal_twice_interrupts_at_once_another_one_does_not():
    stop = StopRequest()
    with stop.on_signals():
        _sigterm()
        assert stop.reason == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # online, W&B's stop check follows the agent's SIGTERM with SIGINT
        for _ in range(1000):  # the handler runs between bytecodes
            pass
        assert stop.reason == "SIGTERM", "a second, different signal is the same stop"
        with pytest.raises(KeyboardInterrupt, match="SIGTERM again"):
            _sigterm()
            for _ in range(1000):
                pass
        with pytest.raises(StopRequested, match="SIGTERM"):
            stop.check()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "on_signals restores SIGINT's handler"
