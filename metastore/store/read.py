"""The read side of :class:`metastore.store.Store`: statements and decoding.

This module owns the SQL that reads module values (joined to their bases,
one ``UNION ALL`` statement per series) and turning rows into values: each
distinct value decoded once and shared, composites split by module type.
It is private to the store and imports no pydicom.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.store import codec
from metastore.types import ModuleValue

_NOTHING: Any = object()


class Composite(dict[str, ModuleValue]):
    """A decoded composite row: one image's own values by module type."""

    __slots__ = ()


class Decoder:
    """Decodes module value rows, each value and each base only once.

    Values are remembered by row id, which is only safe within one
    statement (a pruned row's id may be reused).  ``shared``, a dict the
    caller keeps across statements, remembers plain values by their stored
    bytes instead: equal bytes always decode to an equal value, so whatever
    happened to the ids since, the shared object is the right answer.
    Composites (one image's own values) are never shared that way.
    """

    __slots__ = ("bases", "shared", "values")

    def __init__(
        self, shared: dict[tuple[bytes, bytes | None], ModuleValue] | None = None
    ) -> None:
        self.values: dict[int, ModuleValue] = {}
        self.bases: dict[int, bytes] = {}
        self.shared = shared

    def __call__(
        self,
        name: str,
        value_id: int,
        blob: bytes,
        base_id: int | None,
        base: bytes | None,
    ) -> ModuleValue:
        """The value of module ``name`` in row ``value_id`` (shared objects)."""
        value = self.values.get(value_id, _NOTHING)
        if value is _NOTHING:
            shared = self.shared
            if shared is not None and not codec.is_composite(blob):
                value = shared.get((blob, base), _NOTHING)
            if value is _NOTHING:
                value = self._decode(blob, base_id, base)
                if shared is not None and type(value) is not Composite:
                    shared[blob, base] = value
            self.values[value_id] = value
        if type(value) is Composite:
            return value[name]
        return value

    def _decode(self, blob: bytes, base_id: int | None, base: bytes | None) -> Any:
        """Decode one row (a composite as :class:`Composite`)."""
        base_bytes = None
        if base_id is not None and base is not None:
            base_bytes = self.bases.get(base_id)
            if base_bytes is None:
                base_bytes = self.bases[base_id] = codec.inflate(base)
        value = codec.decode_value(blob, base_bytes)
        return Composite(value) if codec.is_composite(blob) else value

    def trim(self, limit: int) -> None:
        """Forget everything once more than ``limit`` values are kept."""
        if len(self.values) + len(self.bases) > limit:
            self.values.clear()
            self.bases.clear()


