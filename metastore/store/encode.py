"""Batch preparation for :meth:`metastore.store.Store.write_batch` (no SQL).

This module owns what happens to a batch before its transaction: validation
(UIDs, ranges, error kinds), duplicates within the batch, and encoding: the
DICOM JSON and module values of each series compressed against sibling
bases, an image's own values gathered into a composite, imageIds split and
hashed.  The encoding can also be done beforehand, a chunk of records at a
time in the indexer's workers (:func:`pack`); a batch then only assembles
it.  Pure Python; private to the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from metastore.attributes import SearchAttributes
from metastore.locations import legacy_location
from metastore.records import (
    ErrorRecord,
    ImageRecord,
    InstanceRecord,
    LazyImages,
    by_position,
)
from metastore.store import attrs, codec

#: Longest DICOM UI value (PS3.5 6.2).
MAX_UID = 64
#: Longest (0008,0060) Modality stored for search (a CS value, PS3.5 6.2).
MAX_MODALITY = 16
#: Longest search attribute stored (a conformant PN is at most 194).  Case
#: folding turns a character into at most 6 bytes of UTF-8, so its folded
#: ``*_key`` stays under PostgreSQL's 2704-byte B-tree entry limit.
MAX_SEARCH = 400
#: Longest error location stored, in UTF-8 bytes (``index_errors.location``
#: is indexed; a path deeper than this is reported with its start).
MAX_ERROR_LOCATION = 2000
#: Longest ``InstanceRecord.mapping_version`` (``instances.mapping_version``).
MAX_MAPPING_VERSION = 32
ERROR_KINDS = frozenset({"unreadable", "invalid", "duplicate"})


def image_key(image_id: str) -> int:
    """The signed 64-bit BLAKE2b of an imageId (``images.image_key``)."""
    digest = hashlib.blake2b(
        image_id.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def fold(text: str | None) -> str | None:
    """Case-fold for search keys (``str.casefold``: ß -> ss, Σ/ς -> σ)."""
    return None if text is None else text.casefold()


class ModuleRef(NamedTuple):
    """One module of an encoded image: the row its value is stored in."""

    module_type: str
    #: Digest of the ``module_values`` row (the value's own, or a composite's).
    digest: bytes


class EncodedImage(NamedTuple):
    """One image of an :class:`EncodedInstance`, ready for its rows."""

    image_id: str
    frame: int
    refs: list[ModuleRef]


@dataclass
class EncodedInstance:
    """An instance record with its blobs computed, ready for rows."""

    record: InstanceRecord
    dicom_json: bytes = b""
    #: Digest of the base row ``dicom_json`` was compressed against, if any.
    dicom_json_base: bytes | None = None
    images: list[EncodedImage] = field(default_factory=list)


@dataclass
class Prepared:
    """A batch after validation and encoding, before any SQL."""

    instances: list[EncodedInstance]
    #: digest -> (blob, digest of its base or None) of every module value.
    values: dict[bytes, tuple[bytes, bytes | None]]
    #: base digest -> blob of every base row the batch may need.
    bases: dict[bytes, bytes]
    module_types: set[str]
    errors: list[ErrorRecord]
    #: Locations written with nothing to store, all their instances being
    #: duplicates: what they held before goes all the same (their content
    #: changed, and it is not what they hold now).
    replaced: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ValuePool:
    """The value and base rows that the packed instances of one chunk refer to.

    Shared by those instances (so it pickles once per worker task); a batch
    takes from it the rows its kept instances need.
    """

    __reduce__ = by_position

    #: digest -> (blob, digest of its base or None), as ``Prepared.values``.
    values: dict[bytes, tuple[bytes, bytes | None]]
    #: base digest -> blob, as ``Prepared.bases``.
    bases: dict[bytes, bytes]
    module_types: frozenset[str]
    #: How many packed instances refer to it.
    instances: int


@dataclass(frozen=True, slots=True)
class Packed:
    """One instance encoded where it was read (``InstanceRecord.packed``)."""

    __reduce__ = by_position

    dicom_json: bytes
    dicom_json_base: bytes | None
    images: list[EncodedImage]
    pool: ValuePool
    #: What :func:`screen`'s checks read of the record (:func:`_checked`),
    #: when :func:`pack` found it valid: a record that still holds these
    #: values needs no checking again.  ``None``: check it.
    checked: tuple[Any, ...] | None = None


def int32(value: int | None) -> int | None:
    """``value`` if a 32-bit INTEGER column holds it, else ``None``.

    (0020,0013) InstanceNumber and (0020,0011) SeriesNumber are IS, whose
    range is 32 bits (PS3.5 6.2); files in the wild exceed it.  The column is
    a search aid: the exact value stays in the DICOM JSON and the modules.
    """
    if value is None or not -(2**31) <= value < 2**31:
        return None
    return value


def int64(value: int) -> int:
    """``value`` if a BIGINT column holds it, else 0 ("unknown" for sources)."""
    return value if -(2**63) <= value < 2**63 else 0


#: What no text column holds: NUL (PostgreSQL refuses it) and lone
#: surrogates (no UTF-8 encoding; SQLite and PostgreSQL drivers refuse them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: The searchable attributes of a record: stored with :func:`storable`.
SEARCH_FIELDS = (
    "patient_id",
    "patient_name",
    "study_date",
    "study_time",
    "accession_number",
    "study_description",
    "modality",
    "series_description",
)


def is_storable(text: str) -> bool:
    """Whether a text column can hold ``text`` as it is (no NUL, no lone surrogate).

    Identifiers that are not were never stored: a lookup by one finds nothing.
    """
    return _UNSTORABLE.search(text) is None


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD.

    For text that only describes (search attributes, error reasons): a
    DICOM JSON value may hold ``\\u0000`` or an unpaired ``\\ud800``, and
    one such value must not fail the write of a whole batch.  The module
    values and the DICOM JSON keep the exact text (they are stored as bytes).
    """
    return text if is_storable(text) else _UNSTORABLE.sub("\ufffd", text)


