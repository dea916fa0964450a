"""experiments/benchmark.py end to end (--quick, every section) and the train/sweep helpers' guards.

Speed targets are not asserted here (they belong to the full run on a quiet machine, see
docs/performance.md); this checks that every section runs, reports sane numbers and refuses bad input.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from experiments.bench.common import Comparison, compare, compare_many, write_photo_dataset
from experiments.bench.process import ChildStepper
from experiments.bench.train import _check_same_loss, measure_matmul_peak
from experiments.benchmark import SECTIONS, main

EVERY_SECTION = {"train", "data", "pipeline", "sweep", "infer", "finetune"}  # what "all" runs
REGISTERED = EVERY_SECTION | {"accuracy"}  # accuracy trains whole runs on real photos: by name only


def _positive(value, what: str) -> None:
    assert isinstance(value, (int, float)) and value > 0 and value == value and value != float("inf"), \
        f"{what} should be a positive finite number, got {value!r}"


@pytest.mark.slow
def test_all_quick_writes_every_section_with_sane_numbers(tmp_path, capsys):
    assert set(SECTIONS) == REGISTERED, f"registered sections: {sorted(SECTIONS)}"
    assert main(["all", "--quick", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                 "--out-dir", str(tmp_path)]) == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    report = json.loads(files[0].read_text())
    sections = report["sections"]
    assert set(sections) == EVERY_SECTION, f"the JSON must hold every section: {sorted(sections)}"
    assert list(sections) == ["train", "data", "pipeline", "sweep", "infer", "finetune"], "all: the sections in order"
    for name, section in sections.items():
        _positive(section["peak_rss_mb"], f"{name} peak RSS")
        _positive(section["seconds"], f"{name} seconds")
        assert section["comparisons"], f"{name} has no comparisons"
        for c in section["comparisons"]:
            where = f"{name} / {c['name']}"
            for side in ("baseline", "ours"):
                d = c[side]
                assert len(d["runs"]) >= 1, f"{where} {side}: no timed runs"
                for key in ("median", "min", "max", "seconds_median"):
                    _positive(d[key], f"{where} {side} {key}")
                assert d["min"] <= d["median"] <= d["max"], f"{where} {side}: {d}"
            _positive(c["ratio"], f"{where} ratio")

    train = sections["train"]
    peak = train["info"]["matmul_peak_gflops"]
    rounds = train["info"]["matmul_peak_gflops_per_round"]
    assert all(v > 1 for v in peak.values()) and any(k.startswith("fp32 (") for k in peak), peak
    assert train["info"]["threads"] == 1, "the test fixture runs torch on one thread; the peak must match it"
    names = [c["name"] for c in train["comparisons"]]
    assert any("doubling" in n for n in names) and any("32 everywhere" in n for n in names), names
    assert sum(n.endswith(": defaults") for n in names) == 2, f"one defaults row per model: {names}"
    child = [c for c in train["comparisons"] if "own process" in c["ours"]["label"]]
    if child:  # glibc: ours ran in a child process, whose CPU time the parent cannot see
        assert all(c["cpu_ratio"] is None and c["ours"]["cpu_median"] is None for c in child), child
    # the FLOPs the GFLOP/s rest on, from torch's own counter: the forward pass of each benchmarked model, and the
    # "3 x forward" training-step convention checked against the counted forward + backward
    from torch.utils.flop_counter import FlopCounterMode

    from core.model import build_cnn, make_spec

    size, forward = train["info"]["image_size"], {}
    for name, model_info in train["info"]["models"].items():
        model = build_cnn(make_spec(image_size=size, num_classes=10, **model_info["spec"]))
        with FlopCounterMode(display=False) as fwd:
            out = model(torch.randn(1, 3, size, size))
        with FlopCounterMode(display=False) as step:
            model(torch.randn(1, 3, size, size)).sum().backward()
        forward[name] = fwd.get_total_flops()
        assert model_info["forward_flops_per_image"] == forward[name], (name, model_info, forward[name])
        assert 2.5 * forward[name] < step.get_total_flops() <= 3 * forward[name], "3 x forward ~ a training step"
        del out
    for c in train["comparisons"]:
        _positive(c["ours_gflops"], "ours GFLOP/s")
        model_name = next(n for n in forward if c["name"].startswith(n))
        assert c["train_flops_per_image"] == 3 * forward[model_name], (c["name"], c["train_flops_per_image"])
        expected = c["ours"]["median"] * c["train_flops_per_image"] / 1e9
        assert c["ours_gflops"] == pytest.approx(expected), "GFLOP/s = images/s x training FLOPs per image"
        same_rounds = rounds[f"fp32 ({model_name})"]  # the peak timed in the same rounds (JSON: 0.001 GFLOP/s)
        for side in ("baseline", "ours"):
            runs = c[side]["runs"]
            assert len(runs) == len(same_rounds), f"one peak timing per round of {c['name']}"
            expected = statistics.median(r * c["train_flops_per_image"] / 1e9 / p for r, p in zip(runs, same_rounds))
            assert c[f"{side}_fraction_of_fp32_peak"] == pytest.approx(expected, rel=1e-2), (side, c["name"])

    sweep = sections["sweep"]
    info = sweep["info"]
    images = info["images"]
    assert info["ours_cache_misses_per_sweep"] == [2], f"ours decodes train/ and val/ once per sweep: {info}"
    assert info["ours_images_decoded_per_sweep"] == [images["train"] + images["val"] + images["test"]], info
    assert info["baseline_images_decoded_per_sweep"] > 4 * info["ours_images_decoded_per_sweep"][0], info
    scale = [c for c in sweep["comparisons"] if c["unit"] in ("trials/min", "no-op trials/s")]
    labels = ["SQLite", "PostgreSQL"] if "PostgreSQL" in info["scale_out"]["storages"] else ["SQLite"]
    assert [c["unit"] for c in scale] == ["trials/min", "no-op trials/s"] * len(labels), scale
    assert all(label in c["name"] for c, label in zip(scale[::2], labels)), [c["name"] for c in scale]
    for label in labels:
        _positive(info["scale_out"]["storage_overhead_ms_per_trial"][label]["ours_ms_per_trial"], "overhead")
    units = [c["unit"] for c in sweep["comparisons"] if c not in scale]
    n = units.count("trials/s")
    assert n >= 1 and units == ["trials/s"] * n + ["images/s"] * n, f"sweeps, then their epoch-2+ rows: {units}"
    assert sweep["comparisons"][0]["name"].endswith(": defaults"), "the first row is the trainer's defaults"
    for c in [c for c in sweep["comparisons"] if c not in scale][n:]:
        assert len(c["ours"]["runs"]) == info["trials"] * (info["epochs"] - 1), "one sample per trial and epoch >= 2"

    finetune = sections["finetune"]["info"]
    base_loss, ours_loss = finetune["first_epoch_losses"]
    assert ours_loss == pytest.approx(base_loss, rel=1e-4), "cached features must give the full forward's loss"
    _positive(finetune["cache_build_seconds"], "feature cache build seconds")

    pipeline = sections["pipeline"]["info"]
    assert list(pipeline["datasets"]) == ["demo set"], "without --data-dir the pipeline section uses the demo set"
    for ratio in ("batched_aug_over_noaug", "baseline_aug_over_noaug"):
        _positive(pipeline["datasets"]["demo set"][ratio], ratio)

    assert report["host"]["device"] == "cpu" and report["config"]["device"] == "cpu", report["host"]
    out = capsys.readouterr().out
    assert "device for train/sweep: cpu" in out and "of the fp32 matmul peak" in out and str(files[0]) in out, out


def test_compare_records_seconds_per_call():
    comp = compare("fake", lambda: None, lambda: None, items=8, repeats=3, warmup=0)
    summary = comp.summary()
    for side in ("baseline", "ours"):
        d = summary[side]
        assert d["seconds_min"] <= d["seconds_median"] <= d["seconds_max"], d
        assert d["seconds_median"] == pytest.approx(8 / d["median"]), "seconds per call = items / throughput"
    empty = Comparison("no runs", "b", "o", 1, baseline=[1.0], ours=[2.0])
    assert empty.summary()["ratio"] == 2.0 and empty.summary()["cpu_ratio"] is None


def test_wrong_fast_path_is_refused():
    with pytest.raises(RuntimeError, match="refusing to time a wrong path"):
        _check_same_loss("cnn", 2.0, 2.5, 1e-4)
    assert _check_same_loss("cnn", 2.0, 2.0 + 1e-6, 1e-4) == (2.0, 2.0 + 1e-6)


def test_compare_many_shares_the_baseline_and_rotates_the_order():
    calls = []
    comps = compare_many("fake", lambda: calls.append("b"), {"x": lambda: calls.append("x"),
                                                             "y": lambda: calls.append("y")},
                         items=4, repeats=3, warmup=1)
    assert calls == ["b", "x", "y", "b", "x", "y", "x", "y", "b", "y", "b", "x"], f"warm-up, then rotated: {calls}"
    assert [c.name for c in comps] == ["fake: x", "fake: y"] and [c.ours_label for c in comps] == ["x", "y"]
    assert comps[0].baseline is comps[1].baseline and len(comps[0].baseline) == 3, "one baseline run per round"


def _child_counter(start: int):
    import os

    state = {"n": start}

    def run() -> None:
        state["n"] += 1
        if state["n"] > start + 2:
            raise ValueError(f"third call in pid {os.getpid()}")

    return run, {"pid": os.getpid(), "start": start}


@pytest.mark.slow
def test_child_stepper_runs_in_another_process_and_reports_failures():
    import os

    with ChildStepper(_child_counter, 5) as child:
        assert child.info["start"] == 5 and child.info["pid"] != os.getpid(), child.info
        child()
        child()
        with pytest.raises(RuntimeError, match="child process failed: ValueError: third call"):
            child()


def test_matmul_peak_is_2n3_over_the_best_time(monkeypatch):
    """The real matmuls run; the clock is scripted, so the FLOP/s has a hand-computed value: 2 x 128^3 / 0.25 s."""
    import types

    import experiments.bench.train as bench_train

    ticks = iter([10.0, 10.5, 20.0, 20.25, 30.0, 30.4])  # three timed runs: 0.5 s, 0.25 s, 0.4 s
    monkeypatch.setattr(bench_train, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert measure_matmul_peak(torch.device("cpu"), n=128, repeats=3) == 2 * 128**3 / 0.25 == 16_777_216


def test_photo_dataset_layout_and_errors(tmp_path):
    root = write_photo_dataset(tmp_path / "p", classes=2, train_per_class=2, test_per_class=1, size=(80, 60))
    train = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.jpg"))
    assert train == ["train/class_0/photo_0000.jpg", "train/class_0/photo_0001.jpg",
                     "train/class_1/photo_0000.jpg", "train/class_1/photo_0001.jpg"], train
    assert len(list((root / "val").rglob("*.jpg"))) == 2
    with pytest.raises(ValueError, match="need >= 2 classes"):
        write_photo_dataset(tmp_path / "q", classes=1, train_per_class=2, test_per_class=1)


@pytest.mark.parametrize("argv, message", [
    (["train", "--device", "tpu"], "--device: unknown device 'tpu'"),
    (["accuracy"], "the accuracy section needs --data-dir"),
    (["accuracy", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: no train/ folder"),
])
def test_bad_flags_name_the_problem(argv, message, tmp_path, capsys):
    assert main([*argv, "--out-dir", str(tmp_path)]) == 2, "a bad flag value is bad usage (docs/cli.md)"
    err = capsys.readouterr().err
    assert f"benchmark: error: {message}" in err, err
    assert not list(tmp_path.glob("*.json")), "nothing is written for a bad command line"
