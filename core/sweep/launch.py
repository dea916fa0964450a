"""Part A sweeps: a W&B sweep config run on W&B (``wandb``) or locally with Optuna (``local``), then reported.

``run_sweep(cfg, settings, program)`` is the one entry point: it picks the backend (``auto`` = ``wandb`` when
W&B credentials exist, and says why), checks before any training that every value the sweep can draw builds a
valid trainer config, runs the trials and writes ``runs/<name>/`` (results.csv, best.pt, best_config.yaml, the
figures, report.html, ``trials/<number>-<hash>/``; docs/CONTRACTS.md). Parsing is :mod:`core.sweep.definition`, the
backends sit behind :mod:`core.sweep.backend`, one trial is :mod:`core.sweep.protocol`, outputs are
:mod:`core.reports`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.reports import TrialRecord, best_record, write_sweep_outputs
from core.sweep.backend import BackendRun, get_backend
from core.sweep.definition import SweepConfig
from core.sweep.params import ParamSpec, quantize
from core.sweep.protocol import EPOCH_METRICS, FINAL_METRICS, SELECTION_FORBIDDEN, TrialProgram
from core.sweep.settings import SweepSettings
from core.sweep.trials import partA_program
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
    """(backend, reason). ``auto`` → ``wandb`` with W&B credentials, else ``local``; any other name must be in
    :data:`~core.sweep.backend.SWEEP_BACKENDS`."""
    if requested != "auto":
        get_backend(requested)  # ValueError listing the valid names
        return requested, f"--backend {requested}"
    if has_wandb_credentials():
        return "wandb", "W&B credentials found (WANDB_API_KEY or `wandb login`): W&B's sweep controller"
    return "local", "no W&B credentials (WANDB_API_KEY / `wandb login`): Optuna on local storage, trials logged offline"


def check_metric(cfg: SweepConfig) -> None:
    """The sweep metric must be one the trials report, and never a test-set metric."""
    if cfg.metric.name in SELECTION_FORBIDDEN:
        raise ValueError(f"metric.name {cfg.metric.name!r} would select models on the test set (val/); use "
                         f"val_acc or val_loss")
    if cfg.metric.name not in EPOCH_METRICS + FINAL_METRICS:
        raise ValueError(f"metric.name {cfg.metric.name!r} is not reported by the trials; expected one of "
                         f"{sorted(EPOCH_METRICS + FINAL_METRICS)}")


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


def validate_trainer_keys(cfg: SweepConfig, program: TrialProgram) -> None:
    """Build the run config (``program.configure``) for every categorical value and range end, so a bad value
    fails before any trial runs; then check that what every trial would need exists here
    (:func:`check_runnable`)."""
    options = {p.name: _candidates(p) for p in cfg.parameters}
    first = {name: vals[0] for name, vals in options.items() if vals}
    try:
        built = [program.configure(first)]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the sweep's first point {first} is not a valid trainer config: {exc}") from exc
    for p in cfg.parameters:
        for value in options[p.name]:
            try:
                built.append(program.configure({**first, p.name: value}))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"parameters.{p.dotted} = {value!r} is not a valid trainer setting "
                                 f"({p.name}): {exc}") from exc
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


def mapping_notes(cfg: SweepConfig, backend: Any) -> list[str]:
    """The report's notes: the trial metric, how ``backend`` maps the sweep config, the importance measure."""
    return [f"Trial metric {cfg.metric.name}: for val_acc, the validation accuracy of the kept best.pt, the "
            "trial's epoch with the lowest val_loss (--monitor; Part A's default) or the highest val_acc; test "
            "accuracy (val/) is reported but never used for selection.", *backend.notes(cfg),
            "Importance = adjusted share of variance explained (ε²); W&B's panel uses a random forest."]


def run_sweep(cfg: SweepConfig, settings: SweepSettings, program: TrialProgram | None = None, *,
              argv: Sequence[str] | None = None) -> SweepSummary:
    """Run (or continue) the sweep and write its outputs; ``program`` defaults to Part A's
    (:func:`~core.sweep.trials.partA_program`).

    ``argv`` (the script's arguments) only serves to print the command that adds W&B agents elsewhere.
    """
    program = program if program is not None else partA_program()
    check_metric(cfg)
    validate_trainer_keys(cfg, program)
    name, reason = choose_backend(settings.backend)
    backend = get_backend(name)
    backend.check(settings)
    logger.info("sweep %s: backend %s (%s)", settings.name, name, reason)
    settings.sweep_dir.mkdir(parents=True, exist_ok=True)
    run = backend.run(cfg, settings, program, argv=argv)
    records = list(run.records)
    outputs: dict[str, Path | str] = dict(write_sweep_outputs(
        cfg, records, sweep_dir=settings.sweep_dir, sweep_name=settings.name, backend=name,
        notes=mapping_notes(cfg, backend)))
    failure, note = judge(records, run)
    return SweepSummary(name=settings.name, backend=name, backend_reason=reason, sweep_dir=settings.sweep_dir,
                        records=tuple(records), best=best_record(records, cfg), outputs={**outputs, **run.outputs},
                        storage_url=run.storage_url, sweep_path=run.sweep_path, agent_command=run.agent_command,
                        failure=failure, note=note)


def judge(records: Sequence[TrialRecord], run: BackendRun) -> tuple[str | None, str | None]:
    """(failure, note): one line if the sweep failed — no trial produced a result, or the backend stopped on
    failures in a row — else a note on failed trials."""
    unstarted = run.unstarted
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
    retries = run.retries_failed  # W&B's controller does not retry a failed run; ours does
    retry = "fix the cause and rerun the same command: failed trials are retried" if retries else "fix the cause"
    if not any(r.has_result for r in records):
        return f"no trial succeeded ({len(failed)} failed); the first error, {where}: {first.error}; {retry}", None
    if run.failure_streak:
        return (f"stopped after {run.failure_streak} trials failed in a row; the first error, {where}: "
                f"{first.error}; {retry}"), None
    tail = "; rerun the same command to retry them" if retries else ""
    return None, f"{len(failed)} trial(s) failed (first: {where}: {first.error}){tail}"
