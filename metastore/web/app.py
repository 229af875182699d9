"""The Starlette app of ``metastore serve``: routes, errors, the store.

Every route is under ``/dicomweb`` (the root a client is given) and only
reads.  Database work runs in Starlette's thread pool; answers are built
there whole, except study metadata, which streams series by series, and
the frames of a cached instance, read on the event loop (wado.quick_frames).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from metastore.errors import StoreError
from metastore.store import Store
from metastore.web import qido, sources, wado
from metastore.web.media import DICOM_JSON, HTTPError, require_json
from metastore.web.security import Guard, SecretFilter, log

__all__ = ["DEFAULT_MAX_RESULTS", "PREFIX", "app_from_env", "create_app"]

#: Where DICOMweb lives: ``http://host:port/dicomweb`` is a client's root.
PREFIX = "/dicomweb"
#: The most rows one QIDO answer holds (PS3.18 §8.3.4.4: a client pages on
#: with ``offset``; an answer cut by this carries a Warning header).
DEFAULT_MAX_RESULTS = 10_000
#: PS3.18 §8.3.4.4's Warning when the server's maximum cut the answer.
TRUNCATED_WARNING = (
    '299 metastore: "The number of results exceeded the maximum supported by '
    'the server. Additional results can be requested."'
)

Handler = Callable[[Request], Awaitable[Response]]


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type=DICOM_JSON, headers=headers)


class _Server:
    """The state the routes share: the store, the limits, the corrections."""

    def __init__(
        self,
        store: Store,
        max_results: int,
        corrections: wado.Corrections | None,
    ) -> None:
        self.store = store
        self.max_results = max_results
        self.corrections = corrections
        self.sources = sources.SourceCache()

    @staticmethod
    def base(request: Request) -> str:
        """This server's DICOMweb root as the client reached it."""
        return str(request.base_url).rstrip("/") + PREFIX

    @staticmethod
    def uids(request: Request) -> dict[str, str]:
        """The path's UIDs, checked (400 for a malformed one)."""
        names = {
            "study": "StudyInstanceUID",
            "series": "SeriesInstanceUID",
            "sop": "SOPInstanceUID",
        }
        return {
            key: qido.check_uid(names[key], value)
            for key, value in request.path_params.items()
            if key in names
        }

    # -- QIDO-RS -----------------------------------------------------------

    def search(self, level: qido.Level) -> Handler:
        async def endpoint(request: Request) -> Response:
            require_json(request.headers.get("accept"))
            uids = self.uids(request)
            parents = {}
            if "study" in uids:
                parents["StudyInstanceUID"] = uids["study"]
            if "series" in uids:
                parents["SeriesInstanceUID"] = uids["series"]
            search = qido.parse(level, request.query_params.multi_items(), parents)
            base = self.base(request)

            def run() -> tuple[bytes, bool]:
                rows, cut = qido.search(self.store, search, self.max_results)
                qido.add_retrieve_urls(rows, level, base)
                if self.corrections is not None:
                    rows = [self.corrections(row) for row in rows]
                return qido.dump(rows), cut

            body, cut = await run_in_threadpool(run)
            return _json(body, {"warning": TRUNCATED_WARNING} if cut else None)

        return endpoint

    # -- WADO-RS metadata --------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        require_json(request.headers.get("accept"))
        uids = self.uids(request)
        study, series, sop = uids["study"], uids.get("series"), uids.get("sop")
        chunks = wado.metadata_chunks(
            self.store, self.base(request), study, series, sop, self.corrections
        )
        first = await run_in_threadpool(next, chunks, None)
        if first is None:
            what = f"study {study}"
            if series is not None:
                what = f"series {series} of {what}"
            if sop is not None:
                what = f"instance {sop} of {what}"
            raise HTTPError(404, f"{what} is not in the store")
        if sop is not None or series is not None:
            # a series is read whole: one thread hop, one body
            rest = await run_in_threadpool(lambda: b"".join(chunks))
            return _json(first + rest)
        return StreamingResponse(
            _prepend(first, iterate_in_threadpool(chunks)), media_type=DICOM_JSON
        )

    # -- WADO-RS frames, bulk data, instances ------------------------------

    async def frames(self, request: Request) -> Response:
        uids = self.uids(request)
        numbers = wado.parse_frames(request.path_params["frames"])
        study, series, sop = uids["study"], uids["series"], uids["sop"]
        accept = request.headers.get("accept")
        # a viewer's frame requests come one instance at a time: the common
        # one (cached source, native frames of a plain file) is answered
        # here, without the thread pool's hop
        answer = wado.quick_frames(self.sources, study, series, sop, numbers, accept)
        if answer is None:
            answer = await run_in_threadpool(
                wado.frames,
                self.store,
                study,
                series,
                sop,
                numbers,
                accept,
                self.sources,
            )
        body, content_type = answer
        return Response(body, headers={"content-type": content_type})

    async def bulkdata(self, request: Request) -> Response:
        uids = self.uids(request)
        body, content_type = await run_in_threadpool(
            wado.bulkdata,
            self.store,
            uids["study"],
            uids["series"],
            uids["sop"],
            request.path_params["path"],
            request.headers.get("accept"),
        )
        return Response(body, headers={"content-type": content_type})

    async def instance(self, request: Request) -> Response:
        uids = self.uids(request)
        body, content_type = await run_in_threadpool(
            wado.instance,
            self.store,
            uids["study"],
            uids["series"],
            uids["sop"],
            request.headers.get("accept"),
        )
        return Response(body, headers={"content-type": content_type})


