"""What a sweep backend must do, and the registry that names them (``SWEEP_BACKENDS``: name -> class).

A backend creates the sweep or joins it (``settings.resume``), runs trials with the trial program until
its budget or controller says stop, and reports every trial it can see as records. Two ship, each in its own
subpackage: ``local`` (:mod:`core.sweep.backends.local`, Optuna) and ``wandb`` (:mod:`core.sweep.backends.wandb`).
Adding one is a class and a decorator line, as torchvision's ``register_model``::

    @register_backend("mine")
    class MyBackend(SweepBackend):
        def run(self, cfg, settings, program, *, argv=None) -> BackendRun: ...

What ``count`` and ``resume`` mean is each backend's to say, in its class docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.registry import lookup, registrar

if TYPE_CHECKING:
    from core.reports import TrialRecord
    from core.sweep.definition import SweepConfig
    from core.sweep.protocol import TrialProgram
    from core.sweep.settings import SweepSettings


@dataclass(frozen=True)
class BackendRun:
    """What one run of a backend hands back to :func:`core.sweep.run_sweep`."""

    records: tuple[TrialRecord, ...]  # every trial the backend can see, in trial-number order
    retries_failed: bool = False  # the next run of the same command retries failed trials
    failure_streak: int = 0  # failures in a row that stopped the sweep (0: it did not stop for failures)
    unstarted: tuple[Path, ...] = ()  # output files of runs that failed before they had a trial folder
    outputs: dict[str, Path | str] = field(default_factory=dict)  # extra outputs (e.g. the storage)
    storage_url: str | None = None  # where the study lives, password masked
    sweep_path: str | None = None  # the controller's id of the sweep (W&B: entity/project/id)
    agent_command: str | None = None  # how to add workers on other machines


class SweepBackend(ABC):
    """Runs the trials of one sweep; one instance per :func:`core.sweep.run_sweep` call."""

    def check(self, settings: SweepSettings) -> None:  # noqa: B027  (optional: most settings fit every backend)
        """Refuse settings this backend cannot honour (ValueError), before anything is created."""

    @abstractmethod
    def run(self, cfg: SweepConfig, settings: SweepSettings, program: TrialProgram, *,
            argv: Sequence[str] | None = None) -> BackendRun:
        """Create or join the sweep, run trials until it ends here, and return every trial it can see."""

    def notes(self, cfg: SweepConfig) -> list[str]:
        """How the W&B sweep config maps onto this backend, for the report page."""
        return []


SWEEP_BACKENDS: dict[str, type[SweepBackend]] = {}


register_backend = registrar(SWEEP_BACKENDS, "backend")  # @register_backend("name") on a SweepBackend class


def get_backend(name: str, **kwargs: Any) -> SweepBackend:
    """The backend registered as ``name``; a ValueError lists the valid names."""
    return lookup(SWEEP_BACKENDS, "backend", name, also=("auto",))(**kwargs)
