"""Every numeric flag of every script has its domain checked by argparse (exit 2) before anything runs.

The oracle for "before anything runs" is argparse itself: the refusal is a ``SystemExit(2)`` raised while parsing,
so no script body (and no file write) has started. The inventory test makes a new numeric flag fail until its
domain is written down in ``core.cli.DOMAINS`` (or it is named here as unbounded).
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from core import cli

SCRIPTS = ["experiments.prepare_data", "experiments.partA_count", "experiments.partA_train", "experiments.partA_sweep",
           "experiments.partA_evaluate", "experiments.partB_finetune", "experiments.benchmark", "export.to_onnx",
           "export.infer"]
UNBOUNDED = {"mean", "max_int8_loss"}  # any finite mean; a negative loss limit demands INT8 beat fp32


def _parsers(script: str, monkeypatch) -> list[argparse.ArgumentParser]:
    seen: list[argparse.ArgumentParser] = []
    real = cli.range_check_numbers
    monkeypatch.setattr(cli, "range_check_numbers", lambda p: (seen.append(p), real(p))[1])
    with pytest.raises(SystemExit):
        importlib.import_module(script).main(["--help"])
    subs = [s for p in seen for a in p._actions if isinstance(a, argparse._SubParsersAction)
            for s in a.choices.values()]
    return seen + subs


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_has_a_domain(script, monkeypatch, capsys):
    numeric = {a.dest for p in _parsers(script, monkeypatch) for a in p._actions
               if getattr(a.type, "__name__", None) in ("int", "float") and not a.choices}
    assert numeric, f"{script} should have numeric flags to check"
    missing = sorted(numeric - set(cli.DOMAINS) - UNBOUNDED)
    assert missing == [], f"{script}: add these flags' domains to core.cli.DOMAINS: {missing}"


@pytest.mark.parametrize(("script", "argv", "flag", "domain"), [
    ("experiments.partA_train", ["--epochs", "0"], "--epochs", "[1,inf)"),
    ("experiments.partA_train", ["--dropout", "1"], "--dropout", "[0,1)"),
    ("experiments.partA_train", ["--val-fraction", "0"], "--val-fraction", "(0,1)"),
    ("experiments.partA_train", ["--train-decode-ratio", "4.5"], "--train-decode-ratio", "[1,4]"),
    ("experiments.partA_train", ["--crop-scale", "0.5", "1.5"], "--crop-scale", "(0,1]"),
    ("experiments.partA_sweep", ["--count", "0"], "--count", "[1,inf)"),
    ("experiments.partA_evaluate", ["--per-class", "0"], "--per-class", "[1,inf)"),
    ("experiments.partB_finetune", ["--layer-decay", "0"], "--layer-decay", "(0,1]"),
    ("experiments.partB_finetune", ["--lr", "0"], "--lr", "(0,inf)"),
    ("experiments.benchmark", ["train", "--threads", "0"], "--threads", "[1,inf)"),
    ("experiments.prepare_data", ["--timeout", "0"], "--timeout", "(0,inf)"),
    ("export.infer", ["model.onnx", "--top-k", "0"], "--top-k", "[1,inf)"),
    ("export.to_onnx", ["--min-agreement", "1.01"], "--min-agreement", "[0,1]"),
    ("export.to_onnx", ["--parity-batch-sizes", "1", "0"], "--parity-batch-sizes", "[1,inf)"),
])
def test_a_value_outside_the_domain_is_refused_while_parsing(script, argv, flag, domain, capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(script).main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: " in err and f"expected a value in {domain}" in err, err


@pytest.mark.parametrize(("domain", "inside", "outside"), [
    ("[1,inf)", [1, 10**12], [0, -1]), ("(0,1)", [1e-9, 0.999], [0.0, 1.0]), ("[0,1]", [0.0, 1.0], [-1e-9, 1.5]),
])
def test_bounds_are_open_or_closed_as_written(domain, inside, outside):
    parse = cli._in_range(type(inside[0]), domain)
    assert [parse(str(v)) for v in inside] == inside
    for value in outside:
        with pytest.raises(argparse.ArgumentTypeError, match=r"out of range"):
            parse(str(value))
