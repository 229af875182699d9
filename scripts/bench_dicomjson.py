#!/usr/bin/env python3
"""Benchmark: metastore.dicomjson against pydicom's ``Dataset.to_json_dict``.

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
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.data import get_charset_files, get_testdata_files

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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


def _convert_round(
    files: list[bytes], fn: Callable[[pydicom.Dataset], object]
) -> float:
    total = 0.0
    for data in files:
        ds = _read(data)
        t = time.perf_counter()
        fn(ds)
        total += time.perf_counter() - t
    return total


def _read_round(files: list[bytes], convert: bool) -> float:
    t = time.perf_counter()
    for data in files:
        ds = _read(data)
        if convert:
            _ours(ds)
    return time.perf_counter() - t


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

    theirs, ours, plain, both = [], [], [], []
    for _ in range(args.rounds):
        theirs.append(_convert_round(files, _to_json_dict))
        ours.append(_convert_round(files, _ours))
        plain.append(_read_round(files, convert=False))
        both.append(_read_round(files, convert=True))
    med = statistics.median
    n = len(files)
    print(f"rounds: {args.rounds}, medians per round of {n} files")
    print(
        f"  to_json_dict (make_cases)   {med(theirs):8.3f} s  {med(theirs) / n * 1e6:8.1f} us/file"
    )
    print(
        f"  dataset_to_dicom_json       {med(ours):8.3f} s  {med(ours) / n * 1e6:8.1f} us/file"
    )
    print(f"  ratio to_json_dict / ours   {med(theirs) / med(ours):8.2f}x")
    print(
        f"  dcmread                     {med(plain):8.3f} s  {med(plain) / n * 1e6:8.1f} us/file"
    )
    print(
        f"  dcmread + ours              {med(both):8.3f} s  {med(both) / n * 1e6:8.1f} us/file"
    )
    print(f"  ratio (dcmread+ours)/dcmread {med(both) / med(plain):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
