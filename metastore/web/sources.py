"""Finding an instance's indexed source on disk, and checking it is the same.

The store records each instance's source (``sources.location``: a path, or
``archive.zip!/member``) with the size and modification time it had when it
was indexed.  Only those locations are ever opened here, and only while
they still have that size and time: a file that has been deleted, moved
or changed since is refused with a message, never served (its pixels could
belong to another image).  The file's own SOP Instance UID is checked too
by the callers (:mod:`metastore.web.pixels`).
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from metastore.index import HEAD_SIZE, Kind, sniff
from metastore.locations import MEMBER_SEPARATOR
from metastore.store import InstanceSource
from metastore.web.media import HTTPError

# U+FFFD escapes of metastore.index.discovery.location_of: "\ufffd\ufffd" is
# U+FFFD itself, "\ufffdXX" a byte that was not UTF-8, "\ufffduXXXX" another
# lone surrogate.
_ESCAPE = re.compile("\ufffd(?:(\ufffd)|u([0-9A-F]{4})|([0-9A-F]{2}))")


def path_of(location: str) -> str:
    """The file system path (text as ``os.fsdecode`` gives) of a location.

    The inverse of ``metastore.index.discovery.location_of``.
    """
    if "\ufffd" not in location:
        return location

    def unescape(match: re.Match[str]) -> str:
        if match.group(1):
            return "\ufffd"
        if match.group(2):
            return chr(int(match.group(2), 16))
        return chr(0xDC00 + int(match.group(3), 16))  # surrogateescape

    return _ESCAPE.sub(unescape, location)


def split_location(location: str) -> tuple[str, str | None]:
    """``(file path, zip member or None)`` of a stored location.

    A location is a plain file when that file exists; otherwise the first
    ``!/`` after which the part before it is a file names an archive member.
    """
    path = path_of(location)
    if os.path.isfile(path) or MEMBER_SEPARATOR not in location:
        return path, None
    start = 0
    while True:
        at = location.find(MEMBER_SEPARATOR, start)
        if at < 0:
            return path, None
        archive = path_of(location[:at])
        if os.path.isfile(archive):
            return archive, path_of(location[at + len(MEMBER_SEPARATOR) :])
        start = at + 1


def _missing(sop: str) -> HTTPError:
    return HTTPError(
        404,
        f"instance {sop}: its source was deleted or moved after it was "
        "indexed; run metastore index again",
    )


def _changed(sop: str) -> HTTPError:
    return HTTPError(
        410,
        f"instance {sop}: its source changed after it was indexed (size or "
        "modification time); run metastore index again",
    )


def check(sop: str, source: InstanceSource) -> tuple[str, str | None]:
    """The ``(path, member)`` of an instance's source, if it is unchanged.

    Raises:
        HTTPError: 404 when the file is gone, 410 when it is not the one
            indexed (another size or modification time).
    """
    path, member = split_location(source.location)
    try:
        st = os.stat(path)
    except OSError:
        raise _missing(sop) from None
    if not stat.S_ISREG(st.st_mode):
        raise _missing(sop)
    if st.st_size != source.size or st.st_mtime_ns != source.mtime_ns:
        raise _changed(sop)
    return path, member


@contextmanager
def open_source(sop: str, source: InstanceSource) -> Iterator[IO[bytes]]:
    """Open an instance's unchanged Part 10 source for reading (seekable).

    Raises:
        HTTPError: 404 for a missing source or one indexed from DICOM JSON
            (which holds no pixel data), 410 for a changed one.
    """
    path, member = check(sop, source)
    try:
        if member is None:
            with open(path, "rb") as fp:
                _check_kind(sop, fp)
                yield fp
            return
        with zipfile.ZipFile(path) as archive:
            try:
                opened = archive.open(member)
            except KeyError:
                raise _missing(sop) from None
            with opened as fp:
                _check_kind(sop, fp)
                yield fp
    except OSError:
        raise _missing(sop) from None
    except zipfile.BadZipFile:
        raise _changed(sop) from None


def _check_kind(sop: str, fp: IO[bytes]) -> None:
    """Refuse a source that is not a DICOM dataset (DICOM JSON, mostly)."""
    head = fp.read(HEAD_SIZE)
    fp.seek(0)
    kind = sniff(head, len(head))
    if kind is Kind.JSON:
        raise HTTPError(
            404,
            f"instance {sop} was indexed from DICOM JSON, which holds no "
            "pixel data or file to serve",
        )
    if kind not in (Kind.PART10, Kind.RAW):
        raise _changed(sop)
