"""Batch preparation for :meth:`metastore.store.Store.write_batch` (no SQL).

This module owns what happens to a batch before its transaction: validation
(UIDs, ranges, error kinds), duplicates within the batch, and encoding: the
DICOM JSON and module values of each series compressed against sibling
bases, an image's own values gathered into a composite, imageIds split and
hashed.  Pure Python; private to the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from metastore.records import ErrorRecord, ImageRecord, InstanceRecord
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
ERROR_KINDS = frozenset({"unreadable", "invalid", "duplicate"})


def image_key(image_id: str) -> int:
    """The signed 64-bit BLAKE2b of an imageId (``images.image_key``)."""
    digest = hashlib.blake2b(
        image_id.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def split_image_id(image_id: str) -> tuple[str, str]:
    """Split an imageId into the prefix many images share and the rest.

    A wadors imageId splits after its last ``/instances/`` (root, study and
    series are the prefix); any other after the last ``/`` before its query
    (a folder's or an archive's URI).  ``prefix + suffix == image_id``.
    """
    marker = image_id.rfind("/instances/")
    if marker >= 0:
        cut = marker + len("/instances/")
    else:
        query = image_id.find("?")
        cut = image_id.rfind("/", 0, query if query >= 0 else len(image_id)) + 1
    return image_id[:cut], image_id[cut:]


def fold(text: str | None) -> str | None:
    """Case-fold for search keys (``str.casefold``: ß -> ss, Σ/ς -> σ)."""
    return None if text is None else text.casefold()


@dataclass
class EncodedInstance:
    """An instance record with its blobs computed, ready for rows."""

    record: InstanceRecord
    dicom_json: bytes = b""
    #: Digest of the base row ``dicom_json`` was compressed against, if any.
    dicom_json_base: bytes | None = None
    #: Per image: ``(image_id, frame, [(module type, digest), ...])``.
    images: list[tuple[str, int, list[tuple[str, bytes]]]] = field(default_factory=list)


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


def _storable_record(record: InstanceRecord) -> InstanceRecord:
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
    attributes (:func:`_storable_record`).  ``dicom_json`` may be the
    :class:`codec.Encoded` form :func:`pre_encode` leaves.
    """
    if type(dicom_json) is codec.Encoded:
        dicom_json = codec.decode_value(bytes((dicom_json.flags,)) + dicom_json.data)

    def clean(text: str) -> str:
        return storable(text)[:MAX_SEARCH]

    name = None if patient_name is None else clean(patient_name)
    return attrs.from_json(dicom_json, name, clean)


def _with_search_values(record: InstanceRecord) -> InstanceRecord:
    """``record`` with :attr:`InstanceRecord.search_values` filled in."""
    if record.search_values is not None:
        return record
    values = search_values(record.dicom_json, record.patient_name)
    return dataclasses.replace(record, search_values=values)


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
    identifiers = [
        ("study_instance_uid", record.study_instance_uid),
        ("series_instance_uid", record.series_instance_uid),
        ("sop_instance_uid", record.sop_instance_uid),
        ("sop_class_uid", record.sop_class_uid or ""),
        ("location", record.source.location),
        *(("imageId", image.image_id) for image in record.images),
    ]
    for name, text in identifiers:
        if not is_storable(text):
            return f"{name} holds a NUL or an unpaired surrogate: {text!r}"
    return None


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


def _encode_value(module_type: str, value: Any) -> codec.Encoded:
    """``value`` as :class:`codec.Encoded` (as it is if it already is)."""
    if type(value) is codec.Encoded:
        return value
    data, flags = codec.canonical(value, pack=codec.packs_bits(module_type))
    return codec.Encoded(data, flags, codec.value_digest(data))


def _canonical_json(instance: Any) -> tuple[bytes, int]:
    """Canonical bytes and flags of a DICOM JSON object, or of its encoding."""
    if type(instance) is codec.Encoded:
        return instance.data, instance.flags
    return codec.canonical(instance)