def no_jit(conn: Connection) -> None:
    """Switch PostgreSQL's JIT compiler off for ``conn``'s transaction.

    The planner compiles a statement whose estimated cost passes
    ``jit_above_cost`` (100,000 by default).  At a million instances the
    series load's per-image subqueries are estimated past it: compiling
    took ~40 ms of a statement that then ran in 11 (EXPLAIN ANALYZE), where
    at 200,000 instances it was not compiled.  The store's reads are index
    lookups, which compiling never pays for.  ``SET LOCAL`` ends with the
    transaction, so a pooled connection (or a PgBouncer server connection)
    is left as it was.  SQLite has no JIT: nothing to do.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


#: Kinds of rows of :func:`series_statement`.
IMAGE, VALUE = 1, 2

#: An image's module references travel as ``value id * REF_SHIFT + type id``
#: (one integer per module, cheaper to aggregate than two).  Module type ids
#: are ``smallint`` on PostgreSQL and numbered from 1 by the store on SQLite,
#: value ids are 32-bit: the packed number fits 47 bits on both backends.
REF_SHIFT = 1 << 16


class _Refs(dict[str, tuple[str, ModuleValue]]):
    """``{packed reference text: (module type, value)}`` of one series load.

    An image's references come as one text of packed numbers (see
    :data:`REF_SHIFT`).  A composite's references are known as soon as it is
    decoded (one per key) and are filled in then; the rest recur across the
    series (the shared patient, study and series values) and are resolved on
    first use.  After that, each costs one dict lookup in C.
    """

    __slots__ = ("_composites", "_names", "_reload", "_type_ids", "_values")

    def __init__(
        self, names: dict[int, str], reload: Callable[[], dict[int, str]]
    ) -> None:
        super().__init__()
        self._names = names
        self._type_ids = {name: type_id for type_id, name in names.items()}
        self._reload = reload
        self._values: dict[int, ModuleValue] = {}
        self._composites: dict[int, dict[str, ModuleValue]] = {}

    def add(self, value_id: int, value: ModuleValue) -> None:
        """Remember a decoded value (shared by the images that use it)."""
        self._values[value_id] = value

    def add_composite(self, value_id: int, composite: dict[str, ModuleValue]) -> None:
        """Remember a decoded composite and fill in its references."""
        self._composites[value_id] = composite
        shifted = value_id * REF_SHIFT
        type_ids = self._type_ids
        try:
            # {str(value_id * REF_SHIFT + type_id): (name, value)}, all in C
            refs = map(str, map(shifted.__add__, map(type_ids.__getitem__, composite)))
            self.update(zip(refs, composite.items(), strict=True))
        except KeyError:  # a type not known yet: __missing__ resolves it
            for name, value in composite.items():
                type_id = type_ids.get(name)
                if type_id is not None:
                    self[str(shifted + type_id)] = (name, value)

    def __missing__(self, ref: str) -> tuple[str, ModuleValue]:
        value_id, type_id = divmod(int(ref), REF_SHIFT)
        name = self._names.get(type_id)
        if name is None:  # a type another writer added after our last look
            self._names = self._reload()
            name = self._names[type_id]
        composite = self._composites.get(value_id)
        value = self._values[value_id] if composite is None else composite[name]
        found = self[ref] = (name, value)
        return found


def assemble_series(
    rows: Iterable[Any],
    names: dict[int, str],
    reload_names: Callable[[], dict[int, str]],
) -> dict[str, dict[str, ModuleValue]]:
    """Build the result of ``series_image_modules`` from its statement's rows.

    Rows come in two kinds (see :func:`series_statement`): each distinct
    value is decoded once, then the same object goes to every image using it.

    Args:
        rows: the statement's rows (iterated once).
        names: module type names by id, as last known.
        reload_names: fetch them afresh (called when a row names a type
            ``names`` lacks).
    """
    found = _Refs(names, reload_names)
    bases: dict[int, bytes] = {}
    images: list[tuple[str, str | None]] = []
    for kind, value_id, base_id, image_id, refs, blob, base in rows:
        if kind == IMAGE:
            images.append((image_id, refs))
            continue
        base_bytes = None
        if base_id is not None:
            base_bytes = bases.get(base_id)
            if base_bytes is None:
                base_bytes = bases[base_id] = codec.inflate(base)
        value = codec.decode_value(blob, base_bytes)
        if codec.is_composite(blob):
            found.add_composite(value_id, value)
        else:
            found.add(value_id, value)
    resolve = found.__getitem__
    # dict(map(...)) builds each image's modules without a Python-level loop.
    return {
        image_id: dict(map(resolve, refs.split(","))) if refs else {}
        for image_id, refs in images
    }


#: The series load (see :func:`series_statement`), ``{agg}`` the dialect's
#: string aggregate.  Written as text: compiling the same statement built
#: with SQLAlchemy expressions took ~2.5 ms in every new process, an eighth
#: of a cold 500-image series load.  Column names are schema revision 0001's.
_SERIES_SQL = """
SELECT {image}, NULL, NULL, p.prefix || i.suffix,
       (SELECT {agg}(CAST(CAST(m.value_id AS BIGINT) * {shift}
                          + m.module_type_id AS TEXT), ',')
          FROM image_modules m WHERE m.image_id = i.id),
       NULL, NULL
  FROM series s
  JOIN instances n ON n.series_id = s.id
  JOIN images i ON i.instance_id = n.id
  JOIN image_id_prefixes p ON p.id = i.prefix_id
 WHERE s.series_instance_uid = :uid
UNION ALL
SELECT {value}, v.id, v.base_id, NULL, NULL, v.value, b.value
  FROM module_values v
  LEFT JOIN module_values b ON b.id = v.base_id
 WHERE v.id {in_}(
       SELECT m.value_id
         FROM series s
         JOIN instances n ON n.series_id = s.id
         JOIN images i ON i.instance_id = n.id
         JOIN image_modules m ON m.image_id = i.id
        WHERE s.series_instance_uid = :uid){end}