#: A record, or the search attributes read back from a stored instance: the
#: store takes a study's and a series' attributes from either.
Searchable = TypeVar("Searchable", InstanceRecord, SearchAttributes)


def storable_attributes(record: Searchable) -> Searchable:
    """``record`` with its search attributes made :func:`storable`.

    Each is cut to :data:`MAX_SEARCH` characters, and (0008,0060) Modality
    to :data:`MAX_MODALITY`, the width of its column (a CS value is at most
    16 characters): a longer, non-conformant value must not fail the batch
    on PostgreSQL, whose B-tree index entries hold at most 2704 bytes.
    """
    changes: dict[str, Any] = {}
    for name in SEARCH_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        fixed = storable(value)[:MAX_SEARCH]
        if fixed is not value:  # both steps return the text itself when it fits
            changes[name] = fixed
    modality = changes.get("modality", record.modality)
    if modality is not None and len(modality) > MAX_MODALITY:
        changes["modality"] = modality[:MAX_MODALITY]
    return dataclasses.replace(record, **changes) if changes else record


def search_values(dicom_json: Any, patient_name: str | None) -> attrs.Values:
    """The values of the search columns of revision 0003 (:mod:`attrs`).

    Text is made :func:`storable` and cut to :data:`MAX_SEARCH` characters
    before its search keys are derived, like the record's own search
    attributes (:func:`storable_attributes`).  ``dicom_json`` may be the
    :class:`codec.Encoded` form :func:`pre_encode` leaves.
    """
    if type(dicom_json) is codec.Encoded:
        dicom_json = codec.decode_value(bytes((dicom_json.flags,)) + dicom_json.data)

    def clean(text: str) -> str:
        return storable(text)[:MAX_SEARCH]

    name = None if patient_name is None else clean(patient_name)
    return attrs.from_json(dicom_json, name, clean)


def _search_values_of(record: InstanceRecord) -> attrs.Values:
    """:attr:`InstanceRecord.search_values`, derived if the record has none."""
    if record.search_values is not None:
        return record.search_values
    return search_values(record.dicom_json, record.patient_name)


def _with_search_values(record: InstanceRecord) -> InstanceRecord:
    """``record`` with :attr:`InstanceRecord.search_values` filled in."""
    if record.search_values is not None:
        return record
    return dataclasses.replace(record, search_values=_search_values_of(record))


