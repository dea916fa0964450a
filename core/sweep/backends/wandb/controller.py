"""The ``wandb`` backend: W&B's own controller (its bayes/grid/random, its hyperband) and W&B's own agent.

W&B's ``program`` agent, one process per run: the agent writes each run's parameters to
``WANDB_SWEEP_PARAM_PATH`` and starts :data:`TRIAL_PROGRAM`; a stop from the server is a SIGTERM that
:mod:`core.sweep.backends.wandb.agent` turns into a stop between two batches. Not ``wandb.agent(function=...)``:
that one stops a run by raising an exception inside the trial's thread wherever it is (in ``torch.save``, in
our own error handling), which no code can contain; a signal handler that only sets a flag can. This machine's
settings reach each run through one environment variable (:data:`AGENT_ENV`); more agents join with
:func:`agent_command`. W&B's controller is a server, so this backend needs W&B credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.runfiles import write_text
from core.sweep.backends.wandb.agent import AGENT_ENV, STARTING_LOGS, AgentContext
from core.sweep.definition import SweepConfig
from core.sweep.protocol import TrialProgram
from core.sweep.settings import SweepSettings

logger = logging.getLogger(__name__)

TRIAL_PROGRAM = "experiments/wandb_trial.py"
# ${env} ${interpreter} are W&B's macros (/usr/bin/env, python); no ${args}: the program reads the run's
# parameters the way wandb.init does, from the file W&B's agent names in WANDB_SWEEP_PARAM_PATH.
TRIAL_COMMAND = ("${env}", "${interpreter}", "-m", "experiments.wandb_trial")
LOGIN_HELP = ("--backend wandb needs a W&B login: run `wandb login` (or set WANDB_API_KEY), or use "
              "--backend local to sweep without an account (Optuna, same YAML)")


class WandbUnavailableError(RuntimeError):
    """W&B's server could not be reached or refused the request (one line for the user)."""


def agent_command(sweep_path: str, argv: Sequence[str] | None = None) -> str:
    """Shell command that starts one more agent for ``sweep_path`` (``entity/project/id``) on any machine."""
    args = list(argv or [])
    keep: list[str] = []
    skip_next = False
    for i, a in enumerate(args):  # drop any --resume/--backend the user gave; ours are appended
        if skip_next:
            skip_next = False
            continue
        if a in ("--resume", "--backend"):
            skip_next = i + 1 < len(args) and not args[i + 1].startswith("--")
            continue
        if a.startswith(("--resume=", "--backend=")):
            continue
        keep.append(a)
    cmd = ["python", "experiments/partA_sweep.py", *keep, "--backend", "wandb", "--resume", sweep_path]
    return shlex.join(cmd)


def wandb_sweep_config(cfg: SweepConfig, name: str) -> dict[str, Any]:
    """What ``wandb.sweep`` registers: the YAML as written, with the sweep name and our trial program."""
    out = cfg.to_wandb_dict(name=name)
    out["program"] = TRIAL_PROGRAM
    out["command"] = list(TRIAL_COMMAND)
    return out


def require_login() -> None:
    """ValueError with :data:`LOGIN_HELP` unless wandb can log in without a prompt."""
    from core.train import has_wandb_credentials

    if not has_wandb_credentials():
        raise ValueError(LOGIN_HELP)


AGENT_LEFTOVERS = ("WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_DIR", "WANDB_ENTITY",
                   "WANDB_PROJECT")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for W&B's agent (which hands its environment to every run); restore after.

    W&B's agent also writes the last run's id, sweep id and parameter file into this process's environment
    and its entity and project (:data:`AGENT_LEFTOVERS`); they are restored too, or a later ``wandb.init``
    here would read that run's parameters as its own config."""
    before = {k: os.environ.get(k) for k in (*values, *AGENT_LEFTOVERS)}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _wandb_errors(doing: str) -> Iterator[None]:
    """W&B's login/network errors as one line: ValueError for credentials, WandbUnavailableError otherwise."""
    from wandb.errors import AuthenticationError, CommError, UsageError

    try:
        yield
    except AuthenticationError as err:
        raise ValueError(f"W&B refused the credentials while {doing} ({err}); {LOGIN_HELP}") from None
    except UsageError as err:
        raise ValueError(f"W&B: {err} (while {doing}); {LOGIN_HELP}") from None
    except CommError as err:
        raise WandbUnavailableError(f"could not reach W&B while {doing}: {err}; check the network and "
                                    "WANDB_BASE_URL, or use --backend local") from None


