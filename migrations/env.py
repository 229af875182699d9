"""Alembic environment of metastore: runs migrations on a connection it is given.

metastore.store.db builds the Config in code and passes a live connection in
``config.attributes["connection"]``; only a developer running the ``alembic``
command gets an engine built here, from ``-x url=...`` or
``METASTORE_DATABASE_URL``.  Logging is never configured here (no fileConfig):
the host application's logging stays as it is.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from metastore.store.schema import metadata

#: Same value as metastore.store.db.VERSION_TABLE (kept literal: env.py is loaded
#: by Alembic and must not depend on engine code).
VERSION_TABLE = "metastore_alembic_version"

config = context.config
target_metadata = metadata


def _configure_and_run(connection: Connection) -> None:
    """Run the migrations on ``connection`` with metastore's options."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # Batch mode recreates tables on SQLite only; elsewhere it is ALTER.
        render_as_batch=True,
        compare_type=True,
        # series.instance_count has one (0006): autogenerate checks it too.
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Use the caller's connection, or build one for the alembic command."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    # Developer path: `alembic -x url=sqlite:///dev.db upgrade head`.
    from metastore.store.db import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "METASTORE_DATABASE_URL"
    )
    if not url:
        raise SystemExit("give the database with -x url=... or METASTORE_DATABASE_URL")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("metastore migrations do not support offline (--sql) mode")
run_migrations_online()