def prepare(
    instances: Sequence[InstanceRecord], errors: Sequence[ErrorRecord]
) -> Prepared:
    """Validate and encode a batch (pure Python, outside the transaction).

    Within the batch, a SOP Instance UID seen again from another location is
    a duplicate; seen again from the same location, the last record wins.
    """
    for error in errors:
        if error.kind not in ERROR_KINDS:
            raise ValueError(
                f"ErrorRecord.kind must be one of {sorted(ERROR_KINDS)}, "
                f"not {error.kind!r}"
            )
    out_errors = [_storable_error(error) for error in errors]
    by_sop: dict[str, InstanceRecord] = {}
    for record in map(_storable_record, instances):
        record = _with_search_values(record)
        reason = _invalid_reason(record)
        if reason is not None:
            location = storable(record.source.location)
            out_errors.append(ErrorRecord(location, "invalid", reason))
            continue
        first = by_sop.get(record.sop_instance_uid)
        if first is not None and first.source.location != record.source.location:
            out_errors.append(duplicate(record, first.source.location))
            continue
        by_sop[record.sop_instance_uid] = record
    batch = Prepared([], {}, {}, set(), out_errors)
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in by_sop.values():
        by_series.setdefault(record.series_instance_uid, []).append(record)
    for records in by_series.values():
        _encode_series(records, batch)
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

    # Module values.  Frames of one instance usually share value objects:
    # encode each object once.
    memo: dict[tuple[str, int], tuple[bytes, bytes, int]] = {}
    keep: list[Any] = []  # keeps memoised objects alive so ids stay unique
    uses: Counter[bytes] = Counter()
    encoded: list[tuple[EncodedInstance, ImageRecord, list[_Entry]]] = []
    for item in batch.instances[-len(records) :]:
        for image in item.record.images:
            entries: list[_Entry] = []
            for module_type, value in image.modules.items():
                key = (module_type, id(value))
                known = memo.get(key)
                if known is None:
                    enc = _encode_value(module_type, value)
                    known = memo[key] = (enc.digest, enc.data, enc.flags)
                    keep.append(value)
                entries.append((module_type, *known))
                uses[known[0]] += 1
                batch.module_types.add(module_type)
            encoded.append((item, image, entries))

    # An image's own values (used by no other image or type of the series in
    # this batch: position, SOP UIDs, its URL...) go into one composite row:
    # one row instead of five, and the SOP UID they repeat is stored once.
    fresh: dict[str, dict[bytes, tuple[bytes, int]]] = {}
    for item, image, entries in encoded:
        own = sorted(e for e in entries if uses[e[1]] == 1)
        composite = None
        if len(own) > 1:
            data = b"{%b}" % b",".join(
                b"%b:%b" % (json.dumps(name).encode(), part) for name, _, part, _ in own
            )
            flags = 0
            for *_, part_flags in own:
                flags |= part_flags
            composite = codec.composite_digest(data)
            fresh.setdefault(_COMPOSITE, {})[composite] = (
                data,
                codec.mark_composite(flags),
            )
        refs: list[tuple[str, bytes]] = []
        for name, digest, data, flags in entries:
            if composite is not None and uses[digest] == 1:
                refs.append((name, composite))
                continue
            refs.append((name, digest))
            fresh.setdefault(name, {}).setdefault(digest, (data, flags))
        item.images.append((image.image_id, image.frame, refs))

    # Siblings of one kind are compressed against the first of them.
    for distinct in fresh.values():
        distinct = {d: v for d, v in distinct.items() if d not in batch.values}
        base = base_key = None
        if len(distinct) > 1:
            base, base_flags = next(iter(distinct.values()))
            base_key = codec.base_digest(base)
            batch.bases[base_key] = codec.compress(base, base_flags)
        for digest, (data, flags) in distinct.items():
            batch.values[digest] = (codec.compress(data, flags, base=base), base_key)


#: (module type, digest, canonical bytes, flags) of one image's module.
_Entry = tuple[str, bytes, bytes, int]
#: Key of the composites among ``fresh`` kinds (not a module type name).
_COMPOSITE = "\x00composite"


def duplicate(record: InstanceRecord, stored_at: str) -> ErrorRecord:
    """The error for a SOP Instance UID already stored from ``stored_at``."""
    return ErrorRecord(
        record.source.location,
        "duplicate",
        f"SOP Instance UID {record.sop_instance_uid} is already stored "
        f"from {stored_at}",
    )
