"""From trial records to outputs: results.csv, best.pt/best_config.yaml, statistics, figures, report.html."""

from __future__ import annotations

import csv
import math
import re
from datetime import datetime, timedelta

import numpy as np
import pytest
import yaml
from matplotlib.image import imread
from plotly.offline import get_plotlyjs

from core.reports import TrialRecord, analyse, best_record, epsilon_squared, ranked, write_sweep_outputs
from core.sweep import parse_sweep_config
from core.train import RunResult

CFG = parse_sweep_config({
    "method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
    "parameters": {"act": {"values": ["relu", "gelu"]},
                   "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
                   "epochs": {"value": 2}}})
T0 = datetime(2025, 1, 1, 12, 0, 0)
EMBEDDED_PNG = re.compile(r'<img [^>]*src="data:image/png;base64,')


def make_records(tmp_path, n: int = 8) -> list[TrialRecord]:
    """gelu is 0.2 better than relu; lr has no effect; one failed and one pruned trial."""
    records = []
    for i in range(n):
        act = "gelu" if i % 2 else "relu"
        lr = 10 ** (-4 + 3 * ((i * 0.37) % 1))
        value = (0.6 if act == "gelu" else 0.4) + 0.01 * (i % 3)
        run_dir = tmp_path / "trials" / f"{i}-abc"
        run_dir.mkdir(parents=True)
        (run_dir / "best.pt").write_bytes(f"weights of trial {i}".encode())
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"flat": {"act": act}}))
        state = "FAIL" if i == n - 1 else ("PRUNED" if i == n - 2 else "COMPLETE")
        records.append(TrialRecord(
            number=i, state=state, hyperparameters={"act": act, "lr": lr, "epochs": 2},
            objective=None if state == "FAIL" else value,
            result=None if state == "FAIL" else RunResult(
                best_val_acc=value, best_epoch=2, test_acc=value - 0.05, parameter_count=1000 * (i + 1), flops=5000,
                history=({"epoch": 1, "val_acc": value / 2}, {"epoch": 2, "val_acc": value}),
                best_path=run_dir / "best.pt"),
            started_at=T0 + timedelta(minutes=i), ended_at=T0 + timedelta(minutes=i, seconds=30), run_dir=run_dir,
            error="RuntimeError: boom" if state == "FAIL" else None))
    return records


def test_best_and_ranking_follow_the_goal(tmp_path):
    records = make_records(tmp_path)
    assert best_record(records, CFG).number == 5, "gelu with the largest i % 3 bonus among results: trial 5"
    order = [r.number for r in ranked(records, CFG)]
    assert order[0] == 5 and 7 not in order, f"failed trials are not ranked: {order}"
    minimize = parse_sweep_config({**CFG.raw, "metric": {"name": "val_acc", "goal": "minimize"}})
    assert best_record(records, minimize).number == 0


def test_epsilon_squared_is_one_for_separated_groups_and_zero_for_identical_ones():
    sep = epsilon_squared([np.array([1.0, 1.0, 1.0]), np.array([5.0, 5.0, 5.0])])
    assert sep == pytest.approx(1.0), sep
    same = epsilon_squared([np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])])
    assert same == 0.0, same
    assert epsilon_squared([np.array([1.0, 2.0])]) is None, "one group explains nothing"


def test_analysis_finds_the_parameter_that_matters(tmp_path):
    records = make_records(tmp_path)
    analysis = analyse(records, CFG)
    complete = [r for r in records if r.state == "COMPLETE"]
    assert analysis.n_used == len(complete) == 6
    act = next(e for e in analysis.effects if e.name == "act")
    assert analysis.effects[0].name == "act", "act explains the metric, lr does not"
    gelu = next(g for g in act.groups if g.label == "gelu")
    expected = [r.objective for r in complete if r.hyperparameters["act"] == "gelu"]
    assert gelu.n == len(expected) and math.isclose(gelu.mean, sum(expected) / len(expected)), gelu
    assert act.groups[0].label == "gelu", "groups are ordered best first for a maximised metric"
    assert act.importance > 0.8 and gelu.correlation > 0.9, (act.importance, gelu.correlation)
    texts = [o.text for o in analysis.observations]
    assert any(t.startswith("act: gelu gave the highest mean val_acc") and "3 trials" in t for t in texts), texts
    assert texts[0].startswith("8 trials (6 complete, 1 pruned, 1 fail)"), texts[0]
    assert all(o.support >= 1 for o in analysis.observations)


