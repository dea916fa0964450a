"""Process memory policy for CPU training: let glibc keep freed memory instead of returning it to the kernel.

glibc serves allocations of 32 MB or more with ``mmap`` and unmaps them on free, so on the CPU every training
step page-faults and zero-fills its activations afresh. ``M_MMAP_MAX=0`` and a huge ``M_TRIM_THRESHOLD`` keep
the pages for the next step (measured: docs/performance.md), at the price of keeping the peak memory until exit,
as CUDA's caching allocator does. :func:`core.train.trainer.fit` applies it on the CPU; opt out with
``INAT_CNN_KEEP_FREED_MEMORY=0``. Non-glibc systems are left alone.
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
