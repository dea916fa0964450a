"""Experiment tracking with Weights & Biases: the one module that imports ``wandb`` (lazily).

``online`` with W&B credentials, else ``offline`` into ``<run_dir>/wandb/`` (``wandb sync`` later);
``disabled`` never imports wandb. Training never depends on W&B: every call is wrapped, and a failure is a
warning that turns the tracker into a no-op. Config keys that look like credentials are dropped before
``wandb.init``. ``metrics.jsonl`` and ``config.yaml`` hold the same numbers, so nothing needs W&B to be read back.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.runfiles import to_plain, write_text

__all__ = ["TRACKING_MODES", "Tracker", "has_wandb_credentials", "resolve_mode"]

log = logging.getLogger(__name__)

TRACKING_MODES = ("auto", "online", "offline", "disabled")
WANDB_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                      "disabled": "disabled"}
DEFAULT_HOST = "https://api.wandb.ai"
RUN_ID_FILE = "wandb-run-id.txt"  # lets a resumed training run continue the same W&B run
_SECRET_KEY = re.compile(r"api_?key|token|password|secret", re.IGNORECASE)


def has_wandb_credentials() -> bool:
    """True when wandb could log in without a prompt: env key/token file, or a netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or ""
    candidates = [Path(os.environ["NETRC"])] if os.environ.get("NETRC") else \
        [Path.home() / ".netrc", Path.home() / "_netrc"]
    for path in candidates:
        if path.is_file():
            try:
                entry = netrc.netrc(str(path)).authenticators(host)
            except (netrc.NetrcParseError, OSError) as err:
                log.warning("cannot read %s (%s); treating W&B as not logged in", path, type(err).__name__)
                continue
            if entry and entry[2]:
                return True
    return False


def resolve_mode(requested: str = "auto") -> str:
    """``online`` | ``offline`` | ``disabled``: an explicit request, else ``WANDB_MODE``, else credentials."""
    if requested not in TRACKING_MODES:
        raise ValueError(f"unknown W&B mode {requested!r}; expected one of {list(TRACKING_MODES)}")
    mode = requested
    if mode == "auto":
        if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
            return "disabled"
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        if env and env not in WANDB_MODE_ALIASES:
            raise ValueError(f"WANDB_MODE={env!r} is not a W&B mode; expected one of {sorted(WANDB_MODE_ALIASES)}")
        mode = WANDB_MODE_ALIASES.get(env) or ("online" if has_wandb_credentials() else "offline")
    if mode == "online" and not has_wandb_credentials():
        log.warning("W&B online mode needs credentials (WANDB_API_KEY or `wandb login`); logging offline instead "
                    "(upload later with `wandb sync`)")
        mode = "offline"
    return mode


def _scrub(value: Any) -> Any:
    """Drop credential-looking keys anywhere in a plain config tree."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


class Tracker:
    """A W&B run, or a no-op when disabled or after a W&B failure. Use ``Tracker.start(...)``."""

    def __init__(self, run: Any, mode: str, run_dir: Path) -> None:
        self._run = run
        self.mode = mode if run is not None else "disabled"
        self.run_dir = Path(run_dir)
        self._warned = False

    @classmethod
    def start(cls, *, run_dir: Path | str, name: str, config: Mapping[str, Any], project: str = "inat-cnn",
              group: str | None = None, job_type: str | None = None, mode: str = "auto",
              tags: Iterable[str] = (), resume: bool = False) -> Tracker:
        """Begin a run whose files live in ``run_dir/wandb``; ``resume`` continues the run recorded there."""
        run_dir = Path(run_dir)
        mode = resolve_mode(mode)
        if mode == "disabled":
            return cls(None, "disabled", run_dir)
        try:
            import wandb
        except ImportError as err:
            log.warning("wandb is not importable (%s); tracking disabled", err)
            return cls(None, "disabled", run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / RUN_ID_FILE
        in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))  # a W&B agent assigns the run itself
        kwargs: dict[str, Any] = {}
        if resume and id_file.is_file() and not in_sweep:
            kwargs = {"id": id_file.read_text().strip(), "resume": "allow"}
        try:
            run = wandb.init(project=project, name=name, group=group, job_type=job_type, dir=str(run_dir),
                             config=_scrub(to_plain(dict(config))), mode=mode, tags=list(tags), **kwargs)
        except Exception as err:  # never let W&B stop training
            log.warning("W&B init failed (%s: %s); continuing without W&B", type(err).__name__, err)
            return cls(None, "disabled", run_dir)
        if not in_sweep:
            write_text(id_file, run.id + "\n")
        log.info("W&B run %s (%s)%s", run.id, mode, f": {run.url}" if mode == "online" and run.url else "")
        return cls(run, mode, run_dir)

    @property
    def active(self) -> bool:
        return self._run is not None

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self._run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # logged once at warning level, then at debug: a flaky network must not spam
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "W&B %s failed (%s: %s); training continues", what, type(err).__name__, err)
            self._warned = True

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars (or W&B media) at ``step`` (the epoch, for training).

        The row is committed at once: W&B otherwise holds the last row until ``finish`` and then copies
        it into the summary, over the best-epoch values :meth:`set_summary` wrote (a sweep's metric).
        """
        self._call("log", lambda: self._run.log(to_plain(dict(metrics)), step=step, commit=True))

    def log_image(self, key: str, path: Path | str, caption: str | None = None) -> None:
        """Log an image file (a figure the experiment saved)."""
        def send():
            import wandb

            self._run.log({key: wandb.Image(str(path), caption=caption)})

        self._call("log_image", send)

    def log_table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Log a table, e.g. per-class accuracy or a sweep's results."""
        def send():
            import wandb

            self._run.log({key: wandb.Table(columns=list(columns), data=[list(to_plain(r)) for r in rows])})

        self._call("log_table", send)

    def set_summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary values (best_val_acc, test_acc, params, flops, ...)."""
        self._call("summary", lambda: self._run.summary.update(to_plain(dict(values))))

    def mark_stopped(self, reason: str) -> None:
        """Tag the run ``stopped`` and say why in its summary (a sweep's early stop, a signal)."""
        def send():
            self._run.tags = tuple(dict.fromkeys((*(self._run.tags or ()), "stopped")))
            self._run.summary.update({"stopped": True, "stopped_reason": reason})

        self._call("mark_stopped", send)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (idempotent); for offline runs, log how to upload it."""
        if self._run is None:
            return
        run, self._run = self._run, None
        offline_dir = Path(run.dir).parent if self.mode == "offline" else None
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("W&B finish failed (%s: %s)", type(err).__name__, err)
        if offline_dir is not None:
            log.info("W&B offline run saved in %s; upload it with: wandb sync %s", offline_dir, offline_dir)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else (130 if exc_type is KeyboardInterrupt else 1))
