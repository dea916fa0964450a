"""Passwords out of everything we write or print: ``scheme://user:password@host`` becomes ``user:***@host``.

Why a module of its own: a database URL with a password reaches many places at once — the command line a
run records (``config.yaml``'s ``command``, W&B's run metadata), log lines, reports, error messages —
and those belong to different packages. Each of them masks through here, so one rule holds everywhere.

The rule works on any text, valid URL or not (a URL that fails to parse must not be printed in clear in
the error that says so): the userinfo of ``<scheme>://<user>:<password>@`` (also with a slash missing) up
to the *last* ``@`` of a whitespace-free token (a raw ``@`` in a password is common), and
``password=...`` query parameters.
Masking too much is harmless; masking too little is the leak.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MASK", "mask_secrets", "masked_argv"]

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