def _storable_error(error: ErrorRecord) -> ErrorRecord:
    """``error`` as text the store holds (its location cut to fit an index)."""
    location, reason = storable(error.location), storable(error.reason)
    # a character is at most 4 bytes: shorter text needs no encoding to tell
    encoded = location.encode() if 4 * len(location) > MAX_ERROR_LOCATION else b""
    if len(encoded) > MAX_ERROR_LOCATION:
        # cut on a character boundary
        cut = encoded[:MAX_ERROR_LOCATION].decode(errors="ignore")
        location = cut + "..."
    if location is error.location and reason is error.reason:
        return error
    return dataclasses.replace(error, location=location, reason=reason)


def _invalid_reason(record: InstanceRecord) -> str | None:
    """Why ``record`` cannot be stored as is, or ``None`` if it can.

    Identifiers (UIDs, the location, imageIds) must be stored exactly, so
    one holding NUL or a lone surrogate makes the instance invalid rather
    than being altered.
    """
    if not 0 <= record.number_of_frames < 2**31:
        return f"number_of_frames out of range: {record.number_of_frames}"
    for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid"):
        uid = getattr(record, name)
        if not uid:
            return f"missing {name}"
        if len(uid) > MAX_UID:
            return f"{name} longer than {MAX_UID} characters: {uid!r}"
    if record.sop_class_uid is not None and len(record.sop_class_uid) > MAX_UID:
        return f"sop_class_uid longer than {MAX_UID} characters"
    version = record.mapping_version
    if version is not None and (
        len(version) > MAX_MAPPING_VERSION or not is_storable(version)
    ):
        return f"mapping_version is not a short text: {version!r}"
    identifiers = [
        ("study_instance_uid", record.study_instance_uid),
        ("series_instance_uid", record.series_instance_uid),
        ("sop_instance_uid", record.sop_instance_uid),
        ("sop_class_uid", record.sop_class_uid or ""),
        ("location", record.source.location),
        *(("imageId", image_id) for image_id in _image_ids(record)),
    ]
    for name, text in identifiers:
        if not is_storable(text):
            return f"{name} holds a NUL or an unpaired surrogate: {text!r}"
    return None


def _checked(record: InstanceRecord) -> tuple[Any, ...]:
    """Every field of ``record`` that :func:`storable_attributes` and
    :func:`_invalid_reason` read."""
    return (
        record.number_of_frames,
        record.study_instance_uid,
        record.series_instance_uid,
        record.sop_instance_uid,
        record.sop_class_uid,
        record.mapping_version,
        record.source.location,
        *map(record.__getattribute__, SEARCH_FIELDS),
        *_image_ids(record),
    )


def _image_ids(record: InstanceRecord) -> list[str]:
    """The imageIds to check of ``record``: lazy images' first stands for all.

    A lazy instance's imageIds differ in the frame number only, so they are
    storable together or not at all (and building them all costs time).
    """
    if isinstance(record.images, LazyImages):
        return [record.images.first_image_id]
    return [image.image_id for image in record.images]


class EncodeMemo:
    """What :func:`pre_encode` calls share: values already encoded.

    Frames of an instance share value objects (encoded once per object), and
    the instances of a series have many equal values (study, patient,
    pixel...): equal canonical bytes get one digest and one
    :class:`codec.Encoded`, which also pickles once per worker task.
    """

    def __init__(self) -> None:
        #: ``id(value) -> encoding``, per bit packing (overlay types pack).
        self.by_id: tuple[dict[int, codec.Encoded], dict[int, codec.Encoded]] = (
            {},
            {},
        )
        #: canonical bytes -> their encoding.
        self.by_data: dict[bytes, codec.Encoded] = {}
        # keeps memoised objects alive so ids stay unique
        self.keep: list[Any] = []


