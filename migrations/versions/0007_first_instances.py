"""series.first_instance_id and studies.first_instance_id: the lowest-SOP instance.

A study or a series has no DICOM JSON of its own: QIDO-RS answers its
attributes that are not columns (``include=``, ``include=all``, filters on
them, a lower level's columns named in ``include``) from one of its
instances, which the query layer took as the lowest ``instances.id``, the
first stored.  That depends on the order instances were stored: two stores
of one archive (another indexing order, two shards interleaving) could
answer ``include=`` differently, and a row's columns (from its instance
with the lowest SOP Instance UID, ``store.write.settle``'s rule) and its
included values could come from two different instances.

The first instance is now the instance the row's columns come from, stored
in the row: the id of its instance with the lowest SOP Instance UID (by
code point), kept by ``store.write.settle`` in the same transaction and
statements as the row's other attributes.  No foreign key: instances
reference their series already (a key back would make the two tables
reference each other), and settle moves the id whenever the instance it
names goes, in the transaction that deletes it.

The columns are nullable (a row the write path inserts gets its id when
settle runs, in the same transaction); the upgrade fills them with one
``UPDATE`` per table: a series takes the id of its instance that sorts first
(PostgreSQL: ``COLLATE "C"``, code point order whatever the database's
collation; SQLite's default BINARY collation compares the UTF-8 bytes, which
is code point order), a study the lowest of its series' first instances.

Downgrade drops the columns (SQLite rebuilds the tables); nothing else is
lost, the next upgrade finds the same instances again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The series' instance that sorts first by SOP Instance UID ({collate}: the
#: code point collation), from the range of ix_instances_series_id.
SERIES_FIRST = (
    "UPDATE series SET first_instance_id = (SELECT i.id FROM instances i "
    "WHERE i.series_id = series.id "
    "ORDER BY i.sop_instance_uid{collate} LIMIT 1)"
)
#: The lowest of the study's series' first instances (the study's lowest SOP
#: Instance UID is the lowest of its series').
STUDY_FIRST = (
    "UPDATE studies SET first_instance_id = (SELECT i.id FROM series s "
    "JOIN instances i ON i.id = s.first_instance_id "
    "WHERE s.study_id = studies.id "
    "ORDER BY i.sop_instance_uid{collate} LIMIT 1)"
)


def upgrade() -> None:
    """Add the columns (NULL in every row), then find each row's first instance."""
    for table in ("series", "studies"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("first_instance_id", sa.Integer(), nullable=True)
            )
    postgres = op.get_bind().dialect.name == "postgresql"
    collate = ' COLLATE "C"' if postgres else ""
    op.execute(SERIES_FIRST.format(collate=collate))
    op.execute(STUDY_FIRST.format(collate=collate))


def downgrade() -> None:
    """Drop the columns (SQLite: the tables are rebuilt)."""
    for table in ("studies", "series"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("first_instance_id")
