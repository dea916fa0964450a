"""The local backend's Optuna storage: URLs as users write them, passwords never shown, one clear line per failure.

``postgresql://`` is driven by psycopg 3 whatever SQLAlchemy's default driver is; the password may stay out of
the URL (libpq reads ``PGPASSWORD`` or ``~/.pgpass``, so it never shows in ``ps``). Every URL shown goes through
:func:`display_url`, and every way of not reaching the database is a :class:`StorageError` naming the server and
the fix. Several processes creating Optuna's schema at once collide (a unique violation); the loser simply opens
the storage again.
"""

from __future__ import annotations

import logging
import random
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.runfiles import mask_secrets

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds before an unreachable server is reported (libpq's connect_timeout)
SQLITE_BUSY_TIMEOUT = 120  # seconds a process waits on a busy SQLite file instead of failing
URL_EXAMPLES = "sqlite:///runs/<name>/optuna.db or postgresql://user@host:5432/dbname"
DRIVERS = {"postgresql": "postgresql+psycopg"}  # dialect -> the driver we install in the [postgres] extra
INSTALL = {"psycopg": 'pip install -e ".[postgres]" (psycopg 3)', "psycopg2": "pip install psycopg2-binary, or "
           "write postgresql:// to use psycopg 3 from the [postgres] extra"}


class StorageError(RuntimeError):
    """The sweep's storage cannot be used; the message names the server (password masked) and the fix."""


def display_url(url: str) -> str:
    """The URL as it may be shown or written: password masked."""
    return mask_secrets(url)


def sqlite_url(path: Path) -> str:
    """The SQLite URL of a database file (absolute: the same file from any working directory)."""
    return f"sqlite:///{Path(path).resolve()}"


def normalize_url(url: str) -> str:
    """A URL as users write it → the SQLAlchemy URL we open (``postgresql://`` → ``postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(url).strip()
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://"):]
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError) as exc:
        # the parser's words may quote a piece of the password ('w0rd@host' of user:p@ss:w0rd@host): not then
        why = str(exc) if display_url(text) == text else ("a '@', ':' or '/' in the password must be written "
                                                         "%40, %3A, %2F")
        raise ValueError(f"--storage {display_url(text)!r} is not a database URL ({why}); expected "
                         f"{URL_EXAMPLES}") from None
    if parsed.drivername in DRIVERS:
        parsed = parsed.set(drivername=DRIVERS[parsed.drivername])
    if parsed.get_backend_name() == "sqlite" and not parsed.database:
        raise ValueError(f"--storage {text!r} names no SQLite file (an in-memory database is not shared by "
                         f"workers); expected {URL_EXAMPLES}")
    return parsed.render_as_string(hide_password=False)


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database}"
    if u.get_backend_name() == "postgresql":
        return f"PostgreSQL server {u.host or 'localhost'}:{u.port or 5432}"
    return f"{u.get_backend_name()} server {u.host}"


def explain(exc: BaseException, url: str) -> StorageError | ValueError:
    """One line saying why ``url`` cannot be used and what to do, from the driver's error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    shown = display_url(url)
    if isinstance(exc, NoSuchModuleError):
        return ValueError(f"--storage {shown!r}: SQLAlchemy has no dialect {make_url(url).drivername!r}; "
                          f"expected {URL_EXAMPLES}")
    if isinstance(exc, ImportError):
        module = getattr(exc, "name", None) or str(exc)
        fix = INSTALL.get(str(module).split(".")[0], f"install the Python driver {module!r}")
        return StorageError(f"the database driver for {shown} is not installed (no module {module!r}): {fix}")
    u = make_url(url)
    where, user, db = _where(url), u.username or "(your login name)", u.database
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    patterns = [
        (r"password authentication failed|role .* does not exist|authentication failed",
         f"{where} rejected user {user!r} (bad user or password): check the password in PGPASSWORD, ~/.pgpass "
         f"or the URL"),
        (r"no password supplied",
         f"{where} wants a password for user {user!r}: set PGPASSWORD or add it to ~/.pgpass (or the URL)"),
        (r"database \S+ does not exist",
         f"database {db!r} does not exist on {where}: create it (createdb -h {u.host} -p {u.port or 5432} "
         f"-U {user} {db}) or fix the database name in --storage"),
        (r"connection refused|timeout expired|could not connect|no route to host|network is unreachable",
         f"cannot reach the {where} ({_reason(text)}): start the server or fix host/port in --storage"),
        (r"resolve host|translate host name|name or service not known",
         f"cannot reach the {where}: host name {u.host!r} is unknown; fix the host in --storage"),
        (r"unable to open database file",
         f"cannot open the {where}: does its folder exist and may you write there?"),
        (r"no pg_hba.conf entry",
         f"{where} does not accept connections from this machine (pg_hba.conf): ask its administrator"),
    ]
    for pattern, message in patterns:
        if re.search(pattern, text, re.IGNORECASE):
            return StorageError(message)
    return StorageError(f"cannot use the sweep storage {shown}: {mask_secrets(text)}")


def _reason(text: str) -> str:
    m = re.search(r"(Connection refused|timeout expired|No route to host|Network is unreachable)", text, re.I)
    return m.group(1).lower() if m else "connection failed"


def _is_schema_race(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc)
    return any(s in text for s in ("already exists", "duplicate key", "UNIQUE constraint failed",
                                   "database is locked"))


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_callback: Any = None, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` on ``url`` (as normalised by :func:`normalize_url`), or a clear error."""
    import optuna
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    url = normalize_url(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    elif backend == "postgresql":
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                  heartbeat_stale_trial_callback=retry_callback)
        except ImportError as exc:
            raise explain(exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc, url) from None
        except (DBAPIError, SQLAlchemyError) as exc:
            if attempt < attempts and _is_schema_race(exc):
                logger.debug("another process is creating Optuna's tables in %s; opening again", display_url(url))
                time.sleep(0.2 + random.random())
                continue
            raise explain(exc, url) from None
    raise AssertionError("unreachable")
