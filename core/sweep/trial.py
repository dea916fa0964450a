"""One sweep trial, independent of the backend: what it receives, what it returns, where it writes.

Both backends hand a :class:`TrialRequest` to a *trial function* and get a :class:`TrialOutcome` back.
The real one is :class:`PartATrial` (``core.partA.run.run_partA``); tests inject a cheap deterministic
function of the parameters instead, so the search, storage, resume and report logic is tested without
training. :func:`execute_trial` wraps any trial function with the bookkeeping every trial shares: its
folder ``trials/<number>-<hash>/`` (hash of the parameter values, so a folder name says which point it
ran) and a ``trial.json`` there that is rewritten atomically at start and end.

A trial reports each epoch's metrics through ``request.report(epoch, metrics)``; a ``True`` answer means
"stop now" (an Optuna/Hyperband prune), which :class:`PartATrial` turns into ``core.train.trainer.StopTraining``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.runfiles import to_plain, write_json

if TYPE_CHECKING:
    from core.partA import PartAConfig

logger = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
# per-epoch metrics a trial reports (EpochStats field names); the sweep metric must be one of these or
# a final metric below
EPOCH_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
FINAL_METRICS = ("best_val_acc", "best_epoch", "test_acc", "test_loss")
SELECTION_FORBIDDEN = ("test_acc", "test_loss")  # val/ is the test set: never select on it


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def params_hash(values: Mapping[str, Any]) -> str:
    """8 hex digits identifying a parameter point (order-independent)."""
    text = json.dumps(to_plain(dict(values)), sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def trial_dir_name(number: int, values: Mapping[str, Any]) -> str:
    return f"{number}-{params_hash(values)}"


@dataclass(frozen=True)
class TrialRequest:
    """Everything a trial function needs; ``report`` is the only way back to the search engine."""

    number: int  # the trial's number in the sweep (a re-run after a crash keeps it)
    values: Mapping[str, Any]  # dotted sweep parameter -> value
    flat: Mapping[str, Any]  # PartAConfig.from_flat key -> value
    run_dir: Path
    name: str  # W&B run name
    group: str  # W&B group: the sweep name
    resume: bool = False  # the folder holds an interrupted attempt of this trial
    tracker_mode: str = "auto"
    report: Callable[[int, Mapping[str, float]], bool] = field(default=lambda epoch, metrics: False, repr=False)


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished (or pruned) trial produced; ``metrics`` holds at least the sweep metric."""

    metrics: Mapping[str, float]
    params_count: int | None = None
    flops: int | None = None
    best_path: Path | None = None
    epochs_run: int = 0
    history: tuple[Mapping[str, float], ...] = ()  # one dict per epoch, as reported


TrialFn = Callable[[TrialRequest], TrialOutcome]


def metric_value(outcome: TrialOutcome, metric: str) -> float:
    """The sweep metric from an outcome, or a ValueError listing what the trial did produce."""
    if metric not in outcome.metrics or outcome.metrics[metric] is None:
        raise ValueError(f"the trial returned no {metric!r} (the sweep metric); it returned "
                         f"{sorted(outcome.metrics)}. Set metric.name to one of them")
    return float(outcome.metrics[metric])


def execute_trial(trial_fn: TrialFn, request: TrialRequest, *, extra: Mapping[str, Any] | None = None) -> TrialOutcome:
    """Run ``trial_fn`` with the shared bookkeeping: folder, ``trial.json`` (RUNNING → COMPLETE/FAIL)."""
    request.run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"number": request.number, "state": "RUNNING", "values": dict(request.values),
                              "flat": dict(request.flat), "started_at": utc_now(), "ended_at": None,
                              "resume": request.resume, **(dict(extra) if extra else {})}
    write_json(request.run_dir / TRIAL_FILE, record)
    history: list[dict[str, float]] = []

    def report(epoch: int, metrics: Mapping[str, float]) -> bool:
        history.append({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        return request.report(epoch, metrics)

    t0 = time.perf_counter()
    try:
        outcome = trial_fn(replace(request, report=report))
    except BaseException as exc:
        record.update(state="FAIL", ended_at=utc_now(), error=f"{type(exc).__name__}: {exc}", history=history)
        write_json(request.run_dir / TRIAL_FILE, record)
        raise
    if not outcome.history and history:
        outcome = replace(outcome, history=tuple(history))
    record.update(state="COMPLETE", ended_at=utc_now(), seconds=round(time.perf_counter() - t0, 3),
                  metrics=dict(outcome.metrics), params_count=outcome.params_count, flops=outcome.flops,
                  best_path=outcome.best_path, epochs_run=outcome.epochs_run, history=list(outcome.history))
    write_json(request.run_dir / TRIAL_FILE, record)
    return outcome


class PartATrial:
    """The real trial: ``PartAConfig.from_flat(flat, base)`` → ``run_partA``. Picklable (for workers).

    ``base`` carries what the sweep does not search (data folder, device, image size, ...). The returned
    ``val_acc`` is the best epoch's validation accuracy, i.e. that of the kept ``best.pt``; ``test_acc``
    is reported but never used for selection.
    """

    def __init__(self, base: PartAConfig | None = None) -> None:
        self.base = base

    def build_config(self, flat: Mapping[str, Any]) -> PartAConfig:
        from core.partA import PartAConfig

        return PartAConfig.from_flat(dict(flat), base=self.base)

    def __call__(self, request: TrialRequest) -> TrialOutcome:
        from core.partA import run_partA

        return run_for_request(run_partA, self.build_config(request.flat), request)


def run_for_request(run_fn: Callable[..., Any], cfg: Any, request: TrialRequest) -> TrialOutcome:
    """Run one trial's configured run (``run_partA`` / ``run_partB``) in its folder, reporting every epoch
    to the sweep and stopping it (``StopTraining``) when the sweep's ``early_terminate`` prunes it."""
    from core.train import StopTraining

    def on_epoch_end(epoch: int, stats: Any) -> None:
        metrics = {k: float(getattr(stats, k)) for k in EPOCH_METRICS if hasattr(stats, k)}
        if request.report(epoch, metrics):
            raise StopTraining(f"pruned by the sweep's early_terminate after epoch {epoch}")

    result = run_fn(cfg, request.run_dir, tracker_mode=request.tracker_mode, name=request.name,
                    group=request.group, resume=request.resume, on_epoch_end=on_epoch_end)
    return outcome_from_result(result)


def outcome_from_result(result: Any) -> TrialOutcome:
    """Map a ``core.partA.run.RunResult`` to a :class:`TrialOutcome` (val_acc = the kept checkpoint's)."""
    metrics: dict[str, float] = {"val_acc": float(result.best_val_acc), "best_val_acc": float(result.best_val_acc)}
    for name in ("best_epoch", "test_acc", "test_loss", "val_loss", "train_acc", "train_loss"):
        value = getattr(result, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = float(value)
    history = tuple({k: float(v) for k, v in h.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                    for h in getattr(result, "history", None) or ())  # all epochs, also those before a resume
    return TrialOutcome(metrics=metrics, params_count=_int_or_none(getattr(result, "params", None)),
                        flops=_int_or_none(getattr(result, "flops", None)),
                        best_path=Path(result.best_path) if getattr(result, "best_path", None) else None,
                        epochs_run=int(getattr(result, "epochs_run", 0) or 0), history=history)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
