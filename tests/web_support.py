"""Helpers of the DICOMweb server tests: a synthetic archive, a server in a
thread, and (until the query layer of issue 11 lands) a stand-in for
``Store.query`` that follows its contract, used only by these tests.

The archive has real pixel data (a gradient plus the instance number, so no
frame is uniform and no two frames are equal), two studies with known
names, a multi-frame instance, several transfer syntaxes, a zip member and
a DICOM JSON instance.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import logging
import re
import threading
import time
import unicodedata
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import sqlalchemy as sa
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from metastore.errors import QueryError
from metastore.store import Store

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ROOT = "1.2.826.0.1.3680043.10.1138"


@dataclass
class Spec:
    """One instance of the synthetic archive."""

    study: str
    series: str
    sop: str
    modality: str
    patient_name: str
    patient_id: str
    study_description: str
    series_description: str
    series_number: int
    instance_number: int
    study_date: str
    transfer_syntax: str = ExplicitVRLittleEndian
    frames: int = 1
    rows: int = 64
    columns: int = 64
    bits: int = 16
    samples: int = 1
    path: Path | None = None

    def pixels(self) -> np.ndarray:
        """Frames x rows x columns (x samples) of distinct, non-uniform values."""
        y, x = np.mgrid[0 : self.rows, 0 : self.columns]
        r = np.hypot(y - self.rows / 2, x - self.columns / 2)
        inside = r < self.rows * 0.45
        frames = []
        for f in range(self.frames):
            # rings inside a disc on a gradient: a phantom a person can see,
            # different for every instance and frame
            rings = np.cos(r * 0.35 - self.instance_number * 0.7 - f * 0.9)
            base = 300 + (x + y) * 3 + inside * (1500 + 900 * rings)
            if self.bits == 8:
                base = base / 16
            frames.append(np.round(base))
        array = np.stack(frames)
        if self.samples == 3:
            array = np.stack([array, (array * 3) % 256, (array * 7) % 256], axis=-1)
        dtype = np.uint8 if self.bits == 8 else np.uint16
        return array.astype(dtype)

    def expected_frame(self, number: int) -> bytes:
        """Frame ``number`` as Explicit VR Little Endian native bytes."""
        frame = self.pixels()[number - 1]
        return frame.astype(frame.dtype.newbyteorder("<")).tobytes()


def dataset(spec: Spec) -> Dataset:
    """The Part 10 dataset of ``spec`` (pixel data native little endian)."""
    meta = FileMetaDataset()
    sop_class = (
        ENHANCED_MR
        if spec.frames > 1
        else (CT_IMAGE if spec.modality == "CT" else MR_IMAGE)
    )
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = spec.sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + ".1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = spec.sop
    ds.StudyInstanceUID = spec.study
    ds.SeriesInstanceUID = spec.series
    ds.Modality = spec.modality
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC" + spec.patient_id
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyID = "1"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.SeriesDate = spec.study_date
    ds.SliceThickness = "2.5"
    ds.ImagePositionPatient = [0, 0, spec.instance_number * 2.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.FrameOfReferenceUID = spec.study + ".9"
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = spec.samples
    ds.PhotometricInterpretation = "RGB" if spec.samples == 3 else "MONOCHROME2"
    if spec.samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = spec.bits
    ds.BitsStored = spec.bits if spec.bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2000 if spec.bits == 16 else 128
    ds.WindowWidth = 4000 if spec.bits == 16 else 256
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    ds.PixelData = spec.pixels().tobytes()
    return ds


def write(spec: Spec, path: Path) -> Path:
    """Write ``spec`` to ``path`` in its transfer syntax."""
    ds = dataset(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    syntax = spec.transfer_syntax
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    elif syntax == ExplicitVRBigEndian:
        array = spec.pixels()
        ds.PixelData = array.astype(array.dtype.newbyteorder(">")).tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.save_as(
            path, enforce_file_format=True, implicit_vr=False, little_endian=False
        )
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        if syntax == ImplicitVRLittleEndian:
            ds["PixelData"].VR = "OW"
        ds.save_as(path, enforce_file_format=True)
    spec.path = path
    return path


@dataclass
class Archive:
    """The synthetic archive: its folder and what it holds."""

    root: Path
    specs: list[Spec] = field(default_factory=list)
    json_sop: str = ""
    json_study: str = ""
    json_series: str = ""

    def by_sop(self, sop: str) -> Spec:
        return next(s for s in self.specs if s.sop == sop)

    def studies(self) -> set[str]:
        return {s.study for s in self.specs}


#: The two patients of the archive, as written and as OHIF shows them.
CT_PATIENT = ("Doe^Jane", "PID-CT-1", "Doe, Jane")
MR_PATIENT = ("Gómez^José", "PID-MR-2", "Gómez, José")


def build_archive(root: Path, *, extras: bool = True) -> Archive:
    """Two studies (CT: two series, MR: one series of three plus, with
    ``extras``, a multi-frame and odd transfer syntaxes), one zip member
    and one DICOM JSON instance."""
    archive = Archive(root)
    ct_study, mr_study = f"{ROOT}.1", f"{ROOT}.2"
    common: dict[str, Any] = {"rows": 128, "columns": 128}
    n = 0

    def add(
        study: str,
        series: str,
        modality: str,
        patient: tuple[str, str, str],
        study_desc: str,
        series_desc: str,
        series_number: int,
        count: int,
        date: str,
        **kw: Any,
    ) -> list[Spec]:
        nonlocal n
        made = []
        for i in range(1, count + 1):
            n += 1
            spec = Spec(
                study=study,
                series=series,
                sop=f"{series}.{i}",
                modality=modality,
                patient_name=patient[0],
                patient_id=patient[1],
                study_description=study_desc,
                series_description=series_desc,
                series_number=series_number,
                instance_number=i,
                study_date=date,
                **{**common, **kw},
            )
            made.append(spec)
        archive.specs.extend(made)
        return made

    add(
        ct_study,
        f"{ct_study}.1",
        "CT",
        CT_PATIENT,
        "CT Chest",
        "Axial 2.5mm",
        1,
        3,
        "20200315",
    )
    add(
        ct_study,
        f"{ct_study}.2",
        "CT",
        CT_PATIENT,
        "CT Chest",
        "Scout",
        2,
        1,
        "20200315",
    )
    add(
        mr_study,
        f"{mr_study}.1",
        "MR",
        MR_PATIENT,
        "MR Brain",
        "T1 SAG",
        1,
        3,
        "20211102",
    )
    if extras:
        add(
            mr_study,
            f"{mr_study}.2",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "Cine",
            2,
            1,
            "20211102",
            frames=4,
        )
        add(
            mr_study,
            f"{mr_study}.3",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "RLE",
            3,
            1,
            "20211102",
            transfer_syntax=RLELossless,
        )
        add(
            mr_study,
            f"{mr_study}.4",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "Implicit",
            4,
            1,
            "20211102",
            transfer_syntax=ImplicitVRLittleEndian,
        )
        add(
            mr_study,
            f"{mr_study}.5",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "Big endian",
            5,
            1,
            "20211102",
            transfer_syntax=ExplicitVRBigEndian,
        )
        add(
            mr_study,
            f"{mr_study}.6",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "Deflated",
            6,
            1,
            "20211102",
            transfer_syntax=DeflatedExplicitVRLittleEndian,
        )
        add(
            mr_study,
            f"{mr_study}.7",
            "MR",
            MR_PATIENT,
            "MR Brain",
            "Colour",
            7,
            1,
            "20211102",
            bits=8,
            samples=3,
            frames=2,
        )
    zipped = archive.specs[-1] if extras else None
    for spec in archive.specs:
        if spec is zipped:
            continue
        write(spec, root / "files" / f"{spec.sop}.dcm")
    if zipped is not None:
        member = write(zipped, root / "tmp-member.dcm")
        with zipfile.ZipFile(root / "files" / "colour.zip", "w") as zf:
            zf.write(member, "dir/colour.dcm")
        member.unlink()
        zipped.path = None
    if extras:
        # one instance known only from its DICOM JSON (no pixels to serve)
        spec = Spec(
            study=f"{ROOT}.3",
            series=f"{ROOT}.3.1",
            sop=f"{ROOT}.3.1.1",
            modality="OT",
            patient_name="Json^Only",
            patient_id="PID-J-3",
            study_description="From JSON",
            series_description="JSON",
            series_number=1,
            instance_number=1,
            study_date="20190101",
        )
        ds = dataset(spec)
        del ds.PixelData
        document = ds.to_json_dict()
        document["7FE00010"] = {"vr": "OW", "BulkDataURI": "https://elsewhere/x"}
        (root / "files" / "only.json").write_text(json.dumps(document))
        archive.json_sop, archive.json_study = spec.sop, spec.study
        archive.json_series = spec.series
    return archive


# -- a server in a thread ------------------------------------------------------


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1, port chosen by the system."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicomweb"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class AccessLog(logging.Handler):
    """Collects the access-log lines of a test's server."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @contextlib.contextmanager
    def attached(self) -> Iterator[AccessLog]:
        logger = logging.getLogger("metastore.web.access")
        old = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old)


