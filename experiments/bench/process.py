"""Process-wide settings in a benchmark that alternates baseline and ours: glibc's allocator, child processes.

glibc keeping freed memory (:mod:`core.train.memory`) is a property of the whole process: switched on in the
benchmark's one process it would leak into the baseline timed next. So it is either on for a long block and
trimmed afterwards (:func:`core.train.memory.keep_freed_memory`, around whole sweeps), or ours runs in a child
process that keeps it (:class:`ChildStepper`, single training steps), alternating with the baseline in the parent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.train import glibc, keep_freed_for_process, keep_freed_memory

__all__ = ["ChildStepper", "glibc", "keep_freed_for_process", "keep_freed_memory"]

# ----------------------------------------------------------------------------------- child process
class ChildStepper:
    """Run a callable in a spawned child process, one call per ``__call__``, for process-wide settings.

    Why: a setting that holds for a whole process (glibc's allocator behaviour) cannot be switched on for
    "ours" and off for the baseline inside one process without leaking into the other side. The child is
    started once; each call sends "run" and waits for "done", so the two processes never run at once and the
    alternation of :func:`compare_many` is kept. ``factory(*args)`` runs in the child after ``setup()`` and
    returns ``(run, info)``; ``info`` comes back as :attr:`info`. CPU time of the child is not visible to the
    parent's ``process_time``: per-CPU-second numbers of such a side are meaningless (drop them).
    """

    def __init__(self, factory: Callable[..., tuple[Callable[[], object], object]], *args: object,
                 setup: Callable[[], None] | None = None, threads: int | None = None) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork would copy the parent's OpenMP/allocator state
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, factory, args, setup,
                                                            threads or torch.get_num_threads()), daemon=True)
        self._proc.start()
        child_conn.close()
        self.info = self._receive("ready")

    def _receive(self, expected: str) -> object:
        try:
            kind, payload = self._conn.recv()
        except EOFError as err:
            raise RuntimeError(f"benchmark child process died (exit code {self._proc.exitcode})") from err
        if kind != expected:
            raise RuntimeError(f"benchmark child process failed: {payload}")
        return payload

    def __call__(self) -> None:
        self._conn.send("run")
        self._receive("done")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
        self._conn.close()

    def __enter__(self) -> ChildStepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_main(conn, factory, args, setup, threads: int) -> None:
    try:
        torch.set_num_threads(threads)
        if setup is not None:
            setup()
        run, info = factory(*args)
        conn.send(("ready", info))
    except BaseException as err:  # reported to the parent, which raises
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while True:
        if conn.recv() != "run":
            return
        try:
            run()
            conn.send(("done", None))
        except BaseException as err:
            conn.send(("error", f"{type(err).__name__}: {err}"))
            return
