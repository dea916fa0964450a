"""Run-folder files written so a crash never leaves half a file: atomic writes, YAML, JSON, JSONL.

Whole files go to a temporary file in the *same* folder and are moved into place with ``os.replace`` (a reader
sees the old file or the new one); ``metrics.jsonl`` is appended one complete line per write. No password is
ever written: :func:`mask_secrets` masks ``user:password@`` and ``password=`` in any text, up to the *last*
``@`` of a token, since a database URL reaches the recorded command line, logs, reports and errors at once —
masking too much is harmless, too little is the leak. A write replaces only a regular file
(:func:`writable_path`). A run folder has one owner at a time, as PostgreSQL's ``postmaster.pid``:
:func:`own_run_folder` holds ``<run>/.lock`` (host, pid), refuses a live owner, takes over a dead one's lock and
removes the temporary files an interrupted write left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any

import yaml

__all__ = ["LOCK_NAME", "MASK", "RunFolderBusyError", "append_jsonl", "atomic_path", "atomic_writer", "mask_secrets",
           "masked_argv", "own_run_folder", "pid_alive", "read_json", "read_jsonl", "read_yaml", "run_name",
           "to_plain", "writable_path", "write_json", "write_jsonl", "write_text", "write_yaml"]


_UMASK = os.umask(0)
os.umask(_UMASK)  # read, then restored: files we write get the usual permissions
log = logging.getLogger(__name__)
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def writable_path(path: Path | str) -> Path:
    """The file a write to ``path`` replaces: a symlink's target (the link stays); ``IsADirectoryError`` or
    ``ValueError`` (exit 2) when that exists and is not a regular file, so no device or FIFO is ever replaced."""
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory, not a file; pass a file path (e.g. {path / 'out'})")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), None)
    if kind is not None:
        raise ValueError(f"{path} is not a regular file ({kind}); writes replace whole files, so pass the path "
                         "of a regular file or of a new one")
    return path


def to_plain(obj: Any) -> Any:
    """Recursively convert ``obj`` to dicts, lists, str, int, float, bool and None.

    Dataclasses (and objects with ``to_dict()``) become dicts, tuples/sets become lists, Paths
    and Enums become strings, numpy/torch scalars become Python numbers. Tensors are left alone
    (checkpoints keep them); anything else unknown is an error rather than a silent ``str()``.
    """
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, Enum):
        return to_plain(obj.value)
    for plain in (bool, int, float, str):  # subclasses (torch.__version__, IntEnum, numpy.float64) -> the base
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_plain(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        # int keys stay ints: optimizer state dicts are keyed by parameter index
        return {k if isinstance(k, (str, int)) else str(to_plain(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_plain(v) for v in obj)
    type_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if type(obj).__module__.startswith("torch") and type(obj).__name__ in {"Tensor", "Parameter"}:
        return obj  # checkpoints keep tensors as they are
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy / torch 0-d scalars
        return obj.item()
    raise TypeError(f"cannot store a {type_name} ({obj!r:.80}) as plain data; convert it to dict/list/str first")


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit fsync it and move it onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape"}  # file names: their bytes
        with open(tmp, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (``savefig``, ``np.save``,
    ``shutil.copyfile``); on a clean exit it is moved onto ``path``, on an error it is removed.

    ``suffix`` lets format-sniffing writers see the right extension (e.g. ``".tmp.png"``).
    """
    path = writable_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)) and exc.errno:  # a full disk: which file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def write_yaml(path: Path | str, data: Any) -> None:
    """Atomically write ``data`` (converted with ``to_plain``) as block-style YAML, keys in given order."""
    write_text(path, yaml.safe_dump(to_plain(data), sort_keys=False, default_flow_style=False))


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, but a key given twice in one mapping is an error (YAML 1.2 says so; PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            with contextlib.suppress(TypeError):  # an unhashable key is the base loader's error to give
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r} (first on line {first[key]})", key_node.start_mark)
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str) -> Any:
    """Read a YAML file with the safe loader; bad YAML or a duplicated key is a ValueError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid YAML ({exc}); fix the line it points at") from exc


def write_json(path: Path | str, data: Any) -> None:
    """Atomically write ``data`` (converted with ``to_plain``) as indented JSON."""
    write_text(path, json.dumps(to_plain(data), indent=2, allow_nan=True) + "\n")


def read_json(path: Path | str) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: Path | str, record: Mapping[str, Any]) -> None:
    """Append one JSON object as one line, flushed and fsynced, so a crash loses at most this line."""
    path = writable_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_plain(record), allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: Path | str, records: list[Mapping[str, Any]]) -> None:
    """Atomically replace ``path`` with ``records``, one JSON object per line."""
    text = "".join(json.dumps(to_plain(r), allow_nan=True) + "\n" for r in records)
    write_text(path, text)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (crash mid-append) is dropped, any other bad line is an error."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON ({err}); the file is corrupt") from err
    return records


MASK = "***"
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*:/{0,3}[^\s:/@]*):(?P<password>\S*)@")
_QUERY = re.compile(r"(?P<head>[?&;\s]password=)(?P<password>[^&\s]*)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with every URL password (``user:pw@``, ``?password=pw``) replaced by ``***``."""
    if "@" not in text and "password=" not in text.lower():
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def masked_argv(argv: Sequence[str]) -> list[str]:
    """A command line safe to record: each argument masked (``--storage=postgresql://u:pw@h/db`` too)."""
    return [mask_secrets(str(a)) for a in argv]


