"""`metastore serve`: DICOMweb conformance, OHIF's requests, bad input, security.

A real server (uvicorn on 127.0.0.1, port 0) over a synthetic archive
indexed into SQLite and PostgreSQL; answers are checked against what the
store holds (``Store.dicom_json``) and what the files hold (the pixels the
archive was written with).  Until the query layer of issue 11 is merged,
``Store.query`` is its contract's test stand-in (tests/web_support.py).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
import sqlalchemy as sa
from dicomweb_client.api import DICOMwebClient

from metastore import index_paths
from metastore.store import Store, db
from metastore.web import create_app
from tests import web_support as ws
from tests.conftest import POSTGRES_ENV, _database_url, _drop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- fixtures ----------------------------------------------------------------


class Site:
    """An indexed archive served by a running server."""

    def __init__(
        self, url: str, archive: ws.Archive, server: ws.ServerThread, log: ws.AccessLog
    ) -> None:
        self.url = url
        self.archive = archive
        self.server = server
        self.log = log
        self.store = Store(url)

    @property
    def root(self) -> str:
        return self.server.root

    def get(
        self, path: str, headers: dict[str, str] | None = None, *, raw: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """GET ``/dicomweb`` + ``path`` exactly as given (no normalisation)."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.server.port, timeout=30
        )
        target = path if raw else "/dicomweb" + path
        connection.putrequest(
            "GET",
            target,
            skip_accept_encoding=True,
            skip_host="Host" in (headers or {}),
        )
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        status, head, body = self.get(path, headers)
        assert status == 200, (path, status, body[:300])
        assert head["content-type"].startswith("application/dicom+json")
        return json.loads(body)


