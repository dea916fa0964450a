"""experiments/benchmark.py: the section framework (registry, alternation, stats, JSON) and the data section."""

from __future__ import annotations

import json

import pytest

from experiments import benchmark
from experiments.benchmark import compare, get_args_parser, main


def test_registry_offers_only_implemented_sections():
    choices = get_args_parser()._actions[1].choices
    assert "data" in benchmark.SECTIONS and set(choices) == {*benchmark.SECTIONS, "all"}
    with pytest.raises(ValueError, match="already registered"):
        benchmark.register("data")(lambda cfg: None)
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["nonexistent-section"])


def test_compare_alternates_warms_up_and_summarises():
    calls = []
    result = compare("fake", lambda: calls.append("b"), lambda: calls.append("o"), items=10, repeats=4, warmup=1)
    assert calls == ["b", "o", "b", "o", "o", "b", "b", "o", "o", "b"], f"warm-up then alternating: {calls}"
    summary = result.summary()
    assert len(summary["baseline"]["runs"]) == 4 and len(summary["ours"]["runs"]) == 4
    for side in ("baseline", "ours"):
        d = summary[side]
        assert d["min"] <= d["median"] <= d["max"], d
    assert summary["ratio"] == pytest.approx(summary["ours"]["median"] / summary["baseline"]["median"])


@pytest.mark.slow
def test_data_section_runs_and_writes_json(tmp_path, capsys):
    assert main(["data", "--quick", "--image-size", "32", "--repeats", "2", "--out-dir", str(tmp_path)]) == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    report = json.loads(files[0].read_text())
    section = report["sections"]["data"]
    names = [c["name"] for c in section["comparisons"]]
    assert names == ["epoch, warm cache", "epoch with augmentation", "first epoch (cache build)"], names
    warm = section["comparisons"][0]
    assert warm["ratio"] > 3, f"a warm cached epoch must beat decoding 800x600 JPEGs every epoch: {warm}"
    assert section["peak_rss_mb"] > 50 and section["info"]["image_size"] == 32
    assert report["config"]["repeats"] == 2 and report["host"]["cpus"] >= 1
    out = capsys.readouterr().out
    assert "ratio ours/baseline" in out and str(files[0]) in out, out
