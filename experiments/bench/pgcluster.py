"""A throwaway PostgreSQL server for the sweep tests and the ``sweep`` benchmark: a real server, no mock.

:func:`start_cluster` runs ``initdb`` into a fresh temporary folder and ``pg_ctl start`` on a free loopback port
(TCP only), with one password-protected role and database; it never touches a server the user runs.
:meth:`PgCluster.stop` removes it, and a detached reaper does the same once the starting process is gone (a
killed test session runs no teardown). As root (CI), the server runs as ``postgres`` or ``nobody``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bindir", "start_cluster"]

ROLE = "sweeper"
DATABASE = "sweeps"
FAST = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # throwaway data: no durability


def find_pg_bindir() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl``: PATH, ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off PATH); None when PostgreSQL is absent."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3].split(".")[0]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root (initdb refuses root), else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


@dataclass
class PgCluster:
    """A running throwaway server: connect as ``role``/``password`` to ``database`` on 127.0.0.1:``port``."""

    bindir: Path
    folder: Path
    port: int
    password: str
    role: str = ROLE
    database: str = DATABASE
    user: tuple[int, int] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, *, password: bool = True, database: str | None = None) -> str:
        """``postgresql://role[:password]@127.0.0.1:port/database``, as a user writes it."""
        auth = f"{self.role}:{self.password}" if password else self.role
        return f"postgresql://{auth}@{self.host}:{self.port}/{database or self.database}"

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw = {"user": self.user[0], "group": self.user[1], "extra_groups": []} if self.user else {}
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True, check=check,
                              cwd=self.folder, **kw)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.role, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


_REAPER = """
import os, shutil, subprocess, sys, time
owner, pg_ctl, folder, uid, gid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
while alive(owner) and os.path.isdir(folder):
    time.sleep(1.0)
if os.path.isdir(folder):
    kw = {"user": uid, "group": gid, "extra_groups": []} if uid >= 0 else {}
    subprocess.run([pg_ctl, "-D", os.path.join(folder, "data"), "-m", "immediate", "-w", "stop"],
                   capture_output=True, cwd=folder, **kw)
    shutil.rmtree(folder, ignore_errors=True)
"""


def _start_reaper(cluster: PgCluster) -> None:
    """A detached process that stops ``cluster`` once this process is gone (however it ends)."""
    uid, gid = cluster.user if cluster.user else (-1, -1)
    subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), str(cluster.bindir / "pg_ctl"),
                      str(cluster.folder), str(uid), str(gid)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_cluster(*, password: str = "s3cret-Pg-pw", fast: bool = True, timeout: float = 60.0) -> PgCluster:
    """initdb + start a server on a free loopback port, with role ``sweeper`` and database ``sweeps``.

    Raises FileNotFoundError when no PostgreSQL binaries exist, RuntimeError (with the server log's tail)
    when it does not start. ``fast`` turns off fsync & co. (fine for throwaway data; the benchmark can
    keep them on to measure a durable server).
    """
    bindir = find_pg_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    user = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="inat-cnn-pg-"))
    cluster = PgCluster(bindir=bindir, folder=folder, port=_free_port(), password=password, user=user)
    try:
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if user:
            os.chown(folder, *user)
            os.chown(pwfile, *user)
        cluster._pg("initdb", "-D", str(folder / "data"), "-U", ROLE, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                    "-E", "UTF8", "--no-sync", "--no-instructions")
        pwfile.unlink()
        opts = f"-c listen_addresses=127.0.0.1 -c port={cluster.port} -c unix_socket_directories={folder}"
        opts += f" -c max_connections=200 {FAST if fast else ''}"
        started = cluster._pg("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-o", opts,
                              "-t", str(int(timeout)), "-w", "start", check=False)
        if started.returncode != 0:
            logfile = folder / "server.log"
            log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()} {log}")
        _start_reaper(cluster)
        deadline = time.monotonic() + timeout
        while True:
            try:
                cluster.create_database(DATABASE)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except BaseException:
        cluster.stop()
        raise
    return cluster
