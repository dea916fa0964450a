"""core.runfiles: the one atomic-write mechanism every module uses (figures, caches, checkpoints, ONNX)."""

from __future__ import annotations

import os
import stat

import pytest

from core.runfiles import atomic_path, write_text


def test_atomic_path_moves_into_place_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "figure.png"
        with atomic_path(target, suffix=".png") as tmp:
            assert tmp.parent == target.parent and tmp.suffix == ".png" and not target.exists()
            tmp.write_bytes(b"png bytes")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"png bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "mkstemp's 0600 must not leak into outputs"
    assert sorted(p.name for p in target.parent.iterdir()) == ["figure.png"], "no temp file may remain"


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "best.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError, match="crash mid-write"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.txt"], "the temp file must be removed"


@pytest.mark.slow
def test_a_lock_held_by_a_killed_process_nobody_reaped_is_taken_over(tmp_path):
    """A sweep worker killed with its parent stays a zombie where nothing reaps orphans (a container's PID 1):
    dead for the lock, as for the sweep's own recovery. Oracle: the kernel's process state."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from core.runfiles import LOCK_NAME, own_run_folder, pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(child.pid, signal.SIGKILL)
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)  # killed, not yet reaped by us: a zombie
    try:
        assert not pid_alive(child.pid) and pid_alive(os.getpid())
        run = tmp_path / "run"
        run.mkdir()
        (run / LOCK_NAME).write_text(f"{socket.gethostname()} {child.pid}\n")
        with own_run_folder(run):
            assert (run / LOCK_NAME).read_text().split()[1] == str(os.getpid()), "the lock is this process's now"
    finally:
        child.wait()
