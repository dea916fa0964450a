"""Part A sweeps: a W&B sweep config run on W&B (``wandb``) or locally with Optuna (``local``), then reported.

``run_sweep(cfg, settings, trial_fn)`` is the one entry point. It picks the backend (``auto`` = ``wandb``
when W&B credentials exist, else ``local``, and says why), checks before any training that every value
the sweep can draw builds a valid trainer config, runs the trials, and writes ``runs/<name>/``:

* ``results.csv`` – one row per trial (metric, other metrics, parameters, params/FLOPs, times, state)
* ``best.pt`` / ``best_config.yaml`` – the best trial's checkpoint (copied atomically) and configuration
* ``metric_vs_time.png``, ``parallel_coordinates.png``, ``importance.png``, ``optimization_history.png``,
  ``learning_curves.png`` – the figures (:mod:`core.sweep.plots`)
* ``report.html`` – one self-contained page with the observations (:mod:`core.sweep.report`)
* ``trials/<number>-<hash>/`` – each trial's run folder; ``optuna.db`` – the local backend's storage

Module map: :mod:`core.sweep.config` (+ :mod:`core.sweep.params`) parse, :mod:`core.sweep.space` maps to
Optuna, :mod:`core.sweep.local` / :mod:`core.sweep.budget` run locally, :mod:`core.sweep.wandb_backend` runs on
W&B, :mod:`core.sweep.trial` is one trial, :mod:`core.sweep.results` / :mod:`core.sweep.analysis` /
:mod:`core.sweep.plots` / :mod:`core.sweep.report` turn trials into outputs. :mod:`core.sweep.settings`
holds :class:`SweepSettings`, the one settings object both backends and their processes read.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.sweep.config import SweepConfig
from core.sweep.params import ParamSpec
from core.sweep.results import TrialRecord, best_record, write_best, write_results_csv
from core.sweep.settings import BACKENDS, SweepSettings
from core.sweep.space import quantize
from core.sweep.trial import EPOCH_METRICS, FINAL_METRICS, SELECTION_FORBIDDEN, TrialFn
from core.sweep.trials import PartATrial
from core.sweep.wandb_backend import require_login
from core.train import has_wandb_credentials

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SweepSummary:
    name: str
    backend: str
    backend_reason: str
    sweep_dir: Path
    records: tuple[TrialRecord, ...]
    best: TrialRecord | None
    outputs: dict[str, Path | str] = field(default_factory=dict)
    storage_url: str | None = None  # local: the storage, password masked
    sweep_path: str | None = None  # wandb: entity/project/id
    agent_command: str | None = None  # wandb: how to add agents on other machines
    failure: str | None = None  # one line when the sweep failed (no trial succeeded, or stopped by failures)
    note: str | None = None  # one line about failed trials that the next run retries

    @property
    def failed(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.state == "FAIL" and r.error)


def choose_backend(requested: str) -> tuple[str, str]:
    """(backend, reason). ``auto`` → ``wandb`` with W&B credentials, else ``local``; ``wandb`` without
    credentials is a ValueError saying how to log in."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; expected one of {list(BACKENDS)}")
    if requested == "wandb":
        require_login()  # before anything is logged: one line that says how to log in, or to use local
    if requested != "auto":
        return requested, f"--backend {requested}"
    if has_wandb_credentials():
        return "wandb", "W&B credentials found (WANDB_API_KEY or `wandb login`): W&B's sweep controller"
    return "local", "no W&B credentials (WANDB_API_KEY / `wandb login`): Optuna on local storage, trials logged offline"


def check_metric(cfg: SweepConfig, known: Sequence[str] | None) -> None:
    """The sweep metric must be one the trials report, and never a test-set metric."""
    if cfg.metric.name in SELECTION_FORBIDDEN:
        raise ValueError(f"metric.name {cfg.metric.name!r} would select models on the test set (val/); use "
                         f"val_acc or val_loss")
    if known is not None and cfg.metric.name not in known:
        raise ValueError(f"metric.name {cfg.metric.name!r} is not reported by Part A trials; expected one of "
                         f"{sorted(known)}")


def _candidates(p: ParamSpec) -> list[Any]:
    """Values worth checking against the trainer: every choice, or both ends of a range (or the mean)."""
    d = p.distribution
    if d in ("constant", "categorical", "categorical_w_probabilities"):
        return list(p.values)
    if d in ("int_uniform", "q_uniform"):
        grid = p.grid_values()
        return [grid[0], grid[-1]] if grid else [quantize(p, p.min)]
    if d in ("uniform", "log_uniform_values", "q_log_uniform_values"):
        return [quantize(p, p.min), quantize(p, p.max)]
    if d in ("log_uniform", "q_log_uniform"):
        return [quantize(p, math.exp(p.min)), quantize(p, math.exp(p.max))]
    if d in ("normal", "q_normal"):
        return [quantize(p, p.mu)]
    if d in ("log_normal", "q_log_normal"):
        return [quantize(p, math.exp(p.mu))]
    return []  # not drawable locally (inv_log_uniform*, beta): W&B checks those


