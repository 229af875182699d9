#!/usr/bin/env python3
"""Benchmark: peak memory of ``metastore index`` on sources that hold a lot.

Builds the inputs of issue 9 (item 2) and indexes each alone into a fresh
SQLite database (and PostgreSQL with ``--postgres URL``), in a subprocess
whose peak resident set is measured (the largest process):

* a 39 KB Part 10 file (CT_small.dcm) claiming 20 000 frames;
* a 350-byte DICOM JSON instance claiming 100 000 frames;
* one DICOM JSON file of 200 000 instances;
* a 1 MB zip whose Part 10 member has a 1 GiB non-pixel OB element;
* a 1 MB zip whose DICOM JSON member has a 1 GiB string.

Prints, per input, the peak in MB, the seconds, the exit status and what the
report says (images stored, or the error).  The target is a peak under
300 MB for every input.

    python scripts/bench_memory.py [--scale 1.0] [--postgres URL] [--dir DIR]

``--scale 0.1`` makes every input ten times smaller (a quick look).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pydicom
from benchlib import PYTHON
from pydicom.data import get_testdata_file

#: The target: peak MB of any one run.
TARGET_MB = 300

#: Runs the command after it; prints its exit status and peak RSS (KB).
WRAPPER = (
    "import resource,subprocess,sys;"
    "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
    "print(p.returncode,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def ct(frames: int, dest: Path) -> Path:
    """CT_small.dcm claiming ``frames`` frames."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.NumberOfFrames = frames
    ds.save_as(dest, enforce_file_format=True)
    return dest


def instance(n: int, frames: int = 1) -> dict[str, object]:
    """A DICOM JSON instance of about 350 bytes."""
    out: dict[str, object] = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.9.{n}"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.9"]},
        "0020000E": {
            "vr": "UI",
            "Value": [f"1.2.826.0.1.3680043.8.498.9.0.{n // 1000}"],
        },
        "00200013": {"vr": "IS", "Value": [n]},
        "00280010": {"vr": "US", "Value": [512]},
        "00280011": {"vr": "US", "Value": [512]},
    }
    if frames > 1:
        out["00280008"] = {"vr": "IS", "Value": [frames]}
    return out


def frames_json(frames: int, dest: Path) -> Path:
    dest.write_text(json.dumps(instance(1, frames)))
    return dest


def many_json(count: int, dest: Path) -> Path:
    with dest.open("w") as f:
        f.write("[")
        for n in range(1, count + 1):
            f.write(("," if n > 1 else "") + json.dumps(instance(n)))
        f.write("]")
    return dest


def element_bomb(size: int, dest: Path) -> Path:
    """A zip member: CT_small's header, then a (7FE1,1010) OB of ``size`` zeros."""
    buffer = io.BytesIO()
    ds = pydicom.dcmread(
        str(get_testdata_file("CT_small.dcm")), stop_before_pixels=True
    )
    ds.save_as(buffer, enforce_file_format=True)
    header = struct.pack("<HH", 0x7FE1, 0x1010) + b"OB\0\0" + struct.pack("<L", size)
    with (
        zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z,
        z.open("bomb.dcm", "w", force_zip64=True) as member,
    ):
        member.write(buffer.getvalue() + header)
        zeros = bytes(2**24)
        for _ in range(size // len(zeros)):
            member.write(zeros)
    return dest


def string_bomb(size: int, dest: Path) -> Path:
    """A zip member: one DICOM JSON instance whose description has ``size`` bytes."""
    head = json.dumps(instance(1))[:-1] + ', "00081030": {"vr": "LO", "Value": ["'
    with (
        zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z,
        z.open("bomb.json", "w", force_zip64=True) as member,
    ):
        member.write(head.encode())
        chunk = b"a" * 2**24
        for _ in range(size // len(chunk)):
            member.write(chunk)
        member.write(b'"]}}')
    return dest


def measure(path: Path, url: str) -> tuple[int, float, float, dict[str, object]]:
    """Index ``path`` alone: (exit status, peak MB, seconds, the JSON report)."""
    args = [PYTHON, "-m", "metastore", "index", str(path), "--json", "--db", url]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    started = time.perf_counter()
    proc = subprocess.run(
        [PYTHON, "-c", WRAPPER, *args], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    lines = proc.stdout.splitlines()
    status, peak_kb = lines[-1].split()
    report = json.loads(lines[-2]) if len(lines) > 1 else {"stderr": proc.stderr}
    return int(status), int(peak_kb) / 1024, seconds, report


def _pg_url(url: str) -> tuple[str, Callable[[], None]]:
    """A scratch PostgreSQL database: (its url, how to drop it)."""
    import sqlalchemy as sa

    name = f"metastore_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    """Build the inputs, index each, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--postgres", default=None, help="also index into this server")
    ap.add_argument("--dir", type=Path, default=None, help="keep the inputs here")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="metastore-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)

    def scaled(n: int) -> int:
        return max(1, int(n * args.scale))

    gib = scaled(2**30) // 2**24 * 2**24 or 2**24
    inputs: list[tuple[str, Callable[[Path], Path]]] = [
        (
            f"Part 10, 39 KB, {scaled(20_000)} frames",
            lambda d: ct(scaled(20_000), d / "ct.dcm"),
        ),
        (
            f"JSON, 350 B, {scaled(100_000)} frames",
            lambda d: frames_json(scaled(100_000), d / "f.json"),
        ),
        (
            f"JSON, {scaled(200_000)} instances",
            lambda d: many_json(scaled(200_000), d / "m.json"),
        ),
        (f"zip, {gib >> 20} MiB OB element", lambda d: element_bomb(gib, d / "e.zip")),
        (f"zip, {gib >> 20} MiB JSON string", lambda d: string_bomb(gib, d / "s.zip")),
    ]
    backends = [("sqlite", None)] + (
        [("postgresql", args.postgres)] if args.postgres else []
    )
    worst = 0.0
    for n, (what, make) in enumerate(inputs):
        folder = work / f"input{n}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        path = make(folder)
        size = sum(p.stat().st_size for p in folder.iterdir())
        for backend, server in backends:
            drop: Callable[[], None] = lambda: None  # noqa: E731
            if server is None:
                url = f"sqlite:///{folder / 'bench.sqlite'}"
            else:
                url, drop = _pg_url(server)
            try:
                status, peak, seconds, report = measure(path, url)
            finally:
                drop()
            worst = max(worst, peak)
            if report.get("errors"):
                errors = report["errors"]
                assert isinstance(errors, list)
                said = f"failed: {errors[0]['reason']}"
            else:
                said = f"{report.get('images')} images"
            print(
                f"{what:38} ({size / 1e6:7.2f} MB on disk) {backend:10} "
                f"peak {peak:6.0f} MB  {seconds:6.1f} s  exit {status}  {said}"
            )
        (folder / "bench.sqlite").unlink(missing_ok=True)
    verdict = "under" if worst < TARGET_MB else "OVER"
    print(f"largest peak {worst:.0f} MB: {verdict} the {TARGET_MB} MB target")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if worst < TARGET_MB else 1)


if __name__ == "__main__":
    main()