def pre_encode(
    records: Sequence[InstanceRecord], memo: EncodeMemo | None = None
) -> list[InstanceRecord]:
    """Copies of ``records`` whose DICOM JSON and module values are encoded.

    Runs in the indexer's worker processes: the JSON text and digest of every
    value are computed there (once per value object, and once per distinct
    text), leaving the writing process only compression and SQL.
    :func:`prepare` takes records in either form.

    Args:
        records: The records to encode.
        memo: Shared by calls whose results travel together (one worker task).
    """
    if memo is None:
        memo = EncodeMemo()
    by_data, keep = memo.by_data, memo.keep
    packs = codec.packs_bits
    out: list[InstanceRecord] = []
    for record in records:
        if isinstance(record.images, LazyImages):
            # built and encoded while they are written (store_write)
            data, flags = _canonical_json(record.dicom_json)
            encoded_json = codec.Encoded(data, flags, b"")
            out.append(dataclasses.replace(record, dicom_json=encoded_json))
            continue
        images = []
        for image in record.images:
            modules: dict[str, Any] = {}
            for module_type, value in image.modules.items():
                pack = packs(module_type)
                by_id = memo.by_id[pack]
                encoded = by_id.get(id(value))
                if encoded is None:
                    if type(value) is codec.Encoded:
                        encoded = value
                    else:
                        data, flags = codec.canonical(value, pack=pack)
                        encoded = by_data.get(data)
                        if encoded is None or encoded.flags != flags:
                            digest = codec.value_digest(data)
                            encoded = by_data[data] = codec.Encoded(data, flags, digest)
                    by_id[id(value)] = encoded
                    keep.append(value)
                modules[module_type] = encoded
            images.append(ImageRecord(image.image_id, image.frame, modules))
        record = _with_search_values(record)
        data, flags = _canonical_json(record.dicom_json)
        out.append(
            dataclasses.replace(
                record, dicom_json=codec.Encoded(data, flags, b""), images=images
            )
        )
    return out


def _encode_value(module_type: str, value: Any) -> tuple[bytes, bytes, int]:
    """``value``'s digest, canonical bytes and flags (its own if it is
    :class:`codec.Encoded` already)."""
    if type(value) is codec.Encoded:
        return value.digest, value.data, value.flags
    data, flags = codec.canonical(value, pack=codec.packs_bits(module_type))
    return codec.value_digest(data), data, flags


def _canonical_json(instance: Any) -> tuple[bytes, int]:
    """Canonical bytes and flags of a DICOM JSON object, or of its encoding."""
    if type(instance) is codec.Encoded:
        return instance.data, instance.flags
    return codec.canonical(instance)


def pack(
    records: Sequence[InstanceRecord], memo: EncodeMemo | None = None
) -> list[InstanceRecord]:
    """Copies of ``records`` encoded down to their rows' bytes, as one chunk.

    What :func:`prepare` does to a batch, done in the indexer's workers on
    the records of one worker task: each series' DICOM JSON and module
    values are compressed against bases chosen among the chunk's siblings,
    and an image's own values gathered into a composite.  The writing
    process then only screens, assembles and writes (issue 14: its CPU per
    instance was mostly this compression).  How rows are encoded so depends
    on which records share a chunk, never on a batch: the indexer makes its
    chunks from the discovery order and writes each in one transaction, so
    a rerun after a crash encodes what is left as a clean run did.

    Instances with lazy images stay :func:`pre_encode` records (their frames
    are built and encoded while they are written).

    Args:
        records: The records of one chunk, in reading order.
        memo: As for :func:`pre_encode`, for the lazy records only.
    """
    # The search attributes made storable here, where the cost is spread
    # over the workers (the writer then only compares, :func:`screen`).
    # Eager records are encoded straight from their values (what pre_encode
    # would do is done by _encode_series, once per value object); lazy ones
    # are pre-encoded and wait for the writer.
    encoded: list[InstanceRecord] = []
    lazy = []
    # The search values of the eager records, by id: added to the one copy
    # made of each below, not by a copy of their own.
    values: dict[int, attrs.Values] = {}
    for record in map(storable_attributes, records):
        if isinstance(record.images, LazyImages):
            lazy.append(len(encoded))
        else:
            values[id(record)] = _search_values_of(record)
        encoded.append(record)
    for at, record in zip(
        lazy, pre_encode([encoded[i] for i in lazy], memo), strict=True
    ):
        encoded[at] = record
    chunk = Prepared([], {}, {}, set(), [])
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in encoded:
        if not isinstance(record.images, LazyImages):
            by_series.setdefault(record.series_instance_uid, []).append(record)
    for series in by_series.values():
        _encode_series(series, chunk)
    pool = ValuePool(
        chunk.values, chunk.bases, frozenset(chunk.module_types), len(chunk.instances)
    )
    done = {id(item.record): item for item in chunk.instances}
    out: list[InstanceRecord] = []
    for record in encoded:
        item = done.get(id(record))
        if item is None:
            out.append(record)
            continue
        # (the images below have the same imageIds: what is checked holds)
        checked = None if _invalid_reason(record) else _checked(record)
        packed = Packed(
            item.dicom_json, item.dicom_json_base, item.images, pool, checked
        )
        images = [ImageRecord(i.image_id, i.frame, {}) for i in item.images]
        out.append(
            dataclasses.replace(
                record,
                dicom_json={},
                images=images,
                packed=packed,
                search_values=values[id(record)],
            )
        )
    return out


