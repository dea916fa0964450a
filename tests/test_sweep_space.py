"""Mapping W&B distributions to Optuna: draws follow W&B's formulas; samplers and pruner are the right ones."""

from __future__ import annotations

import json
import math
import statistics

import optuna
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.sweep import parse_sweep_config
from core.sweep.backends.local import (
    CDF_SUFFIX,
    check_local_support,
    grid_search_space,
    make_pruner,
    make_sampler,
    max_epochs,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def draws(params: dict, n: int = 200, method: str = "random") -> list[dict]:
    cfg = parse_sweep_config({"method": method, "metric": {"name": "val_acc", "goal": "maximize"},
                              "parameters": params})
    study = optuna.create_study(sampler=make_sampler(cfg, seed=1))
    out: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        out.append(suggest(trial, cfg))
        return 0.0

    study.optimize(objective, n_trials=n)  # (GridSampler stops the study itself once the grid is done)
    return out


def test_categorical_values_round_trip_including_lists_and_bools():
    got = draws({"org": {"values": ["same", [8, 16, 16, 32, 32]]}, "bn": {"values": [True, False]}}, n=60)
    orgs = {json.dumps(d["org"]) for d in got}
    assert orgs == {'"same"', "[8, 16, 16, 32, 32]"}, f"both choices, the list as a list: {orgs}"
    assert {d["bn"] for d in got} == {True, False}
    assert all(isinstance(d["org"], (str, list)) for d in got)


def test_constants_are_passed_without_being_searched():
    got = draws({"epochs": {"value": 3}, "a": {"values": [1, 2]}}, n=5)
    assert all(d["epochs"] == 3 for d in got)


def test_log_uniform_bounds_are_exponents_and_values_variant_takes_values():
    got = draws({"a": {"distribution": "log_uniform", "min": math.log(1e-4), "max": math.log(1e-2)},
                 "b": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}})
    for key in ("a", "b"):
        vals = [d[key] for d in got]
        assert 1e-4 * (1 - 1e-9) <= min(vals) and max(vals) <= 1e-2 * (1 + 1e-9), f"{key} outside [1e-4, 1e-2]"
        below = sum(v < 1e-3 for v in vals) / len(vals)
        assert 0.35 < below < 0.65, f"{key}: log-uniform puts half the mass below the geometric mid, got {below:.2f}"


def test_quantized_draws_are_multiples_of_q_and_ints_for_an_int_q():
    got = draws({"bs": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
                 "w": {"distribution": "q_log_uniform_values", "min": 0.01, "max": 1.0, "q": 0.01}})
    for d in got:
        assert isinstance(d["bs"], int) and d["bs"] % 16 == 0, f"q=16 (int) must give multiples of 16: {d['bs']}"
        assert abs(d["w"] / 0.01 - round(d["w"] / 0.01)) < 1e-6, f"q=0.01 must give multiples of 0.01: {d['w']}"


def test_normal_and_log_normal_match_their_moments():
    got = draws({"m": {"distribution": "normal", "mu": 0.9, "sigma": 0.02},
                 "l": {"distribution": "log_normal", "mu": -3.0, "sigma": 0.5}}, n=400)
    m = [d["m"] for d in got]
    logs = [math.log(d["l"]) for d in got]
    assert abs(statistics.mean(m) - 0.9) < 0.006, f"normal mean {statistics.mean(m):.4f} != 0.9"
    assert abs(statistics.stdev(m) - 0.02) < 0.006, f"normal sd {statistics.stdev(m):.4f} != 0.02"
    assert abs(statistics.mean(logs) + 3.0) < 0.15, f"log_normal: mean of log {statistics.mean(logs):.3f} != -3"


def test_categorical_with_probabilities_follows_them():
    got = draws({"a": {"values": ["rare", "common"], "probabilities": [0.1, 0.9]}}, n=400)
    share = sum(d["a"] == "common" for d in got) / len(got)
    assert 0.82 < share < 0.97, f"'common' has probability 0.9, drawn {share:.2f}"


def test_transformed_draws_are_stored_under_a_cdf_name():
    cfg = parse_sweep_config({"method": "random", "parameters": {"m": {"distribution": "normal"}}})
    study = optuna.create_study(sampler=make_sampler(cfg, seed=0))
    trial = study.ask()
    suggest(trial, cfg)
    assert list(trial.params) == ["m" + CDF_SUFFIX] and 0.0 <= trial.params["m" + CDF_SUFFIX] <= 1.0


@given(lo=st.floats(-1e3, 1e3), width=st.floats(1e-3, 1e3), ilo=st.integers(-50, 50), iw=st.integers(0, 40))
def test_uniform_and_int_uniform_draws_stay_in_bounds(lo, width, ilo, iw):
    assume(math.isfinite(lo + width))
    got = draws({"u": {"min": lo, "max": lo + width}, "i": {"min": ilo, "max": ilo + iw}}, n=15)
    for d in got:
        assert lo <= d["u"] <= lo + width, f"uniform draw {d['u']} outside [{lo}, {lo + width}]"
        assert isinstance(d["i"], int) and ilo <= d["i"] <= ilo + iw, f"int draw {d['i']} outside [{ilo}, {ilo + iw}]"


def test_grid_visits_every_point_once_in_trial_number_order():
    params = {"a": {"values": [1, 2]}, "k": {"min": 3, "max": 5}, "c": {"value": "x"}}
    got = draws(params, n=6, method="grid")
    points = {(d["a"], d["k"]) for d in got}
    assert len(points) == 6 and points == {(a, k) for a in (1, 2) for k in (3, 4, 5)}, points
    cfg = parse_sweep_config({"method": "grid", "parameters": params})
    assert grid_search_space(cfg) == {"a": [1, 2], "k": [3, 4, 5]}, "constants are not grid axes"


def test_samplers_match_the_method():
    base = {"parameters": {"a": {"values": [1, 2]}}, "metric": {"name": "val_acc", "goal": "maximize"}}
    kinds = {m: type(make_sampler(parse_sweep_config({"method": m, **base}), seed=0)).__name__
             for m in ("grid", "random", "bayes")}
    assert kinds == {"grid": "GridSampler", "random": "RandomSampler", "bayes": "TPESampler"}, kinds


def test_hyperband_maps_to_optuna_hyperband_pruner():
    cfg = parse_sweep_config({"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
                              "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
                              "parameters": {"epochs": {"values": [9, 27]}}})
    pruner = make_pruner(cfg)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 27, 3), \
        "min_resource=min_iter, max_resource=largest epochs, reduction_factor=eta"
    assert max_epochs(cfg) == 27
    via_s = parse_sweep_config({"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
                                "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
                                "parameters": {"a": {"value": 1}}})
    assert make_pruner(via_s)._min_resource == 3, "max_iter/eta**s = 27/9 = 3 (W&B's first bracket)"
    no_et = parse_sweep_config({"method": "random", "parameters": {"a": {"value": 1}}})
    assert isinstance(make_pruner(no_et), optuna.pruners.NopPruner)


def test_unsupported_locally_is_a_clear_error():
    cfg = parse_sweep_config({"method": "random", "parameters": {"b": {"distribution": "beta", "a": 2, "b": 2}}})
    with pytest.raises(ValueError, match=r"parameters.b \(beta\).*--backend wandb"):
        check_local_support(cfg)
    frac = parse_sweep_config({"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
                               "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2.5},
                               "parameters": {"a": {"value": 1}}})
    with pytest.raises(ValueError, match="early_terminate.eta must be a whole number"):
        make_pruner(frac)
