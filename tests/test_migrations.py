"""Migrations: one head, empty -> head, round trips, no drift, data kept (STYLE 4.6)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from metastore import db
from metastore.errors import SchemaError, SchemaNotAtHeadError
from metastore.schema import metadata


def _revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(db.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_single_head() -> None:
    """The migration history has exactly one head, the one db.py names."""
    script = ScriptDirectory.from_config(db.alembic_config())
    assert script.get_heads() == [db.HEAD_REVISION]


def test_migrations_ship_with_the_package_or_checkout() -> None:
    """The script location holds env.py, script.py.mako and versions/."""
    from pathlib import Path

    location = Path(db.script_location())
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()
    assert (location / "versions").is_dir()


def test_empty_to_head(empty_db_url: str) -> None:
    """An empty database upgrades to head and then reports being at head."""
    engine = db.create_engine(empty_db_url)
    try:
        assert db.current(engine) is None
        db.upgrade(engine)
        assert db.is_at_head(engine)
        assert db.current(engine) == db.head()
    finally:
        engine.dispose()


def test_head_base_head(db_url: str) -> None:
    """head -> base -> head works and base leaves no metastore tables."""
    engine = db.create_engine(db_url)
    try:
        db.downgrade(engine, "base")
        assert db.current(engine) is None
        tables = set(sa.inspect(engine).get_table_names())
        assert not tables & set(metadata.tables)
        db.upgrade(engine)
        assert db.is_at_head(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", _revisions())
def test_stairway(db_url: str, revision: str) -> None:
    """Each revision downgrades to its parent and upgrades again."""
    engine = db.create_engine(db_url)
    script = ScriptDirectory.from_config(db.alembic_config())
    down = script.get_revision(revision).down_revision
    try:
        db.downgrade(engine, "base")
        db.upgrade(engine, revision)
        db.downgrade(engine, str(down) if down else "base")
        db.upgrade(engine, revision)
        assert db.current(engine) == revision
    finally:
        engine.dispose()


def test_no_drift(db_url: str) -> None:
    """The migrated schema equals metastore.schema (empty autogenerate diff)."""
    engine = db.create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": db.VERSION_TABLE},
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_populated_round_trip_keeps_data(db_url: str) -> None:
    """Rows inserted at head survive an upgrade run over them and FKs hold."""
    engine = db.create_engine(db_url)
    studies = sa.table("studies", sa.column("id"), sa.column("study_instance_uid"))
    series = sa.table(
        "series",
        sa.column("id"),
        sa.column("series_instance_uid"),
        sa.column("study_id"),
    )
    errors = sa.table(
        "index_errors",
        sa.column("location"),
        sa.column("kind"),
        sa.column("reason"),
        sa.column("at"),
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(studies), [{"id": 1, "study_instance_uid": "1.2"}]
            )
            connection.execute(
                sa.insert(series),
                [{"id": 1, "series_instance_uid": "1.2.3", "study_id": 1}],
            )
            connection.execute(
                sa.insert(errors),
                [
                    {
                        "location": "/x",
                        "kind": "invalid",
                        "reason": "r",
                        "at": datetime.now(UTC),
                    }
                ],
            )
        revisions = _revisions()
        # Every revision after the first alters a populated database.
        if len(revisions) > 1:
            db.downgrade(engine, revisions[-2])
        db.upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(sa.select(series.c.study_id)).scalar() == 1
            assert (
                connection.execute(
                    sa.select(sa.func.count()).select_from(errors)
                ).scalar()
                == 1
            )
            if engine.dialect.name == "sqlite":
                assert (
                    connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                )
    finally:
        engine.dispose()


def test_ensure_schema_sets_up_a_new_database(empty_db_url: str) -> None:
    """ensure_schema migrates a brand-new empty database to head."""
    engine = db.create_engine(empty_db_url)
    try:
        db.ensure_schema(engine)
        assert db.is_at_head(engine)
    finally:
        engine.dispose()


def test_ensure_schema_refuses_a_database_behind_head(db_url: str) -> None:
    """A database behind head raises SchemaNotAtHeadError naming the command."""
    engine = db.create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(f"UPDATE {db.VERSION_TABLE} SET version_num = '0000'")
            )
        with pytest.raises(SchemaError, match="does not know"):
            db.ensure_schema(engine)
    finally:
        engine.dispose()


def test_ensure_schema_names_the_upgrade_command(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind head, the error names `metastore db upgrade --db <url>`."""
    engine = db.create_engine(empty_db_url)
    try:
        db.upgrade(engine)
        # Pretend this metastore knows a newer head than the database has.
        monkeypatch.setattr(db, "HEAD_REVISION", "9999")
        with pytest.raises(SchemaNotAtHeadError, match="metastore db upgrade --db"):
            db.ensure_schema(engine)
    finally:
        engine.dispose()


def test_ensure_schema_refuses_a_foreign_database(empty_db_url: str) -> None:
    """A database with other tables and no metastore version is not touched."""
    engine = db.create_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE other (x INTEGER)")
        with pytest.raises(SchemaError, match="no metastore schema"):
            db.ensure_schema(engine)
    finally:
        engine.dispose()
