"""``metastore serve``: a read-only DICOMweb server answering from the store.

QIDO-RS searches go through :meth:`metastore.store.Store.query`; WADO-RS
metadata is the stored DICOM JSON; frames and instances are read from the
indexed sources (files and zip members the store records, nothing else).
The app is a Starlette ASGI application, run by uvicorn for ``metastore
serve`` or by any ASGI server::

    uvicorn --factory 'metastore.web:app_from_env'   # METASTORE_DATABASE_URL
    # or, in Python:
    from metastore.web import create_app
    app = create_app("sqlite:///archive.sqlite")

The rooms: ``app`` (routes, errors, the store), ``qido`` and ``wado``
(the transactions), ``media`` (Accept negotiation, multipart bodies),
``sources`` (finding and checking an instance's source), ``pixels`` (frames
and transcoding), ``security`` (tokens, allowed hosts, the access log).
See docs/serve.md.
"""

from __future__ import annotations

from metastore.web.app import app_from_env, create_app
from metastore.web.serve import run

__all__ = ["app_from_env", "create_app", "run"]
