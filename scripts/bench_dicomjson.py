#!/usr/bin/env python3
"""Benchmark: metastore.dicomjson.convert against pydicom's ``Dataset.to_json_dict``.

Loads N files into memory (pydicom's test files, repeated; or every file of a
folder given as argument; or ``--synthetic`` for the benchmarks' generated
archive), then, in alternating rounds:

* conversion only: on freshly read, identical ``dcmread(stop_before_pixels=True)``
  datasets (reading not timed), the make_cases-style ``to_json_dict`` call
  (with its suppress_invalid_tags fallback) against ``dataset_to_dicom_json``;
* end to end: ``dcmread + dataset_to_dicom_json`` against a plain ``dcmread``.

Prints the median round times and the ratios: to_json_dict / ours (higher is
better) and (dcmread + ours) / dcmread (the cost of conversion on top of
reading; 1.0 would be free).

    python scripts/bench_dicomjson.py [FOLDER] [--files 400] [--rounds 5]
        [--synthetic] [--profile]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_charset_files, get_testdata_files

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from metastore.dicomjson import _values as _vr
from metastore.dicomjson import dataset_to_dicom_json


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def _readable(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            continue
        data = Path(p).read_bytes()
        try:
            _read(data)
        except Exception:
            continue
        out.append(data)
    return out


def _load(args: argparse.Namespace) -> tuple[str, list[bytes]]:
    if args.synthetic:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchlib import ensure_archive

        folder = Path(tempfile.gettempdir()) / "metastore-bench-archive"
        paths = [str(p) for p in ensure_archive(folder, args.files, 64)]
        label = f"synthetic archive ({folder})"
    elif args.folder:
        paths = sorted(str(p) for p in Path(args.folder).rglob("*") if p.is_file())
        label = args.folder
    else:
        charset = sorted(f for f in get_charset_files() if f.endswith(".dcm"))
        paths = sorted(set(get_testdata_files())) + charset
        label = "pydicom + pydicom-data test files"
    files = _readable(paths)
    if not files:
        raise SystemExit("bench_dicomjson: no readable DICOM files")
    unique = len(files)
    files = (files * (args.files // unique + 1))[: args.files]
    return f"{label}: {unique} distinct files, {len(files)} per round", files


def _to_json_dict(ds: pydicom.Dataset) -> dict[str, object]:
    """What make_cases.convert() does (minus its file reading)."""

    def handler(elem: object) -> str:
        return "bulk"

    try:
        meta = ds.to_json_dict(
            bulk_data_threshold=1024, bulk_data_element_handler=handler
        )
    except Exception:
        meta = ds.to_json_dict(
            bulk_data_threshold=1024,
            bulk_data_element_handler=handler,
            suppress_invalid_tags=True,
        )
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        meta["00020010"] = {"vr": "UI", "Value": [str(ts)]}
    return dict(sorted(meta.items()))


def _ours(ds: pydicom.Dataset) -> dict[str, object]:
    return dataset_to_dicom_json(ds, bulk_data_uri=lambda tag: "bulk")


def _measure(files: list[bytes], rounds: int) -> dict[str, list[list[float]]]:
    """Per measure, per round, the CPU seconds of each file."""
    clock = time.process_time  # CPU time: other processes on the host matter less
    times: dict[str, list[list[float]]] = {m: [] for m in MEASURES}
    for _ in range(rounds):
        row: dict[str, list[float]] = {m: [] for m in MEASURES}
        # Each pass starts with an empty value memo: each file is new to it,
        # as when an archive is indexed once.  Passes are separate because a
        # to_json_dict call slows whatever runs right after it (caches).
        for data in files:
            ds = _read(data)
            t0 = clock()
            _to_json_dict(ds)
            row["to_json_dict"].append(clock() - t0)
        _vr.clear_caches()
        for data in files:
            ds = _read(data)
            t0 = clock()
            _ours(ds)
            row["ours"].append(clock() - t0)
        _vr.clear_caches()
        for data in files:
            t0 = clock()
            _read(data)
            t1 = clock()
            _ours(_read(data))
            t2 = clock()
            row["dcmread"].append(t1 - t0)
            row["dcmread+ours"].append(t2 - t1)
        for m in MEASURES:
            times[m].append(row[m])
    return times


MEASURES = ("to_json_dict", "ours", "dcmread", "dcmread+ours")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="convert the files of this folder")
    ap.add_argument("--files", type=int, default=400, help="files per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--synthetic", action="store_true", help="generated archive")
    ap.add_argument("--profile", action="store_true", help="pyinstrument ours")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    logging.getLogger("metastore").setLevel(logging.CRITICAL)
    label, files = _load(args)
    print(label)

    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        dss = [_read(d) for d in files]
        profiler.start()
        for ds in dss:
            _ours(ds)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return 0

    times = _measure(files, args.rounds)
    n = len(files)
    # Two summaries: the median of the round totals, and the sum over files
    # of each file's fastest round (robust to a busy host).
    median = {m: statistics.median(sum(r) for r in times[m]) for m in MEASURES}
    best = {m: sum(map(min, zip(*times[m], strict=True))) for m in MEASURES}
    print(f"{args.rounds} rounds of {n} files; CPU time per file")
    print(f"  {'':22s} {'median round':>14s} {'best per file':>14s}")
    for m in MEASURES:
        print(f"  {m:22s} {median[m] / n * 1e6:11.1f} us {best[m] / n * 1e6:11.1f} us")
    for label, a, b in (
        ("to_json_dict / ours", "to_json_dict", "ours"),
        ("(dcmread+ours) / dcmread", "dcmread+ours", "dcmread"),
    ):
        print(
            f"  {label:22s} {median[a] / median[b]:12.2f}x  {best[a] / best[b]:12.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
