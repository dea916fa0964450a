"""One sweep trial, independent of the backend: what it receives, what it returns, where it writes.

A sweep trains a :class:`TrialProgram`: ``configure`` turns the drawn point (trainer key → value, the user's
mapping) into the run's one typed config, validated and coerced once, and ``run`` trains that config —
``core.partA.run_partA`` or ``core.finetune.run_partB`` unchanged (:mod:`core.sweep.trials`), or in tests a cheap
function with the same signature, so search, storage, resume and report are tested without training. Both
backends hand the point to :func:`execute_trial`, which adds what every trial shares: its folder
``trials/<number>-<hash>/`` (the hash says which point it ran), an atomically rewritten ``trial.json``, the
process's log records in ``trial.log``, every epoch reported to the search engine. A prune (``request.report``
answering ``True``) or a stop from outside (``request.stop``) ends the trial PRUNED: its finished epochs are its
result.
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
from typing import Any

from tqdm.auto import tqdm

from core.runfiles import mask_secrets, own_run_folder, to_plain, write_json
from core.train import EPOCH_METRICS, RUN_METRICS, EpochStats, RunResult, StopRequest, StopTraining

logger = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
LOG_FILE = "trial.log"  # the trial's log lines (INFO and up), whatever the terminal shows
# the sweep metric must be a per-epoch metric (EpochStats field names) or a finished run's
FINAL_METRICS = RUN_METRICS
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
    """One drawn point to run, and where; ``report`` is the only way back to the search engine."""

    number: int  # the trial's number in the sweep (a re-run after a crash keeps it)
    values: Mapping[str, Any]  # the drawn point: trainer key (ParamSpec.name) -> value
    run_dir: Path
    name: str  # W&B run name
    group: str  # W&B group: the sweep name
    resume: bool = False  # the folder holds an interrupted attempt of this trial
    tracker_mode: str = "auto"
    report: Callable[[int, Mapping[str, float]], bool] = field(default=lambda epoch, metrics: False, repr=False)
    stop: StopRequest | None = field(default=None, repr=False, compare=False)  # set by a signal (W&B's stop)


@dataclass(frozen=True)
class TrialProgram:
    """What a sweep trains (picklable: worker processes and W&B's agent receive it).

    ``configure(values)`` is the one way from a drawn point to the typed run config (``PartAConfig.from_flat``
    over a base holding what the sweep does not search); ``run(config, run_dir, *, tracker_mode, name, group,
    resume, on_epoch_end, stop)`` trains it, calling ``on_epoch_end(epoch, EpochStats)`` after every epoch and
    stopping when that raises ``StopTraining``.
    """

    configure: Callable[[Mapping[str, Any]], Any]
    run: Callable[..., RunResult]


def metric_value(result: RunResult, metric: str) -> float:
    """The sweep metric from a run's result, or a ValueError listing what the trial did produce."""
    metrics = result.metrics()
    if metric not in metrics:
        raise ValueError(f"the trial returned no {metric!r} (the sweep metric); it returned "
                         f"{sorted(metrics)}. Set metric.name to one of them")
    return metrics[metric]


def execute_trial(program: TrialProgram, request: TrialRequest, *,
                  extra: Mapping[str, Any] | None = None) -> RunResult:
    """Configure and run ``request``'s point with the shared bookkeeping: folder, ``trial.json`` (RUNNING →
    COMPLETE/PRUNED/FAIL), ``trial.log``, a bar over its epochs, every epoch reported to ``request.report`` (a
    prune stops the run: ``StopTraining``) and one ``progress`` line at its end."""
    # the trial's process owns its folder; a resumed trial's old owner was declared gone by the sweep's storage
    with own_run_folder(request.run_dir, take_over_other_hosts=request.resume):
        record: dict[str, Any] = {"number": request.number, "state": "RUNNING", "values": dict(request.values),
                                  "started_at": utc_now(), "ended_at": None, "resume": request.resume,
                                  **(dict(extra) if extra else {})}
        write_json(request.run_dir / TRIAL_FILE, record)
        history: list[dict[str, float]] = []
        bar = tqdm(total=None, desc=f"trial {request.number}", unit="epoch", leave=False, disable=None,
                   dynamic_ncols=True)

        def on_epoch_end(epoch: int, stats: EpochStats) -> None:
            metrics = {k: float(getattr(stats, k)) for k in EPOCH_METRICS}
            history.append({"epoch": epoch, **metrics})
            bar.total = stats.epochs
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in ("val_acc", "val_loss")})
            if request.report(epoch, metrics):
                raise StopTraining(f"pruned by the sweep's early_terminate after epoch {epoch}")

        handler = logging.FileHandler(request.run_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        t0 = time.perf_counter()
        try:
            result = program.run(program.configure(request.values), request.run_dir,
                                 tracker_mode=request.tracker_mode, name=request.name, group=request.group,
                                 resume=request.resume, on_epoch_end=on_epoch_end, stop=request.stop)
        except BaseException as exc:
            record.update(state="FAIL", ended_at=utc_now(), error=mask_secrets(f"{type(exc).__name__}: {exc}"),
                          history=history)
            write_json(request.run_dir / TRIAL_FILE, record)
            raise
        finally:
            bar.close()
            logging.getLogger().removeHandler(handler)
            handler.close()
        if not result.history and history:
            result = replace(result, history=tuple(history))
        state = "PRUNED" if result.pruned else "COMPLETE"
        seconds = time.perf_counter() - t0
        record.update(state=state, ended_at=utc_now(), seconds=round(seconds, 3), result=result.to_dict())
        write_json(request.run_dir / TRIAL_FILE, record)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics().items() if k in ("val_acc", "test_acc"))
    logger.info("trial %d %s: %s, %d epoch(s), %.0f s, %s", request.number, state.lower(), shown,
                result.epochs_run, seconds, request.run_dir, extra={"progress": True})
    return result


__all__ = ["EPOCH_METRICS", "FINAL_METRICS", "LOG_FILE", "SELECTION_FORBIDDEN", "TRIAL_FILE", "TrialProgram",
           "TrialRequest", "execute_trial", "metric_value", "params_hash", "trial_dir_name", "utc_now"]
