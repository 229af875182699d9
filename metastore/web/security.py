"""Who may ask: access tokens, allowed Host names, read-only, the access log.

:class:`Guard` is the outermost ASGI layer of the app.  For every HTTP
request it checks, in order: the Host header (without a token, only the
loopback names and the bound host: a web page elsewhere cannot reach a
loopback server through DNS rebinding), the ``Authorization: Bearer``
token when one is set (compared in constant time), and the method (GET
and HEAD only: the server never writes).  Then it writes one access-log
line: method, path, status and milliseconds; never the query string
(patient names, IDs) nor any header.  :class:`SecretFilter` keeps the
token and the database password out of every log record.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The access log: one line per request.
access_log = logging.getLogger("metastore.web.access")
#: The server's own messages.
log = logging.getLogger("metastore.web")

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a Host header (port and IPv6 brackets taken off)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecretFilter(logging.Filter):
    """Replace secrets (a token, a database password) by ``***`` in records."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            text = text.replace(secret, "***")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "***")
        if text != message:
            record.msg, record.args = text, ()
        return True


def printable(text: str) -> str:
    """``text`` with control characters escaped (one log line stays one)."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Guard:
    """The checks and the access log around the whole app (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] | None,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._hosts = (
            None
            if allowed_hosts is None
            else frozenset(host_name(h) for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, send_and_note)
            else:
                await _plain(send_and_note, *refusal)
        finally:
            ms = (time.perf_counter() - start) * 1000
            path = printable(scope.get("path", ""))
            method = printable(scope.get("method", ""))
            access_log.info(
                "%s %s %d %.1f ms", method, path, status if sent else 500, ms
            )

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        headers = dict(scope.get("headers") or [])
        if self._hosts is not None:
            raw = headers.get(b"host", b"").decode("latin-1")
            if host_name(raw) not in self._hosts:
                return (
                    421,
                    f"host {printable(raw)[:100]!r} is not served here without "
                    "a token: use 127.0.0.1 or localhost, or start the server "
                    "with --token",
                    {},
                )
        if self._token is not None:
            given = headers.get(b"authorization", b"")
            scheme, _, credentials = given.partition(b" ")
            valid = scheme.lower() == b"bearer" and hmac.compare_digest(
                credentials.strip(), self._token
            )
            if not valid:
                return (
                    401,
                    "an access token is required: Authorization: Bearer <token>",
                    {"www-authenticate": 'Bearer realm="metastore"'},
                )
        if scope.get("method") not in ("GET", "HEAD"):
            return (
                405,
                "metastore serve is read-only: only GET and HEAD",
                {"allow": "GET, HEAD"},
            )
        return None


async def _plain(send: Send, status: int, text: str, headers: dict[str, str]) -> None:
    body = (text + "\n").encode()
    raw = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
