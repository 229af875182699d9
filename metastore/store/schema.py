"""The database tables of metastore, as SQLAlchemy 2 typed declarative classes.

This module owns the shape of the rows: studies, series, instances, their
sources, images, the content-addressed module values and the narrow
``image_modules`` join.  It imports no pydicom, creates no engines and does
no I/O; migrations (``migrations/versions``) must never import it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names identical on SQLite and PostgreSQL, so batch migrations can
#: drop them and autogenerate compares equal on both (alembic naming.rst).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The metadata every table belongs to (``target_metadata`` of migrations/env.py).
metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: DICOM UIDs are at most 64 characters (PS3.5 9.1); longer ones are rejected
#: by the store before they reach the database.
UID = String(64)
#: A small integer key that is still SQLite's rowid alias (only INTEGER is).
SMALL_ID = SmallInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base bound to :data:`metadata`."""

    metadata = metadata


class Study(Base):
    """One study; the patient attributes live here (one patient per study)."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_id: Mapped[str | None] = mapped_column(Text, index=True)
    #: ``patient_id`` case-folded in Python (``str.casefold``) for search.
    patient_id_key: Mapped[str | None] = mapped_column(Text, index=True)
    patient_name: Mapped[str | None] = mapped_column(Text)
    #: ``patient_name`` case-folded in Python (``str.casefold``) for search.
    patient_name_key: Mapped[str | None] = mapped_column(Text, index=True)
    #: (0008,0020) StudyDate as ``YYYYMMDD`` text, which sorts like a date.
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(Text)
    accession_number: Mapped[str | None] = mapped_column(Text, index=True)
    #: ``accession_number`` case-folded in Python (``str.casefold``) for search.
    accession_number_key: Mapped[str | None] = mapped_column(Text, index=True)
    study_description: Mapped[str | None] = mapped_column(Text)
    #: ``study_description`` case-folded in Python (``str.casefold``) for search.
    study_description_key: Mapped[str | None] = mapped_column(Text)
    # Revision 0003: the rest of the QIDO-RS study attributes
    # (``metastore.store.attrs``).
    #: (0008,0090) ReferringPhysicianName as Part 10 text (``A=I=P``).
    referring_physician_name: Mapped[str | None] = mapped_column(Text)
    #: ``referring_physician_name`` case-folded (``str.casefold``) for search.
    referring_physician_name_key: Mapped[str | None] = mapped_column(Text, index=True)
    #: Fuzzy-matching tokens of the referring physician's name
    #: (``metastore.store.names.fuzzy_key``).
    referring_physician_name_fuzzy: Mapped[str | None] = mapped_column(Text)
    #: Fuzzy-matching tokens of ``patient_name``.
    patient_name_fuzzy: Mapped[str | None] = mapped_column(Text)
    #: (0010,0030) PatientBirthDate as ``YYYYMMDD``.
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    #: (0010,0040) PatientSex.
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    #: (0020,0010) StudyID (named so as not to read as a key of ``studies``).
    dicom_study_id: Mapped[str | None] = mapped_column(Text)
    #: ``dicom_study_id`` case-folded (``str.casefold``) for search.
    dicom_study_id_key: Mapped[str | None] = mapped_column(Text, index=True)


class Series(Base):
    """One series of a study."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, index=True)
    series_description: Mapped[str | None] = mapped_column(Text)
    #: ``series_description`` case-folded in Python (``str.casefold``) for search.
    series_description_key: Mapped[str | None] = mapped_column(Text)
    #: (0040,0244) PerformedProcedureStepStartDate as ``YYYYMMDD`` (0003).
    performed_procedure_step_start_date: Mapped[str | None] = mapped_column(
        String(8), index=True
    )
    #: (0040,0245) PerformedProcedureStepStartTime (0003).
    performed_procedure_step_start_time: Mapped[str | None] = mapped_column(Text)


class Source(Base):
    """A location (path, archive member or URL) that was indexed successfully."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    """One DICOM instance with its full DICOM JSON (compressed by the codec)."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(UID, index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, index=True)
    number_of_frames: Mapped[int] = mapped_column(Integer)
    #: (0028,0010) Rows, (0028,0011) Columns, (0028,0100) BitsAllocated (0003).
    image_rows: Mapped[int | None] = mapped_column(Integer)
    image_columns: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    #: ``metastore.store.codec.encode_dicom_json`` output.
    dicom_json: Mapped[bytes] = mapped_column(LargeBinary)
    #: The ``module_values`` row of the base ``dicom_json`` was compressed
    #: against (a sibling's DICOM JSON), if any.  Not a declared foreign key:
    #: see :class:`ModuleValueRow`.
    dicom_json_base_id: Mapped[int | None] = mapped_column(Integer)
    #: ``metastore.modules.MAPPING_VERSION`` of the mapping that computed
    #: this instance's stored modules; ``None``: unknown (stored before
    #: revision 0004).  An instance at any other version than the running
    #: metastore's is *stale*: ``metastore reindex`` recomputes it.  Indexed,
    #: so that counting the stale ones reads the index, not the DICOM JSON.
    mapping_version: Mapped[str | None] = mapped_column(String(32), index=True)


