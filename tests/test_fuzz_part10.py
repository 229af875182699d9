"""Broken Part 10 files, fuzzed: the indexer never crashes and never loses good files.

Real files (pydicom's CT_small.dcm and MR_small.dcm, pydicom-data's enhanced
emri_small.dcm) are cut at random points, have bytes flipped, are spliced
(the header of one and the body of another), or are reduced to nothing, a
preamble, or ``DICM`` and junk.  Indexed in one run with valid files, with
one worker and with two: every broken file is recorded with its path and a
reason (or is skipped as not DICOM, or read where it cannot be told from a
complete file), and the valid files' instances are stored, exactly.
"""

from __future__ import annotations

import io
import tempfile
from functools import cache
from pathlib import Path

import pydicom
import pydicom.uid
from dicom_samples import sample_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stored import locations

from metastore import IndexReport, Store, index_paths

NAMES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
PREAMBLE = b"\0" * 128


@cache
def original(name: str) -> bytes:
    """The bytes of a test file, unchanged (the valid copy)."""
    return sample_path(name).read_bytes()


@cache
def relabelled(name: str) -> bytes:
    """The test file with a SOP Instance UID of its own (for broken copies).

    Broken copies that are still readable (cut between two header elements)
    must not be mistaken for the valid copy.
    """
    ds = pydicom.dcmread(sample_path(name))
    uid = pydicom.uid.UID(f"1.2.826.0.1.3680043.8.498.4242.{NAMES.index(name) + 1}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def pixel_offset(data: bytes) -> int:
    """Where the top-level Pixel Data element starts."""
    offset = data.index(PIXEL_DATA_TAG + b"O")  # explicit VR OB/OW
    assert data[offset + 5 : offset + 6] in (b"B", b"W")
    return offset


def pixel_end(data: bytes) -> int:
    """Where the (native) Pixel Data value ends; trailing padding may follow."""
    offset = pixel_offset(data)
    return offset + 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")


def valid_uids() -> dict[str, str]:
    """The SOP Instance UID of each valid file, by name."""
    return {
        name: str(
            pydicom.dcmread(sample_path(name), stop_before_pixels=True).SOPInstanceUID
        )
        for name in NAMES
    }


def run(
    files: dict[str, bytes], workers: int
) -> tuple[IndexReport, dict[str, str], dict[str, str], set[str]]:
    """Index ``valid/`` (the three originals) and ``broken/`` (``files``) in one run.

    Returns:
        The report, ``{location: SOP Instance UID}`` stored, and
        ``{location: reason}`` of the recorded unreadable/invalid errors, and
        the locations reported as duplicates.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in NAMES:
            (root / "a valid" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "a valid" / name).write_bytes(original(name))
        (root / "broken").mkdir()
        for name, data in files.items():
            (root / "broken" / name).write_bytes(data)
        with Store(f"sqlite:///{root / 'db.sqlite'}") as store:
            report = index_paths(
                store, [root / "a valid", root / "broken"], workers=workers
            )
            stored = {location: sop for sop, location in locations(store).items()}
            recorded = store.errors()
    errors = {e.location: e.reason for e in recorded if e.kind != "duplicate"}
    duplicates = {e.location for e in recorded if e.kind == "duplicate"}
    prefix = str(root) + "/"
    return (
        report,
        {k.removeprefix(prefix): v for k, v in stored.items()},
        {k.removeprefix(prefix): v for k, v in errors.items()},
        {k.removeprefix(prefix) for k in duplicates},
    )


def check_run(files: dict[str, bytes]) -> dict[str, str]:
    """Run with 1 and 2 workers; check the invariants; return the outcome by file."""
    results = [run(files, workers) for workers in (1, 2)]
    assert results[0][1:] == results[1][1:], "1 and 2 workers disagree"
    report, stored, errors, duplicates = results[0]
    valid = valid_uids()
    # Every valid file is stored, under its own path, with its own UID.
    assert {k: v for k, v in stored.items() if k.startswith("a valid/")} == {
        f"a valid/{name}": uid for name, uid in valid.items()
    }
    assert report.files_seen == len(NAMES) + len(files)
    assert report.files_seen == report.indexed + report.skipped + report.failed
    assert report.failed == len(errors)
    outcome = {}
    for name, data in files.items():
        location = f"broken/{name}"
        if location in errors:
            assert errors[location].strip(), location  # a reason, never empty
            assert location not in stored
            outcome[name] = "failed"
        elif location in stored:
            assert stored[location] not in valid.values()
            outcome[name] = "indexed"
        elif location in duplicates:
            # read, and its UID is another broken file's (never a valid one's)
            outcome[name] = "duplicate"
        else:
            # Skipped (not DICOM) only when it does not even start like Part 10.
            assert data[128:132] != b"DICM", (name, "skipped a Part 10 file")
            outcome[name] = "skipped"
    return outcome


def test_degenerate_files() -> None:
    """Empty, preamble-only, DICM-then-junk and spliced files: recorded, never fatal."""
    ct, mr = relabelled("CT_small.dcm"), relabelled("MR_small.dcm")
    files = {
        "zero.dcm": b"",
        "preamble.dcm": PREAMBLE,
        "dicm.dcm": PREAMBLE + b"DICM",
        "dicm junk.dcm": PREAMBLE + b"DICM" + bytes(range(256)) * 4,
        "dicm ff.dcm": PREAMBLE + b"DICM" + b"\xff" * 64,
        "no preamble dicm.dcm": b"DICM" + ct[132:],
        "ct header mr body.dcm": ct[: pixel_offset(ct)] + mr[pixel_offset(mr) :],
        "mr header ct body.dcm": mr[: pixel_offset(mr)] + ct[pixel_offset(ct) :],
        "ct header cut mr body.dcm": ct[: pixel_offset(ct)]
        + mr[pixel_offset(mr) : pixel_end(mr) - 100],
        "ct header mr header.dcm": ct[: pixel_offset(ct) // 2]
        + mr[pixel_offset(mr) // 2 :],
        "ct twice.dcm": ct + ct,
    }
    outcome = check_run(files)
    assert outcome["zero.dcm"] == outcome["preamble.dcm"] == "skipped"
    for name in ("dicm.dcm", "dicm junk.dcm", "dicm ff.dcm"):
        assert outcome[name] == "failed", name
    # A splice whose last element runs past the end of the file is truncated.
    assert outcome["ct header cut mr body.dcm"] == "failed"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_cut_inside_the_pixel_data_always_fails(data: st.DataObject) -> None:
    """A file cut inside its Pixel Data element is failed, with a reason."""
    files = {}
    for name in NAMES:
        body = relabelled(name)
        for k in range(3):
            cut = data.draw(
                st.integers(pixel_offset(body) + 1, pixel_end(body) - 1),
                label=f"{name} cut {k}",
            )
            files[f"{name} {cut}"] = body[:cut]
    outcome = check_run(files)
    assert set(outcome.values()) == {"failed"}, outcome


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_cuts_flips_and_splices_never_crash(data: st.DataObject) -> None:
    """Cuts anywhere, flipped bytes and random splices: every file is accounted for."""
    files = {}
    for name in NAMES:
        body = relabelled(name)
        cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="cut")
        files[f"cut {name}"] = body[:cut]
        flipped = bytearray(body)
        for position in data.draw(
            st.lists(st.integers(0, pixel_offset(body) + 12), min_size=1, max_size=8),
            label="flips",
        ):
            flipped[position] ^= data.draw(st.integers(1, 255), label="mask")
        files[f"flipped {name}"] = bytes(flipped)
        other = relabelled(data.draw(st.sampled_from(NAMES), label="other"))
        at = data.draw(st.integers(132, len(body)), label="splice at")
        resume = data.draw(st.integers(0, len(other)), label="resume at")
        files[f"spliced {name}"] = body[:at] + other[resume:]
    check_run(files)


def test_every_cut_of_the_header_is_accounted_for() -> None:
    """MR_small cut at every 3rd header byte: failed, skipped or read, never lost."""
    body = relabelled("MR_small.dcm")
    files = {f"{cut:05d}": body[:cut] for cut in range(0, pixel_offset(body) + 8, 3)}
    outcome = check_run(files)
    for name, result in outcome.items():
        if int(name) < 132:
            assert result == "skipped", name
    assert "failed" in outcome.values()
