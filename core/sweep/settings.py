"""One sweep's settings: the single object that goes from the script's flags to the backend and every process.

``experiments/partA_sweep.py`` parses its flags into :class:`SweepSettings` once; that frozen value reaches
:func:`core.sweep.run_sweep`, the backend, and every process the backend starts (local workers, W&B runs). What a
backend derives from it (storage URL, trials folder, budget) are properties here; what happens while a sweep runs
lives in the backend. ``storage`` may hold a password: it is left out of ``repr``; print :attr:`shown_url`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.registry import lookup
from core.runfiles import run_name
from core.sweep.backend import SWEEP_BACKENDS
from core.sweep.backends.local.storage import display_url, sqlite_url
from core.sweep.definition import SweepConfig
from core.train import TRACKING_MODES


@dataclass(frozen=True)
class SweepSettings:
    """How to run one sweep (everything but the search space and the trainer's base config)."""

    name: str  # folder runs/<name>/, Optuna study, W&B sweep name and group
    out_dir: Path = Path("runs")
    backend: str = "auto"  # auto, or a name in SWEEP_BACKENDS (local, wandb)
    count: int | None = None  # what it counts is the backend's to say (local: trials in all; wandb: runs here)
    storage: str | None = field(default=None, repr=False)  # local: SQLAlchemy URL (may hold a password)
    workers: int = 1  # local: processes sharing the storage
    resume: str | None = None  # the backend's (local: any value = the study must exist; wandb: sweep id to join)
    tracker_mode: str = "auto"  # W&B mode of each trial's run (auto = online with credentials, else offline)
    project: str = "inat-cnn"
    entity: str | None = None
    seed: int = 0
    heartbeat_interval: int = 30  # local: seconds between "still alive" writes of a running trial
    grace_period: int = 120  # local: a RUNNING trial silent this long (another host) is failed and re-queued
    retry_failed: bool = True  # local: a trial that raised is retried by the next run of the same command
    max_consecutive_failures: int = 3  # local: this many failures in a row stop the sweep (0 = never)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        run_name(self.name, "sweep name")
        if self.backend != "auto":
            lookup(SWEEP_BACKENDS, "backend", self.backend, also=("auto",))
        if self.tracker_mode not in TRACKING_MODES:
            raise ValueError(f"unknown W&B mode {self.tracker_mode!r}; expected one of {list(TRACKING_MODES)}")
        if self.count is not None and (isinstance(self.count, bool) or self.count < 1):
            raise ValueError(f"count must be a positive number of trials, got {self.count!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if isinstance(self.max_consecutive_failures, bool) or self.max_consecutive_failures < 0:
            raise ValueError(f"max_consecutive_failures must be >= 0 (0 = never stop), got "
                             f"{self.max_consecutive_failures!r}")

    @property
    def sweep_dir(self) -> Path:
        """``<out_dir>/<name>``: every output of the sweep."""
        return self.out_dir / self.name

    @property
    def trials_dir(self) -> Path:
        """Each trial's run folder goes here; absolute, because the local study stores it and other
        processes (workers, W&B runs) read it from any working directory."""
        return (self.sweep_dir / "trials").resolve()

    @property
    def storage_url(self) -> str:
        """The local backend's storage: ``--storage``, else SQLite in ``<sweep_dir>/optuna.db``. May hold a
        password: show :attr:`shown_url` instead."""
        return self.storage or sqlite_url(self.sweep_dir / "optuna.db")

    @property
    def shown_url(self) -> str:
        """:attr:`storage_url` as it may be printed or written (password masked)."""
        return display_url(self.storage_url)

    @property
    def must_exist(self) -> bool:
        """Local backend: ``--resume`` was given, so the study must exist already (no new sweep is started)."""
        return self.resume is not None

    def budget(self, cfg: SweepConfig) -> int:
        """Trials in the local study (:func:`resolve_budget` of ``cfg`` and :attr:`count`)."""
        return resolve_budget(cfg, self.count)


def resolve_budget(cfg: SweepConfig, count: int | None) -> int:
    """Trials in the study: ``--count``, else ``run_cap``; a grid never runs more than its size."""
    budget = count if count is not None else cfg.run_cap
    if cfg.method == "grid":
        size = cfg.grid_size()
        if budget is None or budget > size:
            budget = size
    if budget is None:
        raise ValueError(f"method {cfg.method!r} never ends on its own: pass --count N or set run_cap in the config")
    return budget
