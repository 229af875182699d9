"""Locations: how a source (file, or member of a zip archive) is named in the store.

Owns the one spelling of a source's location, the text stored for it and
shown in reports: :func:`location_of` for a file system path,
:func:`member_location` for an archive member (``/abs/a.zip!/dir/b.dcm``),
and :func:`legacy_location`, the spelling of older versions.  A leaf: it
imports nothing from metastore, so discovery, the store and the CLI all
share it.
"""

from __future__ import annotations

import os
import re

__all__ = ["MEMBER_SEPARATOR", "legacy_location", "location_of", "member_location"]

#: Joins an archive path and a member name in a location (``a.zip!/b/c.dcm``).
MEMBER_SEPARATOR = "!/"


def member_location(archive: str, member: str) -> str:
    """Return the location of an archive member: ``/abs/a.zip!/dir/b.dcm``.

    ``archive`` is a location already (:func:`location_of`), so it holds no
    ``!/``: the first ``!/`` of a location is always this separator.  The
    member name is escaped as text (:func:`location_of`'s U+FFFD escapes),
    but its ``!`` are left alone: whatever follows the separator is the
    member's.
    """
    return f"{archive}{MEMBER_SEPARATOR}{_escaped(member, _NEEDS_ESCAPE)}"


# U+FFFD, the escape character, and the lone surrogates it escapes.
_NEEDS_ESCAPE = re.compile("[\ufffd\ud800-\udfff]")
# ... and, in a path, a "!" that ends a file or folder name: "a.zip!/b.dcm"
# would otherwise read as member b.dcm of a.zip (see location_of).
_SEPARATORS = re.escape("".join(dict.fromkeys(("/", os.sep))))
_PATH_NEEDS_ESCAPE = re.compile(f"[\ufffd\ud800-\udfff]|!(?=[{_SEPARATORS}]|\\Z)")


def location_of(path: str) -> str:
    """The location (stored text) of a file system path.

    A POSIX file name is bytes; Python hands the bytes that are not UTF-8
    over as lone surrogates (``os.fsdecode``'s surrogateescape), which no
    database text column can hold and no UTF-8 stream can print.  Each such
    byte becomes U+FFFD followed by its two hex digits (the byte 0xFF of
    ``bad?.dcm`` gives ``bad`` U+FFFD ``FF.dcm``), any other lone surrogate
    U+FFFD, ``u`` and four hex digits, and a real U+FFFD is doubled.

    A ``!`` that ends a file or folder name is written U+FFFD ``21`` (its
    byte, like the escapes above), so that no path holds ``!/``: the folder
    ``a.zip!`` holding ``b.dcm`` is ``a.zip`` U+FFFD ``21/b.dcm``, never
    ``a.zip!/b.dcm``, the location of member ``b.dcm`` of the archive
    ``a.zip`` (:func:`member_location`).  A ``!`` anywhere else stays.

    Distinct paths keep distinct locations, and a UTF-8 path without a name
    ending in ``!`` is its own location.  Locations stored before names
    ending in ``!`` were escaped are converted as their sources are indexed
    again (:func:`legacy_location`).
    """
    return _escaped(path, _PATH_NEEDS_ESCAPE)


def _escaped(text: str, needs: re.Pattern[str]) -> str:
    if needs.search(text) is None:
        return text
    return needs.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x21:  # "!" ending a name
        return "\ufffd21"
    if code == 0xFFFD:
        return "\ufffd\ufffd"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\ufffd{code - 0xDC00:02X}"
    return f"\ufffdu{code:04X}"


# An escape of location_of: U+FFFD and a doubled U+FFFD,
# "u" and four hex digits, or two hex digits (a byte; 21 is a "!" that ends
# a file or folder name, the only escape older locations did not make).
_ESCAPE_TOKEN = re.compile("\ufffd(\ufffd|u[0-9A-F]{4}|[0-9A-F]{2})")
_BANG = "\ufffd21"


def legacy_location(location: str) -> str | None:
    """How ``location`` was spelled before names ending in ``!`` were escaped.

    ``location_of`` writes a ``!`` that ends a file or
    folder name as U+FFFD ``21``, so that ``!/`` only ever separates an
    archive from its member.  Older versions wrote it as it is, so the
    folder ``a.zip!`` holding ``b.dcm`` and the member ``b.dcm`` of
    ``a.zip`` shared the location ``a.zip!/b.dcm``.  Returns that older
    spelling, or ``None`` when it is the same as ``location`` (the case of
    every location without such a name).
    """
    if _BANG not in location:
        return None
    old = _ESCAPE_TOKEN.sub(_unbang, location)
    return None if old == location else old


def _unbang(match: re.Match[str]) -> str:
    return "!" if match.group(1) == "21" else match.group(0)
