"""instances.mapping_version: which mapping computed an instance's modules.

Every instance records the ``metastore.modules.MAPPING_VERSION`` whose
answers its stored modules hold, so that a metastore whose mapping changed
knows which answers are stale and ``metastore reindex`` can recompute them
from the stored DICOM JSON.  Rows stored before this revision get ``NULL``:
unknown mapping, which counts as stale.  The column is indexed, so that
counting stale instances reads the index instead of the instances (whose
rows hold the DICOM JSON).

Downgrade: the index and the column are dropped (which mapping computed
the modules is forgotten: after an upgrade again, every instance is stale).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The name metastore.store.schema.NAMING_CONVENTION gives the index.
INDEX = "ix_instances_mapping_version"


def upgrade() -> None:
    """Add the nullable column (every existing row: unknown) and its index."""
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("mapping_version", sa.String(32), nullable=True))
        batch.create_index(batch.f(INDEX), ["mapping_version"])


def downgrade() -> None:
    """Drop the index, then the column (SQLite: the table is rebuilt)."""
    with op.batch_alter_table("instances") as batch:
        batch.drop_index(batch.f(INDEX))
        batch.drop_column("mapping_version")
