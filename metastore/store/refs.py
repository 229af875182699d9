"""References to stored images: imageIds in any form, file locations, SOP UIDs.

This module owns how :meth:`metastore.store.Store.resolve` finds the image a
user means.  A reference is

- an imageId in any form Cornerstone resolves to the same image: the stored
  string; a ``wadouri:`` (or ``dicomweb:``) imageId without ``?frame=N``
  (frame 1, as the WADO-URI loader's ``dataSetCacheManager`` defaults) or
  with ``&frame=N``; a ``wadors:`` imageId without ``/frames/N`` (the base
  imageId Cornerstone 5 keeps an instance under); a file URI spelled
  otherwise (percent-encoding), found through its file's location;
- the path of an indexed file, or an archive member as ``a.zip!/member``,
  relative or absolute, as given on a command line (its location is
  spelled by :mod:`metastore.locations`); or a ``file:`` URI;
- a (0008,0018) SOP Instance UID.

Its statements are text, like the read path's, so a provider that re-roots
imageIds (``DatabaseProvider(url, wadors_root=...)``) never loads the schema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.errors import AmbiguousReferenceError, ImageNotFoundError
from metastore.locations import MEMBER_SEPARATOR, location_of, member_location
from metastore.store.encode import image_key, is_storable

if TYPE_CHECKING:
    from metastore.imageid import ImageId

__all__ = ["ImageRef", "image_id_for", "image_ids", "resolve"]


class ImageRef(NamedTuple):
    """The stored image a reference names (:meth:`Store.resolve`)."""

    #: The imageId as stored (what the store and its providers answer for).
    image_id: str
    #: (0008,0018) SOPInstanceUID of its instance.
    sop_instance_uid: str
    #: The 1-based frame number.
    frame: int


class _Instance(NamedTuple):
    id: int
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


#: A UID as PS3.5 9.1 spells it (digits and dots, at most 64 characters).
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")

_IMAGE_BY_ID = sa.text("""
SELECT n.sop_instance_uid, i.frame
  FROM images i
  JOIN image_id_prefixes p ON p.id = i.prefix_id
  JOIN instances n ON n.id = i.instance_id
 WHERE i.image_key = :key AND p.prefix || i.suffix = :image_id
""")

_INSTANCE_BY_SOP = sa.text("""
SELECT n.id, n.sop_instance_uid, s.series_instance_uid, st.study_instance_uid
  FROM instances n
  JOIN series s ON s.id = n.series_id
  JOIN studies st ON st.id = s.study_id
 WHERE n.sop_instance_uid = :sop
""")

_INSTANCES_AT = sa.text("""
SELECT n.id, n.sop_instance_uid, s.series_instance_uid, st.study_instance_uid
  FROM sources o
  JOIN instances n ON n.source_id = o.id
  JOIN series s ON s.id = n.series_id
  JOIN studies st ON st.id = s.study_id
 WHERE o.location IN :locations
 ORDER BY n.sop_instance_uid
""").bindparams(sa.bindparam("locations", expanding=True))

_ERRORS_AT = sa.text("""
SELECT location, kind, reason FROM index_errors
 WHERE location IN :locations ORDER BY id
""").bindparams(sa.bindparam("locations", expanding=True))

_FRAME = sa.text("""
SELECT p.prefix || i.suffix
  FROM images i
  JOIN image_id_prefixes p ON p.id = i.prefix_id
 WHERE i.instance_id = :id AND i.frame = :frame
""")

_IMAGE_IDS = sa.text("""
SELECT p.prefix || i.suffix
  FROM images i
  JOIN image_id_prefixes p ON p.id = i.prefix_id
  JOIN instances n ON n.id = i.instance_id
 WHERE n.sop_instance_uid = :sop
 ORDER BY i.frame
