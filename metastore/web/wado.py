"""WADO-RS (PS3.18 §10.4): metadata, frames, bulk data and instances.

Metadata is the stored DICOM JSON of each instance as JSON text, with
every ``BulkDataURI`` pointing at this server: each instance's text is
copied as it is when its only bulk element is its pixel data (the common
case, rewritten in place), and parsed and walked otherwise.  Frames, bulk
data and instances are read from the instance's indexed source only
(:mod:`metastore.web.sources`), after checking it is the file that was
indexed.  Every function here is synchronous: the app runs them in its
thread pool, except :func:`quick_frames` (cached, native frames of a plain
file), which it runs on the event loop.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal

import orjson

from metastore.locations import MEMBER_SEPARATOR
from metastore.store import InstanceSource, Store
from metastore.types import DicomJson
from metastore.web import pixels, sources
from metastore.web.media import EXPLICIT_LE, HTTPError, Part, multipart, parse_accept
from metastore.web.qido import dump

#: A deployment's correction of each instance's DICOM JSON before it is
#: answered (see docs/serve.md, "Layering corrections").
Corrections = Callable[[DicomJson], DicomJson]

# The last element of a Part 10 instance's JSON is its pixel data (keys are
# sorted, and nothing after the pixel data is read): when it is the only
# bulk element, its URI is rewritten in place without parsing the text.
_LAST_PIXELS = re.compile(
    rb'"(7FE00010|7FE00008|7FE00009)":\{"BulkDataURI":"(?:[^"\\]|\\.)*"'
    rb'(,"vr":"[A-Z]{2}")\}\}$'
)
_BULK_KEY = b'"BulkDataURI"'
#: Instances per chunk of a streamed study metadata answer.
CHUNK = 100
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


def _json_escaped(text: str) -> bytes:
    return orjson.dumps(text)[1:-1]


def instance_base(base: str, study: str, series: str, sop: str) -> str:
    """The URL of one instance on this server."""
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


def rewrite(text: bytes, bulk_prefix: str, corrections: Corrections | None) -> bytes:
    """One instance's JSON text with its BulkDataURIs under ``bulk_prefix``.

    ``bulk_prefix`` ends with ``/bulkdata/``; a top-level element's URI is
    the prefix and its tag, a nested one's the path of tags and item indices
    to it (``00880200/0/7FE00010``), as the bulkdata route reads them.
    """
    count = text.count(_BULK_KEY)
    if corrections is None and count <= 1:
        if count == 0:
            return text
        match = _LAST_PIXELS.search(text)
        if match is not None:
            tag = match.group(1)
            uri = _json_escaped(bulk_prefix) + tag
            return b"".join(
                (
                    text[: match.start()],
                    b'"',
                    tag,
                    b'":{"BulkDataURI":"',
                    uri,
                    b'"',
                    match.group(2),
                    b"}}",
                )
            )
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # integers past 64 bits
        import json

        value = json.loads(text)
    if count:
        _walk(value, bulk_prefix)
    if corrections is not None:
        value = corrections(value)
    return dump(value)


def _walk(dataset: Any, prefix: str) -> None:
    if not isinstance(dataset, dict):
        return
    for key, element in dataset.items():
        if not isinstance(element, dict):
            continue
        if "BulkDataURI" in element:
            element["BulkDataURI"] = prefix + key
        items = element.get("Value")
        if element.get("vr") == "SQ" and isinstance(items, list):
            for index, item in enumerate(items):
                _walk(item, f"{prefix}{key}/{index}/")


def metadata_chunks(
    store: Store,
    base: str,
    study: str,
    series: str | None,
    sop: str | None,
    corrections: Corrections | None,
) -> Iterator[bytes]:
    """The JSON array of the instances' metadata, in chunks.

    The first chunk is ``[`` and the first instance, so a caller can tell
    an empty answer (no chunk at all) before it answers.
    """
    texts = store.dicom_json_texts(study, series, sop)
    batch: list[bytes] = []
    opened = False
    for series_uid, sop_uid, text in texts:
        prefix = instance_base(base, study, series_uid, sop_uid) + "/bulkdata/"
        batch.append(rewrite(text, prefix, corrections))
        if not opened or len(batch) >= CHUNK:
            yield (b"," if opened else b"[") + b",".join(batch)
            opened = True
            batch = []
    if opened:
        yield (b"," + b",".join(batch) if batch else b"") + b"]"


def find_instance(store: Store, study: str, series: str, sop: str) -> InstanceSource:
    """The source of ``sop``, if it is in that series of that study (else 404)."""
    source = store.instance_source(sop)
    if (
        source is None
        or source.study_instance_uid != study
        or source.series_instance_uid != series
    ):
        raise HTTPError(
            404, f"instance {sop} is not in series {series} of study {study}"
        )
    return source


def parse_frames(text: str) -> list[int]:
    """A frame list (``1``, ``1,3,5``) as numbers; 400 when malformed."""
    numbers = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or not piece.isascii() or int(piece) < 1:
            shown = text if len(text) <= 80 else text[:80] + "..."
            raise HTTPError(
                400,
                f"malformed frame list {shown!r}: frame numbers are whole "
                "numbers from 1, separated by commas",
            )
        numbers.append(int(piece))
    return numbers


Mode = Literal["stored", "native", "either"]


def _frame_plan(
    accept: str | None, lay: pixels.Layout, count: int
) -> tuple[bool, Mode]:
    """``(multipart?, mode)`` of the first acceptable way to send frames."""
    stored = lay.stored_syntax
    for r in parse_accept(accept):
        if r.media_type == "multipart/related":
            inner = r.inner_type or "application/octet-stream"
            if inner not in ("application/octet-stream", "application/*", "*/*"):
                continue
            is_multi, explicit = True, True
        elif r.media_type == "application/octet-stream" and count == 1:
            is_multi, explicit = False, True
        elif r.media_type in ("*/*", "application/*"):
            is_multi, explicit = True, False
        else:
            continue
        syntax = r.transfer_syntax
        if syntax == "*":
            return is_multi, "stored"
        if syntax is None:
            return is_multi, "native" if explicit else "either"
        if syntax == stored:
            return is_multi, "stored"
        if syntax == EXPLICIT_LE:
            return is_multi, "native"
    raise HTTPError(
        406,
        f"frames are stored as {stored}: ask for multipart/related; "
        'type="application/octet-stream" with transfer-syntax=* (as stored) '
        f"or {EXPLICIT_LE} (native pixels); the request accepts only {accept!r}",
    )


def _frame_bytes(
    sop: str, lay: pixels.Layout, fp: IO[bytes], number: int, mode: Mode
) -> tuple[bytes, str]:
    """One frame and its transfer syntax label."""
    if mode == "stored":
        try:
            return pixels.stored_frame(sop, lay, fp, number), lay.stored_syntax
        except pixels.CannotDecode as exc:
            raise HTTPError(406, f"instance {sop}: {exc}") from None
    try:
        return pixels.native_frame(sop, lay, fp, number), EXPLICIT_LE
    except pixels.CannotDecode as exc:
        if mode == "either":
            return pixels.stored_frame(sop, lay, fp, number), lay.stored_syntax
        raise HTTPError(
            406,
            f"instance {sop}: frames stored as {lay.stored_syntax} cannot be "
            f"sent as {EXPLICIT_LE}: {exc}; ask with transfer-syntax=* for "
            "the stored bytes",
        ) from None


def frames(
    store: Store,
    study: str,
    series: str,
    sop: str,
    numbers: list[int] | None,
    accept: str | None,
    cache: sources.SourceCache | None = None,
) -> tuple[bytes, str]:
    """The body and Content-Type of a frames request (all frames: ``None``).

    With a ``cache``, the instance's source is looked up there first; a
    cached record whose file fails the checks is looked up again in the
    store before the request is answered.
    """
    if cache is None:
        return source_frames(
            find_instance(store, study, series, sop), sop, numbers, accept
        )
    source, cached = cache.find(store, study, series, sop)
    try:
        return source_frames(_found(source, study, series, sop), sop, numbers, accept)
    except sources.Stale:
        if not cached:
            raise
    cache.forget(study, series)
    source, _cached = cache.find(store, study, series, sop)
    return source_frames(_found(source, study, series, sop), sop, numbers, accept)


def quick_frames(
    cache: sources.SourceCache,
    study: str,
    series: str,
    sop: str,
    numbers: list[int],
    accept: str | None,
) -> tuple[bytes, str] | None:
    """A frames answer made without the store or decoding, else ``None``.

    Only for an instance whose source and layout are both cached, a plain
    file (not a zip member) holding native little endian frames, and a few
    megabytes at most: a stat, an open and a read, cheap enough for the
    event loop.  Everything else (``None``) goes to the thread pool, as
    does a source found stale (which needs the store).
    """
    source = cache.peek(study, series, sop)
    if source is None or MEMBER_SEPARATOR in source.location:
        return None
    lay = pixels.cached_layout(sop, source)
    if (
        lay is None
        or not lay.native_little_endian
        or len(numbers) * lay.frame_size > QUICK_BYTES
    ):
        return None
    try:
        return source_frames(source, sop, numbers, accept)
    except sources.Stale:
        return None


#: The most frame bytes :func:`quick_frames` reads on the event loop.
QUICK_BYTES = 4 << 20


def _found(
    source: InstanceSource | None, study: str, series: str, sop: str
) -> InstanceSource:
    if source is None:
        raise HTTPError(
            404, f"instance {sop} is not in series {series} of study {study}"
        )
    return source


def source_frames(
    source: InstanceSource, sop: str, numbers: list[int] | None, accept: str | None
) -> tuple[bytes, str]:
    """:func:`frames` of an instance whose source is known."""
    # a layout read from the file in this state proves it is this instance
    known = pixels.cached_layout(sop, source) is not None
    with sources.open_source(sop, source, known=known) as fp:
        lay = pixels.layout(sop, source, fp)
        if numbers is None:
            numbers = list(range(1, lay.frames + 1))
        pixels.check_frames(sop, lay, numbers)
        is_multi, mode = _frame_plan(accept, lay, len(numbers))
        parts = []
        for number in numbers:
            data, syntax = _frame_bytes(sop, lay, fp, number, mode)
            parts.append(
                Part(f"application/octet-stream; transfer-syntax={syntax}", data)
            )
    if not is_multi:
        return parts[0].data, parts[0].content_type
    return multipart("application/octet-stream", parts)


def bulkdata(
    store: Store, study: str, series: str, sop: str, path: str, accept: str | None
) -> tuple[bytes, str]:
    """A bulk data element of an instance, by the path its BulkDataURI names.

    Top-level pixel data is all of the instance's frames (as a frames
    request for every frame); any other element is its value's bytes.
    """
    steps = path.split("/")
    if len(steps) % 2 != 1 or not all(
        _HEX8.fullmatch(step) if i % 2 == 0 else step.isdigit()
        for i, step in enumerate(steps)
    ):
        raise HTTPError(
            400,
            f"malformed bulk data path {path[:80]!r}: a tag, or tag/item/tag... "
            "(tags of eight hex digits, items numbered from 0)",
        )
    if len(steps) == 1 and int(steps[0], 16) in pixels.PIXEL_TAGS:
        return frames(store, study, series, sop, None, accept)
    source = find_instance(store, study, series, sop)
    with sources.open_source(sop, source) as fp:
        ds = pixels.read_dataset(sop, fp, pixels=True)
    element: Any = None
    current: Any = ds
    for i in range(0, len(steps), 2):
        tag = int(steps[i], 16)
        element = current.get(tag) if hasattr(current, "get") else None
        if element is None:
            break
        if i + 1 < len(steps):
            items = element.value
            index = int(steps[i + 1])
            if not isinstance(items, list | tuple) and not hasattr(items, "__len__"):
                element = None
                break
            try:
                current = items[index]
            except (IndexError, TypeError):
                element = None
                break
    value = None if element is None else element.value
    if not isinstance(value, bytes):
        raise HTTPError(404, f"instance {sop} has no bulk data element {path}")
    for r in parse_accept(accept):
        if r.media_type == "application/octet-stream":
            return value, "application/octet-stream"
        if r.media_type in ("multipart/related", "*/*", "application/*") and (
            r.inner_type in (None, "application/octet-stream", "*/*")
        ):
            return multipart(
                "application/octet-stream", [Part("application/octet-stream", value)]
            )
    raise HTTPError(
        406, f"bulk data is sent as application/octet-stream; accepted: {accept!r}"
    )


def _instance_plan(accept: str | None, lay: pixels.Layout) -> tuple[bool, bool]:
    """``(multipart?, as stored?)`` of the first acceptable way to send a file."""
    for r in parse_accept(accept):
        if r.media_type == "multipart/related":
            if (r.inner_type or "application/dicom") not in ("application/dicom",):
                continue
            is_multi = True
        elif r.media_type == "application/dicom":
            is_multi = False
        elif r.media_type in ("*/*", "application/*"):
            is_multi = True
        else:
            continue
        syntax = r.transfer_syntax
        if syntax == "*" or syntax == lay.transfer_syntax:
            return is_multi, True
        if syntax is None or syntax == EXPLICIT_LE:
            return is_multi, False
    raise HTTPError(
        406,
        f"the instance is stored as {lay.transfer_syntax}: ask for "
        'multipart/related; type="application/dicom" or application/dicom, '
        f"with transfer-syntax=* (as stored) or {EXPLICIT_LE}; the request "
        f"accepts only {accept!r}",
    )


def instance(
    store: Store, study: str, series: str, sop: str, accept: str | None
) -> tuple[bytes, str]:
    """The body and Content-Type of a retrieve-instance request."""
    source = find_instance(store, study, series, sop)
    with sources.open_source(sop, source) as fp:
        lay = pixels.layout(sop, source, fp)
        is_multi, as_stored = _instance_plan(accept, lay)
        if as_stored:
            data, syntax = pixels.whole_file(sop, lay, fp), lay.transfer_syntax
            if not lay.part10:
                syntax = "1.2.840.10008.1.2"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data = pixels.explicit_le_file(sop, lay, fp)
            except pixels.CannotDecode as exc:
                raise HTTPError(
                    406,
                    f"instance {sop} is stored as {lay.transfer_syntax} and cannot "
                    f"be sent as {EXPLICIT_LE}: {exc}; ask with transfer-syntax=*",
                ) from None
            syntax = EXPLICIT_LE
    content_type = f"application/dicom; transfer-syntax={syntax}"
    if not is_multi:
        return data, content_type
    return multipart("application/dicom", [Part(content_type, data)])
