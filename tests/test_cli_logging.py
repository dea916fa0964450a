"""Scripts log through one handler that writes to ``sys.stderr`` as it is when a record is emitted.

Why it matters: tests (and notebooks) run several scripts' ``main`` in one process and swap ``sys.stderr``
between them; a handler bound to an earlier, closed stream turned every later log line into logging's own
"--- Logging error ---" traceback on stderr.
"""

from __future__ import annotations

import io
import logging
import sys

import pytest

from core.cli import configure_logging


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_lines_follow_the_current_stderr_and_a_second_call_replaces_the_first(root_logger, monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(logging.INFO, "%(message)s")
    logging.getLogger("inat.test").info("one")
    first.close()  # what a finished test's capture does to its stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("inat.test").info("two")
    configure_logging(logging.WARNING, "%(levelname)s %(message)s")
    logging.getLogger("inat.test").info("dropped: below the new level")
    logging.getLogger("inat.test").warning("three")
    assert second.getvalue() == "two\nWARNING three\n"
    ours = [h for h in root_logger.handlers if type(h).__module__ == "core.cli"]
    assert len(ours) == 1, f"one script handler after two calls, found {root_logger.handlers}"
