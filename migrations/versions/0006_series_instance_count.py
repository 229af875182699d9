"""series.instance_count: how many instances each series has, stored.

QIDO-RS study and series rows return NumberOfSeriesRelatedInstances and
NumberOfStudyRelatedInstances, which the store counted at query time, an
index range per series: O(instances) per query (88 ms on SQLite, 356 ms on
PostgreSQL for the studies of a million instances).  The count is now a
column of ``series``, kept by ``store.write.settle`` in every transaction
that adds or deletes instances of the series, where the rows of those
instances are grouped already; a query reads one integer per series.

The column is ``NOT NULL`` with a server default of ``0`` (so SQLite can add
it without rebuilding the table, and the write path's INSERTs of new series
may leave it out); the upgrade fills it from the stored instances with one
``UPDATE``.

Downgrade drops the column (SQLite rebuilds ``series``); nothing else is
lost, the counts are computed again by the next upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column (0 in every row), then count each series' instances."""
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column(
                "instance_count",
                sa.Integer(),
                nullable=False,
                server_default=sa.text("0"),
            )
        )
    # One index range of ix_instances_series_id per series.
    op.execute(
        "UPDATE series SET instance_count = "
        "(SELECT count(*) FROM instances WHERE instances.series_id = series.id)"
    )


def downgrade() -> None:
    """Drop the column (SQLite: the table is rebuilt)."""
    with op.batch_alter_table("series") as batch:
        batch.drop_column("instance_count")
