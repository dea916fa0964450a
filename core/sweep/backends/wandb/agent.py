"""One W&B sweep run, in the process W&B's agent started for it (``python -m experiments.wandb_trial``).

The agent hands over the run's parameters (``WANDB_SWEEP_PARAM_PATH``, read with W&B's own reader), the run id,
and this machine's :class:`AgentContext` (sweep, settings, trial program) in :data:`AGENT_ENV`. The run is the
local backend's :func:`core.sweep.protocol.execute_trial`, with a :class:`core.train.StopRequest` on SIGTERM and
SIGINT (W&B's stop), so a stopped trial ends before its next batch, PRUNED, with its best finished epoch. Exit 0
for a finished or stopped run (W&B does not requeue it), 1 for a failure.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.reports import TrialRecord
from core.runfiles import read_json
from core.sweep.definition import SweepConfig, parse_sweep_config
from core.sweep.protocol import TRIAL_FILE, TrialProgram, TrialRequest, execute_trial, trial_dir_name
from core.sweep.settings import SweepSettings
from core.train import RunResult

logger = logging.getLogger(__name__)

AGENT_ENV = "INAT_CNN_WANDB_AGENT"
NUMBERS_DIR = ".numbers"
STARTING_LOGS = ".starting"  # trials/.starting/<run id>.log: a run's output until its trial folder exists
RUN_LOG = "run.log"  # the run's whole stdout and stderr, in its trial folder
NOT_FROM_OUR_AGENT = (f"{AGENT_ENV} is not set: this program runs W&B sweep runs started by "
                      "`python experiments/partA_sweep.py --backend wandb [--resume entity/project/id]`, "
                      "which passes this machine's data folder and device; start agents with that command "
                      "instead of a bare `wandb agent`")


@dataclass(frozen=True)
class AgentContext:
    """What the agent's host process tells each run's process (pickled: the trial program holds functions)."""

    sweep: Mapping[str, Any]  # the sweep YAML as a mapping (parameters are read with its names)
    settings: SweepSettings  # the agent's own settings (out_dir absolute): names, trials folder, W&B mode
    program: TrialProgram

    def encode(self) -> str:
        return base64.b64encode(pickle.dumps(self)).decode("ascii")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentContext:
        text = env.get(AGENT_ENV)
        if not text:
            raise ValueError(NOT_FROM_OUR_AGENT)
        context = pickle.loads(base64.b64decode(text))  # written by our own parent process, never by a user
        if not isinstance(context, cls):
            raise ValueError(f"{AGENT_ENV} does not hold an agent context; {NOT_FROM_OUR_AGENT}")
        return context


def claim_trial_number(trials_dir: Path) -> int:
    """The next free trial number on this machine (an exclusive marker file; safe for parallel agents)."""
    marks = Path(trials_dir) / NUMBERS_DIR
    marks.mkdir(parents=True, exist_ok=True)
    n = len(list(marks.iterdir()))
    while True:
        try:
            with open(marks / str(n), "x", encoding="ascii") as fh:
                fh.write(f"{os.getpid()}\n")
            return n
        except FileExistsError:
            n += 1


def read_run_parameters(env: Mapping[str, str]) -> dict[str, Any]:
    """The run's parameters from W&B's agent (``{name: value}``, nested groups as dicts).

    The file is W&B's config-defaults format (``name: {value: ...}``, an optional ``wandb_version: 1``),
    the one ``wandb.init`` reads; read here with PyYAML rather than W&B's private reader."""
    import yaml

    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if not path:
        raise ValueError("WANDB_SWEEP_PARAM_PATH is not set: this program is started by W&B's sweep agent, "
                         "not by hand; see `python experiments/partA_sweep.py --help`")
    with open(path, encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh) or {}
    loaded.pop("wandb_version", None)
    return {k: v["value"] for k, v in loaded.items() if isinstance(v, dict) and "value" in v}


def adopt_run_log(trials_dir: Path, run_id: str | None, run_dir: Path) -> None:
    """Move this run's output file (opened by the agent's launcher, still being written) into ``run_dir``."""
    started = Path(trials_dir) / STARTING_LOGS / f"{run_id}.log"
    if run_id and started.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        os.replace(started, run_dir / RUN_LOG)  # same file system; the open descriptor keeps writing to it


def unstarted_runs(trials_dir: Path) -> list[Path]:
    """Output files of runs that ended before they had a trial folder (a failed start), oldest first."""
    return sorted((Path(trials_dir) / STARTING_LOGS).glob("*.log"), key=lambda p: p.stat().st_mtime)


def run_agent_trial(env: Mapping[str, str] | None = None, *, stop: Any = None) -> RunResult:
    """Run the trial W&B's agent started this process for; see the module docstring.

    ``stop`` is the process's :class:`core.train.StopRequest` (the caller installs its signal handlers
    as early as it can); a new one is made when None.
    """
    from core.train import StopRequest

    env = os.environ if env is None else env
    context = AgentContext.from_env(env)
    cfg = parse_sweep_config(dict(context.sweep))
    given = read_run_parameters(env)
    try:
        values = {p.name: p.pick(given) for p in cfg.parameters}
    except KeyError as err:
        raise ValueError(f"{err.args[0]}: the sweep on W&B was created from another YAML than --config; "
                         "pass the YAML the sweep was created with") from None
    settings = context.settings
    number = claim_trial_number(settings.trials_dir)
    run_id = env.get("WANDB_RUN_ID")
    request = TrialRequest(number=number, values=values, run_dir=settings.trials_dir / trial_dir_name(number, values),
                           name=f"{settings.name}-{number}", group=settings.name, tracker_mode=settings.tracker_mode,
                           stop=stop if stop is not None else StopRequest())
    adopt_run_log(settings.trials_dir, run_id, request.run_dir)
    logger.info("W&B run %s → trial %d in %s", run_id, number, request.run_dir)
    return execute_trial(context.program, request,
                         extra={"backend": "wandb", "wandb_run_id": run_id, "sweep_id": env.get("WANDB_SWEEP_ID")})


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value not in (None, "") else None


def records_from_dirs(trials_dir: Path, cfg: SweepConfig) -> list[TrialRecord]:
    """Records from ``trials/*/trial.json`` (what this machine ran), sorted by trial number."""
    out: list[TrialRecord] = []
    for path in sorted(Path(trials_dir).glob(f"*/{TRIAL_FILE}")):
        data = read_json(path)
        result = RunResult.from_dict(data["result"]) if data.get("result") else None
        out.append(TrialRecord(
            number=int(data["number"]), state=str(data.get("state", "RUNNING")),
            hyperparameters=data.get("values", {}),
            objective=result.metrics().get(cfg.metric.name) if result else None, result=result,
            started_at=_when(data.get("started_at")), ended_at=_when(data.get("ended_at")), run_dir=path.parent,
            error=data.get("error")))
    return sorted(out, key=lambda r: r.number)
