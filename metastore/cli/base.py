"""The ``metastore`` group: options every command shares, and its errors.

Errors metastore raises on purpose (bad imageId, unknown module type,
unreachable database, schema behind head...) become one line on stderr and
exit status 2, in one place: :class:`MetastoreGroup`.
"""

from __future__ import annotations

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


class MetastoreGroup(click.Group):
    """A click group that turns metastore's errors into one line and status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a :class:`MetastoreError` without a traceback."""
        try:
            return super().invoke(ctx)
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


def _remember_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
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
        envvar="METASTORE_DATABASE_URL",
        default=db.DEFAULT_URL,
        show_default=True,
        metavar="URL",
        help="Database URL (env METASTORE_DATABASE_URL).",
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
def cli() -> None:
    """metastore: a persistent store of Cornerstone3D metadata for DICOM archives.

    Example:

    \b
        metastore index scans/ --wadors-root https://pacs/dicomweb
    """
    TestHooks.install()  # crash-test hooks; nothing unless METASTORE_TEST_* is set
