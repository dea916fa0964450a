"""W&B sweep parameters → Optuna distributions, samplers and pruner (the ``local`` backend's search).

Each W&B distribution maps to an Optuna draw plus, where Optuna has none, a transform reproducing W&B's
formula (normal and weighted-categorical draws are a uniform ``<p>:cdf`` mapped through it); the table is in
docs/sweeps.md. ``grid`` uses ``GridSampler`` (grid id = trial number, so workers sharing a storage never
draw the same point), ``random`` ``RandomSampler``, ``bayes`` ``TPESampler`` — a different Bayesian optimiser
from W&B's Gaussian process — and hyperband ``HyperbandPruner``. ``inv_log_uniform*`` and ``beta`` are
refused: use ``--backend wandb``.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from core.sweep.definition import SweepConfig
from core.sweep.params import ParamSpec, quantize

if TYPE_CHECKING:
    import optuna

CDF_SUFFIX = ":cdf"
_EPS = 1e-9  # keeps normal quantiles finite at u = 0 or 1
UNSUPPORTED_LOCALLY = ("inv_log_uniform", "inv_log_uniform_values", "beta", "q_beta")
_SCALAR = (str, int, float, bool, type(None))


def encode_choice(value: Any) -> Any:
    """Optuna stores only None/bool/int/float/str choices: lists and dicts travel as JSON text."""
    return value if isinstance(value, _SCALAR) else json.dumps(value, sort_keys=True)


def _choices(p: ParamSpec, values: tuple[Any, ...]) -> tuple[list[Any], dict[Any, Any]]:
    encoded = [encode_choice(v) for v in values]
    lookup: dict[Any, Any] = {}
    for enc, original in zip(encoded, values):
        key = (type(enc).__name__, enc)
        if key in lookup:
            raise ValueError(f"parameters.{p.dotted}: values {lookup[key]!r} and {original!r} cannot be told "
                             f"apart once stored; make them distinct")
        lookup[key] = original
    return encoded, lookup


def check_local_support(cfg: SweepConfig) -> None:
    """Raise a ValueError naming each parameter whose distribution the local backend cannot draw."""
    bad = [p for p in cfg.parameters if p.distribution in UNSUPPORTED_LOCALLY]
    if bad:
        names = ", ".join(f"parameters.{p.dotted} ({p.distribution})" for p in bad)
        raise ValueError(f"the local backend cannot draw {names}; use --backend wandb, or rewrite them as "
                         f"log_uniform_values / uniform")


def suggest(trial: optuna.trial.BaseTrial, cfg: SweepConfig) -> dict[str, Any]:
    """Draw every searched parameter for ``trial``; returns trainer key → the value the trainer gets.

    Constants are included. A trial re-created from a killed one (same stored draws) gets the same
    values, because Optuna returns an already-stored parameter instead of sampling again.
    """
    check_local_support(cfg)
    out: dict[str, Any] = {}
    for p in cfg.parameters:
        if p.is_constant:
            out[p.name] = p.values[0]
        elif cfg.method == "grid":
            out[p.name] = _suggest_choice(trial, p, p.grid_values())
        else:
            out[p.name] = _draw(trial, p)
    return out


def _suggest_choice(trial: optuna.trial.BaseTrial, p: ParamSpec, values: tuple[Any, ...]) -> Any:
    """One of ``values`` drawn by ``suggest_categorical`` (stored encoded, returned as the original)."""
    encoded, lookup = _choices(p, values)
    enc = trial.suggest_categorical(p.name, encoded)
    return lookup[(type(enc).__name__, enc)]


def _draw(trial: optuna.trial.BaseTrial, p: ParamSpec) -> Any:
    d = p.distribution
    if d == "categorical":
        return _suggest_choice(trial, p, p.values)
    if d == "int_uniform":
        return trial.suggest_int(p.name, int(p.min), int(p.max))
    if d in ("uniform", "q_uniform"):
        return quantize(p, trial.suggest_float(p.name, float(p.min), float(p.max)))
    if d in ("log_uniform_values", "q_log_uniform_values"):
        return quantize(p, trial.suggest_float(p.name, float(p.min), float(p.max), log=True))
    if d in ("log_uniform", "q_log_uniform"):
        return quantize(p, trial.suggest_float(p.name, math.exp(p.min), math.exp(p.max), log=True))
    u = min(max(trial.suggest_float(p.name + CDF_SUFFIX, 0.0, 1.0), _EPS), 1.0 - _EPS)
    if d == "categorical_w_probabilities":
        acc = 0.0
        for value, prob in zip(p.values, p.probabilities):
            acc += prob
            if u <= acc:
                return value
        return p.values[-1]
    x = NormalDist(p.mu, p.sigma).inv_cdf(u)
    if d in ("log_normal", "q_log_normal"):
        x = math.exp(x)
    if d in ("normal", "q_normal", "log_normal", "q_log_normal"):
        return quantize(p, x)
    raise ValueError(f"parameters.{p.dotted}: distribution {d!r} is not supported by the local backend")


def grid_search_space(cfg: SweepConfig) -> dict[str, list[Any]]:
    """Optuna GridSampler search space: parameter name → encoded grid values (constants are not searched)."""
    return {p.name: _choices(p, p.grid_values())[0] for p in cfg.searched}


def make_sampler(cfg: SweepConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``cfg.method`` (grid needs the same ``seed`` in every worker)."""
    import optuna

    if cfg.method == "grid":
        space = grid_search_space(cfg)
        if not space:
            raise ValueError("method grid: every parameter is a constant, so there is nothing to search")
        return optuna.samplers.GridSampler(space, seed=seed)
    if cfg.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.method == "bayes":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    raise ValueError(f"method must be one of grid/random/bayes, got {cfg.method!r}")


def max_epochs(cfg: SweepConfig) -> int | None:
    """Largest ``epochs`` any trial can get (the pruner's max resource), or None if not swept/fixed."""
    for p in cfg.parameters:
        if p.name != "epochs":
            continue
        if p.distribution in ("constant", "categorical"):
            nums = [v for v in p.values if isinstance(v, int) and not isinstance(v, bool)]
            return max(nums) if nums else None
        if p.max is not None:
            return int(p.max)
    return None


def make_pruner(cfg: SweepConfig, *, default_max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    """HyperbandPruner for ``early_terminate: hyperband``, else a pruner that never prunes."""
    import optuna

    hb = cfg.early_terminate
    if hb is None:
        return optuna.pruners.NopPruner()
    max_resource: int | str = hb.max_iter or max_epochs(cfg) or default_max_epochs or "auto"
    if isinstance(max_resource, int) and max_resource <= hb.first_bracket:
        # Optuna needs room for at least one bracket above the first check
        max_resource = hb.first_bracket + 1
    if not float(hb.eta).is_integer():
        raise ValueError(f"early_terminate.eta must be a whole number for the local backend (Optuna's "
                         f"reduction_factor is an int), got {hb.eta!r}; use e.g. eta: 2 or 3")
    return optuna.pruners.HyperbandPruner(min_resource=hb.first_bracket, max_resource=max_resource,
                                          reduction_factor=int(hb.eta))
