"""Migrations: one head, empty -> head, round trips, no drift, data kept (STYLE 4.6)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dicom_samples import EMRI, copy, write_ct
from reliability import problems

from metastore import index_paths
from metastore.errors import SchemaError, SchemaNotAtHeadError
from metastore.index import IndexReport
from metastore.store import Store, db
from metastore.store.schema import metadata


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
    """The migrated schema equals metastore.store.schema (empty autogenerate diff)."""
    engine = db.create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "version_table": db.VERSION_TABLE,
                },
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


# -- revision 0002: image_modules without foreign keys ------------------------

#: The foreign keys of image_modules at revision 0001 (dropped by 0002).
IMAGE_MODULE_KEYS = {
    "fk_image_modules_image_id_images": ("images", "CASCADE"),
    "fk_image_modules_module_type_id_module_types": ("module_types", None),
}

#: Every module row of every image as stored, by plain SQL that holds at
#: 0001 and 0002 (the store refuses a database behind head): imageId, module
#: type, the value's bytes and its base's bytes.
MODULE_ROWS = sa.text(
    "SELECT p.prefix || i.suffix, t.name, v.value, b.value "
    "FROM image_modules m "
    "JOIN images i ON i.id = m.image_id "
    "JOIN image_id_prefixes p ON p.id = i.prefix_id "
    "JOIN module_types t ON t.id = m.module_type_id "
    "JOIN module_values v ON v.id = m.value_id "
    "LEFT JOIN module_values b ON b.id = v.base_id "
    "ORDER BY 1, 2"
)

#: image_modules rows that no image, or no module type, owns.
ORPHANS = {
    "without image": "SELECT count(*) FROM image_modules m "
    "WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.id = m.image_id)",
    "without type": "SELECT count(*) FROM image_modules m "
    "WHERE NOT EXISTS (SELECT 1 FROM module_types t WHERE t.id = m.module_type_id)",
}


def _archive(root: Path) -> Path:
    """Real files: two CT series, a 10-frame enhanced MR."""
    for n in (1, 2, 3):
        write_ct(root / "ct" / f"{n}.dcm", n, series=1 + n % 2)
    copy(EMRI, root / "mr" / "enhanced.dcm")
    return root


def _index(url: str, root: Path, *, prune: bool = False) -> IndexReport:
    """Index ``root`` into ``url`` (which must be at head) in this process."""
    with Store(url) as store:
        report = index_paths(store, [root], workers=1, prune=prune)
    assert report.failed == 0, report
    return report


def _stored(engine: sa.Engine) -> dict[str, Any]:
    """What a revision must keep: the raw image_modules triples and the rows."""
    with engine.connect() as connection:
        triples = connection.execute(
            sa.text(
                "SELECT image_id, module_type_id, value_id FROM image_modules "
                "ORDER BY image_id, module_type_id"
            )
        ).all()
        rows = [
            tuple(bytes(c) if isinstance(c, memoryview) else c for c in r)
            for r in connection.execute(MODULE_ROWS)
        ]
    assert len(rows) == len(triples)  # the joins hid no row
    return {"triples": triples, "rows": rows}


def _check_shape(engine: sa.Engine, revision: str) -> None:
    """image_modules has 0001's keys or none, its primary key, and no broken key.

    On SQLite the table stays ``WITHOUT ROWID`` through the batch rebuilds.
    """
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        keys = {
            fk["name"]: (fk["referred_table"], fk["options"].get("ondelete"))
            for fk in inspector.get_foreign_keys("image_modules")
        }
        assert keys == (IMAGE_MODULE_KEYS if revision == "0001" else {})
        primary = inspector.get_pk_constraint("image_modules")
        assert primary["name"] == "pk_image_modules"
        assert primary["constrained_columns"] == ["image_id", "module_type_id"]
        if engine.dialect.name == "sqlite":
            ddl = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'image_modules'"
            ).scalar_one()
            assert "WITHOUT ROWID" in ddl.upper()
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def _export(url: str) -> list[tuple[str, Any]]:
    """Every module of every image, as the store answers (database at head)."""
    with Store(url) as store:
        return list(store.export())


def test_populated_revisions_keep_every_module(db_url: str, tmp_path: Path) -> None:
    """Each revision after 0001, down to its parent and up, on indexed real files.

    The store needs head, so the archive is indexed there; every step down
    and up must keep every image_modules row (same ids, same values) and the
    store's export, with the keys of each revision in place.
    """
    root = _archive(tmp_path / "archive")
    _index(db_url, root)
    answers = _export(db_url)
    assert len(answers) == 3 + 10
    assert all(len(modules) > 20 for _, modules in answers)
    engine = db.create_engine(db_url)
    try:
        kept = _stored(engine)
        _check_shape(engine, db.head())
        for revision in _revisions()[1:]:
            down = str(
                ScriptDirectory.from_config(db.alembic_config())
                .get_revision(revision)
                .down_revision
            )
            db.downgrade(engine, down)
            _check_shape(engine, down)
            assert _stored(engine) == kept
            db.upgrade(engine, revision)
            _check_shape(engine, revision)
            assert _stored(engine) == kept
        db.upgrade(engine)
        assert db.is_at_head(engine)
    finally:
        engine.dispose()
    assert _export(db_url) == answers
    # The store goes on writing into the migrated table.
    write_ct(root / "ct" / "4.dcm", 4)
    _index(db_url, root)
    assert len(_export(db_url)) == len(answers) + 1
    assert problems(db_url) == {}


def test_downgrade_to_0001_drops_module_rows_no_key_would_allow(
    db_url: str, tmp_path: Path
) -> None:
    """Rows without their image or type are deleted; every other row is kept.

    The store never leaves such rows, but without the keys nothing stops
    another writer: the downgrade deletes them (what ``ON DELETE CASCADE``
    would have done) instead of failing to declare the keys.
    """
    _index(db_url, _archive(tmp_path / "archive"))
    engine = db.create_engine(db_url)
    try:
        kept = _stored(engine)
        with engine.begin() as connection:
            image_id, type_id, value_id = kept["triples"][0]
            connection.execute(
                sa.text(
                    "INSERT INTO image_modules (image_id, module_type_id, value_id) "
                    "VALUES (:i, :t, :v)"
                ),
                [
                    {"i": 1_000_000, "t": type_id, "v": value_id},
                    {"i": image_id, "t": 32_000, "v": value_id},
                ],
            )
        assert _orphans(engine) == {name: 1 for name in ORPHANS}
        db.downgrade(engine, "0001")
        _check_shape(engine, "0001")
        assert _orphans(engine) == {name: 0 for name in ORPHANS}
        assert _stored(engine) == kept
        db.upgrade(engine)
        _check_shape(engine, db.head())
        assert _stored(engine) == kept
    finally:
        engine.dispose()


def _orphans(engine: sa.Engine) -> dict[str, int]:
    """How many image_modules rows lack their image, or their module type."""
    with engine.connect() as connection:
        return {
            name: int(connection.exec_driver_sql(sql).scalar_one())
            for name, sql in ORPHANS.items()
        }


def test_store_deletes_leave_no_module_row_behind(db_url: str, tmp_path: Path) -> None:
    """What revision 0002 relies on: the store deletes image_modules rows itself.

    A changed file (10 frames become 1, and a same-UID rewrite), a file that
    now duplicates another's instance, and a removed file pruned: no
    image_modules row outlives its image, and the store equals a fresh index
    of the final files.
    """
    root = _archive(tmp_path / "archive")
    write_ct(root / "gone.dcm", 9)
    write_ct(root / "zz_dup.dcm", 8)
    _index(db_url, root)

    mr = root / "mr" / "enhanced.dcm"
    write_ct(mr, 5)  # 10 frames -> 1 image
    write_ct(root / "ct" / "1.dcm", 1, patient_name="Doe^John")  # same UID
    copy_bytes = (root / "ct" / "2.dcm").read_bytes()
    (root / "zz_dup.dcm").write_bytes(copy_bytes)  # now a duplicate of 2.dcm
    for i, path in enumerate((mr, root / "ct" / "1.dcm", root / "zz_dup.dcm")):
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
    (root / "gone.dcm").unlink()
    report = _index(db_url, root, prune=True)
    # zz_dup.dcm holds a duplicate only: skipped, and its old instance goes
    assert (report.indexed, report.duplicates) == (2, 1)

    engine = db.create_engine(db_url)
    try:
        assert _orphans(engine) == {name: 0 for name in ORPHANS}
        with engine.connect() as connection:
            images = connection.execute(sa.text("SELECT count(*) FROM images"))
            assert images.scalar_one() == 4
            rows = connection.execute(sa.text("SELECT count(*) FROM image_modules"))
            stored_rows = rows.scalar_one()
    finally:
        engine.dispose()
    answers = _export(db_url)
    assert sum(len(modules) for _, modules in answers) == stored_rows
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    _index(fresh, root)
    assert answers == _export(fresh)


# -- revision 0003: QIDO search columns, filled from the stored DICOM JSON -----

#: The columns revision 0003 adds, per table.
QIDO_COLUMNS = {
    "studies": [
        "referring_physician_name",
        "referring_physician_name_key",
        "referring_physician_name_fuzzy",
        "patient_name_fuzzy",
        "patient_birth_date",
        "patient_sex",
        "dicom_study_id",
        "dicom_study_id_key",
    ],
    "series": [
        "performed_procedure_step_start_date",
        "performed_procedure_step_start_time",
    ],
    "instances": ["image_rows", "image_columns", "bits_allocated"],
}


def _qido_columns(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row's values of the 0003 columns, by UID, per table."""
    keys = {
        "studies": "study_instance_uid",
        "series": "series_instance_uid",
        "instances": "sop_instance_uid",
    }
    out = {}
    with engine.connect() as connection:
        for table, columns in QIDO_COLUMNS.items():
            sql = f"SELECT {keys[table]}, {', '.join(columns)} FROM {table} ORDER BY 1"
            out[table] = [tuple(row) for row in connection.exec_driver_sql(sql)]
    return out