""")

_FRAMES = sa.text("SELECT min(frame), max(frame) FROM images WHERE instance_id = :id")


def resolve(conn: Connection, ref: str, frame: int | None = None) -> ImageRef:
    """The stored image ``ref`` names (see the module's docstring for the forms).

    Args:
        conn: a connection to the store.
        ref: an imageId, a file path or zip member location, a ``file:`` URI
            or a SOP Instance UID.
        frame: the 1-based frame; ``None`` means the frame ``ref`` names, or 1.

    Raises:
        InvalidImageIdError: ``ref`` has an imageId scheme but is malformed.
        AmbiguousReferenceError: ``ref`` names a frame other than ``frame``,
            or a file holding several instances, or both a stored file and
            another instance's SOP Instance UID.
        ImageNotFoundError: nothing stored answers to ``ref`` (the message
            says what was found instead, when something was).
        ValueError: ``frame`` is not a positive integer.
    """
    # imported here: a provider that only re-roots never needs the parser
    from metastore.imageid import SCHEMES, parse_image_id

    if frame is not None and (isinstance(frame, bool) or frame < 1):
        raise ValueError(f"a frame number must be an integer >= 1, not {frame!r}")
    scheme, colon, _ = ref.partition(":")
    if colon and scheme in SCHEMES:
        return _resolve_image_id(conn, parse_image_id(ref), frame)
    if colon and scheme.lower() == "file":
        # a bare file URI: the wadouri imageId of that file
        return _resolve_image_id(conn, parse_image_id(f"wadouri:{ref}"), frame)
    return _resolve_name(conn, ref, frame)


def image_id_for(
    conn: Connection,
    sop_instance_uid: str,
    frame: int,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> str | None:
    """The stored imageId of one frame of an instance, whatever its form.

    ``None`` when the instance is not stored, lies in another study or
    series than the UIDs given, or has no image for that frame.
    """
    instance = _instance_by_sop(conn, sop_instance_uid)
    if instance is None:
        return None
    if study_instance_uid not in (None, instance.study_instance_uid):
        return None
    if series_instance_uid not in (None, instance.series_instance_uid):
        return None
    return _frame_image_id(conn, instance.id, frame)


def image_ids(conn: Connection, sop_instance_uid: str) -> list[str]:
    """Every stored imageId of an instance, frame 1 first; ``[]`` if unknown."""
    if not is_storable(sop_instance_uid):
        return []  # never stored; and the driver could not send it
    rows = conn.execute(_IMAGE_IDS, {"sop": sop_instance_uid})
    return [str(row[0]) for row in rows]


def _resolve_image_id(conn: Connection, parsed: ImageId, frame: int | None) -> ImageRef:
    """An imageId: as stored, in another form of the same image, or its file."""
    from metastore.imageid import ImageId, file_location

    ref = parsed.raw
    if frame is not None and parsed.frame is not None and parsed.frame != frame:
        raise AmbiguousReferenceError(
            f"{ref!r} names frame {parsed.frame}, not frame {frame}"
        )
    want = frame or parsed.frame or 1
    forms = [ref] if parsed.frame == want else []
    scheme = "wadouri" if parsed.scheme == "dicomweb" else parsed.scheme
    # the canonical spelling of this frame: "/frames/N" or "?frame=N" last
    forms += [ImageId(scheme, parsed.url).with_frame(want)]
    for form in dict.fromkeys(forms):
        found = _image_by_id(conn, form)
        if found is not None:
            return found
    if parsed.scheme == "wadors" and parsed.sop_instance_uid is not None:
        _not_under_this_root(conn, parsed, want)
    elif scheme == "wadouri":
        try:
            path, member = file_location(parsed)
        except ValueError:
            pass  # not a local file: only its own spelling could be stored
        else:
            file = os.fspath(path)
            locations = [location_of(file)]
            if member is not None:
                locations = [member_location(location_of(file), member)]
            return _at_locations(conn, ref, locations, want, None)
    raise ImageNotFoundError(f"no image {ref!r} in the store")


def _not_under_this_root(conn: Connection, parsed: ImageId, frame: int) -> None:
    """Say what the store holds for a wadors imageId it does not know, if anything.

    A wadors imageId with the UIDs of a stored instance but another root
    is another server's image to Cornerstone: not the same image.  The
    message names the stored imageId and how to answer that root.
    """
    assert parsed.sop_instance_uid is not None
    stored = image_id_for(
        conn, parsed.sop_instance_uid, frame, parsed.study_uid, parsed.series_uid
    )
    if stored is not None:
        raise ImageNotFoundError(
            f"no image {parsed.raw!r} in the store: that instance's frame {frame} "
            f"is stored as {stored!r} (another DICOMweb root; "
            "DatabaseProvider(url, wadors_root=ROOT) answers a client's root)"
        )
    instance = _instance_by_sop(conn, parsed.sop_instance_uid)
    if instance is not None:
        _frame_image_id_or_raise(conn, instance, frame, parsed.raw)
        raise ImageNotFoundError(
            f"no image {parsed.raw!r} in the store: instance "
            f"{instance.sop_instance_uid} is stored in study "
            f"{instance.study_instance_uid}, series {instance.series_instance_uid}"
        )


def _resolve_name(conn: Connection, ref: str, frame: int | None) -> ImageRef:
    """A file path, an archive member (``a.zip!/m``) or a SOP Instance UID."""
    want = frame or 1
    by_uid = None
    if len(ref) <= 64 and _UID.fullmatch(ref):
        by_uid = _instance_by_sop(conn, ref)
    locations = _locations(ref)
    at = _instances_at(conn, locations)
    if by_uid is not None:
        if at and {i.id for i in at} != {by_uid.id}:
            raise AmbiguousReferenceError(
                f"{ref!r} is both the SOP Instance UID of a stored instance and a "
                "stored file holding another: give the file as ./" + ref
            )
        return _frame_ref(conn, by_uid, want, ref)
    return _at_locations(conn, ref, locations, want, at)


def _locations(ref: str) -> list[str]:
    """The locations a path given on a command line may be stored under.

    Absolute (as the indexer makes them), then resolved (the path may reach
    the file through another symlink than the indexed one).  With a ``!/``
    the text may also be an archive member.
    """
    found: list[str] = []
    for make in (os.path.abspath, os.path.realpath):
        found.append(location_of(make(ref)))
        archive, sep, member = ref.partition(MEMBER_SEPARATOR)
        if sep and archive and member:
            found.append(member_location(location_of(make(archive)), member))
    return [loc for loc in dict.fromkeys(found) if is_storable(loc)]


def _at_locations(
    conn: Connection,
    ref: str,
    locations: Sequence[str],
    frame: int,
    at: list[_Instance] | None,
) -> ImageRef:
    """The one instance stored from ``locations``; its ``frame``."""
    if at is None:
        at = _instances_at(conn, locations)
    if len(at) > 1:
        shown = ", ".join(i.sop_instance_uid for i in at[:3])
        more = ", ..." if len(at) > 3 else ""
        raise AmbiguousReferenceError(
            f"{ref} holds {len(at)} stored instances ({shown}{more}): name one "
            "by its SOP Instance UID"
        )
    if at:
        return _frame_ref(conn, at[0], frame, ref)
    errors = conn.execute(_ERRORS_AT, {"locations": list(locations)}).all()
    if errors:
        _, kind, reason = errors[0]
        raise ImageNotFoundError(f"{ref} was not stored ({kind}: {reason})")
    if os.path.exists(ref):
        raise ImageNotFoundError(
            f"{ref} is not in the store (not indexed, or not DICOM; "
            "metastore index indexes it)"
        )
    raise ImageNotFoundError(
        f"no imageId, indexed file or SOP Instance UID {ref!r} in the store"
    )


def _frame_ref(conn: Connection, instance: _Instance, frame: int, ref: str) -> ImageRef:
    image_id = _frame_image_id_or_raise(conn, instance, frame, ref)
    return ImageRef(image_id, instance.sop_instance_uid, frame)


def _frame_image_id_or_raise(
    conn: Connection, instance: _Instance, frame: int, ref: str
) -> str:
    image_id = _frame_image_id(conn, instance.id, frame)
    if image_id is not None:
        return image_id
    first, last = conn.execute(_FRAMES, {"id": instance.id}).one()
    has = "no image" if first is None else f"images for frames {first} to {last}"
    raise ImageNotFoundError(
        f"{ref}: no image for frame {frame} (instance {instance.sop_instance_uid} "
        f"has {has})"
    )


def _image_by_id(conn: Connection, image_id: str) -> ImageRef | None:
    if not is_storable(image_id):
        return None  # never stored; and the driver could not send it
    params = {"key": image_key(image_id), "image_id": image_id}
    row = conn.execute(_IMAGE_BY_ID, params).first()
    return None if row is None else ImageRef(image_id, row[0], row[1])


def _instance_by_sop(conn: Connection, sop_instance_uid: str) -> _Instance | None:
    if not is_storable(sop_instance_uid):
        return None
    row = conn.execute(_INSTANCE_BY_SOP, {"sop": sop_instance_uid}).first()
    return None if row is None else _Instance(*row)


def _instances_at(conn: Connection, locations: Sequence[str]) -> list[_Instance]:
    if not locations:
        return []
    rows = conn.execute(_INSTANCES_AT, {"locations": list(locations)})
    return list(dict.fromkeys(_Instance(*row) for row in rows))


def _frame_image_id(conn: Connection, instance_id: int, frame: int) -> str | None:
    row = conn.execute(_FRAME, {"id": instance_id, "frame": frame}).first()
    return None if row is None else str(row[0])
