"""Process memory policy for CPU training: let glibc keep freed memory instead of returning it to the kernel.

Why: glibc serves every allocation of 32 MB or more with ``mmap`` and gives it back with ``munmap`` on free
(``M_MMAP_THRESHOLD`` cannot go above 32 MB), and one activation of a 224 px batch of 32 is 50-200 MB. So on the CPU
every training step page-faults and zero-fills its activations afresh; keeping the memory removes that cost
(measured by ``python experiments/benchmark.py train`` / ``sweep``: docs/performance.md). ``M_MMAP_MAX=0`` sends big
blocks to the heap and a huge ``M_TRIM_THRESHOLD`` keeps the heap, so the next step reuses the same pages. The cost:
the process keeps its peak memory until it exits — what CUDA's caching allocator does on a GPU.

:func:`core.train.trainer.fit` applies it on the CPU. Opt out with ``INAT_CNN_KEEP_FREED_MEMORY=0`` (the same effect
without code, for any program: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``). Non-glibc
systems (macOS, Windows, musl) are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
from collections.abc import Iterator

log = logging.getLogger(__name__)

ENV_SWITCH = "INAT_CNN_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters
_MMAP_MAX_DEFAULT, _TRIM_AFTER = 65536, 64 * 2**20  # 64 MB = what glibc's dynamic threshold reaches anyway
_state = {"applied": False}


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (Linux), else None: ``mallopt`` is glibc's."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def policy_enabled() -> bool:
    """False when ``INAT_CNN_KEEP_FREED_MEMORY`` is 0/false/off/no; on otherwise."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


def keep_freed_for_process() -> None:
    """Make glibc keep freed memory for reuse from now on (raises RuntimeError when the C library is not glibc)."""
    libc = glibc()
    if libc is None:
        raise RuntimeError("keeping freed memory needs glibc's mallopt (Linux); this C library is not glibc")
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _state["applied"] = True


def restore_default_allocator() -> None:
    """glibc's defaults again, and the kept memory handed back (no-op when the policy was never applied)."""
    libc = glibc()
    if libc is None or not _state["applied"]:
        return
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
    libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
    libc.malloc_trim(0)
    _state["applied"] = False


def apply_cpu_training_policy() -> bool:
    """What :func:`core.train.trainer.fit` calls on the CPU: apply the policy once, unless opted out or not glibc.

    Returns whether the policy is in force afterwards.
    """
    if _state["applied"]:
        return True
    if not policy_enabled():
        log.debug("%s=0: glibc's default allocator behaviour is kept", ENV_SWITCH)
        return False
    if glibc() is None:
        return False
    keep_freed_for_process()
    log.info("CPU training: glibc keeps freed memory for reuse (faster steps, peak memory kept; "
             "%s=0 turns this off)", ENV_SWITCH)
    return True


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """The policy for one block, then glibc's defaults again and the memory trimmed (benchmarks use this so a
    baseline timed next in the same process does not profit)."""
    keep_freed_for_process()
    try:
        yield
    finally:
        restore_default_allocator()
