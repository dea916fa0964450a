"""W&B sweep config parsing: every distribution, inference, nesting, the flat-key rule, bad configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.sweep import load_sweep_config, parse_sweep_config

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def cfg_with(params: dict, **top) -> dict:
    return {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"}, "parameters": params, **top}


def one(spec: dict):
    (p,) = parse_sweep_config(cfg_with({"x": spec})).parameters
    return p


@pytest.mark.parametrize(("spec", "dist"), [
    ({"value": 3}, "constant"),
    ({"values": [1, 2]}, "categorical"),
    ({"values": [1, 2], "probabilities": [0.25, 0.75]}, "categorical_w_probabilities"),
    ({"min": 1, "max": 4}, "int_uniform"),
    ({"min": 0.0, "max": 1}, "uniform"),
    ({"distribution": "uniform", "min": 0, "max": 1}, "uniform"),
    ({"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, "q_uniform"),
    ({"distribution": "log_uniform", "min": -9, "max": -2}, "log_uniform"),
    ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}, "log_uniform_values"),
    ({"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 16}, "q_log_uniform_values"),
    ({"distribution": "normal", "mu": 0.5, "sigma": 0.1}, "normal"),
    ({"distribution": "log_normal", "mu": -3, "sigma": 1}, "log_normal"),
    ({"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 1}, "q_normal"),
])
def test_each_distribution_is_parsed_and_inferred_like_wandb(spec, dist):
    p = one(spec)
    assert p.distribution == dist, f"{spec} should parse as {dist}, got {p.distribution}"


def test_parsed_fields_and_w_and_b_defaults():
    p = one({"distribution": "normal"})
    assert (p.mu, p.sigma) == (0.0, 1.0), f"W&B's normal defaults are mu=0, sigma=1, got {(p.mu, p.sigma)}"
    q = one({"distribution": "q_uniform", "min": 0, "max": 1})
    assert q.q == 1, f"W&B's default q is 1, got {q.q}"
    c = one({"values": [0.5, 0.25], "probabilities": [0.5, 0.5]})
    assert c.values == (0.5, 0.25) and c.probabilities == (0.5, 0.5)


def test_grid_values_follow_wandb():
    assert one({"min": 3, "max": 6}).grid_values() == (3, 4, 5, 6), "int_uniform grid includes both ends"
    q = one({"distribution": "q_uniform", "min": 0, "max": 10, "q": 4})
    assert q.grid_values() == (0, 4, 8), f"W&B's q_uniform grid is arange(min, max, q), got {q.grid_values()}"
    assert one({"values": ["a", [1, 2]]}).grid_values() == ("a", [1, 2])


def test_nested_parameters_flatten_by_the_documented_rule():
    cfg = parse_sweep_config(cfg_with({
        "filters": {"values": [8, 16]},
        "optimizer": {"parameters": {"name": {"values": ["adam", "sgd"]},
                                     "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                                     "weight_decay": {"value": 0.0}}},
    }))
    got = {p.dotted: p.name for p in cfg.parameters}
    assert got == {"filters": "filters", "optimizer.name": "optimizer", "optimizer.lr": "lr",
                   "optimizer.weight_decay": "weight_decay"}, got
    assert {p.name: p.values[0] for p in cfg.parameters if p.is_constant} == {"weight_decay": 0.0}
    nested = {"filters": 8, "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}}  # wandb.config's shape
    assert [p.pick(nested) for p in cfg.parameters] == [8, "adam", 1e-3, 0.0]


def test_wandb_dict_is_the_original_config_with_name_and_cap():
    raw = cfg_with({"a": {"values": [1, 2]}}, run_cap=5)
    cfg = parse_sweep_config(raw)
    out = cfg.to_wandb_dict(name="s1")
    assert out == {**raw, "name": "s1"}, out
    out["parameters"]["a"]["values"].append(3)
    assert cfg.raw["parameters"]["a"]["values"] == [1, 2], "to_wandb_dict must not share state with the config"


@pytest.mark.parametrize(("raw", "quoted"), [
    (cfg_with({"a": {"values": [1]}}, programme="x.py"), "programme"),
    ({"method": "evolution", "parameters": {"a": {"value": 1}}}, "method"),
    (cfg_with({"a": {"distribution": "gamma", "min": 0, "max": 1}}), "parameters.a.distribution"),
    (cfg_with({"a": {"distribution": "uniform", "min": 0}}), "'max' is missing"),
    (cfg_with({"a": {"min": 5, "max": 1}}), "parameters.a: min (5) is greater than max (1)"),
    (cfg_with({"a": {"values": []}}), "parameters.a.values"),
    (cfg_with({"a": {"values": [1, 1]}}), "lists 1 twice"),
    (cfg_with({"a": {"values": [1, 2], "probabilities": [0.5, 0.6]}}), "sum to 1"),
    (cfg_with({"a": {"distribution": "log_uniform_values", "min": 0, "max": 1}}), "parameters.a.min must be > 0"),
    (cfg_with({"a": {"distribution": "normal", "sigma": -1}}), "parameters.a.sigma"),
    (cfg_with({"a": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}), "parameters.a.q"),
    (cfg_with({"a": {"min": 0, "max": 1, "step": 2}}), "'step'"),
    (cfg_with({"o": {"parameters": {"lr": {"min": 1, "max": "big"}}}}), "parameters.o.parameters.lr.max"),
    (cfg_with({"o": {"parameters": {"lr": {"value": 1}}}, "lr": {"value": 2}}), "both map to the trainer key 'lr'"),
    (cfg_with({"a": {"foo": 1}}), "parameters.a: cannot tell how to draw"),
    (cfg_with({"a": {"value": 1}}, metric={"name": "val_acc", "goal": "up"}), "metric.goal"),
    (cfg_with({"a": {"value": 1}}, metric={"name": "val_acc", "direction": "max"}), "direction"),
    ({"method": "bayes", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, "need a metric"),
    ({"method": "grid", "metric": {"name": "val_acc"}, "parameters": {"lr": {"min": 0.1, "max": 1.0}}},
     "parameters.lr: grid search needs discrete parameters"),
    (cfg_with({"a": {"value": 1}}, early_terminate={"type": "hyperband"}), "min_iter"),
    (cfg_with({"a": {"value": 1}}, early_terminate={"type": "median", "min_iter": 1}), "early_terminate.type"),
    (cfg_with({"a": {"value": 1}}, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 1}),
     "early_terminate.eta"),
    (cfg_with({"a": {"value": 1}}, run_cap=0), "run_cap"),
    (cfg_with({}), "parameters must be a non-empty mapping"),
])
def test_bad_configs_raise_value_error_quoting_the_key(raw, quoted):
    with pytest.raises(ValueError) as err:
        parse_sweep_config(raw)
    assert quoted in str(err.value), f"error should quote {quoted!r}: {err.value}"


def test_missing_goal_defaults_to_minimize_like_wandb(caplog):
    cfg = parse_sweep_config({"method": "random", "metric": {"name": "val_acc"}, "parameters": {"a": {"value": 1}}})
    assert cfg.metric.goal == "minimize", "W&B's default goal is minimize"
    assert "goal: maximize" in caplog.text, "an accuracy metric without a goal should warn"
    assert parse_sweep_config(cfg_with({"a": {"value": 1}})).metric.maximize


def test_load_sweep_config_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_sweep_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: random\nparameters: {a: {min: 2, max: 1}}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: parameters.a: min \(2\)"):
        load_sweep_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [random\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep_config(broken)


@pytest.mark.parametrize("name", ["partA_demo.yaml", "partA_sweep.yaml"])
def test_shipped_configs_parse_and_build_valid_trainer_configs(name):
    from core.sweep import partA_program, resolve_budget, validate_trainer_keys

    cfg = load_sweep_config(CONFIGS / name)
    keys = {p.name for p in cfg.parameters}
    assignment = {"filters", "organisation", "kernel_size", "activation", "batch_norm", "dropout", "augment",
                  "dense_units", "lr", "weight_decay", "batch_size", "optimizer", "epochs"}
    assert assignment <= keys, f"{name} misses assignment knobs {sorted(assignment - keys)}"
    assert cfg.metric.name == "val_acc" and cfg.metric.maximize
    assert resolve_budget(cfg, None) == cfg.run_cap and cfg.run_cap >= 1
    validate_trainer_keys(cfg, partA_program())  # raises on any value the trainer would refuse


def test_grid_size_is_the_product_of_grid_values():
    cfg = parse_sweep_config({"method": "grid", "parameters": {
        "a": {"values": [1, 2, 3]}, "b": {"min": 1, "max": 2}, "c": {"value": "x"}}})
    assert cfg.grid_size() == 6
    assert math.prod(len(p.grid_values()) for p in cfg.parameters) == 6
