"""Parsing and formatting of Cornerstone imageIds.

This module owns :class:`ImageId` and :func:`parse_image_id` for the
``wadors:``, ``wadouri:``, ``dicomweb:`` and ``dicomfile:`` forms, the classic
:func:`image_id_to_uri`, and the helpers that make the imageIds metastore
hands out (:func:`wadors_image_id`, :func:`file_image_id`, and the inverse
:func:`file_location`). It imports only :mod:`metastore.errors`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes, urlsplit

from metastore.errors import InvalidImageIdError

__all__ = [
    "SCHEMES",
    "FileUris",
    "ImageId",
    "base_and_frame",
    "check_wadors_root",
    "file_image_id",
    "file_location",
    "image_id_to_uri",
    "parse_image_id",
    "split_for_storage",
    "wadors_image_id",
]

#: The imageId schemes :func:`parse_image_id` understands.
SCHEMES = ("wadors", "wadouri", "dicomweb", "dicomfile")

# <root>/studies/S/series/SE/instances/I[/frames/N]; the greedy root makes the
# last "/studies/" the one that counts.
_WADORS = re.compile(
    r"(?P<url>(?P<root>.*)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)"
    r"/instances/(?P<sop>[^/]+))(?:/frames/(?P<frame>[^/]*))?",
    re.DOTALL,
)
# A frame query parameter, "?frame=N" or "&frame=N" (Cornerstone also accepts
# "&frame=" without a preceding "?": generateMultiframeWADOURIs makes those).
_FRAME_PARAM = re.compile(r"[?&]frame=([^&]*)")
_DIGITS = re.compile(r"[0-9]+")
# Between a file URI and a zip member path; "!" is always percent-encoded by
# Path.as_uri() and quote(), so "!/" cannot occur inside either part.
_MEMBER_SEP = "!/"


@dataclass(frozen=True, slots=True)
class ImageId:
    """One parsed imageId.

    Attributes:
        scheme: ``"wadors"``, ``"wadouri"``, ``"dicomweb"`` or ``"dicomfile"``.
        url: The imageId without its scheme and without its frame part
            (``/frames/N`` or the last ``frame=N`` query parameter).
        frame: The 1-based frame number, or ``None`` when the imageId has none.
        study_uid: StudyInstanceUID (wadors only, else ``None``).
        series_uid: SeriesInstanceUID (wadors only, else ``None``).
        sop_instance_uid: SOPInstanceUID (wadors only, else ``None``).
        raw: The imageId string as given; ``str(image_id)`` returns it.
    """

    scheme: str
    url: str
    frame: int | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    raw: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        """Fill ``raw`` with the canonical string when it was not given."""
        if not self.raw:
            raw = self.base if self.frame is None else self.with_frame(self.frame)
            object.__setattr__(self, "raw", raw)

    @property
    def base(self) -> str:
        """The imageId without its frame part (Cornerstone's base imageId)."""
        return f"{self.scheme}:{self.url}"

    def with_frame(self, frame: int) -> str:
        """Return the imageId of frame ``frame`` of the same instance.

        Args:
            frame: A 1-based frame number.

        Returns:
            ``base + "/frames/N"`` for wadors, else ``base`` plus a ``frame=N``
            query parameter (``?`` or ``&`` as the url needs).

        Raises:
            ValueError: ``frame`` is not a positive integer.
        """
        _check_frame(frame)
        if self.scheme == "wadors":
            return f"{self.base}/frames/{frame}"
        sep = "&" if "?" in self.url else "?"
        return f"{self.base}{sep}frame={frame}"

    def __str__(self) -> str:
        """Return the original imageId string."""
        return self.raw


def _check_frame(frame: object) -> None:
    """Reject a frame number that is not a positive ``int``."""
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
        raise ValueError(f"A frame number must be an integer >= 1, not {frame!r}.")


def _frame_number(image_id: str, text: str) -> int:
    """Parse the text of a frame number, which must be a positive integer."""
    if not _DIGITS.fullmatch(text) or int(text) < 1:
        raise InvalidImageIdError(image_id, f"frame {text!r} is not a positive integer")
    return int(text)


def _split_frame_param(image_id: str, url: str) -> tuple[str, int | None]:
    """Remove the last ``frame=`` query parameter from ``url``.

    Returns the url without it (other parameters kept, in order) and the frame.
    """
    last = None
    for last in _FRAME_PARAM.finditer(url):  # noqa: B007
        pass
    if last is None:
        return url, None
    frame = _frame_number(image_id, last.group(1))
    head, tail = url[: last.start()], url[last.end() :]
    if last.group(0).startswith("?") and tail.startswith("&"):
        # "x?frame=2&a=1" -> "x?a=1": the next parameter inherits the "?".
        tail = "?" + tail[1:]
    return head + tail, frame


@lru_cache(maxsize=65536)
def _parse(image_id: str) -> ImageId:
    """Parse a string imageId (cached: imageIds repeat across module types)."""
    scheme, sep, rest = image_id.partition(":")
    if not sep:
        raise InvalidImageIdError(image_id, "no scheme")
    if scheme not in SCHEMES:
        raise InvalidImageIdError(
            image_id, f"unknown scheme {scheme!r} (expected one of {SCHEMES})"
        )
    if scheme == "wadors":
        m = _WADORS.fullmatch(rest)
        if m is None:
            raise InvalidImageIdError(
                image_id,
                "a wadors imageId needs <root>/studies/S/series/SE/instances/I"
                "[/frames/N]",
            )
        frame_text = m.group("frame")
        frame = None if frame_text is None else _frame_number(image_id, frame_text)
        return ImageId(
            scheme=scheme,
            url=m.group("url"),
            frame=frame,
            study_uid=m.group("study"),
            series_uid=m.group("series"),
            sop_instance_uid=m.group("sop"),
            raw=image_id,
        )
    url, frame = _split_frame_param(image_id, rest)
    if not url:
        raise InvalidImageIdError(image_id, f"empty {scheme} location")
    return ImageId(scheme=scheme, url=url, frame=frame, raw=image_id)


def parse_image_id(image_id: str) -> ImageId:
    """Parse an imageId into its scheme, url, frame and (wadors) UIDs.

    Accepted forms:

    * ``wadors:<root>/studies/S/series/SE/instances/I[/frames/N]``
    * ``wadouri:<url>`` and ``dicomweb:<url>`` (a deprecated alias), with an
      optional ``?frame=N`` / ``&frame=N``; when several ``frame=`` parameters
      are present only the last one counts, and the others stay in ``url``.
    * ``dicomfile:<index or path>``, with an optional ``?frame=N``.

    Args:
        image_id: The imageId string.

    Returns:
        The parsed :class:`ImageId`; ``str()`` of it is ``image_id``.

    Raises:
        InvalidImageIdError: ``image_id`` is not a non-empty string, has an
            unknown scheme, a frame that is not a positive integer, an empty
            location, or (wadors) lacks ``/studies/.../instances/...``.
    """
    if not isinstance(image_id, str):
        raise InvalidImageIdError(image_id, "not a string")
    if not image_id:
        raise InvalidImageIdError(image_id, "empty")
    return _parse(image_id)


def base_and_frame(image_id: str) -> tuple[str, int]:
    """``(base imageId, frame or 1)`` as :func:`parse_image_id` gives them.

    An imageId the parser refuses is its own base, frame 1.  The wadors
    imageIds the indexer makes are split without the parser (a regular
    expression and a dataclass: ~6 us, most of the cost of sorting a series
    by it): the fast path answers only when the parser would match the same
    parts, else it asks the parser.
    """
    if image_id.startswith("wadors:"):
        # <root>/studies/S/series/SE/instances/I/frames/N, N a positive
        # ASCII number; S, SE, I non-empty and without "/" (as _WADORS).
        head, sep, frame = image_id.rpartition("/frames/")
        if sep and frame.isascii() and frame.isdigit() and int(frame) >= 1:
            parts = head.rsplit("/", 6)
            if (
                len(parts) == 7
                and parts[1] == "studies"
                and parts[3] == "series"
                and parts[5] == "instances"
                and parts[2]
                and parts[4]
                and parts[6]
            ):
                return head, int(frame)
    try:
        parsed = parse_image_id(image_id)
    except InvalidImageIdError:
        return image_id, 1
    return parsed.base, parsed.frame or 1


def split_for_storage(image_id: str) -> tuple[str, str]:
    """Split an imageId into the prefix many images share and the rest.

    The store keeps the prefix once (``image_id_prefixes``) and the rest per
    image.  A wadors imageId splits after its last ``/instances/`` (scheme,
    root, study and series are the prefix: for one :func:`parse_image_id`
    accepts, the rest is its SOP Instance UID and frame part); any other
    string after the last ``/`` before its query (a folder's or an
    archive's URI).  Any string splits, ``prefix + rest == image_id``, and
    the rule is part of the stored format: it must not change.
    """
    marker = image_id.rfind("/instances/")
    if marker >= 0:
        cut = marker + len("/instances/")
    else:
        query = image_id.find("?")
        cut = image_id.rfind("/", 0, query if query >= 0 else len(image_id)) + 1
    return image_id[:cut], image_id[cut:]


def image_id_to_uri(image_id: str) -> str:
    """Return everything after the first ``:`` (classic ``imageIdToURI``).

    Args:
        image_id: Any imageId.

    Returns:
        ``image_id`` without its scheme; unchanged when it has no colon. So
        ``"wadors:X"`` and ``"X"`` give the same key.
    """
    _, sep, rest = image_id.partition(":")
    return rest if sep else image_id


def wadors_image_id(
    root: str, study_uid: str, series_uid: str, sop_instance_uid: str, frame: int
) -> str:
    """Format a frame's WADO-RS imageId.

    Args:
        root: The DICOMweb root URL (one trailing ``/`` is dropped).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_instance_uid: SOPInstanceUID.
        frame: The 1-based frame number.

    Returns:
        ``wadors:<root>/studies/S/series/SE/instances/I/frames/N``.

    Raises:
        ValueError: A UID is empty or contains ``/``, or ``frame`` is not a
            positive integer.
    """
    for name, uid in (
        ("study_uid", study_uid),
        ("series_uid", series_uid),
        ("sop_instance_uid", sop_instance_uid),
    ):
        if not uid or "/" in uid:
            raise ValueError(f"{name} must be non-empty without '/', not {uid!r}.")
    _check_frame(frame)
    root = root.removesuffix("/")
    return (
        f"wadors:{root}/studies/{study_uid}/series/{series_uid}"
        f"/instances/{sop_instance_uid}/frames/{frame}"
    )


def check_wadors_root(root: str) -> str:
    """Check a DICOMweb root that ``wadors:`` imageIds are made under.

    Every imageId and BulkDataURI of an indexing run starts with it, so it
    must be what a viewer can fetch: an ``http`` or ``https`` URL with a
    host, without credentials (``user:password@`` would sit in every
    imageId), a query or a fragment (the imageId's path follows the root),
    and without spaces or control characters.

    Args:
        root: The root, e.g. ``https://pacs/dicomweb``.

    Returns:
        ``root`` unchanged.

    Raises:
        ValueError: ``root`` is none of that; the message names it (its
            credentials hidden).
    """
    parts = urlsplit(root)
    # shown without what may be a secret: credentials, a query (a token?)
    shown = root
    if "@" in parts.netloc:
        shown = root.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
    for mark in "?#":
        head, sep, _ = shown.partition(mark)
        shown = head + sep + ("***" if sep else "")
    problem = None
    if parts.scheme.lower() not in ("http", "https"):
        problem = "is not an http:// or https:// URL"
    elif "@" in parts.netloc:
        problem = "holds credentials (user:password@), which would be in every imageId"
    elif not parts.hostname:
        problem = "has no host"
    elif "?" in root or "#" in root:
        problem = "has a query or fragment (the imageId's path follows the root)"
    elif any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in root):
        problem = "contains a space or a control character"
    else:
        try:
            parts.port  # noqa: B018 - raises for a port that is no number
        except ValueError:
            problem = "has a port that is not a number from 0 to 65535"
    if problem is not None:
        raise ValueError(f"DICOMweb root {shown!r} {problem}")
    return root


