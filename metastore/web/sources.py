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
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from metastore.index import HEAD_SIZE, Kind, sniff
from metastore.locations import MEMBER_SEPARATOR
from metastore.store import InstanceSource, Store
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


class Stale(HTTPError):
    """The source is not the one recorded (gone, changed, another instance).

    When the record came from :class:`SourceCache`, the store may know the
    source's new state: the caller looks again before answering this.
    """


def _missing(sop: str) -> HTTPError:
    return Stale(
        404,
        f"instance {sop}: its source was deleted or moved after it was "
        "indexed; run metastore index again",
    )


def _changed(sop: str) -> HTTPError:
    return Stale(
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
def open_source(
    sop: str, source: InstanceSource, *, known: bool = False
) -> Iterator[IO[bytes]]:
    """Open an instance's unchanged Part 10 source for reading (seekable).

    ``known``: a file in this state (size, time) was already read as this
    instance, so its kind is not sniffed again.

    Raises:
        HTTPError: 404 for a missing source or one indexed from DICOM JSON
            (which holds no pixel data), 410 for a changed one.
    """
    path, member = check(sop, source)
    try:
        if member is None:
            with open(path, "rb") as fp:
                if not known:
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


class SourceCache:
    """Recently used series' instance sources, so a frame costs no query.

    A viewer asks for a series' frames one instance at a time; the first
    request of a series loads all of its sources in one statement
    (:meth:`Store.series_sources`), the others find theirs here.  A cached
    record is only a hint of where to look: every request still checks the
    file's size, modification time and SOP Instance UID (:func:`check`,
    :func:`metastore.web.pixels.layout`), and a record that fails them is
    dropped and looked up again (:class:`Stale`), so a re-indexed source
    is served from its new state at once.  A record is kept at most
    :attr:`ttl` seconds, which bounds how long an instance removed from the
    store while its file stays unchanged is still served.
    """

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        max_series: int = 64,
        max_instances: int = 100_000,
    ) -> None:
        self.ttl = ttl
        self.max_series = max_series
        self.max_instances = max_instances
        self._series: OrderedDict[
            tuple[str, str], tuple[float, dict[str, InstanceSource]]
        ] = OrderedDict()
        #: Series too large to cache whole: looked up an instance at a time.
        self._large: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def peek(self, study: str, series: str, sop: str) -> InstanceSource | None:
        """The cached source of ``sop``, or ``None``; never asks the store."""
        key = (study, series)
        with self._lock:
            entry = self._series.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry[0] > self.ttl:
                self._drop(key)
                return None
            self._series.move_to_end(key)
            return entry[1].get(sop)

    def find(
        self, store: Store, study: str, series: str, sop: str
    ) -> tuple[InstanceSource | None, bool]:
        """``(source or None, whether it came from the cache)``."""
        found = self.peek(study, series, sop)
        if found is not None:
            return found, True
        key = (study, series)
        with self._lock:
            large = self._large.get(key)
            if large is not None and time.monotonic() - large > self.ttl:
                del self._large[key]
                large = None
        if large is not None:
            one = store.instance_source(sop)
            if one is None or (one.study_instance_uid, one.series_instance_uid) != key:
                return None, False  # in another series: not here
            return one, False
        loaded = store.series_sources(study, series)
        with self._lock:
            self._drop(key)
            if len(loaded) > self.max_instances:
                self._large[key] = time.monotonic()
                while len(self._large) > self.max_series:
                    self._large.popitem(last=False)
            elif loaded:
                self._series[key] = (time.monotonic(), loaded)
                self._count += len(loaded)
                while (
                    len(self._series) > self.max_series
                    or self._count > self.max_instances
                ):
                    self._drop(next(iter(self._series)))
        return loaded.get(sop), False

    def forget(self, study: str, series: str) -> None:
        """Drop a series' records (one of them was found stale)."""
        with self._lock:
            self._drop((study, series))

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._series.pop(key, None)
        if entry is not None:
            self._count -= len(entry[1])