def _new_database(
    request: pytest.FixtureRequest, backend: str, folder: Path
) -> Iterator[str]:
    if backend == "sqlite":
        path = folder / "serve.sqlite"
        engine = db.create_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        engine.dispose()
        yield f"sqlite:///{path}"
        return
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (none set)")
    admin = request.getfixturevalue("_postgres_admin")
    template = request.getfixturevalue("_postgres_template")
    name = f"metastore_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _database_url(name)
    finally:
        _drop(admin, name)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The synthetic archive indexed and served (read-only tests share it)."""
    folder = tmp_path_factory.mktemp(f"site-{request.param}")
    archive = ws.build_archive(folder)
    for url in _new_database(request, request.param, folder):
        with Store(url) as store:
            report = index_paths(store, [folder / "files"], workers=1)
        assert report.failed == 0, report.errors
        with (
            ws.AccessLog().attached() as log,
            ws.ServerThread(create_app(url)) as server,
        ):
            s = Site(url, archive, server, log)
            yield s
            s.store.close()


def _parts(head: dict[str, str], body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related answer: (Content-Type, bytes)."""
    message = BytesParser().parsebytes(
        b"Content-Type: " + head["content-type"].encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart(), head["content-type"]
    return [
        (p["Content-Type"], p.get_payload(decode=True)) for p in message.get_payload()
    ]


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _value(element: Any) -> Any:
    return element["Value"][0] if element and "Value" in element else None


def _strip_bulk(document: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON with every BulkDataURI replaced by a marker (for comparing)."""
    out = {}
    for key, element in document.items():
        element = dict(element)
        if "BulkDataURI" in element:
            element["BulkDataURI"] = "*"
        if element.get("vr") == "SQ" and "Value" in element:
            element["Value"] = [_strip_bulk(i) for i in element["Value"]]
        out[key] = element
    return out


OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


# -- the store's batched DICOM JSON read --------------------------------------


def test_series_dicom_json_is_each_instance_as_stored(
    db_url: str, tmp_path: Path
) -> None:
    archive = ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
        spec = archive.specs[0]
        series = list(store.series_dicom_json(spec.study, spec.series))
        sops = [s.sop for s in archive.specs if s.series == spec.series]
        assert series == [store.dicom_json(sop) for sop in sops]  # instance order
        texts = list(store.dicom_json_texts(spec.study))
        assert [(se, sop) for se, sop, _ in texts] == [
            (s.series, s.sop) for s in archive.specs if s.study == spec.study
        ]
        assert [json.loads(t) for *_, t in texts][: len(series)] == series
        one = list(store.dicom_json_texts(spec.study, spec.series, spec.sop))
        assert [json.loads(t) for *_, t in one] == [store.dicom_json(spec.sop)]
        # the series of another study, an unknown UID, text the driver refuses
        other = next(s for s in archive.specs if s.study != spec.study)
        assert list(store.series_dicom_json(spec.study, other.series)) == []
        assert list(store.series_dicom_json("1.2.3", "\0")) == []
        source = store.instance_source(spec.sop)
        assert source is not None and spec.path is not None
        assert source.location == str(spec.path)
        assert source.size == spec.path.stat().st_size
        assert (source.study_instance_uid, source.series_instance_uid) == (
            spec.study,
            spec.series,
        )
        assert store.instance_source("9.9.9") is None


def test_json_text_is_json_where_the_stored_text_holds_nan() -> None:
    from metastore.store import codec

    document = {"00281050": {"vr": "DS", "Value": [float("nan"), 1.5]}}
    blob = codec.encode_dicom_json(document)
    assert b"NaN" in codec.inflate(blob)  # stored as the value was
    assert orjson.loads(codec.json_text(blob)) == {
        "00281050": {"vr": "DS", "Value": [None, 1.5]}
    }
    plain = codec.encode_dicom_json({"00100020": {"vr": "LO", "Value": ["x"]}})
    assert codec.json_text(plain) == codec.inflate(plain)


# -- conformance through dicomweb-client ------------------------------------


def test_dicomweb_client_searches_and_retrieves_what_the_store_holds(
    site: Site,
) -> None:
    client = DICOMwebClient(url=site.root)
    archive, store = site.archive, site.store
    studies = client.search_for_studies()
    assert {_value(s["0020000D"]) for s in studies} == (
        archive.studies() | {archive.json_study}
    )
    for study in studies:
        uid = _value(study["0020000D"])
        members = [s for s in archive.specs if s.study == uid]
        if not members:
            continue
        stored = store.dicom_json(members[0].sop)
        assert stored is not None
        for tag in ("00100010", "00100020", "00080020", "00080050"):
            assert study[tag] == stored[tag]
        assert sorted(study["00080061"]["Value"]) == sorted(
            {s.modality for s in members}
        )
        assert _value(study["00201206"]) == len({s.series for s in members})
        assert _value(study["00201208"]) == len(members)
        # URLs are built from the Host header as sent (requests leaves the
        # port out of it): compare the path
        assert _path(_value(study["00081190"])) == f"/dicomweb/studies/{uid}"

        series = client.search_for_series(study_instance_uid=uid)
        assert {_value(s["0020000E"]) for s in series} == {s.series for s in members}
        for one in series:
            se = _value(one["0020000E"])
            in_series = [s for s in members if s.series == se]
            assert _value(one["0008103E"]) == in_series[0].series_description
            assert _value(one["00201209"]) == len(in_series)
            assert _path(_value(one["00081190"])) == (
                f"/dicomweb/studies/{uid}/series/{se}"
            )
            instances = client.search_for_instances(
                study_instance_uid=uid, series_instance_uid=se
            )
            assert sorted(_value(i["00080018"]) for i in instances) == sorted(
                s.sop for s in in_series
            )

            metadata = client.retrieve_series_metadata(uid, se)
            expected = list(store.series_dicom_json(uid, se))
            assert [_strip_bulk(m) for m in metadata] == [
                _strip_bulk(e) for e in expected
            ]
            for document in metadata:
                sop = _value(document["00080018"])
                if "7FE00010" not in document:
                    continue  # deflated: the indexer adds no pixel data URI
                assert _path(document["7FE00010"]["BulkDataURI"]) == (
                    f"/dicomweb/studies/{uid}/series/{se}/instances/{sop}"
                    "/bulkdata/7FE00010"
                )

    # frames, as stored and as native pixels
    for spec in archive.specs:
        native = client.retrieve_instance_frames(
            spec.study,
            spec.series,
            spec.sop,
            frame_numbers=[1],
            media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
        )
        assert native == [spec.expected_frame(1)]
        stored = client.retrieve_instance_frames(
            spec.study,
            spec.series,
            spec.sop,
            frame_numbers=[1],
            media_types=(("application/octet-stream", "*"),),
        )
        assert len(stored) == 1 and stored[0]

    # a whole instance, as stored
    spec = archive.specs[0]
    assert spec.path is not None
    ds = client.retrieve_instance(spec.study, spec.series, spec.sop)
    assert ds.SOPInstanceUID == spec.sop
    assert ds.PixelData == pydicom.dcmread(spec.path).PixelData


# -- OHIF 3.13.2's requests, byte for byte -----------------------------------


def test_ohif_requests_replayed_byte_for_byte(site: Site) -> None:
    archive = site.archive
    ct = archive.specs[0]
    mr = next(s for s in archive.specs if s.modality == "MR")
    include = "includefield=00081030,00080060,00080090,00100030"
    json_accept = {"Accept": "application/dicom+json"}

    studies = site.json(
        f"/studies?limit=101&offset=0&fuzzymatching=true&{include}", json_accept
    )
    found = {_value(s["0020000D"]): s for s in studies}
    assert set(found) == archive.studies() | {archive.json_study}
    assert _value(found[ct.study]["00081030"]) == "CT Chest"
    assert _value(found[mr.study]["00100010"]) == {"Alphabetic": "Gómez^José"}
    assert _value(found[mr.study]["00100030"]) == "19700101"

    one = site.json(
        f"/studies?limit=101&offset=0&fuzzymatching=true&{include}"
        f"&StudyInstanceUID={mr.study}",
        json_accept,
    )
    assert [_value(s["0020000D"]) for s in one] == [mr.study]

    series = site.json(
        f"/studies/{ct.study}/series?includefield=00080021,00080031,0008103E,00200011",
        json_accept,
    )
    assert sorted(_value(s["0008103E"]) for s in series) == ["Axial 2.5mm", "Scout"]
    assert {_value(s["00080021"]) for s in series} == {"20200315"}

    metadata = site.json(
        f"/studies/{ct.study}/series/{ct.series}/metadata", json_accept
    )
    assert [_value(m["00080018"]) for m in metadata] == [
        s.sop for s in archive.specs if s.series == ct.series
    ]

    patient = site.json(
        f"/studies?00100020={mr.patient_id}&limit=101&offset=0"
        f"&fuzzymatching=true&{include}",
        json_accept,
    )
    assert [_value(s["0020000D"]) for s in patient] == [mr.study]

    status, head, body = site.get(
        f"/studies/{ct.study}/series/{ct.series}/instances/{ct.sop}/frames/1",
        {"Accept": OHIF_ACCEPT},
    )
    assert status == 200
    [(content_type, data)] = _parts(head, body)
    assert content_type == (
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    )
    assert data == ct.expected_frame(1)
    deadline = time.monotonic() + 10  # the line is written after the answer
    while time.monotonic() < deadline and not any(
        re.search(r"/frames/1 200 [0-9.]+ ms$", line) for line in site.log.lines
    ):
        time.sleep(0.01)
    assert any(
        re.fullmatch(r"GET /dicomweb/studies 200 [0-9.]+ ms", line)
        for line in site.log.lines
    )
    assert any(re.search(r"/frames/1 200 [0-9.]+ ms$", line) for line in site.log.lines)


# -- QIDO matching ------------------------------------------------------------


def test_qido_matching_keys_include_fields_and_paging(site: Site) -> None:
    archive = site.archive
    ct = archive.specs[0]
    mr = next(s for s in archive.specs if s.modality == "MR")

    def studies(query: str) -> list[str]:
        return sorted(_value(s["0020000D"]) for s in site.json(f"/studies?{query}"))

    assert studies(f"PatientID={ct.patient_id}") == [ct.study]
    assert studies(f"00100020={ct.patient_id}") == [ct.study]
    assert studies("PatientName=doe*") == [ct.study]
    assert studies("PatientName=D?e^Jane") == [ct.study]
    assert studies("PatientName=gomez&fuzzymatching=true") == [mr.study]
    assert studies(f"StudyInstanceUID={ct.study},{mr.study}") == sorted(
        [ct.study, mr.study]
    )
    assert studies("StudyDate=20200101-20201231") == [ct.study]
    assert studies("StudyDate=20210101-") == [mr.study]
    assert studies("StudyDate=-20200401") == sorted([ct.study, archive.json_study])
    assert studies("PatientID=nobody") == []  # empty: 200 and []

    everything = site.json(f"/studies?StudyInstanceUID={ct.study}&includefield=all")
    stored = site.store.dicom_json(ct.sop)
    assert stored is not None
    assert everything[0]["00180050"] == stored["00180050"]  # SliceThickness
    named = site.json(
        f"/studies?StudyInstanceUID={ct.study}"
        "&includefield=SliceThickness&includefield=00280030"
    )
    assert named[0]["00180050"] == stored["00180050"]
    assert named[0]["00280030"] == stored["00280030"]

    instances = site.json(f"/studies/{mr.study}/instances")
    assert {_value(i["0020000E"]) for i in instances} == {
        s.series for s in archive.specs if s.study == mr.study
    }
    all_series = site.json("/series")
    assert len(all_series) == len({s.series for s in archive.specs}) + 1
    paged = [site.json(f"/series?limit=2&offset={o}") for o in range(0, 12, 2)]
    assert [r for page in paged for r in page] == all_series
    url = _value(instances[0]["00081190"])
    assert url.startswith(f"{site.root}/studies/{mr.study}/series/")


def test_server_maximum_cuts_answers_with_a_warning(
    db_url: str, tmp_path: Path
) -> None:
    ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
    with (
        ws.ServerThread(create_app(db_url, max_results=2)) as server,
    ):
        s = Site(db_url, ws.Archive(tmp_path), server, ws.AccessLog())
        for query in ("", "?limit=1000"):
            status, head, body = s.get("/instances" + query)
            assert status == 200 and len(json.loads(body)) == 2
            assert head["warning"].startswith("299 ")
        status, head, body = s.get("/instances?limit=2")
        assert status == 200 and "warning" not in head
        s.store.close()


# -- frames, bulk data, instances ---------------------------------------------


def test_frames_in_every_transfer_syntax(site: Site) -> None:
    for spec in site.archive.specs:
        base = f"/studies/{spec.study}/series/{spec.series}/instances/{spec.sop}"
        numbers = list(range(1, spec.frames + 1))
        frame_list = ",".join(map(str, reversed(numbers)))
        status, head, body = site.get(
            f"{base}/frames/{frame_list}",
            {
                "Accept": 'multipart/related; type="application/octet-stream"; '
                "transfer-syntax=1.2.840.10008.1.2.1"
            },
        )
        assert status == 200, (spec.series_description, body)
        parts = _parts(head, body)
        assert [data for _, data in parts] == [
            spec.expected_frame(n) for n in reversed(numbers)
        ]
        # as stored: labelled with the file's transfer syntax (deflated data
        # is plain little endian once inflated)
        status, head, body = site.get(f"{base}/frames/1", {"Accept": OHIF_ACCEPT})
        [(content_type, data)] = _parts(head, body)
        label = content_type.split("transfer-syntax=")[1]
        deflated = pydicom.uid.DeflatedExplicitVRLittleEndian
        expected_label = {deflated: pydicom.uid.ExplicitVRLittleEndian}.get(
            spec.transfer_syntax, spec.transfer_syntax
        )
        assert label == expected_label
        if spec.transfer_syntax == pydicom.uid.ExplicitVRBigEndian:
            assert data == spec.pixels()[0].astype(">u2").tobytes()
        elif spec.transfer_syntax != pydicom.uid.RLELossless:
            assert data == spec.expected_frame(1)
        # single part, one frame
        status, head, body = site.get(
            f"{base}/frames/1",
            {"Accept": "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"},
        )
        assert status == 200 and body == spec.expected_frame(1)
        assert head["content-type"].startswith("application/octet-stream")

    # all frames of a multi-frame instance through its pixel data BulkDataURI
    cine = next(s for s in site.archive.specs if s.frames == 4)
    metadata = site.json(
        f"/studies/{cine.study}/series/{cine.series}/instances/{cine.sop}/metadata"
    )
    uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert uri.startswith(site.root)
    status, head, body = site.get(uri[len(site.root) :], {"Accept": OHIF_ACCEPT})
    assert status == 200
    assert [d for _, d in _parts(head, body)] == [
        cine.expected_frame(n) for n in range(1, 5)
    ]


def test_instances_as_stored_and_as_explicit_little_endian(site: Site) -> None:
    for spec in site.archive.specs:
        base = f"/studies/{spec.study}/series/{spec.series}/instances/{spec.sop}"
        status, head, body = site.get(
            base, {"Accept": "application/dicom; transfer-syntax=*"}
        )
        assert status == 200
        assert head["content-type"] == (
            f"application/dicom; transfer-syntax={spec.transfer_syntax}"
        )
        if spec.path is not None:
            assert body == spec.path.read_bytes()
        if spec.transfer_syntax == pydicom.uid.ExplicitVRBigEndian:
            status, _, body = site.get(base, {"Accept": "application/dicom"})
            assert status == 406 and b"transfer-syntax=*" in body
            continue
        status, head, body = site.get(
            base, {"Accept": 'multipart/related; type="application/dicom"'}
        )
        assert status == 200, (spec.series_description, body[:200])
        [(content_type, data)] = _parts(head, body)
        assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.1")
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPInstanceUID == spec.sop
        expected = spec.pixels()
        assert (
            ds.pixel_array.tobytes() == expected.reshape(ds.pixel_array.shape).tobytes()
        )


# -- bad input ---------------------------------------------------------------


def test_bad_input_gets_a_4xx_with_a_message_and_the_server_goes_on(site: Site) -> None:
    archive = site.archive
    ct = archive.specs[0]
    base = f"/studies/{ct.study}/series/{ct.series}/instances/{ct.sop}"
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("/studies/1.2.abc/series", {}, 400, "malformed StudyInstanceUID"),
        ("/studies/1..2/metadata", {}, 400, "malformed StudyInstanceUID"),
        (
            f"/studies/{ct.study}/series/{'1' * 65}/metadata",
            {},
            400,
            "malformed SeriesInstanceUID",
        ),
        ("/studies?limit=99999999999999999999999", {}, 400, "limit"),
        ("/studies?limit=-1", {}, 400, "limit"),
        ("/studies?limit=ten", {}, 400, "limit"),
        ("/studies?offset=-5", {}, 400, "offset"),
        ("/studies?includefield=NoSuchKeyword", {}, 400, "NoSuchKeyword"),
        ("/studies?includefield=0010", {}, 400, "not an attribute"),
        ("/studies?NotAnAttribute=1", {}, 400, "NotAnAttribute"),
        ("/studies?00081110.00081150=1", {}, 400, "sequence paths"),
        ("/studies?fuzzymatching=maybe", {}, 400, "fuzzymatching"),
        (f"/studies/{ct.study}/series/../../../etc/passwd", {}, 404, ""),
        (
            f"/studies/{ct.study}/series/{ct.series}/instances/../metadata",
            {},
            400,
            "malformed SOPInstanceUID",
        ),
        (f"{base}/frames/2", {}, 404, "has 1 frame; there is no frame 2"),
        (f"{base}/frames/0", {}, 400, "malformed frame list"),
        (f"{base}/frames/1,x", {}, 400, "malformed frame list"),
        (f"{base}/frames/1", {"Accept": "image/jpeg"}, 406, "transfer-syntax=*"),
        (f"{base}/bulkdata/..%2F..%2Fetc", {}, 400, "malformed bulk data path"),
        (f"{base}/bulkdata/00100010", {}, 404, "no bulk data element"),
        ("/studies/1.2.3.4/metadata", {}, 404, "study 1.2.3.4 is not in the store"),
        (
            f"/studies/{ct.study}/series/1.2.3/instances/{ct.sop}/frames/1",
            {},
            404,
            "is not in series 1.2.3",
        ),
        (
            "/studies",
            {"Accept": "application/dicom+xml"},
            406,
            "application/dicom+json",
        ),
        (
            f"/studies/{archive.json_study}/series/{archive.json_series}/instances/"
            f"{archive.json_sop}/frames/1",
            {},
            404,
            "indexed from DICOM JSON",
        ),
    ]
    for path, headers, status, message in cases:
        got, head, body = site.get(path, headers)
        assert got == status, (path, got, body[:300])
        assert message.encode() in body, (path, body[:300])
        if status != 404 or message:
            assert head["content-type"].startswith("text/plain")
    got, _, body = site.get("/dicomweb/studies/../../etc/passwd", raw=True)
    assert got == 404
    assert site.json("/studies") != []  # still serving


def test_sql_and_path_text_is_data(site: Site) -> None:
    ct = site.archive.specs[0]
    hostile = [
        "x' OR '1'='1",
        "%' --",
        "'; DROP TABLE studies; --",
        "\\",
        "*') UNION SELECT 1 --",
    ]
    from urllib.parse import quote

    for text in hostile:
        for key in ("PatientName", "PatientID", "StudyDescription"):
            got, _, body = site.get(f"/studies?{key}={quote(text)}")
            assert got == 200 and json.loads(body) == [], (key, text, body)
        got, _, body = site.get(f"/studies/{quote(text, safe='')}/metadata")
        assert got in (400, 404) and body, (text, body)
    got, _, body = site.get(f"/studies?StudyInstanceUID={ct.study}%27%20OR%20%271")
    assert got == 200 and json.loads(body) == []
    with site.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one() == 3


# -- sources that changed after indexing --------------------------------------


def test_deleted_moved_and_changed_sources_are_refused(
    db_url: str, tmp_path: Path
) -> None:
    archive = ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
    a, b, c = [s for s in archive.specs if s.series == archive.specs[0].series]
    assert a.path and b.path and c.path
    with ws.ServerThread(create_app(db_url)) as server:
        s = Site(db_url, archive, server, ws.AccessLog())

        def frame(spec: ws.Spec) -> tuple[int, bytes]:
            got, _, body = s.get(
                f"/studies/{spec.study}/series/{spec.series}"
                f"/instances/{spec.sop}/frames/1"
            )
            return got, body

        assert frame(a)[0] == 200
        a.path.unlink()  # deleted
        got, body = frame(a)
        assert got == 404 and b"deleted or moved" in body
        shutil.move(b.path, tmp_path / "elsewhere.dcm")  # moved
        got, body = frame(b)
        assert got == 404 and b"deleted or moved" in body
        with open(c.path, "ab") as f:  # changed
            f.write(b"\0\0")
        got, body = frame(c)
        assert got == 410 and b"changed after it was indexed" in body
        # replaced by another instance of the same size and time: its own
        # SOP Instance UID gives it away
        other = archive.specs[3]
        assert other.path is not None
        stat = other.path.stat()
        shutil.copyfile(archive.specs[-1].path or "", other.path)
        os.utime(other.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        if other.path.stat().st_size == stat.st_size:
            got, body = frame(other)
            assert got == 410 and b"holds another instance" in body
        # metadata is still answered from the store, and so are searches
        assert s.json(f"/studies/{a.study}/series/{a.series}/metadata")
        assert s.json("/studies")
        s.store.close()


def test_cached_sources_cost_no_query_and_follow_reindexing(
    db_url: str, tmp_path: Path
) -> None:
    """A series' frames cost one query; a stale cached source is looked up again."""
    archive = ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
    a, b, c = [s for s in archive.specs if s.series == archive.specs[0].series]
    stranger = next(s for s in archive.specs if s.series != a.series)
    assert a.path is not None
    app = create_app(db_url)
    statements: list[str] = []
    sa.event.listen(
        app.state.store.engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[2]),
    )
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    with ws.ServerThread(app) as server:
        s = Site(db_url, archive, server, ws.AccessLog())

        def frame(spec: ws.Spec, series: str | None = None) -> tuple[int, bytes]:
            got, head, body = s.get(
                f"/studies/{spec.study}/series/{series or spec.series}"
                f"/instances/{spec.sop}/frames/1",
                accept,
            )
            return got, _parts(head, body)[0][1] if got == 200 else body

        assert frame(a) == (200, a.pixels().tobytes())
        first = len(statements)
        assert first >= 1
        for spec in (b, c, a, b):
            assert frame(spec) == (200, spec.pixels().tobytes())
        assert len(statements) == first  # the series' sources were cached
        # the cache is per series: an instance of another series is not here
        got, body = frame(stranger, a.series)
        assert got == 404 and b"is not in series" in body

        # a's file rewritten with other pixels: refused until indexed again
        ds = pydicom.dcmread(a.path)
        new_pixels = bytes(255 - x for x in ds.PixelData)
        ds.PixelData = new_pixels
        ds.save_as(a.path)
        mtime = a.path.stat().st_mtime_ns + 2_000_000_000
        os.utime(a.path, ns=(mtime, mtime))
        got, body = frame(a)
        assert got == 410 and b"changed after it was indexed" in body
        with Store(db_url) as store:
            index_paths(store, [tmp_path / "files"], workers=1)
        assert frame(a) == (200, new_pixels)  # the store's new record, at once
        assert frame(b) == (200, b.pixels().tobytes())
        s.store.close()


def test_source_cache_is_bounded(db_url: str, tmp_path: Path) -> None:
    """Series past the bounds are evicted; a too-large one is never kept."""
    from metastore.web.sources import SourceCache

    archive = ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
        a = archive.specs[0]
        b = next(s for s in archive.specs if s.series != a.series)
        expected = store.instance_source(a.sop)
        assert expected is not None

        cache = SourceCache(max_series=1)
        assert cache.find(store, a.study, a.series, a.sop) == (expected, False)
        assert cache.find(store, a.study, a.series, a.sop) == (expected, True)
        cache.find(store, b.study, b.series, b.sop)  # evicts a's series
        assert cache.peek(a.study, a.series, a.sop) is None
        assert cache.peek(b.study, b.series, b.sop) is not None
        # a wrong study is not a hit, and not an error
        assert cache.find(store, "1.2.3", a.series, a.sop) == (None, False)

        small = SourceCache(max_instances=1)  # every series here is larger
        for _ in range(2):
            assert small.find(store, a.study, a.series, a.sop) == (expected, False)
        assert small.peek(a.study, a.series, a.sop) is None
        # ... and still answers only for instances of that series
        assert small.find(store, a.study, a.series, b.sop) == (None, False)

        expired = SourceCache(ttl=0.0)
        expired.find(store, a.study, a.series, a.sop)
        time.sleep(0.01)
        assert expired.peek(a.study, a.series, a.sop) is None


# -- security -----------------------------------------------------------------


def test_token_hosts_and_methods(db_url: str, tmp_path: Path) -> None:
    ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)
    token = "s3cret-" + uuid.uuid4().hex
    with (
        ws.AccessLog().attached() as log,
        ws.ServerThread(create_app(db_url, token=token, allowed_hosts=None)) as srv,
    ):
        s = Site(db_url, ws.Archive(tmp_path), srv, log)
        got, head, body = s.get("/studies")
        assert got == 401 and head["www-authenticate"].startswith("Bearer")
        assert s.get("/studies", {"Authorization": "Bearer wrong"})[0] == 401
        assert s.get("/studies", {"Authorization": f"Basic {token}"})[0] == 401
        assert s.get("/studies", {"Authorization": f"Bearer {token}"})[0] == 200
        assert (
            s.get(
                "/studies",
                {"Authorization": f"bearer {token}", "Host": "pacs.example.org"},
            )[0]
            == 200
        )
        s.store.close()
    assert not any(token in line for line in log.lines)
    with ws.ServerThread(create_app(db_url)) as srv:
        s = Site(db_url, ws.Archive(tmp_path), srv, ws.AccessLog())
        got, _, body = s.get("/studies", {"Host": "attacker.example:8042"})
        assert got == 421 and b"--token" in body
        assert s.get("/studies", {"Host": "localhost:8042"})[0] == 200
        connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        for method in ("POST", "PUT", "DELETE"):
            connection.request(method, "/dicomweb/studies", body=b"{}")
            response = connection.getresponse()
            assert response.status == 405 and b"read-only" in response.read()
        connection.close()
        s.store.close()