def test_0003_fills_the_new_columns_from_the_stored_json(
    db_url: str, tmp_path: Path
) -> None:
    """Down to 0002 (columns gone) and up again: the backfill from the stored
    DICOM JSON gives what the write path wrote, and queries answer alike."""
    from test_qido import records

    _index(db_url, _archive(tmp_path / "archive"))
    with Store(db_url) as store:
        assert store.write_batch(records()) == []
        before = {
            level: list(store.query(level, include=["SliceThickness"]))
            for level in ("studies", "series", "instances")
        }
        fuzzy = list(store.query("studies", {"PatientName": "jose"}, fuzzy=True))
    assert len(fuzzy) == 1
    engine = db.create_engine(db_url)
    try:
        written = _qido_columns(engine)
        # the archive has values in every column (not only NULLs)
        for table, rows in written.items():
            for i, column in enumerate(QIDO_COLUMNS[table], 1):
                assert any(row[i] is not None for row in rows), (table, column)
        db.downgrade(engine, "0002")
        inspector = sa.inspect(engine)
        for table, columns in QIDO_COLUMNS.items():
            names = {c["name"] for c in inspector.get_columns(table)}
            assert not names & set(columns), table
        indexes = {i["name"] for i in inspector.get_indexes("instances")}
        assert "ix_instances_instance_number" not in indexes
        db.upgrade(engine)
        assert _qido_columns(engine) == written
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("instances")}
        assert {"ix_instances_instance_number", "ix_instances_sop_class_uid"} <= indexes
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                check = connection.exec_driver_sql("PRAGMA integrity_check")
                assert check.scalar() == "ok"
    finally:
        engine.dispose()
    with Store(db_url) as store:
        for level, rows in before.items():
            assert list(store.query(level, include=["SliceThickness"])) == rows
        again = list(store.query("studies", {"PatientName": "jose"}, fuzzy=True))
        assert again == fuzzy


