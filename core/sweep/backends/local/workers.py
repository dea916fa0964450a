"""Worker processes of a local sweep: they die with their parent, and Ctrl-C ends them quietly.

What Python's ``multiprocessing`` does not give by default: after ``kill -9`` of the parent nothing is left
training (``PR_SET_PDEATHSIG`` on Linux, a polling thread elsewhere; the next run re-queues the killed trial,
:func:`core.sweep.backends.local.budget.recover_dead_trials`); Ctrl-C is one event — a worker only requests a
stop before the next batch and exits 130 without a traceback, and the parent forwards SIGTERM to workers that
missed the SIGINT, so the script prints one line. Worker i sees only GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``
before CUDA starts). Workers are not daemonic: a daemonic process may not start DataLoader workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
INTERRUPT_GRACE_S = 60.0  # how long interrupted workers get to record their trial before they are killed
EXIT_INTERRUPTED = 130


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def one_interrupt() -> Iterator[None]:
    """Inside: the first SIGINT raises KeyboardInterrupt, later ones are ignored (cleanup is not cut short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, _interrupt_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (its parent) does, however the parent ends."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]  # NVML: no CUDA context in the parent
    except Exception:  # noqa: BLE001 - no usable CUDA at all
        return []


def gpu_for_worker(worker_id: int, gpus: Sequence[str]) -> str | None:
    """The one GPU worker ``worker_id`` gets when there are several, else None (share the one, or CPU)."""
    return gpus[worker_id % len(gpus)] if len(gpus) >= 2 else None


def _entry(target: Callable[..., Any], args: tuple, worker_id: int, workers: int, log_level: int,
           optuna_verbosity: int, parent_pid: int, gpu: str | None, terminal: int | None = None) -> None:
    die_with_parent(parent_pid)
    if gpu is not None:  # before anything touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    signal.signal(signal.SIGINT, _interrupt_once)
    logging.basicConfig(level=log_level, format=f"%(asctime)s [worker {worker_id}] %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if terminal is not None:  # as the parent's terminal: that level and up, plus each trial's progress line
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: r.levelno >= terminal or getattr(r, "progress", False))
    import optuna

    optuna.logging.set_verbosity(optuna_verbosity)  # as the parent has it (a spawned process starts afresh)
    cpus = os.cpu_count() or 1
    if workers > 1:  # share the cores instead of oversubscribing them; read by torch when it is imported
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpus // workers)))
    if gpu is not None:
        logging.getLogger(__name__).info("worker %d uses GPU %s (CUDA_VISIBLE_DEVICES)", worker_id, gpu)
    try:
        target(*args, worker_id=worker_id)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # one line, not multiprocessing's traceback; the parent reports the exit code
        logging.getLogger(__name__).error("worker %d stopped: %s: %s", worker_id, type(exc).__name__, exc)
        sys.exit(1)


def run_processes(target: Callable[..., Any], args: tuple, workers: int) -> list[str]:
    """Run ``target(*args, worker_id=i)`` in ``workers`` spawned processes; returns the failed ones
    ('sweep-worker-1 (exit code 1)'); KeyboardInterrupt after every worker has ended."""
    import optuna

    ctx = mp.get_context("spawn")
    level, verbosity = logging.getLogger().getEffectiveLevel(), optuna.logging.get_verbosity()
    terminal = next((h.terminal_level for h in logging.getLogger().handlers if hasattr(h, "terminal_level")), None)
    gpus = visible_gpus()
    procs = [ctx.Process(target=_entry, args=(target, args, i, workers, level, verbosity, os.getpid(),
                                              gpu_for_worker(i, gpus), terminal),
                         name=f"sweep-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    try:
        with one_interrupt():
            for p in procs:
                p.join()
    except KeyboardInterrupt:
        stop_workers(procs)
        raise
    return [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode not in (0, None)]


def stop_workers(procs: Sequence[mp.process.BaseProcess], grace: float = INTERRUPT_GRACE_S) -> None:
    """Ask live workers to stop (SIGTERM: a stop request, nothing more if one is pending), wait ``grace`` s,
    then SIGKILL."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                logger.warning("%s did not stop within %.0f s: killed (its trial re-runs next time)", p.name, grace)
                p.kill()
                p.join(5)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
