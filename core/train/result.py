"""``RunResult``: what one training run produced — the one result type from ``fit`` to a sweep's CSV row.

``fit`` fills the training part, a Part A or Part B run adds the test pass and the model's size
(``dataclasses.replace``), a sweep stores it (``to_dict``/``from_dict``) unchanged. Metrics are fractions in
[0, 1]; validation and training numbers are the best epoch's, those of the kept ``best.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EPOCH_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")  # what every epoch reports
RUN_METRICS = ("best_val_acc", "best_epoch", "test_acc", "test_loss")  # what a finished run adds


@dataclass(frozen=True)
class RunResult:
    best_val_acc: float  # NaN when no epoch finished
    best_epoch: int  # 1-based; 0 when no epoch finished
    history: tuple[Mapping[str, Any], ...] = ()  # one metrics.jsonl line per epoch, resumed epochs included
    best_path: Path | None = None
    last_path: Path | None = None
    stopped_reason: str | None = None  # None = every epoch ran
    # None | "early_stopping" | "callback" (a sweep's prune) | "request" (a stop signal: W&B's stop, Ctrl-C)
    stopped_by: str | None = None
    test_acc: float | None = None  # None until the run's test pass (never for a pruned trial)
    test_loss: float | None = None
    parameter_count: int | None = None  # None until the run counts its model
    flops: int | None = None  # one forward pass of one image (core.model.counting's convention)
    run_dir: Path | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def pruned(self) -> bool:
        """Stopped from outside (a sweep's prune, a stop signal), not by its own early stopping: a sweep
        records it PRUNED, with the best finished epoch as its result and no test pass."""
        return self.stopped_by in ("callback", "request")

    @property
    def best_epoch_stats(self) -> Mapping[str, Any]:
        return next((h for h in self.history if h.get("epoch") == self.best_epoch), {})

    def metrics(self) -> dict[str, float]:
        """Every number a sweep can select or report on; ``val_acc`` is the kept checkpoint's."""
        out: dict[str, float] = {}
        if not math.isnan(self.best_val_acc):
            out.update(val_acc=float(self.best_val_acc), best_val_acc=float(self.best_val_acc),
                       best_epoch=float(self.best_epoch))
        best = self.best_epoch_stats
        for name in ("val_loss", "train_acc", "train_loss"):
            if isinstance(best.get(name), (int, float)):
                out[name] = float(best[name])
        if self.test_acc is not None:
            out["test_acc"] = float(self.test_acc)
        if self.test_loss is not None:
            out["test_loss"] = float(self.test_loss)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (paths as strings)."""
        return {"best_val_acc": None if math.isnan(self.best_val_acc) else self.best_val_acc,
                "best_epoch": self.best_epoch, "history": [dict(h) for h in self.history],
                "best_path": _str(self.best_path), "last_path": _str(self.last_path),
                "stopped_reason": self.stopped_reason, "stopped_by": self.stopped_by,
                "test_acc": self.test_acc, "test_loss": self.test_loss,
                "parameter_count": self.parameter_count, "flops": self.flops, "run_dir": _str(self.run_dir)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        best = data.get("best_val_acc")
        return cls(best_val_acc=float("nan") if best is None else float(best), best_epoch=int(data["best_epoch"]),
                   history=tuple(dict(h) for h in data.get("history") or ()),
                   best_path=_path(data.get("best_path")), last_path=_path(data.get("last_path")),
                   stopped_reason=data.get("stopped_reason"), stopped_by=data.get("stopped_by"),
                   test_acc=data.get("test_acc"), test_loss=data.get("test_loss"),
                   parameter_count=data.get("parameter_count"), flops=data.get("flops"),
                   run_dir=_path(data.get("run_dir")))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path(text: str | None) -> Path | None:
    return None if not text else Path(text)


__all__ = ["EPOCH_METRICS", "RUN_METRICS", "RunResult"]
