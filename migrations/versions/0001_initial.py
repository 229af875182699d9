"""Initial schema: studies, series, instances, sources, images and modules.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UID = sa.String(64)


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=True),
        # The *_key columns are the text case-folded in Python (str.casefold),
        # what the store's case-insensitive filters match on both backends.
        sa.Column("patient_id_key", sa.Text(), nullable=True),
        sa.Column("patient_name", sa.Text(), nullable=True),
        sa.Column("patient_name_key", sa.Text(), nullable=True),
        sa.Column("study_date", sa.String(8), nullable=True),
        sa.Column("study_time", sa.Text(), nullable=True),
        sa.Column("accession_number", sa.Text(), nullable=True),
        sa.Column("accession_number_key", sa.Text(), nullable=True),
        sa.Column("study_description", sa.Text(), nullable=True),
        sa.Column("study_description_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint(
            "study_instance_uid", name=op.f("uq_studies_study_instance_uid")
        ),
    )
    with op.batch_alter_table("studies") as batch:
        batch.create_index(batch.f("ix_studies_patient_id"), ["patient_id"])
        batch.create_index(batch.f("ix_studies_patient_id_key"), ["patient_id_key"])
        batch.create_index(batch.f("ix_studies_patient_name_key"), ["patient_name_key"])
        batch.create_index(batch.f("ix_studies_study_date"), ["study_date"])
        batch.create_index(batch.f("ix_studies_accession_number"), ["accession_number"])
        batch.create_index(
            batch.f("ix_studies_accession_number_key"), ["accession_number_key"]
        )

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", UID, nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.Text(), nullable=True),
        sa.Column("series_description_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_series_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint(
            "series_instance_uid", name=op.f("uq_series_series_instance_uid")
        ),
    )
    with op.batch_alter_table("series") as batch:
        batch.create_index(batch.f("ix_series_study_id"), ["study_id"])
        batch.create_index(batch.f("ix_series_modality"), ["modality"])

    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("location", name=op.f("uq_sources_location")),
    )

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("sop_class_uid", UID, nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("dicom_json", sa.LargeBinary(), nullable=False),
        sa.Column("dicom_json_base_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_instances_series_id_series")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_instances_source_id_sources"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint(
            "sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")
        ),
    )
    with op.batch_alter_table("instances") as batch:
        batch.create_index(batch.f("ix_instances_series_id"), ["series_id"])
        batch.create_index(batch.f("ix_instances_source_id"), ["source_id"])

    op.create_table(
        "image_id_prefixes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_id_prefixes")),
        sa.UniqueConstraint("prefix", name=op.f("uq_image_id_prefixes_prefix")),
    )

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        # Unique 64-bit hash of the imageId: a far smaller index than the text.
        sa.Column("image_key", sa.BigInteger(), nullable=False),
        # imageId = image_id_prefixes.prefix || suffix (prefix_id: no declared
        # foreign key, the store sweeps unused prefixes).
        sa.Column("prefix_id", sa.Integer(), nullable=False),
        sa.Column("suffix", sa.Text(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_images_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("image_key", name=op.f("uq_images_image_key")),
    )
    with op.batch_alter_table("images") as batch:
        batch.create_index(batch.f("ix_images_instance_id"), ["instance_id"])

    op.create_table(
        "module_types",
        # SMALLINT on PostgreSQL; INTEGER on SQLite, the only rowid alias.
        sa.Column(
            "id",
            sa.SmallInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_types")),
        sa.UniqueConstraint("name", name=op.f("uq_module_types_name")),
    )

    op.create_table(
        "module_values",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        # Content-addressed rows are garbage-collected by the store; these
        # references (and image_modules.value_id) are not declared foreign
        # keys, which would make each delete scan the referring table.
        sa.Column("base_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_values")),
        sa.UniqueConstraint("digest", name=op.f("uq_module_values_digest")),
    )

    op.create_table(
        "image_modules",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("module_type_id", sa.SmallInteger(), nullable=False),
        sa.Column("value_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_modules_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["module_type_id"],
            ["module_types.id"],
            name=op.f("fk_image_modules_module_type_id_module_types"),
        ),
        sa.PrimaryKeyConstraint(
            "image_id", "module_type_id", name=op.f("pk_image_modules")
        ),
        # The primary key is the table on SQLite: no rowid, no second b-tree.
        sqlite_with_rowid=False,
    )

    op.create_table(
        "index_errors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_errors")),
    )
    with op.batch_alter_table("index_errors") as batch:
        batch.create_index(batch.f("ix_index_errors_location"), ["location"])


def downgrade() -> None:
    """Drop every table of the first schema (children first)."""
    with op.batch_alter_table("index_errors") as batch:
        batch.drop_index(batch.f("ix_index_errors_location"))
    op.drop_table("index_errors")
    op.drop_table("image_modules")
    op.drop_table("module_values")
    op.drop_table("module_types")
    with op.batch_alter_table("images") as batch:
        batch.drop_index(batch.f("ix_images_instance_id"))
    op.drop_table("images")
    op.drop_table("image_id_prefixes")
    with op.batch_alter_table("instances") as batch:
        batch.drop_index(batch.f("ix_instances_source_id"))
        batch.drop_index(batch.f("ix_instances_series_id"))
    op.drop_table("instances")
    op.drop_table("sources")
    with op.batch_alter_table("series") as batch:
        batch.drop_index(batch.f("ix_series_modality"))
        batch.drop_index(batch.f("ix_series_study_id"))
    op.drop_table("series")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index(batch.f("ix_studies_accession_number_key"))
        batch.drop_index(batch.f("ix_studies_accession_number"))
        batch.drop_index(batch.f("ix_studies_study_date"))
        batch.drop_index(batch.f("ix_studies_patient_name_key"))
        batch.drop_index(batch.f("ix_studies_patient_id_key"))
        batch.drop_index(batch.f("ix_studies_patient_id"))
    op.drop_table("studies")