# -- the query layer's contract, until issue 11 lands -------------------------


def has_query_layer() -> bool:
    """Whether ``Store.query`` is the query layer of issue 11 already."""
    return "filters" in inspect.signature(Store.query).parameters


_STUDY_KEYS = [
    "00080005",
    "00080020",
    "00080030",
    "00080050",
    "00080056",
    "00080090",
    "00080201",
    "00100010",
    "00100020",
    "00100030",
    "00100040",
    "0020000D",
    "00200010",
]
_SERIES_KEYS = [
    "00080005",
    "00080060",
    "00080201",
    "0008103E",
    "0020000E",
    "00200011",
    "00400244",
    "00400245",
    "00400275",
]
_INSTANCE_KEYS = [
    "00080005",
    "00080016",
    "00080018",
    "00080056",
    "00080201",
    "00200013",
    "00280010",
    "00280011",
    "00280100",
    "00280008",
]
_LEVEL_KEYS = {
    "studies": _STUDY_KEYS,
    "series": _SERIES_KEYS,
    "instances": _INSTANCE_KEYS,
}


def _tag(key: str) -> str:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        return key.upper()
    tag = pydicom.datadict.tag_for_keyword(key)
    if tag is None:
        raise QueryError(f"unknown attribute {key!r}")
    return f"{tag:08X}"