def _add_packed(records: Sequence[InstanceRecord], batch: Prepared) -> None:
    """Add records :func:`pack` encoded to ``batch``, with the rows they use.

    A pool all of whose instances the batch keeps (a whole chunk, the usual
    case) gives all its rows at once; otherwise each instance's are picked.
    """
    pools: dict[int, tuple[ValuePool, list[Packed]]] = {}
    for record in records:
        packed = record.packed
        if not isinstance(packed, Packed):
            raise TypeError(f"not a packed record: {record.sop_instance_uid}")
        batch.instances.append(
            EncodedInstance(
                record, packed.dicom_json, packed.dicom_json_base, packed.images
            )
        )
        pools.setdefault(id(packed.pool), (packed.pool, []))[1].append(packed)
    values, bases = batch.values, batch.bases
    for pool, members in pools.values():
        batch.module_types |= pool.module_types
        if len(members) == pool.instances:
            # values the batch has already keep their encoding: first wins
            values.update({d: v for d, v in pool.values.items() if d not in values})
            bases.update(pool.bases)
            continue
        for packed in members:
            if packed.dicom_json_base is not None:
                bases[packed.dicom_json_base] = pool.bases[packed.dicom_json_base]
            for image in packed.images:
                for _, digest in image.refs:
                    if digest not in values:
                        row = values[digest] = pool.values[digest]
                        if row[1] is not None:
                            bases[row[1]] = pool.bases[row[1]]


def screen(
    instances: Sequence[InstanceRecord],
    stored_at: Mapping[str, str],
    earlier: Mapping[str, str] | None = None,
) -> tuple[list[InstanceRecord], list[ErrorRecord]]:
    """Split a batch into the records a write stores and errors for the rest.

    The records kept have their search attributes made storable.  Refused:

    - an invalid record (:func:`_invalid_reason`);
    - a SOP Instance UID seen earlier in the batch from another location (a
      duplicate: the first wins); from the same location, the first record
      wins and the others are dropped without an error (as when the two come
      in separate parts of ``Store.write_stream``); ``earlier`` (SOP Instance
      UID -> location) holds those of the batch's records screened before
      (the earlier parts of a stream);
    - a SOP Instance UID stored from another location (``stored_at``: SOP
      Instance UID -> location), unless the batch writes that location
      again (its old instances go first, so the UID is free then) or it is
      the record's location as spelled before (``legacy_location``: the
      write adopts it, ``store.prune.adopt_legacy``, or finds the
      duplicate in its transaction).

    Refused records are left out before anything is encoded, so they leave
    nothing behind and do not change how the stored ones are encoded.
    """
    errors: list[ErrorRecord] = []
    first_at = dict(earlier or {})
    # (a location all of whose records turn out invalid is not written after
    # all: the transaction then finds the duplicate, as it finds any race)
    rewritten = {r.source.location for r in instances} | set(first_at.values())
    by_sop: dict[str, InstanceRecord] = {}
    for record in instances:
        packed = record.packed
        if (
            type(packed) is not Packed
            or packed.checked is None
            or packed.checked != _checked(record)
        ):
            record = storable_attributes(record)
            reason = _invalid_reason(record)
        else:
            reason = None  # checked where it was packed, and unchanged since
        if reason is not None:
            location = storable(record.source.location)
            errors.append(ErrorRecord(location, "invalid", reason))
            continue
        sop, location = record.sop_instance_uid, record.source.location
        first = first_at.get(sop)
        if first is not None:
            if first != location:
                errors.append(duplicate(record, first))
            continue
        elsewhere = stored_at.get(sop)
        if (
            elsewhere not in (None, location, legacy_location(location))
            and elsewhere not in rewritten
        ):
            errors.append(duplicate(record, elsewhere))
            continue
        first_at[sop] = location
        by_sop[sop] = record
    return list(by_sop.values()), errors