def validate_trainer_keys(cfg: SweepConfig, trial: Any) -> None:
    """Build the trainer config (``trial.build_config(flat)``, as :class:`PartATrial` and Part B's trial
    have) for every categorical value and range end, so a bad value fails before any trial runs; then
    check that what every trial would need exists here (:func:`check_runnable`)."""
    options = {p.name: _candidates(p) for p in cfg.parameters}
    base = {name: vals[0] for name, vals in options.items() if vals}
    flat = {q.flat_key: base[q.name] for q in cfg.parameters if q.name in base}
    try:
        built = [trial.build_config(flat)]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the sweep's first point {flat} is not a valid trainer config: {exc}") from exc
    for p in cfg.parameters:
        for value in options[p.name]:
            values = {**base, p.name: value}
            flat = {q.flat_key: values[q.name] for q in cfg.parameters if q.name in values}
            try:
                built.append(trial.build_config(flat))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"parameters.{p.name} = {value!r} is not a valid trainer setting "
                                 f"({p.flat_key}): {exc}") from exc
    check_runnable(built)


def check_runnable(configs: Sequence[Any]) -> None:
    """Refuse what would fail every trial, before the first one: a device this machine lacks (``--device
    cuda`` without a GPU) or a data folder that does not exist or lacks train/ and val/."""
    from core.data import scan_dataset
    from core.devices import resolve_device

    devices = {str(getattr(getattr(c, "train", None), "device", "auto")) for c in configs}
    for device in sorted(devices):
        resolve_device(device)  # ValueError: "device 'cuda' requested but CUDA is not available here; ..."
    folders = {getattr(getattr(c, "data", None), "data_dir", None) for c in configs} - {None}
    for folder in sorted(folders, key=str):
        scan_dataset(Path(folder))  # FileNotFoundError / ValueError naming the folder and the layout


def mapping_notes(cfg: SweepConfig, backend: str) -> list[str]:
    notes = [f"Trial metric {cfg.metric.name}: for val_acc, the validation accuracy of the kept best.pt, the best "
             "epoch by the run's monitored metric (Part A's default: the lowest val_loss); test accuracy (val/) "
             "is reported but never used for selection."]
    if backend == "local":
        sampler = {"grid": "Optuna GridSampler (W&B grid values)", "random": "Optuna RandomSampler",
                   "bayes": "Optuna TPESampler: W&B's bayes is a Gaussian process, TPE a different Bayesian "
                            "optimiser (random for its first 10 trials)"}[cfg.method]
        notes.append(f"method {cfg.method} → {sampler}.")
        hb = cfg.early_terminate
        if hb is not None:
            notes.append(f"early_terminate hyperband → Optuna HyperbandPruner(min_resource={hb.first_bracket}, "
                         f"reduction_factor={int(hb.eta)}) fed {cfg.metric.name} every epoch; W&B's strict={hb.strict} "
                         "has no Optuna counterpart.")
        if any(p.distribution.startswith(("normal", "q_normal", "log_normal", "q_log_normal"))
               or p.distribution == "categorical_w_probabilities" for p in cfg.parameters):
            notes.append("normal/log_normal/categorical_w_probabilities parameters are drawn as a uniform 'u' "
                         "(stored as '<name>:cdf' in Optuna) mapped through W&B's distribution.")
    else:
        notes.append("Search and early termination by W&B's sweep controller; this page lists the trials run on "
                     "this machine, the W&B sweep page lists all agents' runs.")
    notes.append("Importance = adjusted share of variance explained (ε²); W&B's panel uses a random forest.")
    return notes


def write_outputs(cfg: SweepConfig, records: Sequence[TrialRecord], *, sweep_dir: Path, sweep_name: str,
                  backend: str, notes: Sequence[str] = ()) -> dict[str, Path]:
    """results.csv, best.pt, best_config.yaml, figures and report.html in ``sweep_dir``."""
    from core.sweep.analysis import analyse
    from core.sweep.plots import write_sweep_figures
    from core.sweep.report import write_report

    sweep_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {"results.csv": write_results_csv(sweep_dir / "results.csv", records, cfg)}
    outputs.update(write_best(sweep_dir, best_record(records, cfg), cfg, sweep_name=sweep_name))
    analysis = analyse(records, cfg)
    figures = write_sweep_figures(records, analysis, cfg, sweep_dir)
    outputs.update({f"{k}.png": v for k, v in figures.items()})
    outputs["trials/"] = sweep_dir / "trials"
    outputs["report.html"] = sweep_dir / "report.html"
    write_report(sweep_dir / "report.html", cfg=cfg, sweep_name=sweep_name, backend=backend, records=records,
                 analysis=analysis, figures=figures, notes=notes, outputs=outputs)
    return outputs


