"""QIDO-RS search columns: the matching and return keys the tables lacked.

Adds the columns ``Store.query`` answers the required QIDO-RS attributes
from (PS3.18 Table 10.6.1-5 and 10.6.3-3/4/5) without reading the DICOM
JSON of every row, and indexes the required matching keys:

- ``studies``: (0008,0090) ReferringPhysicianName (with its case-folded
  key, indexed, and fuzzy tokens), fuzzy tokens of (0010,0010) PatientName,
  (0010,0030) PatientBirthDate, (0010,0040) PatientSex, (0020,0010) StudyID
  (``dicom_study_id``, with an indexed case-folded key);
- ``series``: (0040,0244) PerformedProcedureStepStartDate (indexed) and
  StartTime; an index on (0020,0011) SeriesNumber;
- ``instances``: (0028,0010) Rows, (0028,0011) Columns, (0028,0100)
  BitsAllocated; indexes on (0008,0016) SOPClassUID and (0020,0013)
  InstanceNumber.

The new columns are filled from the stored DICOM JSON, never from the
files: each instance's own, and for a series or a study the JSON of its
stored instance with the lowest SOP Instance UID (by code point), the
instance the store takes every other study and series attribute from
(``store.write.settle``), which is what the write path would have given
had the columns existed.  The values are
computed by ``metastore.store.encode.search_values``, the function the
write path calls, so migrated and newly written rows agree; if that
function ever changes what it computes, the change needs a revision that
computes the columns again.  A blob that cannot be decoded leaves its row's
new columns empty (logged) rather than stopping the upgrade.

Downgrade drops the indexes and the columns (SQLite rebuilds the tables).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)

#: (table, column, type) of every new column.
COLUMNS: list[tuple[str, str, Any]] = [
    ("studies", "referring_physician_name", sa.Text()),
    ("studies", "referring_physician_name_key", sa.Text()),
    ("studies", "referring_physician_name_fuzzy", sa.Text()),
    ("studies", "patient_name_fuzzy", sa.Text()),
    ("studies", "patient_birth_date", sa.String(8)),
    ("studies", "patient_sex", sa.String(16)),
    ("studies", "dicom_study_id", sa.Text()),
    ("studies", "dicom_study_id_key", sa.Text()),
    ("series", "performed_procedure_step_start_date", sa.String(8)),
    ("series", "performed_procedure_step_start_time", sa.Text()),
    ("instances", "image_rows", sa.Integer()),
    ("instances", "image_columns", sa.Integer()),
    ("instances", "bits_allocated", sa.Integer()),
]
#: (table, column) of every new index (named by the naming convention).
INDEXES = [
    ("studies", "referring_physician_name_key"),
    ("studies", "dicom_study_id_key"),
    ("series", "series_number"),
    ("series", "performed_procedure_step_start_date"),
    ("instances", "sop_class_uid"),
    ("instances", "instance_number"),
]
TABLES = ("studies", "series", "instances")
#: Instances decoded per round trip of the backfill.
PAGE = 1000


def upgrade() -> None:
    """Add the columns and indexes, then fill the columns from the DICOM JSON."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for name, column, type_ in COLUMNS:
                if name == table:
                    batch.add_column(sa.Column(column, type_, nullable=True))
            for name, column in INDEXES:
                if name == table:
                    batch.create_index(batch.f(f"ix_{table}_{column}"), [column])
    _backfill(op.get_bind())


def downgrade() -> None:
    """Drop the indexes and the columns of this revision."""
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            for name, column in INDEXES:
                if name == table:
                    batch.drop_index(batch.f(f"ix_{table}_{column}"))
            for name, column, _ in COLUMNS:
                if name == table:
                    batch.drop_column(column)


def _table(name: str) -> sa.TableClause:
    """A lightweight table of ``name`` with the columns the backfill touches."""
    extra = [sa.column(column) for table, column, _ in COLUMNS if table == name]
    base = {
        "studies": ["id", "patient_name"],
        "series": ["id", "study_id"],
        "instances": [
            "id",
            "series_id",
            "sop_instance_uid",
            "dicom_json",
            "dicom_json_base_id",
        ],
    }[name]
    return sa.table(name, *(sa.column(c) for c in base), *extra)


def _backfill(conn: sa.Connection) -> None:
    """Fill the new columns of every stored row, a page of instances at a time.

    A series' and a study's values come from their instance with the
    lowest SOP Instance UID, as ``store.write.settle`` takes the other
    attributes (the rule of issue 9).
    """
    # Imported here: only an upgrade over stored rows needs them (and never
    # metastore.store.schema, which describes the newest schema).
    from metastore.store import codec
    from metastore.store.encode import search_values

    studies, series, instances = (_table(n) for n in TABLES)
    values = sa.table("module_values", sa.column("id"), sa.column("value"))
    study_of = dict(conn.execute(sa.select(series.c.id, series.c.study_id)).all())
    names = dict(conn.execute(sa.select(studies.c.id, studies.c.patient_name)).all())
    sop: sa.ColumnElement[Any] = instances.c.sop_instance_uid
    if conn.dialect.name == "postgresql":
        sop = sop.collate("C")  # code point order, as settle() compares
    lowest_of_series = dict(
        conn.execute(
            sa.select(instances.c.series_id, sa.func.min(sop)).group_by(
                instances.c.series_id
            )
        ).all()
    )
    lowest_of_study = dict(
        conn.execute(
            sa.select(series.c.study_id, sa.func.min(sop))
            .select_from(instances.join(series, series.c.id == instances.c.series_id))
            .group_by(series.c.study_id)
        ).all()
    )
    bases: dict[int, bytes] = {}
    last = 0
    while True:
        page = conn.execute(
            sa.select(
                instances.c.id,
                instances.c.series_id,
                instances.c.sop_instance_uid,
                instances.c.dicom_json,
                instances.c.dicom_json_base_id,
            )
            .where(instances.c.id > last)
            .order_by(instances.c.id)
            .limit(PAGE)
        ).all()
        if not page:
            break
        last = page[-1].id
        wanted = {r.dicom_json_base_id for r in page} - {None} - set(bases)
        if len(bases) > 256:
            bases.clear()  # bases are per series: keep memory bounded
        for base_id, blob in conn.execute(
            sa.select(values.c.id, values.c.value).where(values.c.id.in_(wanted))
        ):
            bases[base_id] = codec.inflate(bytes(blob))
        rows: dict[str, list[dict[str, Any]]] = {n: [] for n in TABLES}
        for row in page:
            try:
                base = bases.get(row.dicom_json_base_id)
                instance = codec.decode_dicom_json(bytes(row.dicom_json), base)
            except (ValueError, KeyError) as exc:
                log.warning("instance row %s: DICOM JSON not decoded: %s", row.id, exc)
                continue
            study_id = study_of.get(row.series_id)
            found = search_values(instance, names.get(study_id))
            rows["instances"].append({"_id": row.id, **found["instance"]})
            if lowest_of_series.get(row.series_id) == row.sop_instance_uid:
                rows["series"].append({"_id": row.series_id, **found["series"]})
            if lowest_of_study.get(study_id) == row.sop_instance_uid:
                rows["studies"].append({"_id": study_id, **found["study"]})
        for table in (studies, series, instances):
            if rows[table.name]:
                columns = [c for c in rows[table.name][0] if c != "_id"]
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("_id"))
                    .values({c: sa.bindparam(c) for c in columns}),
                    rows[table.name],
                )
