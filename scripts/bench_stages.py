#!/usr/bin/env python3
"""Benchmark: where a worker's CPU per file goes, stage by stage, against the loop.

Issue 14, target 1 allows the whole of indexing (workers, writer, start-up)
twice the CPU of a bare ``dcmread(stop_before_pixels=True)`` loop.  This
program shows how much of that the worker's own stages take, in one process
and the same run, on the perf archive (scripts/gen_archive.py, the files
``bench_cpu.py`` indexes; Part 10 files that take the direct reader).  In
alternating rounds it times passes over every file that each do one stage
more than the pass before:

1. ``loop``: ``pydicom.dcmread(path, stop_before_pixels=True)`` (the baseline);
2. ``read``: open the file and take its raw elements with pydicom's
   ``data_element_generator`` (``index.read._direct_header``: what
   ``dcmread`` does minus building a ``FileDataset``);
3. ``+ convert``: those elements to DICOM JSON
   (``dicomjson.raw_elements_to_dicom_json``);
4. ``+ modules``: the whole of ``index.read.read_entry`` (imageIds, every
   Cornerstone module of every frame, search attributes, the records);
5. ``+ pack``: ``store.encode.pack`` per chunk of ``CHUNK_SIZE`` files
   (canonical JSON, digests, compression against a sibling);
6. ``+ pickle``: the hand-over to the writing process, pickled.

and prints each stage's CPU per file (the difference between two passes), as
a ratio of the loop too, and the worker's total against the 2 x loop that
target 1 leaves for everything.

    python scripts/bench_stages.py [--files 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from benchlib import ensure_archive, median, warm_page_cache

STAGES = ("read", "+ convert", "+ modules", "+ pack", "+ pickle")


def _passes(paths: list[Path]) -> dict[str, Callable[[], None]]:
    import pydicom

    from metastore.dicomjson import raw_elements_to_dicom_json
    from metastore.index.discovery import Entry, discover
    from metastore.index.pipeline import CHUNK_SIZE
    from metastore.index.read import ReadCache, _direct_header, read_entry
    from metastore.store.encode import EncodeMemo, pack

    wanted = {str(p) for p in paths}
    entries = [
        e for e in discover(sorted(wanted)) if isinstance(e, Entry) and e.path in wanted
    ]

    def loop() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for entry in entries:
                pydicom.dcmread(entry.path, stop_before_pixels=True)

    def header(entry: Entry, convert: bool) -> None:
        with open(entry.path, "rb") as fp:
            size = entry.source.size
            found = _direct_header(fp, size, entry.source.location)
            if found is None:
                raise SystemExit(f"{entry.path}: not read by the direct reader")
            if convert:
                elements, implicit, ts, _ = found
                raw_elements_to_dicom_json(
                    elements,
                    implicit=implicit,
                    little=True,
                    transfer_syntax=ts,
                    bulk_data_uri=lambda tag: f"bulk/{tag}",
                    bulk_threshold=1024,
                )

    def read() -> None:
        for entry in entries:
            header(entry, False)

    def convert() -> None:
        for entry in entries:
            header(entry, True)

    def upto(stage: int) -> Callable[[], None]:
        def run() -> None:
            cache = ReadCache()
            for i in range(0, len(entries), CHUNK_SIZE):
                records = []
                for entry in entries[i : i + CHUNK_SIZE]:
                    records.extend(read_entry(entry, None, cache).instances)
                if stage >= 2:
                    packed = pack(records, EncodeMemo())
                    if stage >= 3:
                        pickle.dumps(packed, pickle.HIGHEST_PROTOCOL)
            cache.close()

        return run

    return {
        "loop": loop,
        "read": read,
        "+ convert": convert,
        "+ modules": upto(1),
        "+ pack": upto(2),
        "+ pickle": upto(3),
    }


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="of the perf archive")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--archive",
        type=Path,
        default=Path(tempfile.gettempdir()) / "metastore-perf-archive",
    )
    args = ap.parse_args()
    paths = ensure_archive(args.archive, 5725, 64)[: args.files]
    warm_page_cache(paths)
    passes = _passes(paths)
    for run in passes.values():  # warm every memo and import once, untimed
        run()
    gc.freeze()  # as a worker does (index.workers._worker_init)
    times: dict[str, list[float]] = {name: [] for name in passes}
    names = list(passes)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.process_time()
            passes[name]()
            times[name].append(time.process_time() - t)

    def ms(name: str) -> float:
        return median(times[name]) / len(paths) * 1e3

    loop = ms("loop")
    print(f"{len(paths)} files of {args.archive}, {args.rounds} rounds, medians")
    print(f"loop (dcmread, stop_before_pixels): {loop:.3f} ms CPU/file")
    before = 0.0
    for name in STAGES:
        now = ms(name)
        print(
            f"  {name:10s} {now - before:.3f} ms/file ({(now - before) / loop:.2f}x the loop)"
            f"; so far {now:.3f} ({now / loop:.2f}x)"
        )
        before = now
    print(
        f"worker stages in all: {before:.3f} ms/file = {before / loop:.2f}x the loop; "
        f"target 1 leaves 2.00x for workers, writer and start-up together"
    )


if __name__ == "__main__":
    main()