def test_write_outputs_writes_every_file(tmp_path):
    records = make_records(tmp_path)
    out = write_sweep_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="unit", backend="local", notes=["a note"])
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 8 and [r["number"] for r in rows] == [str(i) for i in range(8)]
    header = list(rows[0])
    assert header[:6] == ["number", "state", "val_acc", "best_epoch", "best_val_acc", "test_acc"], header
    assert {"act", "lr", "epochs", "parameter_count", "flops", "started_at", "ended_at", "seconds"} <= set(header)
    assert rows[7]["state"] == "FAIL" and rows[7]["error"] == "RuntimeError: boom" and rows[7]["val_acc"] == ""
    assert float(rows[1]["seconds"]) == 30.0 and rows[1]["act"] == "gelu"
    assert (tmp_path / "best.pt").read_bytes() == b"weights of trial 5", "best.pt is the best trial's file"
    best_cfg = yaml.safe_load((tmp_path / "best_config.yaml").read_text())
    assert best_cfg["trial"] == 5 and best_cfg["parameters"]["act"] == "gelu"
    assert best_cfg["parameters"] == {"act": "gelu", "lr": records[5].hyperparameters["lr"], "epochs": 2}
    assert best_cfg["resolved_config"] == {"flat": {"act": "gelu"}}
    for name in ("metric_vs_time", "parallel_coordinates", "importance", "optimization_history", "learning_curves",
                 "cost_front"):
        png = out[f"{name}.png"]
        img = imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, f"{name}: {img.shape}"
        assert img[..., :3].std() > 0.01, f"{name}.png is blank"
    html = (tmp_path / "report.html").read_text()
    assert len(EMBEDDED_PNG.findall(html)) == 6, "every static figure is embedded (the front in its section)"
    assert html.count(get_plotlyjs()) == 1, "plotly.js is inlined exactly once"
    assert html.count('<div class="plot">') == 5, "five interactive figures"
    page = html.replace(get_plotlyjs(), "")  # the library names map-tile servers that our figures never use
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the report must not fetch anything"
    assert "Best trial: 5" in html and "act: gelu gave the highest mean val_acc" in html and "a note" in html
    # the failure summary comes first and links the failed trial's folder, relative to the page
    failure = html.index("1 of 8 trials failed")
    assert failure < html.index("Best trial: 5") and "RuntimeError: boom" in html[failure:failure + 600]
    assert 'href="trials/7-abc/"' in html and 'href="best.pt"' in html
    # counts as a person reads them (the format), the exact number in the tooltip
    assert '<span title="6,000">6.0\u00a0K</span>' in html, "trial 5's 6000 parameters"
    assert '<span title="5,000">5.0\u00a0KFLOPs</span>' in html


def test_outputs_without_any_finished_trial_show_no_empty_figures(tmp_path):
    running = [TrialRecord(number=0, state="RUNNING", hyperparameters={"act": "relu", "lr": 1e-3, "epochs": 2},
                           started_at=T0)]
    out = write_sweep_outputs(CFG, running, sweep_dir=tmp_path, sweep_name="empty", backend="local")
    assert "best.pt" not in out and not (tmp_path / "best.pt").exists()
    html = (tmp_path / "report.html").read_text()
    assert EMBEDDED_PNG.findall(html) == [] and '<div class="plot">' not in html and "<script" not in html
    assert list(tmp_path.glob("*.png")) == [], "no placeholder PNGs"
    assert "No result yet" in html and "1 running" in html
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 1


def test_all_failed_sweep_leads_with_the_error(tmp_path):
    failed = [TrialRecord(number=i, state="FAIL", hyperparameters={"act": "relu", "lr": 1e-3, "epochs": 2},
                          started_at=T0, run_dir=tmp_path / "trials" / f"{i}-x",
                          error=f"ValueError: bad thing {i % 2}\nsecond line") for i in range(3)]
    for r in failed:
        r.run_dir.mkdir(parents=True)
    write_sweep_outputs(CFG, failed, sweep_dir=tmp_path, sweep_name="failed", backend="local")
    html = (tmp_path / "report.html").read_text()
    assert html.index("3 of 3 trials failed") < html.index("No result yet") < html.index("All trials")
    assert "First error: trial 0" in html and "ValueError: bad thing 0\nsecond line" in html
    # two distinct first lines: a table of them with their trial counts (0 and 2 share one)
    assert re.search(r"ValueError: bad thing 0</td><td class=\"num\">2</td>", html), "grouped by first line"
    assert EMBEDDED_PNG.findall(html) == [] and list(tmp_path.glob("*.png")) == []


def test_claims_on_fewer_than_three_trials_are_marked_anecdotal(tmp_path):
    """relu 4 trials, gelu 1: the comparison rests on 1 trial (the smaller group), counted by hand."""
    records = [TrialRecord(number=i, state="COMPLETE", objective=v,
                           hyperparameters={"act": a, "lr": 10 ** -(1 + i % 3), "epochs": 2})
               for i, (a, v) in enumerate([("relu", 0.40), ("relu", 0.42), ("relu", 0.41), ("relu", 0.43),
                                           ("gelu", 0.55)])]
    analysis = analyse(records, CFG)
    act = next(o for o in analysis.observations if o.text.startswith("act:"))
    assert act.support == 1 and act.anecdotal, act
    head = analysis.observations[0]
    assert head.text.startswith("5 trials") and not head.anecdotal, "a count is not a claim"
    write_sweep_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="few", backend="local")
    html = (tmp_path / "report.html").read_text()
    anecdotal = html.index("<h3>Anecdotal")
    assert html.index("act: gelu gave the highest mean val_acc") > anecdotal, "shown apart, under Anecdotal"
    assert "anecdotal: 1 trial</span>" in html