"""


@functools.cache
def series_statement(dialect: str) -> sa.TextClause:
    """One statement that returns everything a series load needs.

    ``UNION ALL`` of two row kinds, so each value blob and imageId crosses
    the driver once, and an image's module references travel as one text
    (500 rows for a 500-image series instead of 13,000):

    * ``(1, -, -, imageId, "ref,ref,...", -, -)`` per image, each ref packed
      as ``value id * REF_SHIFT + module type id`` (``NULL`` without modules);
    * ``(2, value id, base id, -, -, blob, base blob)`` per distinct value.

    Args:
        dialect: the engine's dialect name, ``"sqlite"`` or ``"postgresql"``.
    """
    return sa.text(_SERIES_SQL.format(**_dialect_parts(dialect)))


#: The read-ahead load (see :func:`nearby_statement`), ``{agg}`` the
#: dialect's string aggregate.  ``target`` is the asked image (found as
#: :data:`IMAGE_STATEMENT` finds it), ``ranked`` its series in stack order
#: ((0020,0013) InstanceNumber, unnumbered last, then SOP Instance UID, then
#: frame), ``chosen`` the ``:limit`` images of it nearest the asked one in
#: that order (ties to the earlier).  Then the same two row kinds as
#: :data:`_SERIES_SQL`.  Text for the same reason.
_NEARBY_SQL = """
WITH target AS (
  SELECT i.id AS image_pk, n.series_id AS series_id
    FROM images i
    JOIN image_id_prefixes p ON p.id = i.prefix_id
    JOIN instances n ON n.id = i.instance_id
   WHERE i.image_key = :key AND p.prefix || i.suffix = :image_id
),
ranked AS (
  SELECT i.id AS image_pk, i.prefix_id AS prefix_id, i.suffix AS suffix,
         ROW_NUMBER() OVER (ORDER BY n.instance_number IS NULL,
                                     n.instance_number, n.sop_instance_uid,
                                     i.frame) AS pos
    FROM target t
    JOIN instances n ON n.series_id = t.series_id
    JOIN images i ON i.instance_id = n.id
),
chosen AS (
  SELECT r.image_pk, r.prefix_id, r.suffix
    FROM ranked r
   ORDER BY ABS(r.pos - (SELECT me.pos FROM ranked me, target t
                          WHERE me.image_pk = t.image_pk)), r.pos
   LIMIT :limit
)
SELECT {image}, NULL, NULL, p.prefix || c.suffix,
       (SELECT {agg}(CAST(CAST(m.value_id AS BIGINT) * {shift}
                          + m.module_type_id AS TEXT), ',')
          FROM image_modules m WHERE m.image_id = c.image_pk),
       NULL, NULL
  FROM chosen c
  JOIN image_id_prefixes p ON p.id = c.prefix_id
UNION ALL
SELECT {value}, v.id, v.base_id, NULL, NULL, v.value, b.value
  FROM module_values v
  LEFT JOIN module_values b ON b.id = v.base_id
 WHERE v.id {in_}(
       SELECT m.value_id
         FROM chosen c
         JOIN image_modules m ON m.image_id = c.image_pk){end}
"""


@functools.cache
def nearby_statement(dialect: str) -> sa.TextClause:
    """The read-ahead load: an image and its nearest neighbours in its series.

    Parameters ``key`` and ``image_id`` (as :data:`IMAGE_STATEMENT` takes
    them) and ``limit``; rows as :func:`series_statement` gives them, none
    for an unknown imageId.  With ``limit`` at least the series' size, the
    whole series.

    Args:
        dialect: the engine's dialect name, ``"sqlite"`` or ``"postgresql"``.
    """
    return sa.text(_NEARBY_SQL.format(**_dialect_parts(dialect)))


def _dialect_parts(dialect: str) -> dict[str, object]:
    """What :data:`_SERIES_SQL` and :data:`_NEARBY_SQL` leave to the dialect.

    The string aggregate, and how the values are picked.  PostgreSQL gets
    ``id = ANY(ARRAY(subquery))``: for ``IN (subquery)`` it estimates the
    distinct values of a series from the whole table's statistics (10,222
    where a 500-image series has 514) and at a million instances scans all
    of ``module_values`` (214 ms) instead of looking the ids up (8 ms).
    """
    postgres = dialect == "postgresql"
    return {
        "agg": "string_agg" if postgres else "group_concat",
        "in_": "= ANY(ARRAY" if postgres else "IN ",
        "end": ")" if postgres else "",
        "image": IMAGE,
        "value": VALUE,
        "shift": REF_SHIFT,
    }


#: Every module of one image (see ``Store.image_modules``): ``(image pk,
#: module type id, value id, blob, base id, base blob)`` per module; outer
#: joins, so an image without modules still gives one row of NULLs.  A
#: colliding ``image_key`` of another imageId is not this image, hence the
#: imageId check.  Text for the same reason as :data:`_SERIES_SQL`.
IMAGE_STATEMENT = sa.text("""
SELECT i.id, m.module_type_id, m.value_id, v.value, v.base_id, b.value
  FROM images i
  JOIN image_id_prefixes p ON p.id = i.prefix_id
  LEFT JOIN image_modules m ON m.image_id = i.id
  LEFT JOIN module_values v ON v.id = m.value_id
  LEFT JOIN module_values b ON b.id = v.base_id
 WHERE i.image_key = :key AND p.prefix || i.suffix = :image_id
