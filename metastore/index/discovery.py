"""Finding sources to index and telling what they are by their content.

Walks the paths given to ``metastore index`` (files, folders recursively in
sorted order with symlink loops cut, zip archives listed member by member)
and yields one :class:`Entry` per candidate source.  :func:`sniff` tells
Part 10, raw (preamble-less) datasets, DICOM JSON and zip archives apart by
their first bytes, never by file name.  Imports only ``metastore.records``,
``metastore.locations`` and the VR table of ``metastore.dicomjson``.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import stat
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from metastore.dicomjson import LONG_VRS
from metastore.locations import location_of, member_location
from metastore.records import ErrorRecord, Source

#: How many leading bytes :func:`sniff` looks at.
HEAD_SIZE = 4096

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# A DICOM JSON object key with its value: `"00100010": {`.
_DICOM_JSON_KEY = re.compile(rb'"[0-9A-Fa-f]{8}"\s*:\s*\{')
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
    b"TM UC UI UL UN UR US UT UV".split()
)
_LONG_VRS = frozenset(vr.encode() for vr in LONG_VRS)


class Kind(enum.Enum):
    """What the first bytes of a source say it is."""

    PART10 = "part10"  # 128-byte preamble + "DICM"
    RAW = "raw"  # a dataset without preamble (old Part 10 writers, ACR-NEMA)
    JSON = "json"  # starts with `[` or `{`: maybe DICOM JSON
    ZIP = "zip"
    EMPTY = "empty"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Entry:
    """One candidate source: a file, or one member of a zip archive."""

    #: What the store keeps about where the instance came from.
    source: Source
    #: Absolute path of the file, or of the archive for a member.
    path: str
    #: Member name inside the archive, or ``None`` for a plain file.
    member: str | None = None
    #: How many earlier members of the archive have the same name; only
    #: this last one can be read by that name (:func:`shadowed_error`).
    shadowed: int = 0


def sniff(head: bytes, size: int) -> Kind:
    """Tell what a source is from its first bytes.

    Args:
        head: The first bytes of the source (up to :data:`HEAD_SIZE`).
        size: The source's full size in bytes.

    Returns:
        The kind; ``Kind.OTHER`` for anything that is not DICOM, DICOM JSON or
        a zip archive.
    """
    if not head:
        return Kind.EMPTY
    # DICM first: a Part 10 preamble may itself hold a zip or TIFF header.
    if head[128:132] == b"DICM":
        return Kind.PART10
    if is_zip(head):
        return Kind.ZIP
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"[", b"{"):
        return Kind.JSON
    if _looks_like_raw_dataset(head, size):
        return Kind.RAW
    return Kind.OTHER


def is_zip(head: bytes) -> bool:
    """Return whether a source's first bytes are a zip archive's (and not DICOM's)."""
    return head[128:132] != b"DICM" and head.startswith(_ZIP_MAGIC)


def looks_like_dicom_json(head: bytes) -> bool:
    """Return whether JSON text starts like DICOM JSON (a tag key, an object)."""
    return _DICOM_JSON_KEY.search(head) is not None


def _looks_like_raw_dataset(head: bytes, size: int) -> bool:
    """Return whether ``head`` starts with plausible data element headers.

    pydicom reads any bytes with ``force=True`` and returns one garbage
    element, so a preamble-less dataset is accepted only if it starts with
    group 0002 or 0008 and its first elements have known VRs (or implicit
    lengths), ascending tags and lengths that fit in the file.
    """
    for little, explicit in ((True, True), (True, False), (False, True)):
        if _plausible_elements(head, size, little=little, explicit=explicit):
            return True
    return False


def _plausible_elements(
    head: bytes, size: int, *, little: bool, explicit: bool
) -> bool:
    order = "<" if little else ">"
    pos, seen, last_tag = 0, 0, -1
    while seen < 3:
        if pos == size and seen >= 1:
            return True  # a tiny dataset that ends cleanly
        if pos + 8 > len(head):
            return seen >= 2
        group, element = struct.unpack_from(order + "HH", head, pos)
        tag = group << 16 | element
        if seen == 0 and group not in (0x0002, 0x0008):
            return False
        if tag <= last_tag or group % 2:
            return False
        if explicit:
            vr = head[pos + 4 : pos + 6]
            if vr not in _VRS:
                return False
            if vr in _LONG_VRS:
                if head[pos + 6 : pos + 8] != b"\0\0" or pos + 12 > len(head):
                    return False
                (length,) = struct.unpack_from(order + "L", head, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(order + "H", head, pos + 6)
                pos += 8
        else:
            (length,) = struct.unpack_from(order + "L", head, pos + 4)
            pos += 8
        if length == 0xFFFFFFFF:
            return seen >= 1  # a sequence of undefined length: stop looking here
        pos += length
        if pos > size:
            return False
        last_tag, seen = tag, seen + 1
    return True


def read_head(path: str, size: int = HEAD_SIZE) -> bytes:
    """Return the first ``size`` bytes of a file."""
    # os.read, not open(): no buffered file object for a few bytes (half the
    # CPU; discovery reads the head of every file in the main process)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        head = b""
        while len(head) < size:
            more = os.read(fd, size - len(head))
            if not more:
                break
            head += more
        return head
    finally:
        os.close(fd)


def discover(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Entry | ErrorRecord]:
    """Yield every candidate source under ``paths``, in a deterministic order.

    Folders are walked recursively in name order (symlinked folders are
    followed, each real folder once, so loops end); zip archives, found by
    content, are listed member by member in name order and never extracted.
    Everything else is yielded as an :class:`Entry` for a reader to sniff.

    Args:
        paths: Files, folders and zip archives, in the order to index them.

    Yields:
        An :class:`Entry` per candidate source, or an :class:`ErrorRecord`
        (kind ``"unreadable"``) for a path, folder or archive that cannot be
        read.
    """
    visited: set[tuple[int, int]] = set()
    for path in distinct_paths(paths):
        try:
            st = os.stat(path)
        except OSError as exc:
            yield ErrorRecord(location_of(path), "unreadable", _os_reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path, st, visited)
        elif stat.S_ISREG(st.st_mode):
            yield from _file(path, st)


def distinct_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The absolute paths of ``paths``, each once, less those inside a folder given.

    A file named twice, or a file or folder inside a folder that is given
    too, would otherwise be read, stored and counted more than once.  The
    first of equal paths keeps its place.
    """
    given = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    folders = {p for p in given if os.path.isdir(p)}
    return [p for p in given if not _inside(p, folders)]


def _inside(path: str, folders: set[str]) -> bool:
    """Whether a parent folder of ``path`` (an absolute path) is in ``folders``."""
    parent = os.path.dirname(path)
    while parent != path:
        if parent in folders:
            return True
        path, parent = parent, os.path.dirname(parent)
    return False


def _walk(
    folder: str, st: os.stat_result, visited: set[tuple[int, int]]
) -> Iterator[Entry | ErrorRecord]:
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return  # a symlink loop, or a folder reached twice
    visited.add(key)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield ErrorRecord(location_of(folder), "unreadable", _os_reason(exc))
        return
    for entry in entries:
        try:
            est = entry.stat()  # follows symlinks
        except OSError as exc:
            if exc.errno in _GONE:
                continue  # a dangling symlink, or deleted since: nothing to read
            if exc.errno in _DENIED and not _enterable(folder):
                # listed, but not entered (no search permission): one error
                # for the folder, and everything stored under it is kept
                why = f"cannot enter the folder: {_os_reason(exc)}"
                yield ErrorRecord(location_of(folder), "unreadable", why)
                return
            # a file or folder that exists but cannot be looked at: kept
            yield ErrorRecord(location_of(entry.path), "unreadable", _os_reason(exc))
            continue
        if stat.S_ISDIR(est.st_mode):
            yield from _walk(entry.path, est, visited)
        elif stat.S_ISREG(est.st_mode):
            yield from _file(entry.path, est)


#: ``stat`` errors of an entry that is not there (to read or to keep).
_GONE = frozenset((errno.ENOENT, errno.ELOOP))
#: ``stat`` errors of an entry that is there but may not be looked at.
_DENIED = frozenset((errno.EACCES, errno.EPERM))


def _enterable(folder: str) -> bool:
    """Whether names inside ``folder`` can be looked up (search permission)."""
    try:
        os.stat(os.path.join(folder, os.curdir))
    except OSError as exc:
        return exc.errno not in _DENIED
    return True


def _file(path: str, st: os.stat_result) -> Iterator[Entry | ErrorRecord]:
    source = Source(location_of(path), st.st_size, st.st_mtime_ns)
    try:
        head = read_head(path, 132) if st.st_size else b""
    except OSError as exc:
        yield ErrorRecord(source.location, "unreadable", _os_reason(exc))
        return
    if is_zip(head):
        yield from _members(source, path)
    else:
        yield Entry(source, path)


def _members(archive: Source, path: str) -> Iterator[Entry | ErrorRecord]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = Counter(i.filename for i in zf.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        # strerror, not str(exc): that names the path, maybe not as UTF-8
        why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        reason = f"bad zip archive: {why}"
        yield ErrorRecord(archive.location, "unreadable", reason)
        return
    for name, count in sorted(names.items()):
        location = member_location(archive.location, name)
        source = Source(location, archive.size, archive.mtime_ns)
        yield Entry(source, path, name, shadowed=count - 1)


def shadowed_error(entry: Entry) -> ErrorRecord:
    """The error for the members ``entry``'s name hides (``Entry.shadowed``).

    A member is read, and named in its imageId, by its name, which gives the
    last member of that name, as unzip and zip libraries do; the earlier
    ones cannot be addressed, so they are reported rather than dropped
    silently.
    """
    others = "another member" if entry.shadowed == 1 else f"{entry.shadowed} others"
    reason = (
        f"the archive holds {others} named {entry.member!r} before this one: "
        "only the last of that name is indexed"
    )
    return ErrorRecord(entry.source.location, "unreadable", reason)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def count_files(
    paths: Iterable[str | os.PathLike[str]],
    owns: Callable[[str], bool] | None = None,
) -> int:
    """A quick count of the sources under ``paths``, for a progress total.

    Walks as :func:`discover` does (sorted, symlink loops cut) but opens
    nothing except zip archives, recognised here by their ``.zip`` name
    (discovery goes by content) and counted by their members; a file that
    cannot be looked at, or a damaged archive, counts as one.  With
    ``owns``, only the locations it accepts count (a ``--shard``).
    """
    count = 0
    visited: set[tuple[int, int]] = set()
    for given in paths:
        top = os.path.abspath(os.fspath(given))
        stack = [top]
        while stack:
            path = stack.pop()
            try:
                st = os.stat(path)
            except OSError as exc:  # discovery skips what is gone, reports the rest
                if exc.errno not in _GONE:
                    count += _owned(location_of(path), owns)
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in visited:
                    continue
                visited.add((st.st_dev, st.st_ino))
                try:
                    with os.scandir(path) as it:
                        names = sorted((e.path for e in it), reverse=True)
                except OSError:
                    count += 1
                    continue
                stack.extend(names)
            elif stat.S_ISREG(st.st_mode):
                count += _count_file(path, owns)
    return count


def _count_file(path: str, owns: Callable[[str], bool] | None) -> int:
    location = location_of(path)
    if path.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = {i.filename for i in zf.infolist() if not i.is_dir()}
        except (OSError, zipfile.BadZipFile, ValueError):
            return _owned(location, owns)
        return sum(_owned(member_location(location, name), owns) for name in names)
    return _owned(location, owns)


def _owned(location: str, owns: Callable[[str], bool] | None) -> int:
    return 1 if owns is None or owns(location) else 0