def prepare(
    instances: Sequence[InstanceRecord],
    errors: Sequence[ErrorRecord],
    stored_at: Mapping[str, str] | None = None,
    replaced: Iterable[str] = (),
) -> Prepared:
    """Validate, screen and encode a batch (pure Python, outside the transaction).

    :func:`screen` decides what is stored (``stored_at``: where the batch's
    SOP Instance UIDs are stored already); the rest becomes errors.  The
    locations of duplicates with nothing stored, and ``replaced``, lose what
    they held (``Prepared.replaced``).
    """
    for error in errors:
        if error.kind not in ERROR_KINDS:
            raise ValueError(
                f"ErrorRecord.kind must be one of {sorted(ERROR_KINDS)}, "
                f"not {error.kind!r}"
            )
    out_errors = [_storable_error(error) for error in errors]
    kept, refused = screen(instances, stored_at or {})
    kept = [_with_search_values(record) for record in kept]
    out_errors.extend(refused)
    batch = Prepared([], {}, {}, set(), out_errors, set(replaced))
    batch.replaced |= {e.location for e in refused if e.kind == "duplicate"}
    batch.replaced -= {record.source.location for record in kept}
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in kept:
        by_series.setdefault(record.series_instance_uid, []).append(record)
    # packed records (a chunk's series together) first, then the others
    _add_packed(
        [r for records in by_series.values() for r in records if r.packed is not None],
        batch,
    )
    for records in by_series.values():
        plain = [r for r in records if r.packed is None]
        if plain:
            _encode_series(plain, batch)
    return batch


def _encode_series(records: list[InstanceRecord], batch: Prepared) -> None:
    """Encode the instances of one series in a batch into ``batch``.

    Siblings are alike: the DICOM JSON of a series' instances, and its
    per-image module values of one type (positions, UIDs), differ in a few
    fields.  So the first of each kind becomes a *base* row and every one of
    them is deflated with the base as preset dictionary (a few dozen bytes
    instead of hundreds).  Kinds with a single distinct value stay
    self-contained.
    """
    # DICOM JSON.
    texts = [_canonical_json(r.dicom_json) for r in records]
    base: bytes | None = None
    base_key: bytes | None = None
    if len(records) > 1:
        base = texts[0][0]
        base_key = codec.base_digest(base)
        batch.bases[base_key] = codec.compress(base, texts[0][1], dicom=True)
    for record, (data, flags) in zip(records, texts, strict=True):
        blob = codec.compress(data, flags, base=base, dicom=True)
        batch.instances.append(EncodedInstance(record, blob, base_key))

    # Module values; lazy images are encoded while they are written.
    encode_images(
        [
            (item, image)
            for item in batch.instances[-len(records) :]
            if not isinstance(item.record.images, LazyImages)
            for image in item.record.images
        ],
        batch,
    )


class Entry(NamedTuple):
    """One module value of an image, encoded (:func:`encode_images`)."""

    module_type: str
    digest: bytes
    #: Canonical bytes (:func:`codec.canonical`).
    data: bytes
    flags: int


#: Key of the composites among the kinds of :func:`_store_fresh` (not a
#: module type name).
_COMPOSITE = "\x00composite"


def encode_images(
    images: Sequence[tuple[EncodedInstance, ImageRecord]], batch: Prepared
) -> None:
    """Encode the module values of ``images`` (of one series) into ``batch``.

    Each image's references go to its :class:`EncodedInstance`, the value
    rows to ``batch.values`` and ``batch.bases``.
    """
    encoded = _encode_entries(images, batch)
    uses = Counter(entry.digest for _, _, entries in encoded for entry in entries)
    fresh = _gather_composites(encoded, uses)
    _store_fresh(fresh, batch)