def test_access_log_has_no_query_values(site: Site) -> None:
    site.log.lines.clear()
    site.get("/studies?PatientName=Secret%5EPatient&limit=5")
    site.get("/studies/1.2.3/metadata")
    deadline = time.monotonic() + 10  # the line is written after the answer
    while len(site.log.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(site.log.lines) == 2
    assert re.fullmatch(r"GET /dicomweb/studies 200 [0-9.]+ ms", site.log.lines[0])
    assert re.fullmatch(
        r"GET /dicomweb/studies/1\.2\.3/metadata 404 [0-9.]+ ms", site.log.lines[1]
    )
    assert not any("Secret" in line for line in site.log.lines)


def test_corrections_are_layered_over_answers(db_url: str, tmp_path: Path) -> None:
    archive = ws.build_archive(tmp_path, extras=False)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "files"], workers=1)

    def fix_spacing(document: dict[str, Any]) -> dict[str, Any]:
        if "00280030" in document:
            document["00280030"] = {"vr": "DS", "Value": [0.5, 0.5]}
        return document

    ct = archive.specs[0]
    with (
        ws.ServerThread(create_app(db_url, corrections=fix_spacing)) as srv,
    ):
        s = Site(db_url, archive, srv, ws.AccessLog())
        metadata = s.json(f"/studies/{ct.study}/series/{ct.series}/metadata")
        assert {tuple(m["00280030"]["Value"]) for m in metadata} == {(0.5, 0.5)}
        assert metadata[0]["7FE00010"]["BulkDataURI"].startswith(s.root)
        stored = s.store.dicom_json(ct.sop)
        assert stored is not None and stored["00280030"]["Value"] == [0.8, 0.8]
        s.store.close()


