"""core.train.memory: the CPU allocator policy fit applies, measured on glibc itself (no fake C library).

The oracle is glibc's own bookkeeping, ``mallinfo2()``: ``hblkhd`` = bytes in mmap'ed blocks, ``arena`` =
bytes of the heap. By default glibc serves a 64 MB ``malloc`` with ``mmap`` (hblkhd grows by 64 MB) and
unmaps it on ``free``; under the policy the same block comes from the heap (hblkhd unchanged) and the heap
keeps it after ``free``. Each check runs in a fresh subprocess so this test process's allocator is untouched.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import core.train.memory as memory

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 64 << 20  # above glibc's largest mmap threshold (32 MB): mmap'ed unless the policy is on

PROBE = """
import ctypes, importlib.util, json, sys
# the module alone (stdlib only): importing the core.train package would load torch for nothing
spec = importlib.util.spec_from_file_location("memory", "MODULE")
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def probe():
    before = libc.mallinfo2()
    block = libc.malloc(BLOCK)
    ctypes.memset(block, 1, BLOCK)
    during = libc.mallinfo2()
    libc.free(block)
    after = libc.mallinfo2()
    return {"mmapped": during.hblkhd - before.hblkhd, "heap_grew": during.arena - before.arena,
            "heap_kept": after.arena - before.arena}

out = {}
for step in sys.argv[1:]:
    if step == "probe":
        out.setdefault("probes", []).append(probe())
    elif step == "apply":
        out.setdefault("applied", []).append(memory.apply_cpu_training_policy())
    elif step == "restore":
        memory.restore_default_allocator()
print(json.dumps(out))
""".replace("BLOCK", str(BLOCK)).replace("MODULE", str(ROOT / "core" / "train" / "memory.py"))

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")


def _run(*steps: str, env: dict[str, str] | None = None) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != memory.ENV_SWITCH}
    environ.update(PYTHONPATH=str(ROOT), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", PROBE, *steps], capture_output=True, text=True, env=environ,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_by_default_glibc_maps_a_big_block_and_unmaps_it():
    (p,) = _run("probe")["probes"]
    assert p["mmapped"] >= BLOCK and p["heap_grew"] < BLOCK, f"glibc's default: a 64 MB block is mmap'ed: {p}"


@pytest.mark.slow
def test_the_policy_serves_big_blocks_from_the_heap_and_keeps_them():
    out = _run("apply", "apply", "probe", "probe")
    assert out["applied"] == [True, True], "applied once, and a second call says it is in force"
    first, second = out["probes"]
    assert first["mmapped"] == 0 and first["heap_grew"] >= BLOCK, f"the block must come from the heap: {first}"
    assert first["heap_kept"] >= BLOCK, f"after free the heap must keep the 64 MB: {first}"
    assert second["heap_grew"] == 0 and second["mmapped"] == 0, f"the next block reuses the kept memory: {second}"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_env_switch_opts_out(value):
    out = _run("apply", "probe", env={memory.ENV_SWITCH: value})
    assert out["applied"] == [False]
    assert out["probes"][0]["mmapped"] >= BLOCK, f"opted out: glibc's default behaviour: {out['probes'][0]}"


@pytest.mark.slow
def test_restoring_the_defaults_maps_big_blocks_again():
    out = _run("apply", "probe", "restore", "probe")
    kept, restored = out["probes"]
    assert kept["mmapped"] == 0 and restored["mmapped"] >= BLOCK, out["probes"]


def test_non_glibc_systems_are_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "glibc", lambda: None)  # the platform check, not the policy, is replaced
    monkeypatch.setitem(memory._state, "applied", False)
    assert memory.apply_cpu_training_policy() is False
    with pytest.raises(RuntimeError, match="needs glibc's mallopt"):
        memory.keep_freed_for_process()


@pytest.mark.slow
def test_fit_applies_the_policy_on_the_cpu(tmp_path):
    """fit in a subprocess, then the 64 MB probe in the same process: served from the heap."""
    script = """
import json, sys, types, torch
from torch.utils.data import DataLoader, TensorDataset
from core.model import build_cnn, make_spec
from core.train import TrainConfig, fit
spec = make_spec(filters=2, image_size=32, num_classes=2, dense_units=4)
data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
loaders = types.SimpleNamespace(train=DataLoader(data, batch_size=4), val=DataLoader(data, batch_size=4))
meta = {"model_desc": {"kind": "cnn", "spec": spec.to_dict()}, "class_names": ["a", "b"],
        "preprocessing": {"image_size": 32}}
fit(build_cnn(spec), loaders, TrainConfig(epochs=1, device="cpu"), run_dir=sys.argv[1], checkpoint_meta=meta)
sys.argv[1:] = ["probe"]
"""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != memory.ENV_SWITCH}
    proc = subprocess.run([sys.executable, "-c", script + PROBE, str(tmp_path)], capture_output=True, text=True,
                          env={**environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (p,) = json.loads(proc.stdout.strip().splitlines()[-1])["probes"]
    assert p["mmapped"] == 0, f"after fit on the CPU a 64 MB block must come from the heap: {p}"