# ------------------------------------------------------------------ one owner per run folder
LOCK_NAME = ".lock"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_held: set[Path] = set()  # run folders this process owns (a trial's folder is held again by its run)


class RunFolderBusyError(FileExistsError):
    """Another live process owns the run folder (exit 2: wait for it or choose another name)."""


def run_name(name: str, what: str = "run name") -> str:
    """``name`` if it names one folder (letters, digits, ``_-.``; never ``..`` or a path), else ValueError."""
    if not isinstance(name, str) or not _RUN_NAME.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '-', '.' starting with a letter or digit "
                         "(it names one folder inside --out-dir); choose another --name")
    return name


def _lock_owner(lock: Path) -> tuple[str, int] | None:
    try:
        host, pid = lock.read_text(encoding="utf-8").split()[:2]
        return host, int(pid)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive; a killed one nobody reaped yet (a zombie) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _claim(run_dir: Path, take_over_other_hosts: bool) -> Path:
    lock, host = run_dir / LOCK_NAME, socket.gethostname()
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and owner[1] != os.getpid() and (
                    (owner[0] == host and not pid_alive(owner[1])) or (owner[0] != host and take_over_other_hosts)):
                log.warning("taking over %s: its owner, pid %d on %s, is no longer running", lock, owner[1], owner[0])
                lock.unlink(missing_ok=True)
                continue
            who = f"pid {owner[1]} on {owner[0]}" if owner else "an unknown process"
            raise RunFolderBusyError(f"{run_dir} is in use by {who} (lock file {lock}); wait for it to finish or "
                                     f"choose another --name (if that process is gone, delete {lock})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{host} {os.getpid()}\n")
        return lock


def _remove_stale_temps(run_dir: Path) -> None:
    """The ``.<name>.XXXX.tmp`` files of atomic writes a crash (kill -9, power loss) left in a folder we own."""
    for folder, _, files in os.walk(run_dir):
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name) and path.is_file():
                log.info("removing %s, left by an interrupted write", path)
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def own_run_folder(run_dir: Path | str, *, take_over_other_hosts: bool = False) -> Iterator[Path]:
    """Hold ``run_dir`` (created if needed) for this process; :class:`RunFolderBusyError` while another live
    process holds it. Re-entrant within a process. ``take_over_other_hosts``: a lock from another host is
    stale too (a sweep's storage already decided that trial's process is gone)."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        yield run_dir
        return
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the folder, or one above it, is a file
        file = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), run_dir)
        raise NotADirectoryError(f"cannot make the run folder {run_dir}: {file} is a file, not a folder; choose "
                                 "another --out-dir or --name") from None
    lock = _claim(run_dir, take_over_other_hosts)
    _held.add(key)
    try:
        _remove_stale_temps(run_dir)
        yield run_dir
    finally:
        _held.discard(key)
        if _lock_owner(lock) == (socket.gethostname(), os.getpid()):
            lock.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):  # a refused run leaves no empty folder behind
            run_dir.rmdir()
