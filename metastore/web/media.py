"""Media types: Accept negotiation, multipart/related bodies, error answers.

Parsing follows RFC 9110 (media ranges with parameters and ``q``) and the
DICOMweb forms of PS3.18 §8.7: ``multipart/related; type="..."`` with an
optional ``transfer-syntax`` parameter, quoted or not (OHIF leaves the
quotes out).  Imports nothing from the rest of metastore.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

#: DICOM JSON (PS3.18 §8.7.3.5.2).
DICOM_JSON = "application/dicom+json"
#: Explicit VR Little Endian: the default transfer syntax of PS3.18 §8.7.3.
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class HTTPError(Exception):
    """An answer other than success: a status and a one-line message."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One entry of an Accept header."""

    #: ``type/subtype``, lower case (``*/*`` and ``type/*`` included).
    media_type: str
    #: Parameters by lower-case name, unquoted (``q`` left out).
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def inner_type(self) -> str | None:
        """The ``type`` parameter of a multipart range, lower case."""
        inner = self.params.get("type")
        return None if inner is None else inner.lower()

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter (``*`` or a UID), if given."""
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside double quotes."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out, escaped = [], False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (``q`` descending).

    No header, or an empty one, is ``*/*``.  Ranges with ``q=0`` are left
    out.  A malformed entry is skipped rather than failing the request.
    """
    if header is None or len(header) > 512:
        return _parse_accept(header)
    # a viewer sends the same few headers with every frame request
    return list(_parsed_accept(header))


@functools.lru_cache(maxsize=64)
def _parsed_accept(header: str) -> tuple[MediaRange, ...]:
    return tuple(_parse_accept(header))


def _parse_accept(header: str | None) -> list[MediaRange]:
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for entry in _split(header, ","):
        pieces = _split(entry, ";")
        media_type = pieces[0].strip().lower()
        if "/" not in media_type:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, sep, value = piece.partition("=")
            name = name.strip().lower()
            if not sep or not name:
                continue
            if name == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                continue
            params[name] = _unquote(value)
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
    ranges.sort(key=lambda r: -r.q)  # stable: equal q keeps the client's order
    return ranges


def accepts_json(header: str | None) -> bool:
    """Whether an Accept header allows DICOM JSON (or any JSON)."""
    for r in parse_accept(header):
        if r.media_type in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return True
    return False


def require_json(header: str | None) -> None:
    """Raise 406 unless the Accept header allows ``application/dicom+json``."""
    if not accepts_json(header):
        raise HTTPError(
            406,
            f"this resource is only available as {DICOM_JSON}; "
            f"the request accepts only {header!r}",
        )


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multipart/related body."""

    content_type: str
    data: bytes


def multipart(inner_type: str, parts: Iterable[Part]) -> tuple[bytes, str]:
    """A ``multipart/related`` body (RFC 2387) and its Content-Type.

    The boundary is 32 random hex digits, so it cannot be predicted from
    the data (and is vanishingly unlikely to occur in it).
    """
    boundary = secrets.token_hex(16)
    head = f"--{boundary}\r\n".encode()
    chunks: list[bytes] = []
    for part in parts:
        chunks += [
            head,
            f"Content-Type: {part.content_type}\r\n\r\n".encode(),
            part.data,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{inner_type}"; boundary={boundary}'
    return b"".join(chunks), content_type
