"""The ``metastore`` group: options every command shares, and its errors.

Errors metastore raises on purpose (bad imageId, unknown module type,
unreachable database, schema behind head...) become one line on stderr and
exit status 2, in one place: :class:`MetastoreGroup`.

Start-up: ``metastore --help`` must not load SQLAlchemy, pydicom or the
indexer, and ``get`` only the store's read side, so the rooms import the
library inside the commands that use it (tests/test_cli_startup.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from metastore.errors import MetastoreError, ModuleError

F = TypeVar("F", bound=Callable[..., Any])

#: ``metastore.store.db.DEFAULT_URL`` and ``metastore.index.DEFAULT_BATCH_SIZE``,
#: needed to build the options (``--help`` too) without importing SQLAlchemy
#: and the indexer; tests/test_cli_startup.py checks they stay equal.
DEFAULT_URL = "sqlite:///metastore.sqlite"
DEFAULT_BATCH_SIZE = 500

#: Exit status for bad input and an unusable database (click's usage status).
EXIT_ERROR = 2


#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class MetastoreGroup(click.Group):
    """A click group that turns metastore's errors into one line and status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a :class:`MetastoreError` without a traceback.

        Database errors are among them: the store raises its own
        (:class:`~metastore.errors.StoreError` and below) for the driver's,
        with the URL redacted and its secrets scrubbed.
        """
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # not click's "Aborted!" and status 1, which reads as a failure
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except MetastoreError as exc:
            raise Failure(str(exc)) from None


#: Where ``--db`` leaves the URL (``ctx.meta`` is shared by a command's
#: context and the group's).
_URL_KEY = "metastore.url"


#: Whether ``--db`` was given before the command (``ctx.meta``).
_GIVEN_KEY = "metastore.url.given"


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The command's database: its own ``--db``, else the one before it.

    ``--db`` is accepted before the command (``metastore --db X stats``)
    and after it (``metastore stats --db X``); given both ways with two
    different URLs, it is an error rather than a silent pick.
    """
    before = ctx.meta.get(_URL_KEY)
    if value is None:
        return str(before or os.environ.get("METASTORE_DATABASE_URL") or DEFAULT_URL)
    if ctx.meta.get(_GIVEN_KEY) and before != value:
        from metastore.store import db

        raise Failure(
            f"--db given twice, {db.redact(str(before))} before the command and "
            f"{db.redact(value)} after it: give one"
        )
    ctx.meta[_URL_KEY] = value
    return value


class Failure(click.ClickException):
    """One ``Error:`` line on stderr and exit status 2."""

    exit_code = EXIT_ERROR


def db_option(command: F) -> F:
    """The ``--db URL`` option every command that opens the database takes."""
    option: Callable[[F], F] = click.option(
        "--db",
        "url",
        metavar="URL",
        help="Database URL (also before the command; env METASTORE_DATABASE_URL; "
        f"default {DEFAULT_URL}).",
        callback=_remember_url,
    )
    return option(command)


def module_types(names: Iterable[str]) -> list[str]:
    """Check module type names; raise ModuleError naming the valid ones."""
    # metastore.modules.MODULE_TYPES, without importing the mapping (~9 ms)
    from metastore.moduletypes import ModuleType

    known = [t.value for t in ModuleType]
    types = [name.strip() for name in names if name.strip()]
    for name in types:
        if name not in known:
            valid = ", ".join(known)
            raise ModuleError(f"unknown module type {name!r}; valid types: {valid}")
    return types


@click.group(
    cls=MetastoreGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="metastore")
@click.option(
    "--db",
    "url",
    envvar="METASTORE_DATABASE_URL",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    help="Database URL, for any command (env METASTORE_DATABASE_URL).",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show metastore's log on stderr (retries, reconnects...); -vv: debug.",
)
@click.pass_context
def cli(ctx: click.Context, url: str, verbose: int) -> None:
    """metastore: a persistent store of Cornerstone3D metadata for DICOM archives.

    Example:

    \b
        metastore index scans/ --wadors-root https://pacs/dicomweb
        metastore --db sqlite:///archive.sqlite stats
    """
    ctx.meta[_URL_KEY] = url
    source = ctx.get_parameter_source("url")
    ctx.meta[_GIVEN_KEY] = source == click.core.ParameterSource.COMMANDLINE
    show_log(verbose)


class _StderrHandler(logging.Handler):
    """Log records as lines on whatever ``sys.stderr`` is when they come.

    A progress display replaces ``sys.stderr`` while it runs so that other
    output prints above it; a handler that kept the stream it started with
    would write through the display instead.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never end the command
            self.handleError(record)


def show_log(verbose: int) -> None:
    """With ``-v``, metastore's log (INFO and up; ``-vv``: DEBUG) on stderr.

    Without it, only warnings reach stderr (Python's last-resort handler).
    """
    logger = logging.getLogger("metastore")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if not verbose:
        logger.setLevel(logging.NOTSET)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
