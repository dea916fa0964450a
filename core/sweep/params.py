"""Swept parameters of a W&B sweep config: :class:`ParamSpec` and the strict parser of ``parameters:``.

Distributions are inferred as W&B does (``values`` → categorical, integer ``min``/``max`` → int_uniform, ...;
``log_uniform`` bounds in natural-log space), and the keys allowed per distribution are W&B's JSON schema: any
other is a ValueError quoting its path. Nested parameters flatten by one rule: **the flat key is the leaf name,
except a leaf called** ``name`` **or** ``value``, **which stands for its group** (``optimizer.name`` →
``optimizer``, ``optimizer.lr`` → ``lr``); two paths on one key are an error naming both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP_LEAVES = ("name", "value")  # a nested leaf with this name stands for its group
# distribution -> the keys it accepts besides "distribution" (W&B's JSON schema, additionalProperties: false)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "categorical": ("values",),
    "categorical_w_probabilities": ("values", "probabilities"),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "log_uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "q_log_uniform": ("min", "max", "q"),
    "q_log_uniform_values": ("min", "max", "q"),
    "inv_log_uniform": ("min", "max"),
    "inv_log_uniform_values": ("min", "max"),
    "normal": ("mu", "sigma"),
    "q_normal": ("mu", "sigma", "q"),
    "log_normal": ("mu", "sigma"),
    "q_log_normal": ("mu", "sigma", "q"),
    "beta": ("a", "b"),
    "q_beta": ("a", "b", "q"),
}
BOUNDED = {d for d, keys in DISTRIBUTIONS.items() if "min" in keys}
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")  # what W&B's grid accepts


def _is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _value_key(v: Any) -> str:
    """Type-aware identity of a categorical value (1, 1.0 and True are different choices in a sweep)."""
    return f"{type(v).__name__}:{json.dumps(v, sort_keys=True, default=str)}"


@dataclass(frozen=True)
class ParamSpec:
    """One swept parameter: where it sits in the config (``path``) and how it is drawn."""

    path: tuple[str, ...]
    distribution: str
    values: tuple[Any, ...] = ()  # categorical choices, or (value,) for a constant
    probabilities: tuple[float, ...] = ()
    min: float | None = None
    max: float | None = None
    q: float | None = None  # set only for q_* distributions (W&B default 1)
    mu: float = 0.0
    sigma: float = 1.0
    a: float = 1.0
    b: float = 1.0

    @property
    def name(self) -> str:
        """The trainer key this parameter sets (``lr``; the rule is in the module docstring): the key of its
        value in every trial's values, the Optuna parameter name and the report's column."""
        if len(self.path) > 1 and self.path[-1] in GROUP_LEAVES:
            return self.path[-2]
        return self.path[-1]

    @property
    def dotted(self) -> str:
        """Where it sits in the YAML, W&B's nesting delimiter (``optimizer.lr``): error messages quote it."""
        return ".".join(self.path)

    @property
    def is_constant(self) -> bool:
        return self.distribution == "constant"

    @property
    def is_categorical(self) -> bool:
        return self.distribution in ("categorical", "categorical_w_probabilities", "constant")

    @property
    def integer_valued(self) -> bool:
        """True when every draw is an int (W&B returns ints for int_uniform and for an integer ``q``)."""
        if self.distribution == "int_uniform":
            return True
        return self.q is not None and isinstance(self.q, int)

    def grid_values(self) -> tuple[Any, ...]:
        """The points W&B's grid search visits for this parameter, or a ValueError if it is continuous."""
        if self.distribution in ("constant", "categorical"):
            return self.values
        if self.distribution == "int_uniform":
            return tuple(range(int(self.min), int(self.max) + 1))
        if self.distribution == "q_uniform":
            # W&B: np.arange(min, max, q): max itself is excluded. Rounded to drop float noise.
            n = max(0, math.ceil((self.max - self.min) / self.q - 1e-12))
            pts = [round(self.min + i * self.q, 12) for i in range(n)]
            return tuple(int(p) if self.integer_valued else p for p in pts)
        raise ValueError(
            f"parameters.{self.dotted}: grid search needs discrete parameters; {self.distribution!r} is "
            f"continuous. Use one of {list(GRID_DISTRIBUTIONS)} (e.g. 'values: [...]') or method random/bayes"
        )

    def pick(self, nested: Mapping) -> Any:
        """Read this parameter from a nested mapping such as ``wandb.config``; KeyError names the path."""
        node: Any = nested
        for part in self.path:
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"run config has no value for sweep parameter {self.dotted!r}")
            node = node[part]
        return node