class ImageIdPrefix(Base):
    """The part of imageIds shared by many images (a series' or a folder's).

    An imageId is stored as ``image_id_prefixes.prefix || images.suffix``
    (see ``metastore.imageid.split_for_storage``): the root, study and series
    of a wadors imageId are stored once per series instead of once per frame.
    """

    __tablename__ = "image_id_prefixes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(Text, unique=True)


class Image(Base):
    """One frame of an instance, addressed by its Cornerstone imageId.

    The imageId is ``prefix || suffix``; it is unique, through ``image_key``.
    """

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: 64-bit BLAKE2b of the imageId (``metastore.store.encode.image_key``):
    #: the unique index is on this key, ~15 bytes an entry instead of the
    #: ~150-260 of an imageId.  Lookups compare the imageId too, so a hash
    #: collision can only refuse a second image, never answer for it.
    image_key: Mapped[int] = mapped_column(BigInteger, unique=True)
    #: An ``image_id_prefixes.id``.  Not a declared foreign key, like the
    #: module value references (see :class:`ModuleValueRow`): prune sweeps
    #: unused prefixes, and a declared key would scan ``images`` per delete.
    prefix_id: Mapped[int] = mapped_column(Integer)
    #: The imageId after its prefix.
    suffix: Mapped[str] = mapped_column(Text)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    frame: Mapped[int] = mapped_column(Integer)


class ModuleTypeRow(Base):
    """A module type name (``"imagePlaneModule"``) and its small integer id."""

    __tablename__ = "module_types"

    id: Mapped[int] = mapped_column(SMALL_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class ModuleValueRow(Base):
    """A module value stored once, addressed by the digest of its encoding.

    Rows are content-addressed and garbage-collected: ``Store.prune`` deletes
    the rows that no ``image_modules.value_id``, ``module_values.base_id`` or
    ``instances.dicom_json_base_id`` refers to.  Those three references are
    deliberately *not* declared foreign keys: deleting a parent row would
    then scan the whole child table (no index on them: on ``value_id`` it
    would cost about a quarter of the database), on SQLite and PostgreSQL.
    """

    __tablename__ = "module_values"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``metastore.store.codec.value_digest`` (or ``base_digest`` for a base row)
    #: of the canonical JSON (16 bytes).
    digest: Mapped[bytes] = mapped_column(LargeBinary(16), unique=True)
    #: ``metastore.store.codec.compress`` output.
    value: Mapped[bytes] = mapped_column(LargeBinary)
    #: The base row this value was compressed against (a sibling's canonical
    #: JSON), if any; base rows themselves never have one.
    base_id: Mapped[int | None] = mapped_column(Integer)


class ImageModule(Base):
    """Which value an image has for a module type: three integers per row.

    On SQLite the table is ``WITHOUT ROWID``, so the primary key *is* the
    table and a series load reads one contiguous range per image.

    No column is a declared foreign key (since revision 0002): the store
    inserts these rows in the transaction that inserts their image and
    module types, and deletes them itself before their images
    (``store_write.delete_instances``), so the keys guaranteed nothing more,
    while checking both on every row was most of PostgreSQL's work on the
    write path (26 rows per image).  ``value_id``: see
    :class:`ModuleValueRow`.
    """

    __tablename__ = "image_modules"
    __table_args__ = ({"sqlite_with_rowid": False},)

    #: An ``images.id``.
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: A ``module_types.id``.
    module_type_id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    #: A ``module_values.id`` (not a declared foreign key: see ModuleValueRow).
    value_id: Mapped[int] = mapped_column(Integer)


class IndexErrorRow(Base):
    """A location that could not be indexed, or a duplicate that was skipped."""

    __tablename__ = "index_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(Text, index=True)
    #: ``"unreadable"``, ``"invalid"`` or ``"duplicate"`` (validated in Python).
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Setting(Base):
    """A setting of the whole store (since revision 0005).

    ``wadors_root``: the DICOMweb root the stored ``wadors:`` imageIds were
    made under (``--wadors-root``), or NULL for imageIds made without one;
    no row while the store has not recorded it.
    """

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)


studies: Table = metadata.tables["studies"]
series: Table = metadata.tables["series"]
sources: Table = metadata.tables["sources"]
instances: Table = metadata.tables["instances"]
images: Table = metadata.tables["images"]
image_id_prefixes: Table = metadata.tables["image_id_prefixes"]
module_types: Table = metadata.tables["module_types"]
module_values: Table = metadata.tables["module_values"]
image_modules: Table = metadata.tables["image_modules"]
index_errors: Table = metadata.tables["index_errors"]
settings: Table = metadata.tables["settings"]

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Image",
    "ImageIdPrefix",
    "ImageModule",
    "IndexErrorRow",
    "Instance",
    "ModuleTypeRow",
    "ModuleValueRow",
    "Series",
    "Setting",
    "Source",
    "Study",
    "image_id_prefixes",
    "image_modules",
    "images",
    "index_errors",
    "instances",
    "metadata",
    "module_types",
    "module_values",
    "series",
    "settings",
    "sources",
    "studies",
]