PROJECT_ROOT = Path(__file__).resolve().parents[4]  # core/sweep/backends/wandb/controller.py -> the checkout


def launcher_environment(sweep_dir: Path, trials_dir: Path) -> dict[str, str]:
    """``PATH`` and ``PYTHONPATH`` under which W&B's agent starts each run as this process would.

    The agent runs ``/usr/bin/env python -m experiments.wandb_trial`` in its own folder: a ``python`` first on
    ``PATH`` that is ``sys.executable``, with the project root on ``PYTHONPATH``, makes every run this
    interpreter and this checkout, and keeps each run's whole output in a file (then the trial's ``run.log``).
    """
    bin_dir, logs = sweep_dir / ".agent-bin", trials_dir / STARTING_LOGS
    bin_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    log = f'{shlex.quote(str(logs))}/"${{WANDB_RUN_ID:-run}}.log"'
    write_text(shim, "#!/bin/sh\n# W&B's agent starts each run as `/usr/bin/env python ...`: this interpreter, "
                     f'output kept per run\nexec {shlex.quote(sys.executable)} "$@" >>{log} 2>&1\n')
    shim.chmod(0o755)
    path_env = os.pathsep.join(x for x in (str(bin_dir), os.environ.get("PATH")) if x)
    python_path = os.pathsep.join(x for x in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if x)
    return {"PATH": path_env, "PYTHONPATH": python_path}


def sweep_path_of(sweep_id: str, settings: SweepSettings) -> str:
    """``entity/project/id`` (what ``--resume`` takes on another machine)."""
    parts = sweep_id.split("/")
    if len(parts) == 3:
        return sweep_id
    entity = settings.entity or os.environ.get("WANDB_ENTITY")
    project = os.environ.get("WANDB_PROJECT") or settings.project
    return "/".join(x for x in (entity, project, parts[-1]) if x)


def run_wandb(cfg: SweepConfig, settings: SweepSettings, program: TrialProgram, *,
              argv: Sequence[str] | None = None) -> str:
    """Create the W&B sweep ``settings.name`` (or join ``settings.resume``, a sweep id) and run one W&B agent
    here until it ends; returns ``entity/project/id``.

    The agent runs ``settings.count`` runs (all the sweep gives, if None), each in its own process, which
    gets ``settings`` (with an absolute ``out_dir``) in its :class:`AgentContext`. ``argv`` (the script's
    arguments) only serves to log the command that adds more agents.
    """
    require_login()
    import wandb

    if settings.tracker_mode == "offline":
        logger.warning("--wandb-mode offline: W&B's controller sees no metrics from these runs (bayes learns "
                       "nothing, hyperband stops nothing) until they are uploaded with `wandb sync`")
    sweep_id = settings.resume
    if sweep_id is None:
        with _wandb_errors("creating the sweep"):
            sweep_id = wandb.sweep(sweep=wandb_sweep_config(cfg, settings.name), project=settings.project,
                                   entity=settings.entity)
        logger.info("created W&B sweep %s in project %s", sweep_id, settings.project)
    else:
        logger.info("joining W&B sweep %s", sweep_id)
    path = sweep_path_of(sweep_id, settings)
    logger.info("W&B sweep %s; add agents (this machine's other GPUs, other machines) with:\n  %s", path,
                agent_command(path, argv))
    trials_dir = settings.trials_dir
    trials_dir.mkdir(parents=True, exist_ok=True)
    # the runs' processes read the same settings; out_dir absolute, as trials_dir is, whatever their directory
    context = AgentContext(sweep=dict(cfg.raw), settings=replace(settings, out_dir=settings.out_dir.resolve()),
                           program=program)
    # WANDB_DIR: W&B's agent writes each run's parameter file under it (runs/<name>/wandb/sweep-<id>/)
    env = {AGENT_ENV: context.encode(), "WANDB_DIR": str(trials_dir.parent),
           **launcher_environment(settings.sweep_dir.resolve(), trials_dir)}
    try:
        with _environment(env), _wandb_errors("running the agent"):
            wandb.agent(sweep_id, entity=settings.entity, project=settings.project, count=settings.count)
    finally:
        wandb.teardown()  # W&B's process-wide settings still name the agent's last run and its parameter file
    return path
