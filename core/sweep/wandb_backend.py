"""The ``wandb`` backend: W&B's own controller (its bayes/grid/random, its hyperband) and agents.

``wandb.sweep(sweep=<the YAML as a dict>, project=...)`` registers the sweep and returns its id;
``wandb.agent(sweep_id, function=..., count=...)`` then pulls parameter sets from W&B's server. More agents
on other machines join with the printed command (``--resume <entity/project/sweep_id>``), which is how a
sweep grows past one machine. This backend needs W&B credentials: W&B's controller is a server, and
W&B maintainers confirm offline sweeps are not supported (use ``--backend local`` instead).

Inside the agent's function, ``wandb.init()`` returns the sweep's run with the chosen parameters in
``wandb.config`` (nested groups as nested dicts); they are flattened with the same rule as the local
backend and handed to the same trial function. The trainer's tracker then calls ``wandb.init`` again,
which returns this same active run (W&B's ``reinit="return_previous"`` default in scripts), so each trial
is exactly one W&B run: per-epoch metrics (what W&B's hyperband reads) and the summary.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.sweep.config import SweepConfig
from core.sweep.trial import TrialFn, TrialRequest, execute_trial, metric_value, trial_dir_name

logger = logging.getLogger(__name__)

NUMBERS_DIR = ".numbers"


@dataclass(frozen=True)
class WandbSettings:
    sweep_name: str
    trials_dir: Path
    project: str = "inat-cnn"
    entity: str | None = None
    count: int | None = None  # runs this agent does (None = until the sweep ends)
    sweep_id: str | None = None  # join this existing sweep instead of creating one
    tracker_mode: str = "auto"


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


def make_agent_function(cfg: SweepConfig, settings: WandbSettings, trial_fn: TrialFn) -> Callable[[], None]:
    """The function ``wandb.agent`` calls once per run."""

    def run_one() -> None:
        import wandb

        run = wandb.init(project=settings.project, entity=settings.entity, group=settings.sweep_name,
                         job_type="sweep-trial", dir=str(settings.trials_dir.parent))
        try:
            config = run.config.as_dict() if hasattr(run.config, "as_dict") else dict(run.config)
            values = {p.name: p.pick(config) for p in cfg.parameters}
            number = claim_trial_number(settings.trials_dir)
            request = TrialRequest(number=number, values=values, flat=cfg.to_flat(values),
                                   run_dir=settings.trials_dir / trial_dir_name(number, values),
                                   name=run.name or f"{settings.sweep_name}-{number}", group=settings.sweep_name,
                                   tracker_mode=settings.tracker_mode)
            result = execute_trial(trial_fn, request, extra={"backend": "wandb", "wandb_run_id": run.id,
                                                              "sweep_id": os.environ.get("WANDB_SWEEP_ID")})
            value = metric_value(result, cfg.metric.name)
            if wandb.run is not None and wandb.run.id == run.id:  # the trainer's tracker did not finish it
                run.summary.update({cfg.metric.name: value, "parameter_count": result.parameter_count,
                                    "flops": result.flops, "epochs_run": result.epochs_run})
        finally:
            if wandb.run is not None and wandb.run.id == run.id:
                run.finish()

    return run_one


def run_wandb(cfg: SweepConfig, settings: WandbSettings, trial_fn: TrialFn) -> str:
    """Create (or join) the W&B sweep and run one agent here; returns ``entity/project/sweep_id``."""
    import wandb

    sweep_id = settings.sweep_id
    if sweep_id is None:
        sweep_id = wandb.sweep(sweep=cfg.to_wandb_dict(name=settings.sweep_name), project=settings.project,
                               entity=settings.entity)
        logger.info("created W&B sweep %s in project %s", sweep_id, settings.project)
    else:
        logger.info("joining W&B sweep %s", sweep_id)
    parts = sweep_id.split("/")
    entity = settings.entity or os.environ.get("WANDB_ENTITY")
    path = sweep_id if len(parts) == 3 else "/".join(x for x in (entity, settings.project, parts[-1]) if x)
    wandb.agent(sweep_id, function=make_agent_function(cfg, settings, trial_fn), entity=settings.entity,
                project=settings.project, count=settings.count)
    return path
