"""The ``wandb`` sweep backend: W&B's controller draws the values and W&B's agent starts one process per run
(:mod:`.controller`), which runs the trial with this machine's settings (:mod:`.agent`).
"""

import time

from core.sweep.backend import BackendRun, SweepBackend, register_backend
from core.sweep.backends.wandb.agent import records_from_dirs, run_agent_trial, unstarted_runs
from core.sweep.backends.wandb.controller import WandbUnavailableError, agent_command, require_login, run_wandb


@register_backend("wandb")
class WandbBackend(SweepBackend):
    """W&B's sweep server. ``count``: the runs this agent does (default: all the sweep gives); ``resume``: the
    sweep to join (``entity/project/id``). Records are the trials this machine ran."""

    def check(self, settings) -> None:
        require_login()  # before anything is logged: one line that says how to log in, or to use local
        if settings.workers != 1 or settings.storage is not None:
            raise ValueError("--workers/--storage belong to the local backend; with W&B start more agents with "
                             "the printed command instead")
        if settings.resume == "":
            raise ValueError("--resume with the wandb backend needs the sweep to join: --resume entity/project/id")

    def run(self, cfg, settings, program, *, argv=None) -> BackendRun:
        began = time.time()
        path = run_wandb(cfg, settings, program, argv=argv)
        unstarted = [p for p in unstarted_runs(settings.trials_dir) if p.stat().st_mtime >= began]
        return BackendRun(records=tuple(records_from_dirs(settings.trials_dir, cfg)), unstarted=tuple(unstarted),
                          sweep_path=path, agent_command=agent_command(path, argv))

    def notes(self, cfg) -> list[str]:
        return ["Search and early termination by W&B's sweep controller; this page lists the trials run on this "
                "machine, the W&B sweep page lists all agents' runs."]


__all__ = ["WandbBackend", "WandbUnavailableError", "agent_command", "records_from_dirs", "run_agent_trial"]
