"""The real trial programs, side by side: a Part A CNN from scratch and a Part B fine-tuning run.

Each is a :class:`~core.sweep.protocol.TrialProgram`: the config's own ``from_flat`` over a ``base`` holding what
the sweep does not search, and the run function ``partA_train.py`` / ``partB_finetune.py`` call, unchanged. The
``RunResult`` comes back as the run returns it (``test_acc`` is reported, never used for selection).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from core.finetune import PartBConfig, run_partB, with_device_defaults
from core.partA import PartAConfig, run_partA
from core.sweep.protocol import TrialProgram
from core.train import RunResult


def partA_program(base: PartAConfig | None = None) -> TrialProgram:  # noqa: N802
    """``PartAConfig.from_flat(values, base)`` → ``run_partA``."""
    return TrialProgram(configure=partial(PartAConfig.from_flat, base=base), run=run_partA)


def partB_program(base: PartBConfig | None = None, device_defaults: bool = False) -> TrialProgram:  # noqa: N802
    """``PartBConfig.from_flat(values, base)`` → ``run_partB``.

    ``device_defaults=True`` (what ``partA_sweep.py`` uses) fills the image size and epochs a trial's
    values leave unset the way ``partB_finetune.py`` does for its flags (``core.finetune.defaults``:
    64 px and 3 epochs on a CPU), per trial, since the searched ``arch`` decides whether a size may change.
    """
    return TrialProgram(configure=partial(_partB_config, base=base, device_defaults=device_defaults),
                        run=_partB_result)


def _partB_config(values: Mapping[str, Any], *, base: PartBConfig | None, device_defaults: bool) -> PartBConfig:  # noqa: N802
    cfg = PartBConfig.from_flat(values, base=base)
    return with_device_defaults(cfg, given=set(values)) if device_defaults else cfg


def _partB_result(cfg: PartBConfig, run_dir: Path, **kwargs: Any) -> RunResult:  # noqa: N802
    return run_partB(cfg, run_dir, **kwargs).result