def test_a_metric_every_trial_shares_has_no_statistics(tmp_path):
    records = [TrialRecord(number=i, state="COMPLETE", objective=0.2,
                           hyperparameters={"act": ("relu", "gelu")[i % 2], "lr": 10 ** -(1 + i), "epochs": 2})
               for i in range(4)]
    analysis = analyse(records, CFG)
    assert analysis.effects == () and any("All 4 trials scored val_acc = 0.2" in o.text
                                          for o in analysis.observations)
    out = write_sweep_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="flat", backend="local")
    assert "importance.png" not in out and not (tmp_path / "importance.png").exists()


def test_interactive_figures_come_from_a_study_of_the_records(tmp_path):
    """Optuna (the oracle) finds the same best trial in the in-memory study, numbers kept across a gap."""
    from core.reports.interactive import interactive_figures, study_from_records

    records = [r for r in make_records(tmp_path) if r.number != 2]  # a gap in the numbering
    study = study_from_records(records, CFG)
    best = best_record(records, CFG)
    assert study.best_trial.number == best.number and study.best_value == pytest.approx(best.objective)
    assert study.best_trial.params["act"] == best.hyperparameters["act"]
    done = [r for r in records if r.has_result]
    assert sum(t.value is not None for t in study.trials) == len(done), "a pruned trial with a value is a result"
    figures = interactive_figures(records, analyse(records, CFG), CFG)
    assert list(figures) == ["parallel_coordinates", "importance", "metric_vs_time", "optimization_history",
                             "learning_curves"]
    parcoords = figures["parallel_coordinates"].data[0]
    assert parcoords.type == "parcoords" and list(parcoords.line.color) == [r.objective for r in done]
    act, lr, metric = parcoords.dimensions
    assert [act.ticktext[i] for i in act["values"]] == [r.hyperparameters["act"] for r in done]
    assert lr.label == "lr (log)" and list(lr["values"]) == pytest.approx([math.log10(r.hyperparameters["lr"])
                                                                           for r in done])


def test_report_says_how_to_evaluate_the_best_trial_and_then_links_it(tmp_path):
    records = make_records(tmp_path)
    (tmp_path / "trials" / "5-abc" / "config.yaml").write_text(
        yaml.safe_dump({"config": {"data": {"data_dir": "/data/my flowers"}}}))
    write_sweep_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="unit", backend="local")
    html = (tmp_path / "report.html").read_text()
    command = f"python experiments/partA_evaluate.py --checkpoint {tmp_path / 'best.pt'} --data-dir '/data/my flowers'"
    assert command.replace("'", "&#x27;") in html, "the command names the best trial's data folder, quoted"
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "evaluation.html").write_text("<html></html>")
    write_sweep_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="unit", backend="local")
    html = (tmp_path / "report.html").read_text()
    assert '<a href="eval/evaluation.html">evaluation page</a>' in html and "partA_evaluate.py" not in html


def test_wide_tables_transpose_or_wrap():
    """The page kit's rule: too many columns -> transposed if the rows fit as columns, else balanced slices."""
    from core.reports.pages import table

    columns = ["trial", "metric", *[f"p{i}" for i in range(14)]]
    rows = [[str(n), f"0.{n}", *[f"v{n}.{i}" for i in range(14)]] for n in range(20)]
    wrapped = table(columns, rows, key_columns=2)
    assert wrapped.count("<table>") == 2, "16 columns over 12: two tables"
    heads = [re.findall(r"<th(?: [^>]*)?>(.*?)</th>", t) for t in wrapped.split("</table>")[:2]]
    assert [len(h) for h in heads] == [9, 9] and all(h[:2] == ["trial", "metric"] for h in heads), heads
    assert wrapped.count("<td>v19.13</td>") == 1 and wrapped.count("<td>19</td>") == 2, "keys repeat, values do not"
    transposed = table(columns, rows[:5])
    assert transposed.count("<table>") == 1 and transposed.count("<tr>") == len(columns), "one row per column"


def test_a_trend_over_four_trials_is_called_too_few_not_bounded_above_one():
    """1.96/sqrt(n-1) is 1.13 for n=4 (no |ρ| reaches it) and 0.98 for n=5: 5 is the fewest, by hand."""
    records = [TrialRecord(number=i, state="COMPLETE", objective=0.1 * i,
                           hyperparameters={"act": "relu", "lr": 10.0 ** -(4 - i), "epochs": 2}) for i in range(4)]
    lr = next(o.text for o in analyse(records, CFG).observations if o.text.startswith("lr"))
    assert "4 trials are too few to tell a trend" in lr and "5 are the fewest" in lr, lr
    five = records + [TrialRecord(number=4, state="COMPLETE", objective=0.4,
                                  hyperparameters={"act": "relu", "lr": 1.0, "epochs": 2})]
    lr = next(o.text for o in analyse(five, CFG).observations if o.text.startswith("lr"))
    assert "higher values went with higher val_acc" in lr, lr