# -- revision 0004: instances.mapping_version ----------------------------------


def _mapping_versions(engine: sa.Engine) -> dict[str | None, int]:
    """``{mapping_version: instances}`` (the column exists from 0004 on)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT mapping_version, count(*) FROM instances "
                "GROUP BY mapping_version"
            )
        )
        return {version: n for version, n in rows}


def _instance_columns(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        return {c["name"] for c in inspector.get_columns("instances")}


def test_0004_marks_every_stored_instance_stale(db_url: str, tmp_path: Path) -> None:
    """A database populated at 0002, upgraded: every instance at unknown mapping.

    The store's answers are kept as they were (stale is better than
    nothing) and counted stale; downgrading again forgets the column and
    keeps every row; ``reindex`` brings them to this mapping.
    """
    from metastore.index import reindex, stale_instances
    from metastore.modules import MAPPING_VERSION

    _index(db_url, _archive(tmp_path / "archive"))
    answers = _export(db_url)
    engine = db.create_engine(db_url)
    try:
        kept = _stored(engine)
        assert _mapping_versions(engine) == {MAPPING_VERSION: 4}
        db.downgrade(engine, "0002")  # the database of the previous release
        assert "mapping_version" not in _instance_columns(engine)
        assert _stored(engine) == kept
        db.upgrade(engine, "0004")
        assert _mapping_versions(engine) == {None: 4}
        assert _stored(engine) == kept
        with engine.connect() as connection:
            indexes = sa.inspect(connection).get_indexes("instances")
        assert {(i["name"], tuple(i["column_names"])) for i in indexes} >= {
            ("ix_instances_mapping_version", ("mapping_version",))
        }
        db.downgrade(engine, "0002")
        assert _stored(engine) == kept
        db.upgrade(engine)
    finally:
        engine.dispose()
    assert _export(db_url) == answers
    with Store(db_url) as store:
        assert stale_instances(store) == 4
        report = reindex(store, workers=1)
        assert (report.reindexed, report.stale) == (4, 0)
    assert _export(db_url) == answers
    engine = db.create_engine(db_url)
    try:
        assert _mapping_versions(engine) == {MAPPING_VERSION: 4}
    finally:
        engine.dispose()


# -- revision 0006: series.instance_count ---------------------------------------


def _instance_counts(engine: sa.Engine) -> dict[str, int]:
    """``{series_instance_uid: instance_count}`` (the column exists from 0006 on)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT series_instance_uid, instance_count FROM series")
        )
        return {uid: n for uid, n in rows}


