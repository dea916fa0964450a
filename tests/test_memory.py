"""core.train.memory: the CPU allocator policy fit applies (glibc keeps freed memory), its opt-out and its undo."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import core.train.memory as memory
from core.model import build_cnn, make_spec
from core.train import TrainConfig, fit


class FakeLibc:
    """Records mallopt/malloc_trim calls instead of changing this test process's allocator."""

    def __init__(self):
        self.calls: list[tuple] = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(memory, "glibc", lambda: libc)
    monkeypatch.setitem(memory._state, "applied", False)
    monkeypatch.delenv(memory.ENV_SWITCH, raising=False)
    return libc


def test_policy_sets_mmap_max_zero_and_a_huge_trim_threshold_once(fake_libc):
    assert memory.apply_cpu_training_policy() is True
    assert memory.apply_cpu_training_policy() is True  # idempotent: no second round of calls
    assert fake_libc.calls == [("mallopt", -4, 0), ("mallopt", -1, 2**31 - 1)], fake_libc.calls


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_env_switch_opts_out(fake_libc, monkeypatch, value):
    monkeypatch.setenv(memory.ENV_SWITCH, value)
    assert memory.apply_cpu_training_policy() is False
    assert fake_libc.calls == [], "opted out: glibc must not be touched"


def test_non_glibc_systems_are_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "glibc", lambda: None)
    monkeypatch.setitem(memory._state, "applied", False)
    assert memory.apply_cpu_training_policy() is False
    with pytest.raises(RuntimeError, match="needs glibc's mallopt"):
        memory.keep_freed_for_process()


def test_keep_freed_memory_block_restores_defaults_and_trims(fake_libc):
    with memory.keep_freed_memory():
        assert memory._state["applied"]
    assert not memory._state["applied"]
    assert fake_libc.calls[-3:] == [("mallopt", -1, 64 * 2**20), ("mallopt", -4, 65536), ("malloc_trim", 0)]


def test_fit_applies_the_policy_on_the_cpu(fake_libc, tmp_path):
    torch.manual_seed(0)
    spec = make_spec(filters=2, image_size=32, num_classes=2, dense_units=4)
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    loaders = types.SimpleNamespace(train=DataLoader(data, batch_size=4), val=DataLoader(data, batch_size=4))
    meta = {"model_desc": {"kind": "cnn", "spec": spec.to_dict()}, "class_names": ["a", "b"],
            "preprocessing": {"image_size": 32}}
    fit(build_cnn(spec), loaders, TrainConfig(epochs=1, device="cpu"), run_dir=tmp_path, checkpoint_meta=meta)
    assert ("mallopt", -4, 0) in fake_libc.calls, "fit on the CPU must make glibc keep freed memory"
