"""Stop requests honoured at safe points: a signal asks, the training loop stops between two batches.

A signal that raises where it lands (Python's SIGINT, W&B's in-process agent) can land inside ``torch.save``,
W&B's logging or a ``finally``. Here the handler only records the request; ``train_one_epoch`` and ``evaluate``
check it before each batch and ``fit`` turns it into an ordinary stopped result: the epoch in progress is dropped,
every finished epoch's files stay as written, and ``resume`` continues from ``last.pt``. The same signal twice
raises ``KeyboardInterrupt`` at once (Ctrl-C twice, for a hung batch); a *different* second signal adds nothing,
since W&B's SIGTERM and wandb-core's SIGINT mean the same stop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace

from core.train.result import RunResult

__all__ = ["STOP_SIGNALS", "StopRequest", "StopRequested", "stop_after_training"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # W&B agent's stop; W&B's stop button (interrupt_main), Ctrl-C


class StopRequested(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """Raised by :meth:`StopRequest.check` at a safe point; the message says who asked.

    A ``BaseException`` so that no ``except Exception`` between the check and ``fit`` swallows it.
    """


class StopRequest:
    """A stop flag: set by :meth:`request` (or a signal, inside :meth:`on_signals`), acted on by :meth:`check`."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask to stop; the first reason is kept. Safe in a signal handler (it only sets the flag)."""
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop was requested (call only where stopping is safe)."""
        if self.reason is not None:
            log.warning("stop requested (%s): stopping here, before the next batch", self.reason)
            raise StopRequested(self.reason)

    @contextlib.contextmanager
    def on_signals(self, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[StopRequest]:
        """Within the block, ``signals`` request a stop instead of killing; the old handlers come back after.

        Only the main thread may install handlers (Python's rule); elsewhere this is a no-op with a log line.
        """
        if threading.current_thread() is not threading.main_thread():
            log.info("not the main thread: %s keep their handlers", [signal.Signals(s).name for s in signals])
            yield self
            return

        def handler(signum: int, frame) -> None:
            name = signal.Signals(signum).name
            if self.reason == name:
                raise KeyboardInterrupt(f"{name} again while the stop it asked for was pending")
            self.request(name)

        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield self
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


def stop_after_training(result: RunResult, stop: StopRequest | None) -> RunResult:
    """``result`` marked stopped when the request came after ``fit``'s last batch (during its last
    checkpoint, say): the run ends there, without the test pass that would follow."""
    if stop is None or not stop.requested or result.stopped_by is not None:
        return result
    return replace(result, stopped_by="request",
                   stopped_reason=f"stopped by {stop.reason} after the last epoch ({result.epochs_run}); "
                                  "no test evaluation")