def _series_columns(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return {c["name"] for c in sa.inspect(connection).get_columns("series")}


def test_0006_counts_the_stored_instances_of_every_series(
    db_url: str, tmp_path: Path
) -> None:
    """A populated database of every earlier revision, upgraded: each series
    gets the number of its stored instances, and queries answer as before.

    Down to a revision before 0006 the column is gone, so the counts after
    the upgrade can only come from its ``UPDATE`` (the default is 0).
    """
    _index(db_url, _archive(tmp_path / "archive"))
    with Store(db_url) as store:
        before = {level: list(store.query(level)) for level in ("studies", "series")}
    engine = db.create_engine(db_url)
    try:
        written = _instance_counts(engine)
        # two CT series (two instances and one), the enhanced MR's
        assert sorted(written.values()) == [1, 1, 2]
        _down_and_up(engine, "0006", "instance_count", _instance_counts, written)
    finally:
        engine.dispose()
    assert problems(db_url) == {}
    with Store(db_url) as store:
        for level, rows in before.items():
            assert list(store.query(level)) == rows


def _down_and_up(
    engine: sa.Engine,
    revision: str,
    column: str,
    read: Callable[[sa.Engine], object],
    wanted: object,
) -> None:
    """Down to each revision before ``revision`` (its series ``column`` gone,
    so the upgrade alone fills it again) and back up: ``read`` gives
    ``wanted`` after every upgrade."""
    for older in _revisions()[1 : _revisions().index(revision)]:
        db.downgrade(engine, older)
        assert column not in _series_columns(engine)
        db.upgrade(engine)
        assert read(engine) == wanted, older


# -- revision 0007: series and studies first_instance_id -----------------------


def _first_instances(engine: sa.Engine) -> dict[str, dict[str, int | None]]:
    """``{table: {UID: first_instance_id}}`` of series and studies (0007 on)."""
    with engine.connect() as connection:
        return {
            table: dict(
                connection.execute(
                    sa.text(f"SELECT {uid}, first_instance_id FROM {table}")
                ).all()
            )
            for table, uid in (
                ("series", "series_instance_uid"),
                ("studies", "study_instance_uid"),
            )
        }


def _lowest_sop_instances(engine: sa.Engine) -> dict[str, dict[str, int | None]]:
    """What :func:`_first_instances` must be: the id of the instance with the
    lowest SOP Instance UID, compared here in Python (by code point)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT s.series_instance_uid, t.study_instance_uid, "
                "i.sop_instance_uid, i.id FROM instances i "
                "JOIN series s ON s.id = i.series_id "
                "JOIN studies t ON t.id = s.study_id"
            )
        ).all()
    lowest: dict[str, dict[str, tuple[str, int]]] = {"series": {}, "studies": {}}
    for series_uid, study_uid, sop, id_ in rows:
        for table, uid in (("series", series_uid), ("studies", study_uid)):
            lowest[table][uid] = min(lowest[table].get(uid, (sop, id_)), (sop, id_))
    return {
        table: {uid: id_ for uid, (_, id_) in found.items()}
        for table, found in lowest.items()
    }


def test_0007_finds_the_lowest_sop_instance_of_every_series_and_study(
    db_url: str, tmp_path: Path
) -> None:
    """A populated database of every earlier revision, upgraded: each series
    and study gets the id of its instance with the lowest SOP Instance UID,
    and queries answer as before.

    The instance stored last (a second run) has the lowest UID of its series
    and study by code point (``...1.1.10`` before ``...1.1.2``), so the first
    stored (lowest id, the query layer's first instance before 0007) is
    another one.  Down to a revision before 0007 the columns are gone, so the
    ids after the upgrade can only come from its ``UPDATE``.
    """
    root = _archive(tmp_path / "archive")
    _index(db_url, root)
    write_ct(root / "ct" / "4.dcm", 10, series=1)
    _index(db_url, root)
    with Store(db_url) as store:
        before = [list(store.query("studies")), list(store.query("series"))]
    engine = db.create_engine(db_url)
    try:
        wanted = _lowest_sop_instances(engine)
        with engine.connect() as connection:
            last = connection.execute(sa.text("SELECT max(id) FROM instances"))
            newest = last.scalar_one()
        study_uid = "1.2.826.0.1.3680043.8.498.77.1"
        assert wanted["studies"][study_uid] == newest
        assert wanted["series"][f"{study_uid}.1"] == newest
        assert _first_instances(engine) == wanted  # as store.write.settle keeps them
        _down_and_up(engine, "0007", "first_instance_id", _first_instances, wanted)
    finally:
        engine.dispose()
    assert problems(db_url) == {}
    with Store(db_url) as store:
        assert [list(store.query("studies")), list(store.query("series"))] == before
