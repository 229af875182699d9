#!/usr/bin/env python3
"""Generate a deterministic synthetic DICOM archive for the benchmarks.

The archive has CT, MR and PET series with real geometry (positions along the
slice normal, orientations, spacings), enhanced multi-frame MR instances with
shared and per-frame functional groups, and header sizes like real scanners'
(institution, protocol, private blocks).  The same arguments always give the
same bytes, so benchmark runs compare like with like.

    python scripts/gen_archive.py OUT_DIR [--images N] [--size 64] [--seed 1]

Used as a library by the bench_*.py scripts: ``generate(out_dir, images=...)``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
UID_ROOT = "1.2.826.0.1.3680043.10.1137."


@dataclass(frozen=True)
class SeriesPlan:
    """One series to generate."""

    modality: str
    images: int
    frames_per_instance: int = 1


def _uid(rng: random.Random) -> str:
    # deterministic: derived from the seeded generator, not from time or MAC
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(rng.random())])


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "1"
    meta.ImplementationVersionName = "METASTORE_BENCH"
    return meta


def _common(ds: Dataset, rng: random.Random, patient: int) -> None:
    """Attributes every real header carries (and that make it realistic in size)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"Bench^Patient{patient:05d}^^Dr."
    ds.PatientID = f"P{patient:07d}"
    ds.PatientBirthDate = f"19{40 + patient % 60:02d}0{1 + patient % 9}1{patient % 10}"
    ds.PatientSex = "MF"[patient % 2]
    ds.PatientAge = f"{20 + patient % 70:03d}Y"
    ds.PatientWeight = f"{55 + patient % 40}.5"
    ds.PatientSize = f"1.{60 + patient % 35}"
    ds.InstitutionName = "Metastore General Hospital, Department of Radiology"
    ds.InstitutionAddress = "1 Benchmark Road^Testville^^12345^Nowhere"
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = "Imager 9000 Ultra"
    ds.DeviceSerialNumber = str(rng.randrange(10**8))
    ds.SoftwareVersions = ["VB42A", "SP3", "build 20240101"]
    ds.StationName = "BENCH-STATION-01"
    ds.ReferringPhysicianName = "Referrer^Alice"
    ds.OperatorsName = ["Tech^Bob", "Tech^Carol"]
    ds.ImageComments = "Synthetic image generated for metastore benchmarks " * 3
    # A private block, as every vendor writes one.
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "private protocol parameters")
    block.add_new(0x11, "OB", bytes(rng.randrange(256) for _ in range(512)))
    block.add_new(0x12, "DS", [f"{rng.random():.6f}" for _ in range(16)])


def _image_pixel(ds: Dataset, size: int, frames: int, rng: random.Random) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    # Pixel values do not matter to metadata; deterministic filler keeps size.
    ds.PixelData = bytes(rng.randrange(256) for _ in range(16)) * (
        size * size * frames * 2 // 16
    )


def _geometry(
    ds: Dataset, index: int, spacing: float, thickness: float, tilt: float
) -> None:
    """IOP/IPP along a (slightly tilted) slice normal, like a real stack."""
    iop = [1.0, 0.0, 0.0, 0.0, round(1.0 - tilt, 6), round(tilt, 6)]
    ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
    ds.ImagePositionPatient = [
        "-125.5",
        f"{-120.25 - index * tilt * thickness:.4f}",
        f"{-300.0 + index * thickness:.4f}",
    ]
    ds.SliceLocation = f"{-300.0 + index * thickness:.4f}"
    ds.SliceThickness = f"{thickness:g}"
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]


def _study(ds: Dataset, study_uid: str, patient: int, study_no: int) -> None:
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = f"2024{1 + study_no % 12:02d}{1 + study_no % 28:02d}"
    ds.StudyTime = f"{8 + study_no % 10:02d}3015.123456"
    ds.AccessionNumber = f"ACC{patient:05d}{study_no:03d}"
    ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
    ds.StudyID = str(study_no)


def _single_frame(
    plan: SeriesPlan, index: int, series_uid: str, size: int, rng: random.Random
) -> Dataset:
    ds = Dataset()
    sop_class = {"CT": CT_STORAGE, "MR": MR_STORAGE, "PT": PET_STORAGE}[plan.modality]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(rng)
    ds.Modality = plan.modality
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = _uid(rng)
    _geometry(ds, index, 0.7 + 0.01 * (size % 7), 1.25, 0.0)
    if plan.modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = ["40", "400"]
        ds.WindowWidth = ["400", "1500"]
        ds.KVP = "120"
        ds.ConvolutionKernel = "B30f"
    elif plan.modality == "MR":
        ds.WindowCenter = "600"
        ds.WindowWidth = "1200"
        ds.MagneticFieldStrength = "3"
        ds.EchoTime = "2.46"
        ds.RepetitionTime = "2300"
        ds.SequenceName = "*tfl3d1_16ns"
    else:
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = f"{0.5 + rng.random():.6f}"
        ds.FrameReferenceTime = f"{index * 1000.0:.1f}"
        ds.ActualFrameDuration = 180000
        item = Dataset()
        item.Radiopharmaceutical = "Fluorodeoxyglucose"
        item.RadiopharmaceuticalStartTime = "101500.000000"
        item.RadionuclideTotalDose = "370000000"
        item.RadionuclideHalfLife = "6586.2"
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    _image_pixel(ds, size, 1, rng)
    return ds


