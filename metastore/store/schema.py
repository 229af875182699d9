"""The database tables of metastore, as SQLAlchemy Core ``Table`` objects.

This module owns the shape of the rows: studies, series, instances, their
sources, images, the content-addressed module values and the narrow
``image_modules`` join.  It imports no pydicom, creates no engines and does
no I/O; migrations (``migrations/versions``) must never import it.

The tables are Core, not ORM declarative classes: every statement of the
store is written against these ``Table`` objects, and importing
``sqlalchemy.orm`` and building the classes cost a query ~85 ms before its
first statement.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

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

#: One study; the patient attributes live here (one patient per study).
studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_instance_uid", UID, nullable=False, unique=True),
    Column("patient_id", Text, index=True),
    # ``patient_id`` case-folded in Python (``str.casefold``) for search.
    Column("patient_id_key", Text, index=True),
    Column("patient_name", Text),
    # ``patient_name`` case-folded in Python (``str.casefold``) for search.
    Column("patient_name_key", Text, index=True),
    # (0008,0020) StudyDate as ``YYYYMMDD`` text, which sorts like a date.
    Column("study_date", String(8), index=True),
    Column("study_time", Text),
    Column("accession_number", Text, index=True),
    # ``accession_number`` case-folded in Python (``str.casefold``) for search.
    Column("accession_number_key", Text, index=True),
    Column("study_description", Text),
    # ``study_description`` case-folded in Python (``str.casefold``) for search.
    Column("study_description_key", Text),
    # Revision 0003: the rest of the QIDO-RS study attributes
    # (``metastore.store.attrs``).
    # (0008,0090) ReferringPhysicianName as Part 10 text (``A=I=P``).
    Column("referring_physician_name", Text),
    # ``referring_physician_name`` case-folded (``str.casefold``) for search.
    Column("referring_physician_name_key", Text, index=True),
    # Fuzzy-matching tokens of the referring physician's name
    # (``metastore.store.names.fuzzy_key``).
    Column("referring_physician_name_fuzzy", Text),
    # Fuzzy-matching tokens of ``patient_name``.
    Column("patient_name_fuzzy", Text),
    # (0010,0030) PatientBirthDate as ``YYYYMMDD``.
    Column("patient_birth_date", String(8)),
    # (0010,0040) PatientSex.
    Column("patient_sex", String(16)),
    # (0020,0010) StudyID (named so as not to read as a key of ``studies``).
    Column("dicom_study_id", Text),
    # ``dicom_study_id`` case-folded (``str.casefold``) for search.
    Column("dicom_study_id_key", Text, index=True),
    # ``instances.id`` of the study's instance with the lowest SOP Instance
    # UID (0007): the one its columns come from, whose DICOM JSON QIDO-RS
    # answers the study's other attributes from (and its series' columns
    # named in ``include``).  Kept by ``store.write.settle`` like
    # ``series.first_instance_id``; no foreign key, as there.
    Column("first_instance_id", Integer),
)

#: One series of a study.
series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_instance_uid", UID, nullable=False, unique=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False, index=True),
    Column("modality", String(16), index=True),
    Column("series_number", Integer, index=True),
    Column("series_description", Text),
    # ``series_description`` case-folded in Python (``str.casefold``) for search.
    Column("series_description_key", Text),
    # (0040,0244) PerformedProcedureStepStartDate as ``YYYYMMDD`` (0003).
    Column("performed_procedure_step_start_date", String(8), index=True),
    # (0040,0245) PerformedProcedureStepStartTime (0003).
    Column("performed_procedure_step_start_time", Text),
    # How many instances the series has stored (0006): what QIDO-RS
    # NumberOfSeriesRelatedInstances and NumberOfStudyRelatedInstances
    # return, without counting instances at query time.  Maintained by
    # ``store.write.settle`` in every transaction that adds or deletes
    # instances of the series; a row inserted without it starts at 0 (the
    # server default: the write path's plain INSERTs leave it out) and is
    # settled in the same transaction.
    Column("instance_count", Integer, nullable=False, server_default=text("0")),
    # ``instances.id`` of the series' instance with the lowest SOP Instance
    # UID (0007): the one its columns come from, whose DICOM JSON QIDO-RS
    # answers the series' other attributes from.  Kept by
    # ``store.write.settle`` in the same transaction (and update) as the
    # columns, so it never names a deleted instance once a transaction
    # commits; NULL only inside the transaction that inserts the row.  No
    # foreign key: instances reference their series already (a key back
    # would make the tables reference each other), and settle keeps it right.
    Column("first_instance_id", Integer),
)

#: A location (path, archive member or URL) that was indexed successfully.
sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("location", Text, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("indexed_at", DateTime(timezone=True), nullable=False),
)

#: One DICOM instance with its full DICOM JSON (compressed by the codec).
instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sop_instance_uid", UID, nullable=False, unique=True),
    Column("series_id", Integer, ForeignKey("series.id"), nullable=False, index=True),
    Column("sop_class_uid", UID, index=True),
    Column("instance_number", Integer, index=True),
    Column("number_of_frames", Integer, nullable=False),
    # (0028,0010) Rows, (0028,0011) Columns, (0028,0100) BitsAllocated (0003).
    Column("image_rows", Integer),
    Column("image_columns", Integer),
    Column("bits_allocated", Integer),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False, index=True),
    # ``metastore.store.codec.encode_dicom_json`` output.
    Column("dicom_json", LargeBinary, nullable=False),
    # The ``module_values`` row of the base ``dicom_json`` was compressed
    # against (a sibling's DICOM JSON), if any.  Not a declared foreign key:
    # see :data:`module_values`.
    Column("dicom_json_base_id", Integer),
    # ``metastore.modules.MAPPING_VERSION`` of the mapping that computed
    # this instance's stored modules; ``None``: unknown (stored before
    # revision 0004).  An instance at any other version than the running
    # metastore's is *stale*: ``metastore reindex`` recomputes it.  Indexed,
    # so that counting the stale ones reads the index, not the DICOM JSON.
    Column("mapping_version", String(32), index=True),
)

#: The part of imageIds shared by many images (a series' or a folder's).
#:
#: An imageId is stored as ``image_id_prefixes.prefix || images.suffix``
#: (see ``metastore.imageid.split_for_storage``): the root, study and series
#: of a wadors imageId are stored once per series instead of once per frame.
image_id_prefixes = Table(
    "image_id_prefixes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prefix", Text, nullable=False, unique=True),
)

#: One frame of an instance, addressed by its Cornerstone imageId.
#:
#: The imageId is ``prefix || suffix``; it is unique, through ``image_key``.
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    # 64-bit BLAKE2b of the imageId (``metastore.store.encode.image_key``):
    # the unique index is on this key, ~15 bytes an entry instead of the
    # ~150-260 of an imageId.  Lookups compare the imageId too, so a hash
    # collision can only refuse a second image, never answer for it.
    Column("image_key", BigInteger, nullable=False, unique=True),
    # An ``image_id_prefixes.id``.  Not a declared foreign key, like the
    # module value references (see :data:`module_values`): prune sweeps
    # unused prefixes, and a declared key would scan ``images`` per delete.
    Column("prefix_id", Integer, nullable=False),
    # The imageId after its prefix.
    Column("suffix", Text, nullable=False),
    Column(
        "instance_id",
        Integer,
        ForeignKey("instances.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("frame", Integer, nullable=False),
)

#: A module type name (``"imagePlaneModule"``) and its small integer id.
module_types = Table(
    "module_types",
    metadata,
    Column("id", SMALL_ID, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
)

#: A module value stored once, addressed by the digest of its encoding.
#:
#: Rows are content-addressed and garbage-collected: ``Store.prune`` deletes
#: the rows that no ``image_modules.value_id``, ``module_values.base_id`` or
#: ``instances.dicom_json_base_id`` refers to.  Those three references are
#: deliberately *not* declared foreign keys: deleting a parent row would
#: then scan the whole child table (no index on them: on ``value_id`` it
#: would cost about a quarter of the database), on SQLite and PostgreSQL.
module_values = Table(
    "module_values",
    metadata,
    Column("id", Integer, primary_key=True),
    # ``metastore.store.codec.value_digest`` (or ``base_digest`` for a base row)
    # of the canonical JSON (16 bytes).
    Column("digest", LargeBinary(16), nullable=False, unique=True),
    # ``metastore.store.codec.compress`` output.
    Column("value", LargeBinary, nullable=False),
    # The base row this value was compressed against (a sibling's canonical
    # JSON), if any; base rows themselves never have one.
    Column("base_id", Integer),
)

#: Which value an image has for a module type: three integers per row.
#:
#: On SQLite the table is ``WITHOUT ROWID``, so the primary key *is* the
#: table and a series load reads one contiguous range per image.
#:
#: No column is a declared foreign key (since revision 0002): the store
#: inserts these rows in the transaction that inserts their image and
#: module types, and deletes them itself before their images
#: (``store_write.delete_instances``), so the keys guaranteed nothing more,
#: while checking both on every row was most of PostgreSQL's work on the
#: write path (26 rows per image).  ``value_id``: see :data:`module_values`.
image_modules = Table(
    "image_modules",
    metadata,
    # An ``images.id``.
    Column("image_id", Integer, primary_key=True),
    # A ``module_types.id``.
    Column("module_type_id", SmallInteger, primary_key=True),
    # A ``module_values.id`` (not a declared foreign key: see module_values).
    Column("value_id", Integer, nullable=False),
    sqlite_with_rowid=False,
)

#: A location that could not be indexed, or a duplicate that was skipped.
index_errors = Table(
    "index_errors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("location", Text, nullable=False, index=True),
    # ``"unreadable"``, ``"invalid"`` or ``"duplicate"`` (validated in Python).
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

#: A setting of the whole store (since revision 0005).
#:
#: ``wadors_root``: the DICOMweb root the stored ``wadors:`` imageIds were
#: made under (``--wadors-root``), or NULL for imageIds made without one;
#: no row while the store has not recorded it.
settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text),
)

__all__ = [
    "NAMING_CONVENTION",
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