def check_number(where: str, value: Any, *, integer: bool = False, positive: bool = False) -> Any:
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if not _is_finite_number(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    return value


def _infer_distribution(where: str, spec: Mapping) -> str:
    if "distribution" in spec:
        dist = spec["distribution"]
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"{where}.distribution: unknown distribution {dist!r}; "
                             f"expected one of {sorted(DISTRIBUTIONS)}")
        return dist
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec or "max" in spec:
        both_int = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"
    raise ValueError(
        f"{where}: cannot tell how to draw this parameter; give 'value', 'values', 'min'/'max' or "
        f"'distribution' (one of {sorted(DISTRIBUTIONS)}), got keys {sorted(spec)}"
    )


def _parse_param(path: tuple[str, ...], spec: Any) -> ParamSpec:
    where = "parameters." + ".parameters.".join(path)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping such as {{values: [...]}} or {{min: .., max: ..}}, got {spec!r}")
    dist = _infer_distribution(where, spec)
    allowed = set(DISTRIBUTIONS[dist]) | {"distribution"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: key(s) {unknown} are not valid for distribution {dist!r}; "
                         f"allowed: {sorted(allowed)}")
    kw: dict[str, Any] = {}
    if dist == "constant":
        if "value" not in spec:
            raise ValueError(f"{where}: distribution 'constant' needs 'value'")
        kw["values"] = (spec["value"],)
    elif dist in ("categorical", "categorical_w_probabilities"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.values must be a non-empty list, got {values!r}")
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            k = _value_key(v)
            if k in seen:
                raise ValueError(f"{where}.values lists {v!r} twice (positions {seen[k]} and {i})")
            seen[k] = i
        kw["values"] = tuple(values)
        if dist == "categorical_w_probabilities":
            probs = spec.get("probabilities")
            if not isinstance(probs, list) or len(probs) != len(values):
                raise ValueError(f"{where}.probabilities must list one probability per value "
                                 f"({len(values)}), got {probs!r}")
            for i, p in enumerate(probs):
                check_number(f"{where}.probabilities[{i}]", p)
                if p < 0:
                    raise ValueError(f"{where}.probabilities[{i}] must be >= 0, got {p!r}")
            if not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
                raise ValueError(f"{where}.probabilities must sum to 1, got {sum(probs)!r}")
            kw["probabilities"] = tuple(float(p) for p in probs)
    elif dist in BOUNDED:
        for key in ("min", "max"):
            if key not in spec:
                raise ValueError(f"{where}: distribution {dist!r} needs both 'min' and 'max'; '{key}' is missing")
            kw[key] = check_number(f"{where}.{key}", spec[key], integer=dist == "int_uniform")
        if kw["min"] > kw["max"]:
            raise ValueError(f"{where}: min ({kw['min']!r}) is greater than max ({kw['max']!r})")
        if dist.endswith("_values") and kw["min"] <= 0:
            raise ValueError(f"{where}.min must be > 0 for {dist!r} (a log scale), got {kw['min']!r}")
    else:  # normal family and beta family
        for key, default in (("mu", 0.0), ("sigma", 1.0), ("a", 1.0), ("b", 1.0)):
            if key in DISTRIBUTIONS[dist]:
                kw[key] = check_number(f"{where}.{key}", spec.get(key, default))
        if "sigma" in kw and kw["sigma"] <= 0:
            raise ValueError(f"{where}.sigma must be > 0, got {kw['sigma']!r}")
    if dist.startswith("q_"):
        kw["q"] = check_number(f"{where}.q", spec.get("q", 1), positive=True)
    return ParamSpec(path=path, distribution=dist, **kw)


def parse_parameters(where: str, params: Any, prefix: tuple[str, ...] = ()) -> list[ParamSpec]:
    if not isinstance(params, Mapping) or not params:
        raise ValueError(f"{where} must be a non-empty mapping of parameter name -> spec, got {params!r}")
    out: list[ParamSpec] = []
    for key, spec in params.items():
        if not isinstance(key, str) or not key or "." in key:
            raise ValueError(f"{where}: parameter name {key!r} must be a non-empty string without '.'")
        if isinstance(spec, Mapping) and "parameters" in spec:
            extra = sorted(set(spec) - {"parameters"})
            if extra:
                raise ValueError(f"{where}.{key}: a nested group holds only 'parameters', found also {extra}")
            out.extend(parse_parameters(f"{where}.{key}.parameters", spec["parameters"], prefix + (key,)))
        else:
            out.append(_parse_param(prefix + (key,), spec))
    return out


def quantize(p: ParamSpec, x: float) -> Any:
    if p.q is None:
        return x
    out = round(x / p.q) * p.q
    return int(round(out)) if isinstance(p.q, int) else float(out)
