"""One source never costs more memory than the machine has (issue 9, item 2).

Instances of 10^4-10^5 frames, DICOM JSON files of thousands of instances and
zip bombs (a 1 MB archive holding a huge element or a huge JSON string) are
indexed by ``python -m metastore`` in a subprocess whose peak resident set is
measured (the largest process, ``RUSAGE_CHILDREN``): it must stay under
:data:`PEAK_MB` whatever the source holds.  Memory bounds, never timings.
Lazy frames and streamed sources must store exactly what holding them whole
stores, and a kill -9 in the middle of one must leave nothing half-written.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_samples import CT, EMRI, sample_path, write_json
from oracle_fixtures import load_cases
from pydicom.uid import DeflatedExplicitVRLittleEndian
from reliability import (
    HOOKED_CLI,
    PATIENCE,
    counts,
    env,
    export,
    module_rows_sql,
    problems,
    searched,
)
from stored import locations, query_rows

from metastore.imageid import parse_image_id
from metastore.index import extract as instances
from metastore.index import index_paths
from metastore.index import read as reading
from metastore.index.discovery import discover
from metastore.index.read import ReadCache, json_items, read_entry
from metastore.modules import frame_modules, instance_frame_modules
from metastore.modules.frames import number_of_frames
from metastore.records import ErrorRecord, LazyImages
from metastore.store import Store
from metastore.store import write as store_write

#: The most a run may take, in MB, whatever one source holds.
PEAK_MB = 300

ROOT = "https://pacs.example/dicomweb"


# -- inputs ------------------------------------------------------------------


def many_frames_part10(dest: Path, frames: int, sop: str = "") -> Path:
    """CT_small.dcm (39 KB) claiming ``frames`` frames (no per-frame groups),
    with SOP Instance UID ``sop`` if given."""
    ds = pydicom.dcmread(sample_path(CT))
    ds.NumberOfFrames = frames
    if sop:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def tiny_instance(n: int, frames: int = 1, series: int = 1) -> dict[str, Any]:
    """A small DICOM JSON instance (about 350 bytes)."""
    instance: dict[str, Any] = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.5.{n}"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.5"]},
        "0020000E": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.5.0.{series}"]},
        "00200013": {"vr": "IS", "Value": [n]},
        "00280010": {"vr": "US", "Value": [512]},
        "00280011": {"vr": "US", "Value": [512]},
    }
    if frames > 1:
        instance["00280008"] = {"vr": "IS", "Value": [frames]}
    return instance


def many_instances_json(dest: Path, count: int) -> Path:
    """One WADO-RS metadata array of ``count`` tiny instances."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8") as f:
        f.write("[")
        for n in range(1, count + 1):
            f.write("," if n > 1 else "")
            f.write(json.dumps(tiny_instance(n, series=n // 1000)))
        f.write("]")
    return dest


def element_bomb(dest: Path, size: int) -> Path:
    """A zip of one Part 10 file whose last (non-pixel) OB element has ``size``
    bytes of zeros: a few hundred KB compressed."""
    buffer = io.BytesIO()
    pydicom.dcmread(sample_path(CT), stop_before_pixels=True).save_as(
        buffer, enforce_file_format=True
    )
    # (7FE1,1010) OB, private, after everything pydicom read before pixel data
    header = struct.pack("<HH", 0x7FE1, 0x1010) + b"OB\0\0" + struct.pack("<L", size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z,
        z.open("bomb.dcm", "w", force_zip64=True) as member,
    ):
        member.write(buffer.getvalue() + header)
        zeros = bytes(2**22)
        for _ in range(size // len(zeros)):
            member.write(zeros)
    return dest


def string_bomb(dest: Path, size: int) -> Path:
    """A zip of one DICOM JSON instance whose description is ``size`` bytes."""
    head = json.dumps(tiny_instance(1))[:-1] + ', "00081030": {"vr": "LO", "Value": ["'
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z,
        z.open("bomb.json", "w", force_zip64=True) as member,
    ):
        member.write(head.encode())
        chunk = b"a" * 2**22
        for _ in range(size // len(chunk)):
            member.write(chunk)
        member.write(b'"]}}')
    return dest


# -- running and measuring ---------------------------------------------------

#: Runs the command given after it; prints its exit status and peak RSS (KB).
_WRAPPER = (
    "import resource,subprocess,sys;"
    "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
    "print(p.returncode,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def index_measured(
    url: str, path: Path, *extra: str, hooks: dict[str, str] | None = None
) -> tuple[int, float, str, str]:
    """``metastore index PATH --json`` in a subprocess: (status, peak MB, out, err).

    With ``hooks`` (``METASTORE_TEST_*`` variables), through the launcher that
    installs the crash points (``reliability.HOOKED_CLI``).
    """
    command = [str(HOOKED_CLI)] if hooks else ["-m", "metastore"]
    args = [sys.executable, *command, "index", os.fspath(path), "--json"]
    args += ["--workers", "1", "--db", url, *extra]
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        env=env(**(hooks or {})),
        capture_output=True,
        text=True,
        timeout=PATIENCE * 5,
        check=True,
    )
    lines = proc.stdout.splitlines()
    status, peak_kb = lines[-1].split()
    return int(status), int(peak_kb) / 1024, "\n".join(lines[:-1]), proc.stderr


def report_of(out: str) -> dict[str, Any]:
    """The ``--json`` report printed by ``metastore index``."""
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def indexed_in_process(url: str, path: Path) -> list[tuple[str, Any]]:
    """Index ``path`` into ``url`` in this process; return the export."""
    with Store(url) as store:
        report = index_paths(store, [path], workers=1, wadors_root=ROOT)
        assert report.problem_count == 0, report.errors
    return export(url)


# -- bounded memory ------------------------------------------------------------


def test_many_frames_of_a_small_part10_file_index_in_bounded_memory(
    db_url: str, tmp_path: Path
) -> None:
    """A 39 KB file claiming 20 000 frames: every frame stored, as frame_modules
    builds it, in bounded memory (before: 2.1 GB)."""
    path = many_frames_part10(tmp_path / "in" / "ct.dcm", 20_000)
    status, peak, out, err = index_measured(db_url, path, "--wadors-root", ROOT)
    assert status == 0, err
    assert report_of(out)["images"] == 20_000
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    with Store(db_url) as store:
        assert store.stats()["images"] == 20_000
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        instance = store.dicom_json(sop)
        assert instance is not None
        base = parse_image_id(
            f"wadors:{ROOT}/studies/{instance['0020000D']['Value'][0]}/series/"
            f"{instance['0020000E']['Value'][0]}/instances/{sop}/frames/1"
        )
        for frame in (1, 2, 999, 1000, 1001, 12_345, 20_000):
            image_id = base.with_frame(frame)
            assert store.image_modules(image_id) == frame_modules(
                instance, image_id, frame
            )


@pytest.mark.slow
def test_a_tiny_json_instance_of_100000_frames_indexes_in_bounded_memory(
    db_url: str, tmp_path: Path
) -> None:
    """Under 500 bytes of DICOM JSON claiming 10^5 frames (before: more than 9 GB)."""
    path = write_json(tmp_path / "in" / "frames.json", tiny_instance(1, 100_000))
    assert path.stat().st_size < 500
    status, peak, out, err = index_measured(db_url, path)
    assert status == 0, err
    assert report_of(out)["images"] == 100_000
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    assert counts(db_url)["images"] == 100_000


@pytest.mark.slow
def test_a_json_file_of_many_instances_indexes_in_bounded_memory(
    db_url: str, tmp_path: Path
) -> None:
    """30 000 instances in one file are streamed (before: about 16 KB each)."""
    path = many_instances_json(tmp_path / "in" / "many.json", 30_000)
    status, peak, out, err = index_measured(db_url, path)
    assert status == 0, err
    assert report_of(out)["instances"] == 30_000
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    assert counts(db_url)["instances"] == 30_000


@pytest.mark.parametrize("bomb", ["element", "json-string"])
def test_zip_bombs_fail_alone_with_the_limit_named(
    db_url: str, tmp_path: Path, bomb: str
) -> None:
    """A zip member holding a 256 MiB value fails with one line naming the member
    and the limit; memory stays bounded and the other sources are stored."""
    size = 256 * 2**20
    if bomb == "element":
        archive = element_bomb(tmp_path / "in" / "bomb.zip", size)
    else:
        archive = string_bomb(tmp_path / "in" / "bomb.zip", size)
    assert archive.stat().st_size < 2**21
    many_frames_part10(tmp_path / "in" / "good.dcm", 1)
    status, peak, out, err = index_measured(db_url, tmp_path / "in")
    assert status == 1, err
    report = report_of(out)
    assert (report["indexed"], report["failed"]) == (1, 1)
    [error] = report["errors"]
    member = "bomb.dcm" if bomb == "element" else "bomb.json"
    assert error["location"] == f"{archive}!/{member}"
    assert error["kind"] == "unreadable"
    assert "more than the 64 MiB metastore reads" in error["reason"]
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    assert counts(db_url)["instances"] == 1


def test_a_deflated_data_set_inflating_past_the_limit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydicom inflates a deflated file whole: past the limit it is not inflated."""
    ds = pydicom.dcmread(sample_path(CT))
    ds.ImageComments = "x" * 4000  # inflates well past 10 KB, deflates to little
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    entry = next(iter(discover([path])))
    assert not isinstance(entry, ErrorRecord)
    assert read_entry(entry, None, ReadCache()).status == "indexed"
    monkeypatch.setattr(reading, "MAX_VALUE_BYTES", 10_000)
    outcome = read_entry(entry, None, ReadCache())
    assert outcome.status == "failed"
    assert "deflated data set is more than the 10000 bytes" in outcome.errors[0].reason


def test_an_element_past_the_limit_fails_naming_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain file too: the value is never read, the reason says where it is."""
    ds = pydicom.dcmread(sample_path(CT))
    ds.add_new(0x00291010, "OB", bytes(5000))
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    entry = next(iter(discover([path])))
    assert not isinstance(entry, ErrorRecord)
    monkeypatch.setattr(reading, "MAX_VALUE_BYTES", 4096)
    outcome = read_entry(entry, None, ReadCache())
    assert outcome.status == "failed"
    [error] = outcome.errors
    assert error.location == str(path)
    assert "is 5000 bytes, more than the 4096 bytes metastore reads of one element" in (
        error.reason
    )


# -- lazy frames and streamed sources store what eager ones do ---------------


def test_frames_alike_share_values_and_equal_frame_modules() -> None:
    """instance_frame_modules equals frame_modules, frame for frame, for every
    oracle case and for hand-made shapes that keep or break "alike"."""
    instances = [
        case["metadata"]
        for name in ("synthetic", "extra", "fuzz")
        for case in load_cases(name)
    ]
    emri = pydicom.dcmread(sample_path(EMRI), stop_before_pixels=True).to_json_dict()
    odd: list[dict[str, Any]] = [
        tiny_instance(1, 7),
        # a shared item that carries per-frame groups: frames are not alike
        {
            **tiny_instance(2, 3),
            "52009229": {
                "vr": "SQ",
                "Value": [
                    {
                        "00209111": {
                            "vr": "SQ",
                            "Value": [
                                {"52009230": {"vr": "SQ", "Value": [{}, {}, {}]}}
                            ],
                        }
                    }
                ],
            },
        },
        {**tiny_instance(3, 4), "52009229": {"vr": "SQ", "Value": []}},
        {**tiny_instance(4, 4), "52009230": {"vr": "SQ", "Value": [{}, None]}},
        {**tiny_instance(5, 1), "00280008": {"vr": "IS", "Value": ["5"]}},
        emri,
    ]
    checked = 0
    for instance in [*instances, *odd]:
        frames = min(number_of_frames(instance), 12)
        base = parse_image_id(
            "wadors:https://x/studies/1/series/2/instances/3/frames/1"
        )
        try:
            want = [
                frame_modules(instance, base.with_frame(n), n)
                for n in range(1, frames + 1)
            ]
        except Exception as exc:  # the shared path must raise alike
            with pytest.raises(type(exc)):
                list(instance_frame_modules(instance, base.with_frame, frames))
            continue
        got = list(instance_frame_modules(instance, base.with_frame, frames))
        assert [m for _, _, m in got] == want
        assert [i for _, i, _ in got] == [
            base.with_frame(n) for n in range(1, frames + 1)
        ]
        checked += 1
    assert checked > 40


def test_lazy_frames_store_what_eager_frames_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance of 2 500 frames, lazy (the default) or held whole: the same
    export; lazy images are built in chunks of FRAME_CHUNK."""
    path = many_frames_part10(tmp_path / "in" / "ct.dcm", 2_500)
    [entry] = discover([path])
    assert not isinstance(entry, ErrorRecord)
    [record] = read_entry(entry, ROOT, ReadCache()).instances
    assert isinstance(record.images, LazyImages) and len(record.images) == 2_500
    lazy = indexed_in_process(f"sqlite:///{tmp_path / 'lazy.sqlite'}", path)
    monkeypatch.setattr(instances, "EAGER_FRAMES", 10**6)
    eager = indexed_in_process(f"sqlite:///{tmp_path / 'eager.sqlite'}", path)
    assert len(lazy) == 2_500
    assert lazy == eager


def test_lazy_frames_of_an_invalid_instance_fail_it_alone(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame past EAGER_FRAMES that makes Cornerstone throw fails the instance
    (naming the frame), as for an instance held whole; the others are stored."""
    monkeypatch.setattr(instances, "EAGER_FRAMES", 3)
    bad = tiny_instance(1, 6)
    groups: list[Any] = [{} for _ in range(6)]
    # frame 5's macro brings a (0018,6011) SequenceOfUltrasoundRegions with a
    # null item, which ultrasoundEnhancedRegionModule throws on
    regions = {"00186011": {"vr": "SQ", "Value": [None]}}
    groups[4] = {"00209111": {"vr": "SQ", "Value": [regions]}}
    bad["52009230"] = {"vr": "SQ", "Value": groups}
    write_json(tmp_path / "in" / "a.json", [bad, tiny_instance(2, 6)])
    with Store(db_url) as store:
        report = index_paths(store, [tmp_path / "in"], workers=1)
    assert (report.instances, report.images) == (1, 6)
    [error] = report.errors
    assert error.reason.startswith("instance 1: frame 5 of 6: Cornerstone raises")
    assert counts(db_url)["images"] == 6


def test_streamed_json_stores_what_whole_json_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file streamed a part at a time (more than EAGER_INSTANCES instances)
    stores and reports what reading it whole does: invalid items named by
    number, a SOP Instance UID twice keeps the first."""
    items: list[Any] = [7, "text"]
    items += [tiny_instance(n, frames=1 + n % 3) for n in range(1, 1300)]
    items.insert(600, {"00080018": {"vr": "UI", "Value": ["1.2.3"]}})  # no study
    twice = copy.deepcopy(items[700])
    twice["00200013"] = {"vr": "IS", "Value": [99999]}
    items.insert(900, twice)
    path = write_json(tmp_path / "in" / "many.json", items)
    [entry] = discover([path])
    assert not isinstance(entry, ErrorRecord)
    assert read_entry(entry, ROOT, ReadCache()).status == "stream"

    def run(name: str) -> tuple[Any, ...]:
        url = f"sqlite:///{tmp_path / name}"
        with Store(url) as store:
            report = index_paths(store, [path], workers=1, wadors_root=ROOT)
            stored_errors = sorted(store.errors(), key=lambda e: e.reason)
        counted = (report.indexed, report.failed, report.instances, report.images)
        return (
            counted,
            sorted(report.errors, key=lambda e: e.reason),
            stored_errors,
            export(url),
            counts(url),
        )

    # instances of 3 frames are lazy, built 2 frames at a time, in both runs
    monkeypatch.setattr(instances, "EAGER_FRAMES", 2)
    monkeypatch.setattr(store_write, "FRAME_CHUNK", 2)
    streamed = run("streamed.sqlite")
    monkeypatch.setattr(reading, "EAGER_INSTANCES", 10**6)
    monkeypatch.setattr(reading, "EAGER_IMAGES", 10**6)
    whole = run("whole.sqlite")
    assert streamed[0] == whole[0]
    assert streamed[0][:3] == (1, 0, 1300)
    reasons = [e.reason for e in streamed[1]]
    assert reasons == [
        "instance 1: not a DICOM JSON object",
        "instance 2: not a DICOM JSON object",
        "instance 601: missing StudyInstanceUID (0020,000D)",
    ]
    assert streamed[1:4] == whole[1:4]
    assert streamed[4] == {**whole[4], "module_values": streamed[4]["module_values"]}


def test_a_streamed_file_changes_nothing_stored_for_its_duplicates(
    db_url: str, tmp_path: Path
) -> None:
    """Issue 9.1 in a file too large to read whole (1 200 instances, streamed):
    its copies of instances stored from another file, one under their study
    with another patient and modality, two under another study and series,
    in different parts, are reported and change nothing stored; the rest is
    stored as a clean index of the file without them stores it."""
    intruder = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Intruder^Eve"}]},
        "00100020": {"vr": "LO", "Value": ["WRONG"]},
        "00080060": {"vr": "CS", "Value": ["MR"]},
    }
    elsewhere = {
        "0020000D": {"vr": "UI", "Value": ["9.9"]},
        "0020000E": {"vr": "UI", "Value": ["9.9.9"]},
    }
    # n = 0 is the lowest SOP Instance UID of the study: its attributes rule
    stored = [tiny_instance(n) for n in (0, 5000, 5001)]
    stored[0]["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Stored^Pat"}]}
    first = write_json(tmp_path / "in" / "a" / "stored.json", stored)
    items = [tiny_instance(n, series=n // 400) for n in range(1, 1201)]
    clean_path = write_json(tmp_path / "clean" / "b" / "big.json", items)
    copies = [stored[0] | intruder, *(s | intruder | elsewhere for s in stored[1:])]
    items[100:100] = copies[:1]  # the first part
    items[800:800] = copies[1:]  # the second
    path = write_json(tmp_path / "in" / "b" / "big.json", items)
    [entry] = discover([path])
    assert not isinstance(entry, ErrorRecord)
    assert read_entry(entry, ROOT, ReadCache()).status == "stream"
    sops = [c["00080018"]["Value"][0] for c in copies]

    with Store(db_url) as store:
        index_paths(store, [first], workers=1, wadors_root=ROOT)
        before = [store.dicom_json(sop) for sop in sops]
        report = index_paths(store, [path], workers=1, wadors_root=ROOT)
        assert (report.indexed, report.instances, report.duplicates) == (1, 1203, 3)
        assert {(e.location, e.kind) for e in report.errors} == {
            (str(path), "duplicate")
        }
        assert [store.dicom_json(sop) for sop in sops] == before
        where = locations(store)
        assert {where[sop] for sop in sops} == {str(first)}
        assert query_rows(store, "studies", {"PatientID": "WRONG"}) == []
        assert query_rows(store, "series", {"Modality": "MR"}) == []
        assert query_rows(store, "studies", {"StudyInstanceUID": "9.9"}) == []
        [study] = query_rows(store, "studies")
        assert study["PatientName"] == "Stored^Pat"
    clean_url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Store(clean_url) as store:
        index_paths(store, [first], workers=1, wadors_root=ROOT)
        index_paths(store, [clean_path], workers=1, wadors_root=ROOT)
    assert searched(db_url) == searched(clean_url)
    assert export(db_url) == export(clean_url)
    assert problems(db_url) == {}


def test_a_streamed_file_of_duplicates_only_is_skipped(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed copy of a streamed file: skipped (not indexed, not failed),
    nothing stored changes, and with --prune its duplicates stay reported."""
    monkeypatch.setattr(reading, "EAGER_INSTANCES", 20)
    folder = tmp_path / "in"
    original = many_instances_json(folder / "a.json", 60)
    with Store(db_url) as store:
        assert index_paths(store, [folder], workers=1).indexed == 1
        before, rows = export(db_url), counts(db_url)
        (folder / "b.json").write_bytes(original.read_bytes())
        report = index_paths(store, [folder], workers=1, prune=True)
        assert (report.unchanged, report.skipped, report.indexed) == (1, 1, 0)
        assert (report.failed, report.duplicates) == (0, 60)
        assert {e.location for e in store.errors()} == {str(folder / "b.json")}
        assert len(store.errors()) == 60
        assert set(store.known_sources()) == {str(original)}
    assert (export(db_url), counts(db_url)) == (before, rows | {"duplicates": 60})
    assert problems(db_url) == {}


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        ' [1, {"a": [2, "x,]"]}, 3.5e300, NaN, null] ',
        "\ufeff" + '[{"a": 1}]',
        '{"00080018": {"vr": "UI"}}',
        "[1 2]",
        "[1,]",
        "[1] x",
        "[12345678901234567890123456789]",
        '["\\ud800"]',
    ],
)
def test_json_items_reads_what_json_loads_reads(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streaming reader gives json.loads' values and refuses what it refuses,
    even read three bytes at a time."""
    monkeypatch.setattr(reading, "_JSON_READ", 3)
    data = text.encode()
    try:
        document = json.loads(data)
    except ValueError:
        with pytest.raises(ValueError):
            list(json_items(io.BytesIO(data)))
        return
    want = document if isinstance(document, list) else [document]
    assert json.dumps(list(json_items(io.BytesIO(data)))) == json.dumps(want)


# -- crashes -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("source", ["lazy-frames", "streamed-json"])
def test_killed_inside_one_large_source_leaves_nothing_of_it(
    db_url: str, tmp_path: Path, source: str
) -> None:
    """SIGKILL in the third chunk of one instance's frames (or the third part of
    a streamed file): nothing of the source is visible or known, and the rerun
    ends in the store a clean run makes."""
    folder = tmp_path / "in"
    many_frames_part10(folder / "a" / "first.dcm", 1, "1.2.826.0.1.3680043.8.498.6")
    if source == "lazy-frames":
        many_frames_part10(folder / "b" / "big.dcm", 4_500)
    else:
        many_instances_json(folder / "b" / "big.json", 1_800)
    clean_url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    one = ("--batch-size", "1")  # first.dcm in a batch of its own
    status, _, _, err = index_measured(clean_url, folder, *one)
    assert status == 0, err
    # statement 1 writes first.dcm's batch; 2 to 5 or 6 write the big source
    hook = {"METASTORE_TEST_KILL_AT_SQL": f"4:{module_rows_sql(db_url)}"}
    status, _, _, err = index_measured(db_url, folder, *one, hooks=hook)
    assert status == -9, err
    assert counts(db_url)["instances"] == 1  # first.dcm only
    assert problems(db_url) == {}
    with Store(db_url) as store:
        assert all("big" not in location for location in store.known_sources())
    status, _, _, err = index_measured(db_url, folder, *one)
    assert status == 0, err
    assert export(db_url) == export(clean_url)
    assert counts(db_url) == counts(clean_url)
    assert problems(db_url) == {}


def test_a_streamed_file_with_bad_json_at_its_end_stores_nothing_of_it(
    db_url: str, tmp_path: Path
) -> None:
    """Bad JSON after 1 000 good instances fails the file as a whole (as when it
    is read whole): its earlier rows are kept, nothing of the new text is."""
    path = many_instances_json(tmp_path / "in" / "many.json", 1_000)
    with Store(db_url) as store:
        assert index_paths(store, [path], workers=1).instances == 1_000
        before = export(db_url)
        text = path.read_text()
        path.write_text(text[:-1].replace("498.5.1000", "498.5.x") + ", {]")
        report = index_paths(store, [path], workers=1)
    assert (report.indexed, report.failed) == (0, 1)
    assert report.errors[0].reason.startswith("invalid DICOM JSON: Expecting")
    assert export(db_url) == before
    assert problems(db_url) == {}
    with Store(db_url) as store:
        assert store.dicom_json("1.2.826.0.1.3680043.8.498.5.x") is None


def test_peak_is_measured_for_the_child_not_this_process() -> None:
    """The wrapper reports the child's peak: a child that allocates 400 MB says so
    (so the bounds above cannot pass for want of measuring)."""
    child = "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, "-c", child],
        capture_output=True,
        text=True,
        check=True,
    )
    status, peak_kb = proc.stdout.split()
    assert status == "0"
    assert int(peak_kb) / 1024 > PEAK_MB
