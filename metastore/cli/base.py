"""The ``metastore`` group: options every command shares, and its errors.

Errors metastore raises on purpose (bad imageId, unknown module type,
unreachable database, schema behind head...) become one line on stderr and
exit status 2, in one place: :class:`MetastoreGroup`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from metastore.errors import MetastoreError, ModuleError
from metastore.modules import MODULE_TYPES
from metastore.store import db
from metastore.testhooks import TestHooks

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status for bad input and an unusable database (click's usage status).
EXIT_ERROR = 2


#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class MetastoreGroup(click.Group):
    """A click group that turns metastore's errors into one line and status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a :class:`MetastoreError` without a traceback."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # not click's "Aborted!" and status 1, which reads as a failure
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except MetastoreError as exc:
            raise Failure(str(exc)) from None
        except SQLAlchemyError as exc:  # a driver error the store did not wrap
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            reason = first[0] if first else str(exc)
            raise Failure(_scrubbed(ctx, f"database error: {reason}")) from None


#: Where ``--db`` leaves the URL for :class:`MetastoreGroup` (``ctx.meta`` is
#: shared by a command's context and the group's).
_URL_KEY = "metastore.url"


def _scrubbed(ctx: click.Context, message: str) -> str:
    """``message`` (a driver's) without the secrets of the command's database URL.

    metastore's own errors come redacted and scrubbed already (scrubbing
    them again would blot out a one-letter password inside ``***``).
    """
    url = ctx.meta.get(_URL_KEY)
    return db.scrub(message, url) if isinstance(url, str) else message


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
        return str(before or db.database_url_from_env())
    if ctx.meta.get(_GIVEN_KEY) and before != value:
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
        f"default {db.DEFAULT_URL}).",
        callback=_remember_url,
    )
    return option(command)


def module_types(names: Iterable[str]) -> list[str]:
    """Check module type names; raise ModuleError naming the valid ones."""
    types = [name.strip() for name in names if name.strip()]
    for name in types:
        if name not in MODULE_TYPES:
            valid = ", ".join(MODULE_TYPES)
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
    default=db.DEFAULT_URL,
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
    TestHooks.install()  # crash-test hooks; nothing unless METASTORE_TEST_* is set


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
