"""``metastore db`` (the schema's migrations) and ``metastore serve``."""

from __future__ import annotations

import click

from metastore.cli.base import cli, db_option


@cli.group(name="db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations shipped with metastore).

    Example:

    \b
        metastore db upgrade --db postgresql://user@host/pacs
    """


@db_group.command()
@db_option
def upgrade(url: str) -> None:
    """Create or migrate the schema to the newest revision.

    Example:

    \b
        metastore db upgrade --db sqlite:///archive.sqlite
    """
    from metastore.store import db

    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        click.echo(
            f"{db.redact(engine.url)} is at revision {db.current(engine)} (head)"
        )
    finally:
        engine.dispose()


@db_group.command()
@db_option
def current(url: str) -> None:
    """Print the schema revision and whether it is the newest (head).

    Example:

    \b
        metastore db current --db sqlite:///archive.sqlite
    """
    from metastore.store import db

    db.require_database(url)  # a mistyped SQLite path is no new database
    engine = db.create_engine(url, read_only=True)
    try:
        # an unknown (newer) revision or a damaged version table is an error
        revision, head = db.known_revision(engine), db.head()
    finally:
        engine.dispose()
    if revision == head:
        click.echo(f"{revision} (head)")
    else:
        click.echo(
            f"{revision or 'no schema'} (behind head {head}; run: metastore db upgrade)"
        )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8042, show_default=True)
@click.option(
    "--token",
    envvar="METASTORE_TOKEN",
    help="Require Authorization: Bearer TOKEN (env METASTORE_TOKEN).",
)
@click.option(
    "--insecure", is_flag=True, help="Allow a non-loopback --host without a token."
)
@db_option
def serve(host: str, port: int, token: str | None, insecure: bool, url: str) -> None:
    """Serve the store read-only over DICOMweb at http://HOST:PORT/dicomweb.

    Example:

    \b
        metastore index /archive && metastore serve
    """
    from metastore.web import run  # the web extra: Starlette, uvicorn

    run(url, host=host, port=port, token=token, insecure=insecure)
