"""image_modules without foreign keys: no per-row checks on the write path.

Every ``image_modules`` row checked ``images.id`` and ``module_types.id`` on
insert (26 checks per image, most of PostgreSQL's work once the rows arrive
by binary COPY).  The store writes the rows in the transaction that inserts
their image and module types, and deletes them itself before their images
(``store_write.delete_instances``), so the keys checked nothing it does not
already guarantee; ``ON DELETE CASCADE`` from ``images`` never fired.

Downgrade: the keys are declared again.  Rows they would reject (an image or
module type that no longer exists: nothing ever answers for them) are
deleted first, which is what the cascade would have done.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Names given by metastore.store.schema.NAMING_CONVENTION (the same on both backends).
FK_IMAGE = "fk_image_modules_image_id_images"
FK_MODULE_TYPE = "fk_image_modules_module_type_id_module_types"
#: SQLite rebuilds the table in batch mode: keep it WITHOUT ROWID.
TABLE_KWARGS = {"sqlite_with_rowid": False}


def upgrade() -> None:
    """Drop the two foreign keys of image_modules (SQLite: rebuild the table)."""
    with op.batch_alter_table("image_modules", table_kwargs=TABLE_KWARGS) as batch:
        batch.drop_constraint(batch.f(FK_MODULE_TYPE), type_="foreignkey")
        batch.drop_constraint(batch.f(FK_IMAGE), type_="foreignkey")


def downgrade() -> None:
    """Delete rows without their image or module type, then declare both keys."""
    image_modules = sa.table(
        "image_modules", sa.column("image_id"), sa.column("module_type_id")
    )
    images = sa.table("images", sa.column("id"))
    module_types = sa.table("module_types", sa.column("id"))
    has_image = sa.exists().where(images.c.id == image_modules.c.image_id)
    has_type = sa.exists().where(module_types.c.id == image_modules.c.module_type_id)
    op.execute(sa.delete(image_modules).where(~has_image | ~has_type))
    with op.batch_alter_table("image_modules", table_kwargs=TABLE_KWARGS) as batch:
        batch.create_foreign_key(
            batch.f(FK_IMAGE),
            "images",
            ["image_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            batch.f(FK_MODULE_TYPE), "module_types", ["module_type_id"], ["id"]
        )