# -- the command ---------------------------------------------------------------


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metastore", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for_port(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/dicomweb", line)
        if match:
            return int(match.group(1)), lines
    raise AssertionError("metastore serve did not start: " + "".join(lines))


def test_serve_refuses_unsafe_bindings_and_missing_databases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'archive.sqlite'}"
    Store(url).close()
    for args in (("--host", "0.0.0.0"), ("--host", "192.0.2.1")):
        done = subprocess.run(
            [sys.executable, "-m", "metastore", "serve", *args, "--db", url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "METASTORE_TOKEN": ""},
        )
        assert done.returncode == 2
        assert "--token" in done.stderr and "--insecure" in done.stderr
    missing = tmp_path / "nope.sqlite"
    done = subprocess.run(
        [sys.executable, "-m", "metastore", "serve", "--db", f"sqlite:///{missing}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and str(missing) in done.stderr
    assert not missing.exists()


def test_serve_command_logs_requests_without_secrets(tmp_path: Path) -> None:
    ws.build_archive(tmp_path, extras=False)
    password = "pw-" + uuid.uuid4().hex
    token = "tok-" + uuid.uuid4().hex
    postgres = os.environ.get(POSTGRES_ENV)
    if postgres:  # trust authentication: the password is accepted and unused
        from sqlalchemy.engine import make_url

        url = (
            make_url(postgres)
            .set(password=password)
            .render_as_string(hide_password=False)
        )
        admin = db.create_engine(postgres).execution_options(
            isolation_level="AUTOCOMMIT"
        )
        name = f"metastore_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = make_url(url).set(database=name).render_as_string(hide_password=False)
    else:
        admin, name = None, ""
        url = f"sqlite:///{tmp_path / 'archive.sqlite'}"
    try:
        with Store(url) as store:
            index_paths(store, [tmp_path / "files"], workers=1)
        process = _serve("--port", "0", "--db", url, env={"METASTORE_TOKEN": token})
        try:
            port, lines = _wait_for_port(process)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for auth in (f"Bearer {token}", "Bearer nope", ""):
                connection.request(
                    "GET",
                    "/dicomweb/studies/1.2.3/metadata?x=Secret",
                    headers={"Authorization": auth} if auth else {},
                )
                response = connection.getresponse()
                response.read()
                assert response.status == (404 if token in auth else 401)
            connection.close()
        finally:
            process.terminate()
            _, rest = process.communicate(timeout=30)
        log = "".join(lines) + rest
        assert token not in log and password not in log
        assert "Secret" not in log
        assert (
            len(
                re.findall(
                    r"GET /dicomweb/studies/1\.2\.3/metadata (404|401) "
                    r"[0-9.]+ ms",
                    log,
                )
            )
            == 3
        )
    finally:
        if admin is not None:
            _drop(admin, name)
            admin.dispose()
