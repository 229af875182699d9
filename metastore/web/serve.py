"""Running the app with uvicorn: what ``metastore serve`` does.

Binding policy: a loopback address serves anyone on this machine; any
other address needs a token (``--token`` / ``METASTORE_TOKEN``) or an
explicit ``--insecure``, which prints a warning.  Logging goes to stderr,
one access line per request, with the token and the database password
filtered out of every record.
"""

from __future__ import annotations

import logging
import socket
import sys

from metastore.errors import MetastoreError
from metastore.store import Store
from metastore.store.db import redact, require_database, secrets
from metastore.web.app import PREFIX, create_app
from metastore.web.security import LOOPBACK_NAMES, SecretFilter, is_loopback, log


class ServeError(MetastoreError):
    """The server cannot start as asked (unsafe binding, no database)."""


def check_binding(host: str, token: str | None, insecure: bool) -> None:
    """Refuse a non-loopback address without a token or ``--insecure``."""
    if is_loopback(host) or token or insecure:
        return
    raise ServeError(
        f"--host {host} is reachable from other machines: give an access token "
        "(--token or METASTORE_TOKEN; clients send Authorization: Bearer "
        "TOKEN), or --insecure to serve without one"
    )


def _note_stale(store: Store) -> None:
    """One log line when the store holds answers of an older mapping.

    What is served (DICOM JSON, frames) does not depend on them, but the
    store's module answers do: say how to bring them up to date.
    """
    from metastore.index import stale_instances

    stale = stale_instances(store)
    if stale:
        log.warning(
            "%d instances hold answers of an older metastore mapping: "
            "metastore reindex brings them up to date",
            stale,
        )


def run(
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8042,
    token: str | None = None,
    insecure: bool = False,
) -> None:
    """Serve the store at ``url`` until interrupted.

    Raises:
        ServeError: unsafe binding (before anything starts).
        DatabaseNotFoundError: the SQLite file does not exist, or the
            database is empty (before anything starts).
    """
    import uvicorn

    check_binding(host, token, insecure)
    # a SQLite file that does not exist is an error, not a new database
    require_database(url)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.addFilter(SecretFilter([token, *secrets(url)]))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if not is_loopback(host) and not token:
        log.warning(
            "WARNING: serving %s without an access token (--insecure): anyone "
            "who can reach this machine can read every study",
            host,
        )
    allowed = None if token or insecure else {*LOOPBACK_NAMES, host}
    app = create_app(url, token=token, allowed_hosts=allowed)
    _note_stale(app.state.store)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)  # clients queue from now on, before uvicorn runs
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "metastore serve: %s at http://%s:%d%s",
        redact(url),
        shown,
        bound,
        PREFIX,
    )
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", server_header=False
    )
    uvicorn.Server(config).run(sockets=[sock])