def _values(element: Any) -> list[str]:
    if not isinstance(element, dict):
        return []
    out = []
    for value in element.get("Value", []):
        if isinstance(value, dict):  # PN
            out.append(
                "=".join(
                    value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")
                ).rstrip("=")
            )
        else:
            out.append(str(value))
    return out


def _fold(text: str) -> str:
    return "".join(
        c
        for c in unicodedata.normalize("NFKD", text.casefold())
        if not unicodedata.combining(c)
    )


def _matches(vr: str, values: list[str], wanted: str, fuzzy: bool) -> bool:
    if vr == "UI":
        return any(v in wanted.split(",") for v in values)
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return any(
            (not low or v >= low) and (not high or v[: len(high)] <= high)
            for v in values
        )
    if fuzzy and vr == "PN":
        words = [w for w in re.split(r"[\^= ]", _fold(values[0]))] if values else []
        return any(w.startswith(_fold(wanted).rstrip("*")) for w in words if w)
    pattern = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted
    )
    flags = re.IGNORECASE if vr == "PN" else 0
    return any(re.fullmatch(pattern, v, flags) for v in values)


def standin_query(
    self: Store,
    level: str,
    filters: Mapping[str, str | Sequence[str] | datetime.date] | None = None,
    *,
    include: Sequence[str] | str = (),
    limit: int | None = None,
    offset: int = 0,
    fuzzy: bool = False,
) -> Iterator[dict[str, Any]]:
    """A slow, test-only ``Store.query`` of the issue-11 contract."""
    if level not in _LEVEL_KEYS:
        raise QueryError(f"unknown level {level!r}")
    with self.engine.connect() as conn:
        sops = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT sop_instance_uid FROM instances ORDER BY id")
            )
        ]
    docs = [self.dicom_json(sop) or {} for sop in sops]
    wanted = {_tag(k): v for k, v in (filters or {}).items()}
    extra = [] if include == "all" else [_tag(k) for k in include]
    key = {
        "studies": ("0020000D",),
        "series": ("0020000D", "0020000E"),
        "instances": ("0020000D", "0020000E", "00080018"),
    }[level]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for doc in docs:
        groups.setdefault(tuple(_values(doc.get(t))[0] for t in key), []).append(doc)
    rows = []
    for ident in sorted(groups):
        members = groups[ident]
        first = members[0]
        study_docs = [d for d in docs if _values(d.get("0020000D")) == [ident[0]]]
        ok = True
        for tag, value in wanted.items():
            if isinstance(value, datetime.date):
                value = value.strftime("%Y%m%d")
            if not isinstance(value, str):
                value = ",".join(value)
            if tag == "00080061":
                present = {v for d in study_docs for v in _values(d.get("00080060"))}
                ok = ok and any(m in present for m in value.split(","))
                continue
            vr = pydicom.datadict.dictionary_VR(int(tag, 16))
            ok = ok and any(
                _matches(vr, _values(d.get(tag)), value, fuzzy) for d in members
            )
        if not ok:
            continue
        names = _LEVEL_KEYS[level] + ["0020000D", "0020000E"][: len(key)]
        if include == "all":
            names = list(first)
        row = {t: first[t] for t in [*names, *extra] if t in first}
        if level == "studies":
            row["00080061"] = {
                "vr": "CS",
                "Value": sorted(
                    {v for d in study_docs for v in _values(d.get("00080060"))}
                ),
            }
            row["00201206"] = {
                "vr": "IS",
                "Value": [len({_values(d.get("0020000E"))[0] for d in study_docs})],
            }
            row["00201208"] = {"vr": "IS", "Value": [len(study_docs)]}
        if level == "series":
            row["00201209"] = {"vr": "IS", "Value": [len(members)]}
        rows.append(row)
    end = None if limit is None else offset + limit
    yield from rows[offset:end]


@contextlib.contextmanager
def query_layer(monkeypatch: Any) -> Iterator[None]:
    """Use the real query layer when it exists, else the test stand-in."""
    if not has_query_layer():
        monkeypatch.setattr(Store, "query", standin_query)
    yield


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