async def _prepend(first: bytes, rest: Any) -> Any:
    yield first
    async for chunk in rest:
        yield chunk


def _answering(endpoint: Handler) -> Handler:
    """Turn the server's errors into answers: one line, the right status."""

    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HTTPError as exc:
            return PlainTextResponse(
                exc.message + "\n", exc.status, headers=exc.headers
            )
        except StoreError as exc:  # messages name the URL without its password
            log.error("database error: %s", exc)
            return PlainTextResponse("the database cannot be read now\n", 503)
        except Exception:
            log.exception("error answering %s %s", request.method, request.url.path)
            return PlainTextResponse("internal error (see the server log)\n", 500)

    return answer


def routes(server: _Server) -> list[BaseRoute]:
    """The DICOMweb routes (PS3.18 §10.4 and §10.6), all under :data:`PREFIX`."""
    st = "/studies/{study}"
    se = st + "/series/{series}"
    ins = se + "/instances/{sop}"
    table: list[tuple[str, Handler]] = [
        # first: a viewer asks for frames far more often than anything else
        # (no other route matches a frames path, so the order is free)
        (ins + "/frames/{frames}", server.frames),
        ("/studies", server.search("studies")),
        ("/series", server.search("series")),
        ("/instances", server.search("instances")),
        (st + "/series", server.search("series")),
        (st + "/instances", server.search("instances")),
        (se + "/instances", server.search("instances")),
        (st + "/metadata", server.metadata),
        (se + "/metadata", server.metadata),
        (ins + "/metadata", server.metadata),
        (ins + "/bulkdata/{path:path}", server.bulkdata),
        (ins, server.instance),
    ]
    return [
        Route(PREFIX + path, _answering(handler), methods=["GET", "HEAD"])
        for path, handler in table
    ]


def create_app(
    url_or_store: str | Store,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = ("localhost", "127.0.0.1", "::1"),
    max_results: int = DEFAULT_MAX_RESULTS,
    corrections: wado.Corrections | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The read-only DICOMweb app of a store.

    Args:
        url_or_store: a database URL (the app opens the store and closes it
            on shutdown) or an open :class:`~metastore.store.Store`.
        token: when set, every request needs ``Authorization: Bearer TOKEN``.
        allowed_hosts: the Host header names answered (others get 421);
            ``None`` answers any.  The default, the loopback names, keeps
            web pages elsewhere from reading a loopback server through DNS
            rebinding; ``metastore serve`` adds the bound host, and answers
            any host when a token is set.
        max_results: the most rows of one QIDO answer.
        corrections: called with each instance's (and each QIDO row's)
            DICOM JSON before it is answered; returns the JSON to answer
            (docs/serve.md, "Layering corrections").  Searches still match
            the stored values.
        extra_routes: more routes, after the DICOMweb ones (a viewer's
            static files, say); the Guard checks them too.
    """
    owned = not isinstance(url_or_store, Store)
    store = (
        Store(url_or_store, read_only=True, create=False)
        if isinstance(url_or_store, str)
        else url_or_store
    )
    server = _Server(store, max_results, corrections)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                store.close()

    app = Starlette(routes=[*routes(server), *extra_routes], lifespan=lifespan)
    app.state.store = store
    password = store.engine.url.password
    secrets = SecretFilter([token, None if password is None else str(password)])
    for name in ("metastore.web", "metastore.web.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretFilter) for f in logger.filters):
            logger.addFilter(secrets)
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts)
    return app


def app_from_env() -> Starlette:
    """:func:`create_app` from the environment, for ASGI servers' factories.

    ``METASTORE_DATABASE_URL`` (default ``sqlite:///metastore.sqlite``) and
    ``METASTORE_TOKEN``; with a token any Host is answered.
    """
    from metastore.store.db import DEFAULT_URL

    token = os.environ.get("METASTORE_TOKEN") or None
    return create_app(
        os.environ.get("METASTORE_DATABASE_URL", DEFAULT_URL),
        token=token,
        allowed_hosts=None if token else ("localhost", "127.0.0.1", "::1"),
    )
