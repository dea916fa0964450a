"""W&B sweep configuration in, a validated :class:`SweepConfig` out (no W&B, no Optuna, no torch).

W&B's own format, so one YAML runs on W&B's cloud or locally with Optuna. Parsing is strict: an unknown key or
distribution, a missing bound or ``min > max`` is a ``ValueError`` quoting the key path and what would be valid.
Parameters are parsed by :mod:`core.sweep.params`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.runfiles import read_yaml
from core.sweep.params import ParamSpec, check_number, parse_parameters

logger = logging.getLogger(__name__)

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
TOP_LEVEL_KEYS = ("method", "metric", "parameters", "early_terminate", "run_cap", "name", "description",
                  "project", "entity", "program", "command")
METRIC_KEYS = ("name", "goal", "target", "impute", "impute_while_running")
HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")


@dataclass(frozen=True)
class MetricSpec:
    """The metric to optimise. A config's ``metric`` without ``goal`` means ``minimize``, as on W&B; with no
    ``metric`` at all (allowed for grid/random) trials are ranked by ``val_acc``, highest first."""

    name: str = "val_acc"
    goal: str = "maximize"
    target: float | None = None

    @property
    def maximize(self) -> bool:
        return self.goal == "maximize"

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` beats ``b`` for this goal."""
        return a > b if self.maximize else a < b

    def reached_target(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.maximize else value <= self.target


@dataclass(frozen=True)
class HyperbandSpec:
    """``early_terminate: {type: hyperband, ...}``; brackets at ``min_iter * eta**k`` epochs."""

    min_iter: int | None = None
    max_iter: int | None = None
    s: int | None = None
    eta: float = 3.0
    strict: bool = True

    @property
    def first_bracket(self) -> int:
        """Epoch of the first stopping check: ``min_iter``, else ``max_iter / eta**s`` (W&B's rule)."""
        if self.min_iter is not None:
            return self.min_iter
        return max(1, int(round(self.max_iter / self.eta**self.s)))


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep. ``raw`` is the original mapping, sent unchanged to ``wandb.sweep``."""

    method: str
    parameters: tuple[ParamSpec, ...]
    metric: MetricSpec = field(default_factory=MetricSpec)
    early_terminate: HyperbandSpec | None = None
    run_cap: int | None = None
    name: str | None = None
    description: str | None = None
    project: str | None = None
    entity: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def searched(self) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.parameters if not p.is_constant)

    def grid_size(self) -> int:
        """Number of grid points (a ValueError names a continuous parameter)."""
        return math.prod(len(p.grid_values()) for p in self.parameters)

    def to_wandb_dict(self, *, name: str | None = None, run_cap: int | None = None) -> dict[str, Any]:
        """The config for ``wandb.sweep``: the original file, with the sweep name and cap applied."""
        out = copy.deepcopy(dict(self.raw))
        if name is not None:
            out["name"] = name
        if run_cap is not None:
            out["run_cap"] = run_cap
        return out


def _check_mapping(where: str, raw: Any, allowed: tuple[str, ...], example: str) -> None:
    """``raw`` must be a mapping whose keys are all in ``allowed``; errors quote ``where`` (the key path)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping like {example}, got {raw!r}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {list(allowed)}")


def _parse_metric(raw: Any, method: str, has_early_terminate: bool) -> MetricSpec:
    if raw is None:
        if method == "bayes" or has_early_terminate:
            raise ValueError("metric: method 'bayes' and early_terminate need a metric, e.g. "
                             "metric: {name: val_acc, goal: maximize}")
        logger.info("no 'metric' in the sweep config: ranking trials by val_acc (maximize)")
        return MetricSpec()
    _check_mapping("metric", raw, METRIC_KEYS, "{name: val_acc, goal: maximize}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric.name must be a non-empty string, got {name!r}")
    goal = raw.get("goal", "minimize")
    if goal not in GOALS:
        raise ValueError(f"metric.goal must be one of {list(GOALS)}, got {goal!r}")
    if "goal" not in raw and "acc" in name:
        logger.warning("metric %r has no goal: W&B's default is 'minimize'; add 'goal: maximize' if you "
                       "want the highest accuracy", name)
    target = raw.get("target")
    if target is not None:
        check_number("metric.target", target)
    return MetricSpec(name=name, goal=goal, target=target)


def _parse_hyperband(raw: Any) -> HyperbandSpec:
    _check_mapping("early_terminate", raw, HYPERBAND_KEYS, "{type: hyperband, min_iter: 1}")
    if raw.get("type") != "hyperband":
        raise ValueError(f"early_terminate.type must be 'hyperband' (the only type W&B has), got {raw.get('type')!r}")
    kw: dict[str, Any] = {}
    for key in ("min_iter", "max_iter", "s"):
        if key in raw:
            kw[key] = check_number(f"early_terminate.{key}", raw[key], integer=True)
    if kw.get("min_iter") is not None and kw["min_iter"] < 1:
        raise ValueError(f"early_terminate.min_iter must be >= 1, got {kw['min_iter']!r}")
    if kw.get("min_iter") is None and (kw.get("max_iter") is None or kw.get("s") is None):
        raise ValueError("early_terminate: hyperband needs 'min_iter', or both 'max_iter' and 's'")
    if "max_iter" in kw and kw["max_iter"] < 1:
        raise ValueError(f"early_terminate.max_iter must be >= 1, got {kw['max_iter']!r}")
    if "s" in kw and kw["s"] < 0:
        raise ValueError(f"early_terminate.s must be >= 0, got {kw['s']!r}")
    eta = check_number("early_terminate.eta", raw.get("eta", 3))
    if eta <= 1:
        raise ValueError(f"early_terminate.eta must be > 1, got {eta!r}")
    strict = raw.get("strict", True)
    if not isinstance(strict, bool):
        raise ValueError(f"early_terminate.strict must be true or false, got {strict!r}")
    return HyperbandSpec(eta=eta, strict=strict, **kw)


def parse_sweep_config(raw: Any) -> SweepConfig:
    """Validate a W&B sweep config mapping; every error quotes the offending key path."""
    _check_mapping("sweep config", raw, TOP_LEVEL_KEYS, "{method: .., metric: .., parameters: ..}")
    method = raw.get("method")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if "parameters" not in raw:
        raise ValueError("parameters: a sweep needs at least one parameter")
    params = parse_parameters("parameters", raw["parameters"])
    owners: dict[str, str] = {}
    for p in params:
        if p.name in owners:
            raise ValueError(f"parameters {owners[p.name]!r} and {p.dotted!r} both map to the trainer key "
                             f"{p.name!r}; rename one (nested leaves map to their own name, 'name'/'value' "
                             f"leaves to their group)")
        owners[p.name] = p.dotted
    early = _parse_hyperband(raw["early_terminate"]) if raw.get("early_terminate") is not None else None
    metric = _parse_metric(raw.get("metric"), method, early is not None)
    run_cap = raw.get("run_cap")
    if run_cap is not None:
        check_number("run_cap", run_cap, integer=True, positive=True)
    for key in ("name", "description", "project", "entity", "program"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ValueError(f"{key} must be a string, got {raw[key]!r}")
    if raw.get("command") is not None and not isinstance(raw["command"], list):
        raise ValueError(f"command must be a list, got {raw['command']!r}")
    cfg = SweepConfig(method=method, parameters=tuple(params), metric=metric, early_terminate=early,
                      run_cap=run_cap, name=raw.get("name"), description=raw.get("description"),
                      project=raw.get("project"), entity=raw.get("entity"), raw=copy.deepcopy(dict(raw)))
    if method == "grid":
        cfg.grid_size()  # raises on a continuous parameter, quoting it
    return cfg


def load_sweep_config(path: Path | str) -> SweepConfig:
    """Read a YAML (or JSON) sweep file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {path} does not exist; pass --config with a W&B sweep YAML "
                                f"(see experiments/configs/partA_sweep.yaml)")
    raw = read_yaml(path)
    try:
        return parse_sweep_config(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