def _encode_entries(
    images: Sequence[tuple[EncodedInstance, ImageRecord]], batch: Prepared
) -> list[tuple[EncodedInstance, ImageRecord, list[Entry]]]:
    """Every module value of ``images`` encoded, per image, in module order.

    Frames of one instance usually share value objects, and so do the
    instances of a series (``metastore.modules.ModuleMemo``): each object is
    encoded once, and its :class:`Entry` made once and shared by the images
    holding it (this loop runs for every module of every image).
    """
    memo: dict[tuple[str, int], Entry] = {}
    by_digest: dict[tuple[bytes, int], tuple[bytes, bytes, int]] = {}
    keep: list[Any] = []  # keeps memoised objects alive so ids stay unique
    encoded: list[tuple[EncodedInstance, ImageRecord, list[Entry]]] = []
    types = batch.module_types
    for item, image in images:
        modules = image.modules
        entries: list[Entry] = []
        for module_type, value in modules.items():
            key = (module_type, id(value))
            entry = memo.get(key)
            if entry is None:
                known = _encode_value(module_type, value)
                # equal values of distinct objects keep one copy of the bytes
                known = by_digest.setdefault((known[0], known[2]), known)
                entry = memo[key] = Entry(module_type, *known)
                keep.append(value)
            entries.append(entry)
        types.update(modules)
        encoded.append((item, image, entries))
    return encoded


def _gather_composites(
    encoded: Sequence[tuple[EncodedInstance, ImageRecord, list[Entry]]],
    uses: Counter[bytes],
) -> dict[str, dict[bytes, tuple[bytes, int]]]:
    """Each image's references, and the distinct value rows by kind.

    An image's own values (used by no other image or type of the series in
    this batch: position, SOP UIDs, its URL...) go into one composite row:
    one row instead of five, and the SOP UID they repeat is stored once.

    Returns:
        ``{kind: {digest: (canonical bytes, flags)}}``, a kind being a
        module type or :data:`_COMPOSITE`.
    """
    fresh: dict[str, dict[bytes, tuple[bytes, int]]] = {}
    shared: dict[tuple[str, bytes], ModuleRef] = {}
    # The reference of an entry used by several images, by the entry's id:
    # most entries are such shared objects (_encode_entries), met once per
    # image.  The entries stay alive in ``encoded``, so ids stay unique.
    ref_of: dict[int, ModuleRef] = {}
    for item, image, entries in encoded:
        own = sorted(e for e in entries if uses[e.digest] == 1)
        composite = None
        if len(own) > 1:
            data = b"{%b}" % b",".join(
                b"%b:%b" % (json.dumps(e.module_type).encode(), e.data) for e in own
            )
            flags = 0
            for e in own:
                flags |= e.flags
            composite = codec.composite_digest(data)
            fresh.setdefault(_COMPOSITE, {})[composite] = (
                data,
                codec.mark_composite(flags),
            )
        refs: list[ModuleRef] = []
        for entry in entries:
            ref = ref_of.get(id(entry))
            if ref is None:
                name, digest, data, flags = entry
                if composite is not None and uses[digest] == 1:
                    refs.append(ModuleRef(name, composite))
                    continue
                # one object per shared reference: pickled once per chunk
                ref = shared.get((name, digest))
                if ref is None:
                    ref = shared[name, digest] = ModuleRef(name, digest)
                    fresh.setdefault(name, {}).setdefault(digest, (data, flags))
                ref_of[id(entry)] = ref
            refs.append(ref)
        item.images.append(EncodedImage(image.image_id, image.frame, refs))
    return fresh


def _store_fresh(
    fresh: Mapping[str, dict[bytes, tuple[bytes, int]]], batch: Prepared
) -> None:
    """Compress the value rows ``fresh`` into ``batch``, siblings of one kind
    against the first of them (the batch's values stored already are skipped).
    """
    for distinct in fresh.values():
        distinct = {d: v for d, v in distinct.items() if d not in batch.values}
        base = base_key = None
        if len(distinct) > 1:
            base, base_flags = next(iter(distinct.values()))
            base_key = codec.base_digest(base)
            batch.bases[base_key] = codec.compress(base, base_flags)
        for digest, (data, flags) in distinct.items():
            batch.values[digest] = (codec.compress(data, flags, base=base), base_key)


def duplicate(record: InstanceRecord, stored_at: str) -> ErrorRecord:
    """The error for a SOP Instance UID already stored from ``stored_at``."""
    return ErrorRecord(
        record.source.location,
        "duplicate",
        f"SOP Instance UID {record.sop_instance_uid} is already stored "
        f"from {stored_at}",
    )
