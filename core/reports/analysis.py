"""What a sweep's results say: per-parameter effects, importance, correlation, and written observations.

Numpy only, from the finished (COMPLETE) trials, never written by hand. Importance is the adjusted one-way ANOVA
effect size ε² — with a few dozen trials the raw η² of a many-valued parameter is near 1 by chance — rather than
W&B's random forest, which needs a dependency and is as rough with tens of runs. Correlation is Pearson r (log10
for log-scaled parameters, one per value for a categorical, as W&B shows); a trend is Spearman ρ, reported only
above the 95% chance level and 0.3. Every observation says how many trials back it, and one resting on fewer than
:data:`ANECDOTAL_BELOW` is flagged *anecdotal*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.reports.results import TrialRecord, best_record, ranked

if TYPE_CHECKING:
    from core.sweep import ParamSpec, SweepConfig

MAX_BINS = 4
MAX_LEVELS = 6  # an int_uniform parameter with at most this many distinct values is grouped by value
TREND_THRESHOLD = 0.3
ANECDOTAL_BELOW = 3  # a claim resting on fewer trials than this is anecdotal
LOG_DISTRIBUTIONS = ("log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values",
                     "log_normal", "q_log_normal")


@dataclass(frozen=True)
class GroupStat:
    label: str
    n: int
    mean: float
    std: float
    best: float
    correlation: float | None = None  # Pearson r of the metric with "parameter == this value"


@dataclass(frozen=True)
class ParamEffect:
    name: str
    kind: str  # "categorical" | "numeric"
    n: int
    groups: tuple[GroupStat, ...]
    importance: float | None  # ε²; None when there are too few trials or a single group
    correlation: float | None = None  # numeric only
    trend: float | None = None  # Spearman rho, numeric only
    log_scale: bool = False


@dataclass(frozen=True)
class Observation:
    text: str
    support: int  # trials backing the statement (for a comparison: the smaller group)
    claim: bool = True  # False for plain counts ("8 trials (6 complete, ...)"), which need no support

    @property
    def anecdotal(self) -> bool:
        return self.claim and self.support < ANECDOTAL_BELOW


@dataclass(frozen=True)
class SweepAnalysis:
    effects: tuple[ParamEffect, ...]  # most important first
    observations: tuple[Observation, ...]
    n_used: int  # trials in the per-parameter statistics


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{0.0 if abs(x) < 1e-12 else x:.4g}"  # float noise (a std of equal values) reads as 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def label(value: Any) -> str:
    return str(value) if not isinstance(value, float) else f"{value:.4g}"


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    for v in np.unique(a):  # ties share their mean rank
        idx = a == v
        ranks[idx] = ranks[idx].mean()
    return ranks


def epsilon_squared(groups: Sequence[np.ndarray]) -> float | None:
    """Adjusted share of variance explained by the grouping (see the module docstring)."""
    groups = [g for g in groups if len(g)]
    k, n = len(groups), sum(len(g) for g in groups)
    if k < 2 or n - k < 1:
        return None
    y = np.concatenate(groups)
    ss_total = float(((y - y.mean()) ** 2).sum())
    if ss_total == 0:
        return 0.0
    ss_between = float(sum(len(g) * (g.mean() - y.mean()) ** 2 for g in groups))
    ms_within = (ss_total - ss_between) / (n - k)
    return max(0.0, (ss_between - (k - 1) * ms_within) / ss_total)


def _is_numeric(p: ParamSpec, values: list[Any]) -> bool:
    """Continuous draws are numeric; choices, and int ranges with few values seen, are grouped by value."""
    if p.is_categorical or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return False
    return p.distribution != "int_uniform" or len(set(values)) > MAX_LEVELS


def _stat(lab: str, y: np.ndarray, maximize: bool, corr: float | None = None) -> GroupStat:
    return GroupStat(label=lab, n=len(y), mean=float(y.mean()), std=float(y.std(ddof=1)) if len(y) > 1 else 0.0,
                     best=float(y.max() if maximize else y.min()), correlation=corr)


def param_effect(p: ParamSpec, records: Sequence[TrialRecord], maximize: bool) -> ParamEffect:
    vals = [r.hyperparameters.get(p.name) for r in records]
    y = np.array([r.objective for r in records], dtype=float)
    if not _is_numeric(p, vals):
        keys = sorted({repr(v) for v in vals})
        by_key = {k: [i for i, v in enumerate(vals) if repr(v) == k] for k in keys}
        groups = []
        for idx in by_key.values():
            indicator = np.array([1.0 if i in idx else 0.0 for i in range(len(vals))])
            corr = _pearson(indicator, y) if len(by_key) > 1 else None
            groups.append(_stat(label(vals[idx[0]]), y[idx], maximize, corr))
        groups.sort(key=lambda g: -g.mean if maximize else g.mean)
        return ParamEffect(p.name, "categorical", len(y), tuple(groups),
                           epsilon_squared([y[idx] for idx in by_key.values()]))
    x = np.array(vals, dtype=float)
    log_scale = p.distribution in LOG_DISTRIBUTIONS and bool((x > 0).all())
    xs = np.log10(x) if log_scale else x
    n_bins = max(1, min(MAX_BINS, len(x) // 2))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 \
        else np.zeros(len(x), dtype=int)
    groups, arrays = [], []
    for b in range(max(1, len(edges) - 1)):
        idx = which == b
        if idx.any():
            arrays.append(y[idx])
            groups.append(_stat(f"{label(float(x[idx].min()))}–{label(float(x[idx].max()))}", y[idx], maximize))
    trend = _pearson(_ranks(xs), _ranks(y))
    return ParamEffect(p.name, "numeric", len(y), tuple(groups), epsilon_squared(arrays),
                       correlation=_pearson(xs, y), trend=trend, log_scale=log_scale)


def chance_level(n: int) -> float:
    """|ρ| a trend must exceed to be reported: 1.96/sqrt(n-1), the 95% level of Spearman's ρ under no
    association (normal approximation), and never below TREND_THRESHOLD."""
    return max(TREND_THRESHOLD, 1.96 / math.sqrt(max(1, n - 1)))


def _mean_sd(g: GroupStat) -> str:
    return f"{fmt(g.mean)} ± {fmt(g.std)}, {g.n} trials" if g.n > 1 else f"{fmt(g.mean)}, 1 trial"


def _param_sentence(e: ParamEffect, metric: str, maximize: bool) -> Observation | None:
    imp = "" if e.importance is None else f"; it explains {100 * e.importance:.0f}% of the variance (ε²)"
    if e.kind == "categorical":
        if len(e.groups) < 2:
            return Observation(f"{e.name}: only {e.groups[0].label} was tried ({_plural(e.n, 'trial')}).", e.n,
                               claim=False)
        top, low = e.groups[0], e.groups[-1]
        word = "highest" if maximize else "lowest"
        spread = abs(top.mean - low.mean)
        text = (f"{e.name}: {top.label} gave the {word} mean {metric} ({_mean_sd(top)}) and {low.label} the "
                f"poorest ({_mean_sd(low)}), a spread of {fmt(spread)}{imp}.")
        return Observation(text, min(top.n, low.n))
    if e.trend is None:
        return None
    scale = " (log scale)" if e.log_scale else ""
    chance = chance_level(e.n)
    if chance >= 1.0:  # 1.96/sqrt(n-1) >= 1: no ρ can pass, say so instead of quoting a bound above 1
        text = (f"{e.name}: {e.n} trials are too few to tell a trend in {metric} from chance (Spearman ρ = "
                f"{e.trend:+.2f}; {math.floor(1.96 ** 2) + 2} are the fewest where one can){imp}.")
    elif abs(e.trend) < chance:
        text = (f"{e.name}: no clear trend in {metric} (Spearman ρ = {e.trend:+.2f} over {e.n} trials; |ρ| below "
                f"{chance:.2f} is within chance for {e.n} trials){imp}.")
    else:
        direction = "higher" if e.trend > 0 else "lower"
        text = (f"{e.name}{scale}: higher values went with {direction} {metric} "
                f"(Spearman ρ = {e.trend:+.2f} over {e.n} trials){imp}.")
    return Observation(text, e.n)


def _top_shared(cfg: SweepConfig, used: Sequence[TrialRecord]) -> list[Observation]:
    order = ranked(used, cfg)
    if len(order) < 4:
        return []
    k = min(len(order) - 1, max(3, math.ceil(0.2 * len(order))))
    top = order[:k]
    out = []
    for p in cfg.searched:
        top_vals = [r.hyperparameters.get(p.name) for r in top]
        all_vals = [r.hyperparameters.get(p.name) for r in order]
        if not _is_numeric(p, all_vals):
            if len({repr(v) for v in top_vals}) == 1:
                share = sum(repr(v) == repr(top_vals[0]) for v in all_vals)
                out.append(Observation(f"All top {k} runs use {p.name}={label(top_vals[0])} "
                                       f"({share} of {len(order)} trials do).", k))
        else:
            lo, hi = min(top_vals), max(top_vals)
            all_lo, all_hi = min(all_vals), max(all_vals)
            if (hi - lo) <= 0.5 * (all_hi - all_lo):
                out.append(Observation(f"The top {k} runs have {p.name} in [{label(lo)}, {label(hi)}] "
                                       f"(all {len(order)} trials: [{label(all_lo)}, {label(all_hi)}]).", k))
    return out


def analyse(records: Sequence[TrialRecord], cfg: SweepConfig) -> SweepAnalysis:
    """Per-parameter effects (most important first) and the observations the report prints."""
    complete = [r for r in records if r.state == "COMPLETE" and r.objective is not None]
    used = complete if len(complete) >= 2 else [r for r in records if r.has_result]
    obs: list[Observation] = []
    counts = {s: sum(r.state == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    best = best_record(records, cfg)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    head = f"{len(records)} trials ({summary or 'none'})"
    if best is not None:
        head += f"; best {cfg.metric.name} = {fmt(best.objective)} (trial {best.number})"
    obs.append(Observation(head + ".", len(records), claim=False))
    if counts["PRUNED"]:
        obs.append(Observation(f"{_plural(counts['PRUNED'], 'trial')} stopped early by hyperband; per-parameter "
                               f"statistics below use the {len(used)} trials that trained fully.", counts["PRUNED"],
                               claim=False))
    if len(used) < 2:
        obs.append(Observation("Fewer than 2 finished trials: no per-parameter statistics yet.", len(used),
                               claim=False))
        return SweepAnalysis((), tuple(obs), len(used))
    values = np.array([r.objective for r in used], dtype=float)
    if float(values.max() - values.min()) <= 1e-12 * max(1.0, float(np.abs(values).max())):
        obs.append(Observation(f"All {len(used)} trials scored {cfg.metric.name} = {fmt(float(values[0]))}: "
                               "the sweep cannot tell its parameters apart (train longer or on more data).",
                               len(used), claim=False))
        return SweepAnalysis((), tuple(obs), len(used))
    effects = [param_effect(p, used, cfg.metric.maximize) for p in cfg.searched]
    effects.sort(key=lambda e: -(e.importance if e.importance is not None else -1.0))
    for e in effects:
        sentence = _param_sentence(e, cfg.metric.name, cfg.metric.maximize)
        if sentence is not None:
            obs.append(sentence)
    obs.extend(_top_shared(cfg, used))
    return SweepAnalysis(tuple(effects), tuple(obs), len(used))