def run_sweep(cfg: SweepConfig, settings: SweepSettings, trial_fn: TrialFn | None = None, *,
              argv: Sequence[str] | None = None) -> SweepSummary:
    """Run (or continue) the sweep and write its outputs; ``trial_fn`` defaults to :class:`PartATrial`.

    ``argv`` (the script's arguments) only serves to print the command that adds W&B agents elsewhere.
    """
    trial_fn = trial_fn if trial_fn is not None else PartATrial()
    trainer_backed = callable(getattr(trial_fn, "build_config", None))  # PartATrial, PartBTrial
    check_metric(cfg, EPOCH_METRICS + FINAL_METRICS if trainer_backed else None)
    if trainer_backed:
        validate_trainer_keys(cfg, trial_fn)
    backend, reason = choose_backend(settings.backend)
    logger.info("sweep %s: backend %s (%s)", settings.name, backend, reason)
    sweep_dir = settings.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage_url = sweep_path = command = None
    run = None
    unstarted: list[Path] = []
    if backend == "local":
        from core.sweep.local import open_study, run_local
        from core.sweep.results import records_from_study

        storage_url = settings.shown_url
        run = run_local(cfg, settings, trial_fn)
        records = records_from_study(open_study(cfg, settings), cfg)
    else:
        from core.sweep.results import records_from_dirs
        from core.sweep.wandb_backend import agent_command, run_wandb
        from core.sweep.wandb_trial import unstarted_runs

        if settings.workers != 1 or settings.storage is not None:
            raise ValueError("--workers/--storage belong to the local backend; with W&B start more agents with "
                             "the printed command instead")
        if settings.resume == "":
            raise ValueError("--resume with the wandb backend needs the sweep to join: --resume entity/project/id")
        began = time.time()
        sweep_path = run_wandb(cfg, settings, trial_fn, argv=argv)
        command = agent_command(sweep_path, argv)
        records = records_from_dirs(settings.trials_dir, cfg)
        unstarted = [p for p in unstarted_runs(settings.trials_dir) if p.stat().st_mtime >= began]
    outputs: dict[str, Path | str] = dict(write_outputs(cfg, records, sweep_dir=sweep_dir, sweep_name=settings.name,
                                                         backend=backend, notes=mapping_notes(cfg, backend)))
    if storage_url is not None:
        outputs["optuna storage"] = Path(storage_url.removeprefix("sqlite:///")) if storage_url.startswith(
            "sqlite:///") else storage_url
    failure, note = judge(records, run, unstarted)
    return SweepSummary(name=settings.name, backend=backend, backend_reason=reason, sweep_dir=sweep_dir,
                        records=tuple(records), best=best_record(records, cfg), outputs=outputs,
                        storage_url=storage_url, sweep_path=sweep_path, agent_command=command, failure=failure,
                        note=note)


def judge(records: Sequence[TrialRecord], run: Any = None,
          unstarted: Sequence[Path] = ()) -> tuple[str | None, str | None]:
    """(failure, note): one line if the sweep failed — no trial produced a result, or ``run`` (a local
    :class:`~core.sweep.local.LocalRun`) stopped on failures in a row — else a note on failed trials.

    ``unstarted``: output files of W&B runs that failed before they had a trial folder (oldest first)."""
    failed = sorted((r for r in records if r.state == "FAIL" and r.error), key=lambda r: (r.ended_at is None,
                                                                                          r.ended_at, r.number))
    if not failed and not any(r.has_result for r in records):
        if unstarted:
            lines = [x for x in unstarted[0].read_text(errors="replace").splitlines() if x.strip()]
            return (f"no trial produced a result: {len(unstarted)} W&B run(s) failed to start; the first, run "
                    f"{unstarted[0].stem}: {lines[-1].strip() if lines else 'no output'} (full log: "
                    f"{unstarted[0]})"), None
        return "no trial produced a result: no trial ran (the sweep may be finished, or its runs all taken)", None
    if not failed:
        return None, None
    first = failed[0]
    log = first.run_dir / "run.log" if first.run_dir else None
    where = f"trial {first.number}" + (f" in {first.run_dir}" if first.run_dir else "") + (
        f" (full log: {log})" if log is not None and log.is_file() else "")
    local = run is not None  # W&B's controller does not retry a failed run; ours does
    retry = "fix the cause and rerun the same command: failed trials are retried" if local else "fix the cause"
    if not any(r.has_result for r in records):
        return f"no trial succeeded ({len(failed)} failed); the first error, {where}: {first.error}; {retry}", None
    if run is not None and getattr(run, "stopped_for_failures", False):
        return (f"stopped after {run.failure_streak} trials failed in a row; the first error, {where}: "
                f"{first.error}; {retry}"), None
    tail = "; rerun the same command to retry them" if local else ""
    return None, f"{len(failed)} trial(s) failed (first: {where}: {first.error}){tail}"
