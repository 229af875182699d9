"""settings: what holds for the whole store, such as the DICOMweb root.

An index run under another ``--wadors-root`` than the store's imageIds were
made under used to report every source "unchanged" and keep the old
imageIds.  The store now records the root (``settings`` row
``wadors_root``: the root, or NULL for imageIds made without one) and an
index run under another root is refused.  The upgrade fills the row from
the stored imageIds: one ``http(s)`` root in every prefix, or none at all;
a store holding both (or nothing) gets no row, and its next run records
its root.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The ``settings`` row of the DICOMweb root (metastore.store.api).
WADORS_ROOT = "wadors_root"


def _root(prefix: str) -> str | None:
    """The ``--wadors-root`` an imageId prefix was made under, or ``None``.

    ``wadors:ROOT/studies/S/series/SE/instances/`` under a root (always
    ``http`` or ``https``, checked by the indexer); a ``wadouri:`` file
    prefix, or the ``wadors:file://`` one of a DICOM JSON file indexed
    without a root, has none.
    """
    if prefix.startswith(("wadors:http://", "wadors:https://")):
        end = prefix.rfind("/studies/")
        if end > 0:
            return prefix[len("wadors:") : end]
    return None


def upgrade() -> None:
    """Create ``settings`` and record the root the stored imageIds share."""
    settings = op.create_table(
        "settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
    )
    roots: set[str | None] = set()
    prefixes = op.get_bind().execute(sa.text("SELECT prefix FROM image_id_prefixes"))
    for (prefix,) in prefixes:
        roots.add(_root(prefix))
        if len(roots) > 1:
            return  # mixed: the next index run records its root
    if roots:
        (root,) = roots
        op.bulk_insert(settings, [{"name": WADORS_ROOT, "value": root}])


def downgrade() -> None:
    """Drop ``settings`` (the root is forgotten, nothing else changes)."""
    op.drop_table("settings")
