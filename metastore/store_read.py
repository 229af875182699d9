"""The read side of :class:`metastore.store.Store`: statements and decoding.

This module owns the SQL that reads module values (joined to their bases,
one ``UNION ALL`` statement per series) and turning rows into values: each
distinct value decoded once and shared, composites split by module type.
It is private to the store and imports no pydicom.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from metastore import codec
from metastore import schema as t
from metastore.types import ModuleValue

_NOTHING: Any = object()


class Composite(dict[str, ModuleValue]):
    """A decoded composite row: one image's own values by module type."""

    __slots__ = ()


class Decoder:
    """Decodes module value rows, each value and each base only once."""

    __slots__ = ("bases", "values")

    def __init__(self) -> None:
        self.values: dict[int, ModuleValue] = {}
        self.bases: dict[int, bytes] = {}

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
            base_bytes = None
            if base_id is not None and base is not None:
                base_bytes = self.bases.get(base_id)
                if base_bytes is None:
                    base_bytes = self.bases[base_id] = codec.inflate(base)
            value = codec.decode_value(blob, base_bytes)
            if codec.is_composite(blob):
                value = Composite(value)
            self.values[value_id] = value
        if type(value) is Composite:
            return value[name]
        return value

    def trim(self, limit: int) -> None:
        """Forget everything once more than ``limit`` values are kept."""
        if len(self.values) + len(self.bases) > limit:
            self.values.clear()
            self.bases.clear()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a burst of allocations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: Kinds of rows of :func:`series_statement`.
IMAGE, VALUE = 1, 2

#: An image's module references travel as ``value id * REF_SHIFT + type id``
#: (one integer per module, cheaper to aggregate than two).  Module type ids
#: are ``smallint`` on PostgreSQL and numbered from 1 by the store on SQLite,
#: value ids are 32-bit: the packed number fits 47 bits on both backends.
REF_SHIFT = 1 << 16


class _Refs(dict[str, tuple[str, ModuleValue]]):
    """``{packed reference text: (module type, value)}``, filled on first use.

    An image's references come as one text of packed numbers (see
    :data:`REF_SHIFT`); the same few texts recur across a series (the shared
    patient, study and series values), so each is resolved once and then
    costs one dict lookup in C.
    """

    __slots__ = ("_names", "_reload", "_values")

    def __init__(
        self,
        names: dict[int, str],
        values: dict[int, ModuleValue],
        reload: Callable[[], dict[int, str]],
    ) -> None:
        super().__init__()
        self._names = names
        self._values = values
        self._reload = reload

    def __missing__(self, ref: str) -> tuple[str, ModuleValue]:
        value_id, type_id = divmod(int(ref), REF_SHIFT)
        name = self._names.get(type_id)
        if name is None:  # a type another writer added after our last look
            self._names = self._reload()
            name = self._names[type_id]
        value = self._values[value_id]
        if type(value) is Composite:
            value = value[name]
        found = self[ref] = (name, value)
        return found


def assemble_series(
    rows: Sequence[Any],
    names: dict[int, str],
    reload_names: Callable[[], dict[int, str]],
) -> dict[str, dict[str, ModuleValue]]:
    """Build the result of ``series_image_modules`` from its statement's rows.

    Rows come in two kinds (see :func:`series_statement`): each distinct
    value is decoded once, then the same object goes to every image using it.

    Args:
        rows: the statement's rows.
        names: module type names by id, as last known.
        reload_names: fetch them afresh (called when a row names a type
            ``names`` lacks).
    """
    values: dict[int, ModuleValue] = {}
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
        values[value_id] = Composite(value) if codec.is_composite(blob) else value
    resolve = _Refs(names, values, reload_names).__getitem__
    # dict(map(...)) builds each image's modules without a Python-level loop.
    return {
        image_id: dict(map(resolve, refs.split(","))) if refs else {}
        for image_id, refs in images
    }


@functools.cache
def series_statement() -> sa.CompoundSelect[Any]:
    """One statement that returns everything a series load needs.

    ``UNION ALL`` of two row kinds, so each value blob and imageId crosses
    the driver once, and an image's module references travel as one text
    (500 rows for a 500-image series instead of 13,000):

    * ``(1, ..., imageId, "ref,ref,...")`` per image, each ref packed as
      ``value id * REF_SHIFT + module type id`` (``NULL`` without modules);
    * ``(2, value id, base id, ..., blob, base blob)`` per distinct value.
    """
    img, ins, se, im = t.images, t.instances, t.series, t.image_modules
    mv, prefix = t.module_values, t.image_id_prefixes
    base = t.module_values.alias("base")
    uid = sa.bindparam("uid", type_=sa.String())
    in_series = se.join(ins, ins.c.series_id == se.c.id).join(
        img, img.c.instance_id == ins.c.id
    )
    where = se.c.series_instance_uid == uid
    null_int = sa.cast(sa.null(), sa.Integer())
    null_text = sa.cast(sa.null(), sa.Text())
    null_blob = sa.cast(sa.null(), sa.LargeBinary())
    packed = sa.cast(im.c.value_id, sa.BigInteger()) * REF_SHIFT + sa.cast(
        im.c.module_type_id, sa.BigInteger()
    )
    refs = (
        sa.select(sa.func.aggregate_strings(sa.cast(packed, sa.Text()), ","))
        .where(im.c.image_id == img.c.id)
        .scalar_subquery()
    )
    images = (
        sa.select(
            sa.literal(IMAGE, sa.Integer()),
            null_int,
            null_int,
            prefix.c.prefix + img.c.suffix,
            refs,
            null_blob,
            null_blob,
        )
        .select_from(in_series.join(prefix, prefix.c.id == img.c.prefix_id))
        .where(where)
    )
    used = (
        sa.select(im.c.value_id)
        .select_from(in_series.join(im, im.c.image_id == img.c.id))
        .where(where)
    )
    values = (
        sa.select(
            sa.literal(VALUE, sa.Integer()),
            mv.c.id,
            mv.c.base_id,
            null_text,
            null_text,
            mv.c.value,
            base.c.value,
        )
        .select_from(mv.outerjoin(base, base.c.id == mv.c.base_id))
        .where(mv.c.id.in_(used))
    )
    return sa.union_all(images, values)


def with_modules(
    stmt: sa.Select[Any],
    image_pk: sa.ColumnElement[int],
    types: Sequence[int] | None = None,
) -> sa.Select[Any]:
    """Add each image's module rows (and their bases) to ``stmt``.

    Adds the columns ``module_type_id, value_id, value, base_id, base value``;
    outer joins, so an image without modules still gives one row of NULLs.
    """
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