""")

#: ``(id, name)`` of every module type.
TYPE_NAMES_STATEMENT = sa.text("SELECT id, name FROM module_types")


def with_modules(
    stmt: sa.Select[Any],
    image_pk: sa.ColumnElement[int],
    types: Sequence[int] | None = None,
) -> sa.Select[Any]:
    """Add each image's module rows (and their bases) to ``stmt``.

    Adds the columns ``module_type_id, value_id, value, base_id, base value``;
    outer joins, so an image without modules still gives one row of NULLs.
    """
    # Imported here: the series and image statements are text, so a process
    # that only reads those never loads the schema module.
    from metastore.store import schema as t

    im, mv = t.image_modules, t.module_values
    base = t.module_values.alias("base")
    on = im.c.image_id == image_pk
    if types is not None:
        on = sa.and_(on, im.c.module_type_id.in_(types))
    return (
        stmt.add_columns(
            im.c.module_type_id, im.c.value_id, mv.c.value, mv.c.base_id, base.c.value
        )
        .outerjoin(im, on)
        .outerjoin(mv, mv.c.id == im.c.value_id)
        .outerjoin(base, base.c.id == mv.c.base_id)
    )


#: The stored DICOM JSON of the instances of a study, a series or one
#: instance (see ``Store.dicom_json_texts``): ``(series uid, SOP uid, blob,
#: base id, base blob)`` per instance, series by series, in instance order.
#: ``{where}`` narrows it to a series or an instance.  Text for the same
#: reason as :data:`_SERIES_SQL`.
_DICOM_JSON_SQL = """
SELECT s.series_instance_uid, n.sop_instance_uid, n.dicom_json,
       n.dicom_json_base_id, b.value
  FROM studies st
  JOIN series s ON s.study_id = st.id
  JOIN instances n ON n.series_id = s.id
  LEFT JOIN module_values b ON b.id = n.dicom_json_base_id
 WHERE st.study_instance_uid = :study{where}
 ORDER BY s.series_number IS NULL, s.series_number, s.series_instance_uid,
          n.instance_number IS NULL, n.instance_number, n.sop_instance_uid
"""

#: Where :data:`_DICOM_JSON_SQL` reads a whole study, a series, an instance.
_DICOM_JSON_WHERE = {
    (False, False): "",
    (True, False): " AND s.series_instance_uid = :series",
    (True, True): " AND s.series_instance_uid = :series AND n.sop_instance_uid = :sop",
}


@functools.cache
def dicom_json_statement(series: bool, sop: bool) -> sa.TextClause:
    """The DICOM JSON read of a study, a series (``series``) or one instance."""
    return sa.text(_DICOM_JSON_SQL.format(where=_DICOM_JSON_WHERE[series, sop]))


def dicom_json_texts(rows: Iterable[Any]) -> Iterator[tuple[str, str, bytes]]:
    """``(series uid, SOP uid, JSON text)`` of :func:`dicom_json_statement` rows.

    Each base (shared by the instances of a series) is inflated once.
    """
    bases: dict[int, bytes] = {}
    for series_uid, sop_uid, blob, base_id, base in rows:
        base_bytes = None
        if base_id is not None and base is not None:
            base_bytes = bases.get(base_id)
            if base_bytes is None:
                if len(bases) > 64:  # a study's worth of series, then forget
                    bases.clear()
                base_bytes = bases[base_id] = codec.inflate(base)
        yield series_uid, sop_uid, codec.json_text(blob, base_bytes)


#: Where an instance was read from (see ``Store.instance_source``).
INSTANCE_SOURCE_STATEMENT = sa.text("""
SELECT st.study_instance_uid, s.series_instance_uid, n.number_of_frames,
       o.location, o.size, o.mtime_ns
  FROM instances n
  JOIN series s ON s.id = n.series_id
  JOIN studies st ON st.id = s.study_id
  JOIN sources o ON o.id = n.source_id
 WHERE n.sop_instance_uid = :sop
""")

#: Where every instance of one series was read from, keyed by SOP Instance
#: UID (see ``Store.series_sources``): the same columns as
#: :data:`INSTANCE_SOURCE_STATEMENT`, for a series at once.
SERIES_SOURCES_STATEMENT = sa.text("""
SELECT n.sop_instance_uid, st.study_instance_uid, s.series_instance_uid,
       n.number_of_frames, o.location, o.size, o.mtime_ns
  FROM series s
  JOIN studies st ON st.id = s.study_id
  JOIN instances n ON n.series_id = s.id
  JOIN sources o ON o.id = n.source_id
 WHERE s.series_instance_uid = :series AND st.study_instance_uid = :study
""")
