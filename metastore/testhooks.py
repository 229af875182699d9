"""Deterministic crash and pause points for tests, set by environment variables.

Owns :class:`TestHooks`: the crash and concurrency tests
(``tests/test_nothing_lost.py``) drive ``python -m metastore`` in
subprocesses and stop it at a chosen batch or SQL statement (``COPY``
included) without depending on timing.  Nothing here runs unless one of its
``METASTORE_TEST_*`` variables is set; docs/guarantees.md lists them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["TestHooks"]


class TestHooks:
    """Deterministic crash and pause points for tests, set by environment variables.

    Tests drive ``python -m metastore`` in subprocesses and need it to stop at
    a chosen point without depending on timing.  Nothing here runs unless one
    of these variables is set (docs/guarantees.md lists them):

    ``METASTORE_TEST_KILL_AFTER_BATCHES=N``
        SIGKILL this process right after batch N is committed.
    ``METASTORE_TEST_KILL_AT_SQL=N:TEXT``
        SIGKILL this process just before the N-th SQL statement (of any
        engine of this process, ``COPY`` included) that contains TEXT,
        ignoring case: inside a batch's or a migration's transaction.
    ``METASTORE_TEST_PAUSE_AT_SQL=N:TEXT`` with ``METASTORE_TEST_PAUSE_FILE=PATH``
        Just before that statement, create ``PATH.paused`` and wait until
        ``PATH`` exists (at most :attr:`PAUSE_LIMIT` seconds), then go on.
    """

    __test__ = False  # not a pytest test class, whatever its name

    #: Seconds a pause waits for its file before going on anyway.
    PAUSE_LIMIT = 120.0
    _instance: TestHooks | None = None

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.kill_after_batches = _int_or_none(
            environ.get("METASTORE_TEST_KILL_AFTER_BATCHES")
        )
        self.kill_at = _sql_point(environ.get("METASTORE_TEST_KILL_AT_SQL"))
        self.pause_at = _sql_point(environ.get("METASTORE_TEST_PAUSE_AT_SQL"))
        self.pause_file = environ.get("METASTORE_TEST_PAUSE_FILE")
        self._seen: dict[str, int] = {}

    @classmethod
    def get(cls) -> TestHooks:
        """The hooks of this process, read from the environment once."""
        if cls._instance is None:
            cls._instance = TestHooks(os.environ)
        return cls._instance

    @classmethod
    def install(cls) -> None:
        """Watch every engine's SQL if a SQL hook is set (a no-op otherwise).

        ``COPY`` statements (PostgreSQL's ``image_modules`` rows) bypass
        SQLAlchemy's cursor events; the store reports them through
        ``store_write.BEFORE_COPY``, so the hooks see them as statements too.
        """
        from metastore.store import write as store_write

        hooks = cls.get()
        if not (hooks.kill_at or hooks.pause_at):
            return
        if not event.contains(Engine, "before_cursor_execute", _before_sql):
            event.listen(Engine, "before_cursor_execute", _before_sql)
        if _before_copy not in store_write.BEFORE_COPY:
            store_write.BEFORE_COPY.append(_before_copy)

    def batch_committed(self, written: int) -> None:
        """Called after each committed batch with the number committed so far."""
        if self.kill_after_batches == written:
            _kill_self()

    def before_sql(self, statement: str) -> None:
        """Called before every SQL statement while a SQL hook is set."""
        text = statement.lower()
        for point in (self.kill_at, self.pause_at):
            if point is not None and point[1] in text:
                self._seen[point[1]] = self._seen.get(point[1], 0) + 1
        if self.kill_at and self._seen.get(self.kill_at[1]) == self.kill_at[0]:
            _kill_self()
        if self.pause_at and self._seen.get(self.pause_at[1]) == self.pause_at[0]:
            self._seen[self.pause_at[1]] += 1  # pause once only
            self._pause()

    def _pause(self) -> None:
        if not self.pause_file:
            return
        go = Path(self.pause_file)
        Path(f"{go}.paused").touch()
        deadline = time.monotonic() + self.PAUSE_LIMIT
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _before_sql(
    conn: Any, cursor: Any, statement: str, *args: Any, **kwargs: Any
) -> None:
    TestHooks.get().before_sql(statement)


def _before_copy(statement: str) -> None:
    TestHooks.get().before_sql(statement)


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None


def _sql_point(text: str | None) -> tuple[int, str] | None:
    """``"N:TEXT"`` -> ``(N, text in lower case)``."""
    if not text:
        return None
    count, _, sql = text.partition(":")
    return int(count), sql.lower()
