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
from collections.abc import Iterator, Sequence
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


def assemble_series(
    rows: Sequence[Any], names: dict[int, str]
) -> dict[str, dict[str, ModuleValue]]:
    """Build the result of ``series_image_modules`` from its statement's rows.

    Rows come in three kinds (see :func:`series_statement`): each distinct
    value is decoded once, then the same object goes to every image using it.
    """
    image_ids: dict[int, str] = {}
    values: dict[int, ModuleValue] = {}
    bases: dict[int, bytes] = {}
    refs = []
    for kind, a, b, c, text, blob, base in rows:
        if kind == REF:
            refs.append((a, b, c))
        elif kind == IMAGE:
            image_ids[a] = text
        else:
            base_bytes = None
            if b is not None:
                base_bytes = bases.get(b)
                if base_bytes is None:
                    base_bytes = bases[b] = codec.inflate(base)
            value = codec.decode_value(blob, base_bytes)
            values[a] = Composite(value) if codec.is_composite(blob) else value
    out: dict[str, dict[str, ModuleValue]] = {i: {} for i in image_ids.values()}
    for image_pk, type_id, value_id in refs:
        name = names[type_id]
        value = values[value_id]
        if type(value) is Composite:
            value = value[name]
        out[image_ids[image_pk]][name] = value
    return out


# Kinds of rows of series_statement.
REF, IMAGE, VALUE = 0, 1, 2


@functools.cache
def series_statement() -> sa.CompoundSelect[Any]:
    """One statement that returns everything a series load needs.

    ``UNION ALL`` of three row kinds, so each value blob and imageId crosses
    the driver once, not once per (image, module type):

    * ``(0, image pk, module type id, value id)`` per image module;
    * ``(1, image pk, ..., imageId)`` per image;
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
    refs = (
        sa.select(
            sa.literal(REF, sa.Integer()),
            im.c.image_id,
            sa.cast(im.c.module_type_id, sa.Integer()),
            im.c.value_id,
            null_text,
            null_blob,
            null_blob,
        )
        .select_from(in_series.join(im, im.c.image_id == img.c.id))
        .where(where)
    )
    images = (
        sa.select(
            sa.literal(IMAGE, sa.Integer()),
            img.c.id,
            null_int,
            null_int,
            prefix.c.prefix + img.c.suffix,
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
            null_int,
            null_text,
            mv.c.value,
            base.c.value,
        )
        .select_from(mv.outerjoin(base, base.c.id == mv.c.base_id))
        .where(mv.c.id.in_(used))
    )
    return sa.union_all(refs, images, values)


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
