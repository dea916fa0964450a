"""A sweep's results as rows: one :class:`TrialRecord` per trial, ``results.csv``, ``best.pt``, ``best_config.yaml``.

Each backend reads its own records; trials discarded before training are not results. The best trial is the best
metric among COMPLETE and PRUNED trials (a pruned trial's checkpoint is real), ties to the earlier one. The
accuracy–cost front (:func:`pareto_front`) holds the trials no other beats on metric, FLOPs and parameters at once.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.runfiles import atomic_path, read_yaml, to_plain, write_text, write_yaml
from core.train import RunResult

if TYPE_CHECKING:
    from core.sweep import SweepConfig

logger = logging.getLogger(__name__)

RESULT_STATES = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class TrialRecord:
    """One row of ``results.csv``: a trial's point, its state, and its run's result (None until it has one)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    hyperparameters: Mapping[str, Any]  # dotted sweep parameter -> value
    objective: float | None = None  # the sweep metric's value
    result: RunResult | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    run_dir: Path | None = None
    retry_of: int | None = None  # the Optuna trial number this one re-ran after a crash
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def has_result(self) -> bool:
        return self.state in RESULT_STATES and self.objective is not None

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics() if self.result is not None else {}


def learning_curve(r: TrialRecord, metric: str) -> list[tuple[int, float]]:
    """(epoch, metric) of each epoch the trial's run reported (none before it reported any)."""
    history = r.result.history if r.result is not None else ()
    return [(h["epoch"], h[metric]) for h in history if metric in h and "epoch" in h]


def best_so_far(values: Sequence[float], maximize: bool) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else (max if maximize else min)(out[-1], v))
    return out


def best_record(records: Sequence[TrialRecord], cfg: SweepConfig) -> TrialRecord | None:
    best: TrialRecord | None = None
    for r in records:
        if r.has_result and (best is None or cfg.metric.better(r.objective, best.objective)):
            best = r
    return best


def ranked(records: Sequence[TrialRecord], cfg: SweepConfig) -> list[TrialRecord]:
    """Records with a result, best first."""
    done = [r for r in records if r.has_result]
    sign = -1.0 if cfg.metric.maximize else 1.0
    return sorted(done, key=lambda r: (sign * r.objective, r.number))


def pareto_front(records: Sequence[TrialRecord], cfg: SweepConfig) -> list[TrialRecord]:
    """Trials with a result and counts that no other such trial dominates on (metric, FLOPs, parameters)."""
    sign = 1.0 if cfg.metric.maximize else -1.0
    points = [(r, (sign * r.objective, -r.result.flops, -r.result.parameter_count)) for r in records
              if r.has_result and r.result is not None and r.result.flops and r.result.parameter_count]

    def dominates(a: tuple, b: tuple) -> bool:
        return all(x >= y for x, y in zip(a, b)) and a != b

    return [r for r, p in points if not any(dominates(q, p) for _, q in points)]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return str(to_plain(value))
    return value


def results_columns(records: Sequence[TrialRecord], cfg: SweepConfig) -> list[str]:
    metric_names = sorted({k for r in records for k in r.metrics} - {cfg.metric.name})
    params = [p.name for p in cfg.parameters]
    return (["number", "state", cfg.metric.name] + metric_names + params +
            ["parameter_count", "flops", "pareto", "epochs_run", "stopped_reason", "started_at", "ended_at", "seconds",
             "retry_of", "run_dir", "error"])


def results_rows(records: Sequence[TrialRecord], cfg: SweepConfig) -> list[dict[str, Any]]:
    rows, front = [], {r.number for r in pareto_front(records, cfg)}
    for r in records:
        row: dict[str, Any] = {"number": r.number, "state": r.state, cfg.metric.name: r.objective,
                               "pareto": r.number in front}
        row.update({k: v for k, v in r.metrics.items() if k != cfg.metric.name})
        row.update({p.name: r.hyperparameters.get(p.name) for p in cfg.parameters})
        res = r.result
        row.update(parameter_count=res and res.parameter_count, flops=res and res.flops,
                   epochs_run=res.epochs_run if res else None, stopped_reason=res and res.stopped_reason,
                   started_at=r.started_at,
                   ended_at=r.ended_at, seconds=round(r.seconds, 1) if r.seconds is not None else None,
                   retry_of=r.retry_of, run_dir=r.run_dir, error=r.error)
        rows.append(row)
    return rows


def write_results_csv(path: Path, records: Sequence[TrialRecord], cfg: SweepConfig) -> Path:
    """``results.csv``: one row per trial, columns metric, other metrics, parameters, counts, times."""
    buf = io.StringIO()
    columns = results_columns(records, cfg)
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in results_rows(records, cfg):
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    write_text(path, buf.getvalue())
    return Path(path)


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy ``src`` onto ``dest`` through a temp file in ``dest``'s folder and ``os.replace``."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def write_best(out_dir: Path, best: TrialRecord | None, cfg: SweepConfig, *, sweep_name: str) -> dict[str, Path]:
    """``best.pt`` (copied from the best trial) and ``best_config.yaml``; returns what was written."""
    written: dict[str, Path] = {}
    if best is None:
        logger.warning("no trial finished with a %s value: no best.pt / best_config.yaml", cfg.metric.name)
        return written
    best_path = best.result.best_path if best.result else None
    if best_path is not None and best_path.is_file():
        written["best.pt"] = copy_atomic(best_path, out_dir / "best.pt")
    else:
        logger.warning("best trial %d has no checkpoint file (%s): best.pt not written", best.number, best_path)
    doc: dict[str, Any] = {
        "sweep": sweep_name,
        "trial": best.number,
        "metric": {"name": cfg.metric.name, "goal": cfg.metric.goal, "value": best.objective},
        "metrics": best.metrics,
        "parameters": dict(best.hyperparameters),  # trainer keys: partA_train.py's flags, with - for _
        "parameter_count": best.result.parameter_count if best.result else None,
        "flops": best.result.flops if best.result else None,
        "run_dir": best.run_dir,
    }
    trainer_cfg = best.run_dir / "config.yaml" if best.run_dir else None
    if trainer_cfg is not None and trainer_cfg.is_file():
        doc["resolved_config"] = read_yaml(trainer_cfg)
    write_yaml(out_dir / "best_config.yaml", doc)
    written["best_config.yaml"] = out_dir / "best_config.yaml"
    return written
