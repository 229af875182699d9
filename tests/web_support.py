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
import json
import logging
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

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


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
