"""A real tiny sweep through the CLI: the accuracy–cost front in results.csv and the report, and how the main
job ends (one line per trial on the terminal, the rest in each trial's trial.log, the next commands)."""

from __future__ import annotations

import csv
import re

import pytest
import yaml

from experiments.partA_sweep import main

SIZES = [2, 4, 8]  # filters: cost grows with each, so the front can be computed by hand from the rows
SWEEP = {
    "name": "front", "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
    "parameters": {"image_size": {"value": 32}, "epochs": {"value": 1}, "batch_size": {"value": 8},
                   "filters": {"values": SIZES}, "dense_units": {"value": 8}, "num_workers": {"value": 0}},
}


def hand_front(rows: list[dict]) -> set[int]:
    """Rows sorted by cost (FLOPs and parameters both grow with filters): a trial is on the front when it is
    the cheapest or beats the validation accuracy of every cheaper trial."""
    front, best = set(), -1.0
    for r in sorted(rows, key=lambda r: int(r["flops"])):
        if float(r["val_acc"]) > best:
            front.add(int(r["number"]))
            best = float(r["val_acc"])
    return front


@pytest.mark.slow
def test_front_in_results_and_report_and_the_ending_says_what_next(tiny_imagefolder, tmp_path, capsys):
    config = tmp_path / "front.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    runs = tmp_path / "runs"
    assert main(["--config", str(config), "--data-dir", str(tiny_imagefolder), "--out-dir", str(runs),
                 "--device", "cpu", "--wandb-mode", "offline"]) == 0
    captured = capsys.readouterr()
    sweep = runs / "front"
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 3 and all(r["state"] == "COMPLETE" for r in rows), rows
    by_cost = sorted(rows, key=lambda r: int(r["flops"]))
    assert [int(r["parameter_count"]) for r in by_cost] == sorted(int(r["parameter_count"]) for r in rows), \
        f"more filters cost more FLOPs and more parameters: {rows}"
    expected = hand_front(rows)
    assert {int(r["number"]) for r in rows if r["pareto"] == "True"} == expected, (expected, rows)

    page = (sweep / "report.html").read_text()
    section = page[page.index("Accuracy–cost front"):page.index('id="explore"')]
    listed = {int(n) for n in re.findall(r'<a href="trials/(\d+)-', section)}
    assert listed == expected, f"the report lists the front's trials with links, expected {expected}: {listed}"
    assert (sweep / "cost_front.png").stat().st_size > 5_000

    info = [line for line in captured.err.splitlines() if " INFO " in line]
    assert info == [], f"INFO lines go to the trials' trial.log, not the terminal: {info[:3]}"
    done = [line for line in captured.err.splitlines() if re.match(r"trial \d+ complete: val_acc", line)]
    assert len(done) == 3, f"one line per trial on the terminal: {captured.err}"
    for trial_dir in (sweep / "trials").iterdir():
        log = (trial_dir / "trial.log").read_text()
        assert "INFO core.train.trainer: epoch 1/1" in log and "wandb sync" in log, log

    out = captured.out
    best = yaml.safe_load((sweep / "best_config.yaml").read_text())
    assert f"Best trial {best['trial']}: {sweep}/trials/" in out, out
    assert re.search(r"test accuracy \d+\.\d%", out), out
    assert out.count("wandb sync") == 1 and f"wandb sync {sweep}/trials/*/wandb/offline-run-*" in out, out
    for command in (f"python experiments/partA_evaluate.py --checkpoint {sweep}/best.pt --data-dir {tiny_imagefolder}",
                    f"python experiments/partB_finetune.py --arch mobilenet_v2 --compare --partA-run {sweep} "
                    f"--data-dir {tiny_imagefolder}",
                    f"python export/to_onnx.py --checkpoint {sweep}/best.pt --out {sweep}/model.onnx"):
        assert command in out, f"the ending prints {command!r}:\n{out}"