def file_image_id(path: Path | str, frame: int, member: str | None = None) -> str:
    """Format the imageId of a frame of a local Part 10 file or zip member.

    Args:
        path: The file (or the zip archive holding ``member``); made absolute
            with :meth:`pathlib.Path.resolve`.
        frame: The 1-based frame number.
        member: The path of the file inside the archive, if any.

    Returns:
        ``wadouri:`` + the file's ``file://`` URI (RFC 8089, percent-encoded)
        + ``!/`` + the percent-encoded member path (if ``member``) +
        ``?frame=N``.

    Raises:
        ValueError: ``frame`` is not a positive integer, or ``member`` is empty.
    """
    _check_frame(frame)
    return _file_image_id(Path(path).resolve().as_uri(), frame, member)


def _file_image_id(uri: str, frame: int, member: str | None) -> str:
    """:func:`file_image_id` of the file whose resolved ``file://`` URI is ``uri``."""
    if member is not None:
        if not member:
            raise ValueError("A zip member path cannot be empty.")
        uri += _MEMBER_SEP + quote(member, safe="/")
    return f"wadouri:{uri}?frame={frame}"


class FileUris:
    """:func:`file_image_id` for many files, resolving each folder once.

    ``Path.resolve()`` walks every component of a path with a system call
    each; files of one folder share all but the last one.  A file that is
    itself a symlink is resolved in full.  The cache never expires, so keep
    one per indexing run (folders may be re-linked between runs).
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def image_id(self, path: str, frame: int, member: str | None = None) -> str:
        """``file_image_id(path, frame, member)`` for an absolute ``path``."""
        _check_frame(frame)
        return _file_image_id(self.uri(path), frame, member)

    def uri(self, path: str) -> str:
        """``Path(path).resolve().as_uri()`` for an absolute, normalised ``path``."""
        folder, name = os.path.split(path)
        if os.name == "nt" or not name or name in (".", "..") or os.path.islink(path):
            return Path(path).resolve().as_uri()
        prefix = self._folders.get(folder)
        if prefix is None:
            prefix = Path(folder).resolve().as_uri()
            if not prefix.endswith("/"):
                prefix += "/"
            self._folders[folder] = prefix
        # as_uri() quotes the bytes of the path one by one, so quoting the
        # name on its own gives the same text as quoting the whole path
        return prefix + quote_from_bytes(os.fsencode(name))


def file_location(image_id: str | ImageId) -> tuple[Path, str | None]:
    """Return the file (and zip member) of an imageId made by :func:`file_image_id`.

    Args:
        image_id: A ``wadouri:file://...`` (or ``dicomweb:``) imageId.

    Returns:
        ``(path, member)``: the absolute file path, and the member path inside
        the archive or ``None``.

    Raises:
        InvalidImageIdError: The imageId is not a local ``file:`` URI.
    """
    parsed = image_id if isinstance(image_id, ImageId) else parse_image_id(image_id)
    if parsed.scheme not in ("wadouri", "dicomweb"):
        raise InvalidImageIdError(parsed.raw, "not a wadouri file imageId")
    parts = urlsplit(parsed.url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise InvalidImageIdError(parsed.raw, "not a local file: URI")
    if parts.query or parts.fragment:
        raise InvalidImageIdError(parsed.raw, "unexpected query or fragment")
    file_part, sep, member_part = parts.path.partition(_MEMBER_SEP)
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        # imported here: urllib.request loads http.client and email (~10 ms
        # of every `metastore get`), for a function POSIX never calls
        from urllib.request import url2pathname

        path = Path(url2pathname(file_part))
    else:
        # as_uri() percent-encodes os.fsencode(path); invert exactly that.
        path = Path(os.fsdecode(unquote_to_bytes(file_part)))
    member = unquote(member_part) if sep else None
    return path, member
