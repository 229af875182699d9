"""A real viewer: OHIF 3.13.2 (prebuilt, from the npm registry) browses a store.

``scripts/ohif-setup`` puts Debian's chromium, playwright-core and OHIF's
``dist/`` in a cache folder; here OHIF is served at ``/`` by a test-only
static handler on the same origin as ``/dicomweb``, and a small Node
script drives headless Chromium through it.  Screenshots go to
tests/artifacts/ohif/.  Outside CI the test skips when the setup is
missing; in CI (CI=true) it fails instead.
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from starlette.responses import FileResponse, Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from metastore import index_paths
from metastore.store import Store
from metastore.web import create_app
from tests import web_support as ws

OHIF_VERSION = "3.13.2"
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts" / "ohif"


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = default / "metastore" / f"ohif-{OHIF_VERSION}"
    return Path(os.environ.get("METASTORE_OHIF_CACHE") or default)


def _setup_or_skip() -> tuple[Path, str, str]:
    cache = _cache()
    chromium = shutil.which("chromium")
    node = shutil.which("node")
    missing = []
    if chromium is None:
        missing.append("chromium (apt)")
    if node is None:
        missing.append("node")
    if not (cache / "dist" / "index.html").is_file():
        missing.append(f"OHIF's dist/ in {cache}")
    if not (cache / "node_modules" / "playwright-core").is_dir():
        missing.append(f"playwright-core in {cache}")
    if missing:
        reason = (
            f"the OHIF viewer test needs {', '.join(missing)}: run scripts/ohif-setup"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert chromium is not None and node is not None
    return cache, chromium, node


def app_config(root: str) -> str:
    """OHIF's app-config.js: one DICOMweb data source, this server."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "metastore",
            "name": "metastore",
            "wadoUriRoot": root,
            "qidoRoot": root,
            "wadoRoot": root,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class OhifStatic:
    """Test-only: OHIF's dist/ at ``/`` (SPA fallback, wasm MIME, our config)."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist.resolve()
        self.config = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].lstrip("/")
        if path == "app-config.js":
            response: Response = Response(self.config, media_type="text/javascript")
        else:
            target = (self.dist / path).resolve()
            if not target.is_relative_to(self.dist) or not target.is_file():
                target = self.dist / "index.html"  # the viewer's own routes
            media = {
                ".wasm": "application/wasm",
                ".js": "text/javascript",
                ".mjs": "text/javascript",
            }.get(target.suffix)
            media = media or mimetypes.guess_type(target.name)[0]
            response = FileResponse(target, media_type=media)
        await response(scope, receive, send)


def _distinct_values(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        array = np.asarray(image.convert("L"))
    return len(np.unique(array))


def test_ohif_browses_an_indexed_archive(tmp_path: Path) -> None:
    cache, chromium, node = _setup_or_skip()
    archive = ws.build_archive(tmp_path, extras=False)
    url = f"sqlite:///{tmp_path / 'viewer.sqlite'}"
    with Store(url) as store:
        report = index_paths(store, [tmp_path / "files"], workers=1)
    assert report.failed == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    static = OhifStatic(cache / "dist")
    app = create_app(url, extra_routes=[Mount("/", app=static)])
    ct = archive.specs[0]
    names = [ws.CT_PATIENT[2], ws.MR_PATIENT[2]]
    series = sorted(
        {s.series_description for s in archive.specs if s.study == ct.study}
    )
    with (
        ws.AccessLog().attached() as log,
        ws.ServerThread(app) as server,
    ):
        static.config = app_config(server.root)
        done = subprocess.run(
            [
                node,
                str(HERE / "ohif_driver.cjs"),
                str(cache),
                chromium,
                f"http://127.0.0.1:{server.port}/",
                ct.study,
                str(ARTIFACTS),
                json.dumps({"names": names, "series": series}),
            ],
            capture_output=True,
            text=True,
            timeout=400,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    driver_errors = [e for e in result["errors"] if e.startswith("driver:")]
    assert not driver_errors, driver_errors
    # the study list: both patients, as OHIF formats names ("Doe, Jane")
    for name in names:
        assert name in result["studyList"], result["studyList"][:2000]
    assert "CT Chest" in result["studyList"] and "MR Brain" in result["studyList"]
    # the viewer: the study's series descriptions, and an image drawn
    for description in series:
        assert description in result["viewer"], result["viewer"][:2000]
    viewport = Path(result["screenshots"]["viewport"])
    assert _distinct_values(viewport) > 16, "the viewport canvas is uniform"
    # the server answered OHIF's QIDO, metadata and frames requests
    lines = log.lines
    assert any(line.startswith("GET /dicomweb/studies 200") for line in lines), lines
    assert any("/metadata 200" in line for line in lines), lines
    assert any("/frames/1 200" in line for line in lines), lines
    assert not [line for line in lines if line.split()[2].startswith("5")], lines