def _enhanced_mr(
    frames: int, index: int, series_uid: str, size: int, rng: random.Random
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = _uid(rng)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.FrameOfReferenceUID = _uid(rng)
    ds.NumberOfFrames = frames
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.9375", "0.9375"]
    measures.SliceThickness = "3"
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PlaneOrientationSequence = Sequence([orientation])
    voi = Dataset()
    voi.WindowCenter = "500"
    voi.WindowWidth = "1000"
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for f in range(frames):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = ["-120", "-110", f"{-50.0 + 3.0 * f:.1f}"]
        item.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.DimensionIndexValues = [1, f + 1]
        content.StackID = "1"
        content.InStackPositionNumber = f + 1
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _image_pixel(ds, size, frames, rng)
    return ds


def plan_archive(images: int) -> list[SeriesPlan]:
    """Split ``images`` images into CT, MR, PET and enhanced-MR series."""
    plans: list[SeriesPlan] = []
    left = images
    cycle = [("CT", 120, 1), ("MR", 60, 1), ("PT", 80, 1), ("MR", 40, 20)]
    i = 0
    while left > 0:
        modality, count, frames = cycle[i % len(cycle)]
        count = min(count, left)
        if frames > 1:
            count = max(frames, count - count % frames)
        plans.append(SeriesPlan(modality, count, frames))
        left -= count
        i += 1
    return plans


def iter_datasets(
    images: int,
    size: int = 64,
    seed: int = 1,
    plans: list[SeriesPlan] | None = None,
) -> Iterator[tuple[str, Dataset]]:
    """Yield ``(relative path, dataset)`` for an archive of about ``images`` images.

    ``plans`` replaces the default mix of series (e.g. one 500-image CT series).
    """
    rng = random.Random(seed)
    patient = 0
    study_uid = ""
    for s, plan in enumerate(plans or plan_archive(images)):
        if s % 4 == 0:  # one study of four series per patient
            patient += 1
            study_uid = _uid(rng)
        series_uid = _uid(rng)
        instances = plan.images // plan.frames_per_instance
        for i in range(instances):
            if plan.frames_per_instance > 1:
                ds = _enhanced_mr(plan.frames_per_instance, i, series_uid, size, rng)
            else:
                ds = _single_frame(plan, i, series_uid, size, rng)
            _common(ds, rng, patient)
            _study(ds, study_uid, patient, s // 4)
            ds.SeriesNumber = s % 4 + 1
            ds.SeriesDescription = f"{plan.modality} series {s % 4 + 1}"
            ds.SeriesDate = ds.StudyDate
            ds.SeriesTime = ds.StudyTime
            ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
            yield f"p{patient:05d}/s{s:05d}/i{i:05d}.dcm", ds


def generate(
    out_dir: Path,
    images: int,
    size: int = 64,
    seed: int = 1,
    plans: list[SeriesPlan] | None = None,
) -> list[Path]:
    """Write the archive under ``out_dir`` and return the file paths."""
    paths = []
    for rel, ds in iter_datasets(images, size, seed, plans):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def clone_archive(
    out_dir: Path, count: int, per_folder: int = 1000, start: int = 0
) -> list[Path]:
    """Write ``count`` small single-frame instances fast, by patching a template.

    pydicom writes a few hundred files a second; the scale benchmark needs
    100,000.  One CT file is written with fixed-width UIDs and position, and
    every copy replaces those bytes in place (same length, so the encoding
    stays valid): each copy is a distinct instance in its own series of
    ``per_folder`` images, with its own slice position.  ``start``: the
    number of the first instance, so that a later call adds to an archive
    (instance ``i`` is always the same file, in series ``i // per_folder``).
    """
    rng = random.Random(7)
    plan = SeriesPlan("CT", 1)
    ds = _single_frame(plan, 0, "9" * 40, 8, rng)
    _common(ds, rng, 1)
    _study(ds, "8" * 40, 1, 1)
    ds.SOPInstanceUID = "7" * 40
    ds.ImagePositionPatient = ["-125.5", "-120.25", "0000000.0000"]
    ds.InstanceNumber = "7777777"
    ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    template = buf.getvalue()
    width = 40 - len(UID_ROOT) - 3  # "9.<kind><number>" keeps every UID 40 long

    def uid(kind: int, number: int) -> bytes:
        # a leading kind digit (1-3) keeps the last component free of leading zeros
        return f"{UID_ROOT}9.{kind}{number:0{width}d}".encode()

    paths = []
    for i in range(start, start + count):
        series, pos = divmod(i, per_folder)
        data = (
            template.replace(b"7" * 40, uid(1, i))
            .replace(b"9" * 40, uid(2, series))
            .replace(b"8" * 40, uid(3, series // 4))
            .replace(b"0000000.0000", f"{pos * 1.25:12.4f}".encode())
            .replace(b"7777777", f"{pos + 1:<7d}".encode())
        )
        path = out_dir / f"s{series:05d}" / f"i{pos:05d}.dcm"
        if pos == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--images", type=int, default=1000, help="about this many images")
    ap.add_argument("--size", type=int, default=64, help="rows = columns")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    paths = generate(args.out_dir, args.images, args.size, args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"gen_archive: {len(paths)} files, {total / 1e6:.1f} MB in {args.out_dir}")


if __name__ == "__main__":
    main()
