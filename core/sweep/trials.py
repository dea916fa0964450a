"""The real trial functions, side by side: a Part A CNN from scratch and a Part B fine-tuning run.

Each is a small picklable object (worker processes receive it) holding what the sweep does not search
(``base``). Called with a :class:`~core.sweep.protocol.TrialRequest`, it builds the run's config from the flat keys,
runs it in the trial's folder, reports every epoch and stops when the sweep prunes it; the ``RunResult`` comes
back unchanged (``test_acc`` is reported, never used for selection).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.finetune import PartBConfig, run_partB, with_device_defaults
from core.partA import PartAConfig, run_partA
from core.sweep.protocol import TrialRequest
from core.train import EPOCH_METRICS, EpochStats, RunResult, StopTraining


class PartATrial:
    """``PartAConfig.from_flat(flat, base)`` → ``run_partA``."""

    def __init__(self, base: PartAConfig | None = None) -> None:
        self.base = base

    def build_config(self, flat: Mapping[str, Any]) -> PartAConfig:
        return PartAConfig.from_flat(dict(flat), base=self.base)

    def __call__(self, request: TrialRequest) -> RunResult:
        return run_for_request(run_partA, self.build_config(request.flat), request)


class PartBTrial:
    """``PartBConfig.from_flat(flat, base)`` → ``run_partB``.

    ``device_defaults=True`` (what ``partA_sweep.py`` uses) fills the image size and epochs a trial's
    parameters leave unset the way ``partB_finetune.py`` does for its flags (``core.finetune.defaults``:
    64 px and 3 epochs on a CPU), per trial, since the searched ``arch`` decides whether a size may change.
    """

    def __init__(self, base: PartBConfig | None = None, device_defaults: bool = False) -> None:
        self.base = base
        self.device_defaults = device_defaults

    def build_config(self, flat: Mapping[str, Any]) -> PartBConfig:
        cfg = PartBConfig.from_flat(dict(flat), base=self.base)
        return with_device_defaults(cfg, given=set(flat)) if self.device_defaults else cfg

    def __call__(self, request: TrialRequest) -> RunResult:
        return run_for_request(_partB_result, self.build_config(request.flat), request)


def _partB_result(cfg: PartBConfig, run_dir: Any, **kwargs: Any) -> RunResult:  # noqa: N802
    return run_partB(cfg, run_dir, **kwargs).result


def run_for_request(run_fn: Callable[..., RunResult], cfg: Any, request: TrialRequest) -> RunResult:
    """Run one trial's configured run in its folder, reporting every epoch to the sweep and stopping it
    (``StopTraining``) when the sweep prunes it, or before the next batch when ``request.stop`` is set."""

    def on_epoch_end(epoch: int, stats: EpochStats) -> None:
        metrics = {k: float(getattr(stats, k)) for k in EPOCH_METRICS}
        if request.report(epoch, metrics):
            raise StopTraining(f"pruned by the sweep's early_terminate after epoch {epoch}")

    return run_fn(cfg, request.run_dir, tracker_mode=request.tracker_mode, name=request.name,
                  group=request.group, resume=request.resume, on_epoch_end=on_epoch_end, stop=request.stop)
