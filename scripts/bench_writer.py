#!/usr/bin/env python3
"""Benchmark: the writing process's ceiling (issue 14, target 2).

Prepares records as the indexer's workers do (``metastore.index.read.read_entry``
then ``metastore.store.encode.pack`` per chunk of ``CHUNK_SIZE`` files, in
this process and untimed, except for the worker CPU per file it reports), then feeds
them to ``Store.write_batch`` in batches of 500 instances into a fresh
database and measures the CPU of this process around the writes only
(``time.process_time``) and the instances/s they reach.

Prints the ratio to the target (0.1 ms of writer CPU per instance, i.e.
10,000 instances/s) and the projection for 8 and 16 cores,
``min(cores / worker_cpu_per_file, 1 / writer_cpu_per_file)`` files/s.
With ``--profile`` it also prints a cProfile of one write loop.

    python scripts/bench_writer.py [--images 3000] [--rounds 3]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_index import _pg_db, _pg_drop
from benchlib import ensure_archive, median

TARGET_S = 0.0001  # writer CPU per instance
BATCH = 500


def prepare(archive: Path) -> tuple[list, int, float]:
    """Records as the workers hand them over; (records, files, worker CPU s)."""
    from metastore.index.discovery import Entry, discover
    from metastore.index.pipeline import CHUNK_SIZE as CHUNK
    from metastore.index.read import ReadCache, read_entry
    from metastore.records import InstanceRecord
    from metastore.store.encode import EncodeMemo, pack

    entries = [e for e in discover([str(archive)]) if isinstance(e, Entry)]
    zips = ReadCache()
    records: list[InstanceRecord] = []
    t = time.process_time()
    for i in range(0, len(entries), CHUNK):
        chunk = []
        for entry in entries[i : i + CHUNK]:
            chunk.extend(read_entry(entry, None, zips).instances)
        records.extend(pack(chunk, EncodeMemo()))
    worker_cpu = time.process_time() - t
    zips.close()
    return records, len(entries), worker_cpu


def write_all(
    url: str, records: list, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """Write ``records`` in batches; (CPU s, wall s) of the writes only."""
    from metastore.store import Store

    store = Store(url, upgrade=True)
    try:
        gc.collect()
        gc.freeze()  # as the indexer does for its run
        cpu = wall = 0.0
        for i in range(0, len(records), BATCH):
            part = records[i : i + BATCH]
            if profile is not None:
                profile.enable()
            t0, w0 = time.process_time(), time.perf_counter()
            store.write_batch(part, [])
            cpu += time.process_time() - t0
            wall += time.perf_counter() - w0
            if profile is not None:
                profile.disable()
        gc.unfreeze()
    finally:
        store.close()
    return cpu, wall


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postgres", default=None, help="also write into this server")
    ap.add_argument("--profile", action="store_true", help="cProfile one SQLite loop")
    ap.add_argument(
        "--archive",
        type=Path,
        default=Path(tempfile.gettempdir()) / "metastore-bench-archive",
    )
    args = ap.parse_args()

    ensure_archive(args.archive, args.images, args.size)
    records, files, worker_cpu = prepare(args.archive)
    instances = len(records)
    per_file_worker = worker_cpu / files
    print(
        f"archive: {files} files, {instances} instances ({args.archive}); "
        f"worker CPU (read_entry + pack, one process) {per_file_worker * 1e3:.3f} ms/file"
    )
    targets = ["sqlite"] + (["postgresql"] if args.postgres else [])
    cpus: dict[str, list[float]] = {t: [] for t in targets}
    walls: dict[str, list[float]] = {t: [] for t in targets}
    if args.profile:  # a round of its own: the profiler's overhead is not counted
        profile = cProfile.Profile()
        work = Path(tempfile.mkdtemp())
        try:
            write_all(f"sqlite:///{work / 'bench.sqlite'}", records, profile)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stats = pstats.Stats(profile, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
    for _ in range(args.rounds):
        for target in targets:
            work = Path(tempfile.mkdtemp())
            if target == "sqlite":
                url, name = f"sqlite:///{work / 'bench.sqlite'}", ""
            else:
                url, name = _pg_db(args.postgres)
            try:
                cpu, wall = write_all(url, records, None)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                if name:
                    _pg_drop(args.postgres, name)
            cpus[target].append(cpu)
            walls[target].append(wall)

    for target in targets:
        cpu, wall = median(cpus[target]), median(walls[target])
        per_instance = cpu / instances
        per_file_writer = cpu / files
        print(
            f"writer ({target}): {per_instance * 1e3:.3f} ms CPU/instance, "
            f"{instances / cpu:.0f} instances/s of writer CPU, {instances / wall:.0f} instances/s wall "
            f"(median of {args.rounds}); target {TARGET_S * 1e3:.1f} ms: "
            f"ratio target / measured = {TARGET_S / per_instance:.2f}x"
        )
        for cores in (2, 8, 16):
            workers = cores / per_file_worker
            ceiling = 1 / per_file_writer
            print(
                f"  projection {cores:2d} cores ({target}): min({workers:.0f} worker files/s, "
                f"{ceiling:.0f} writer files/s) = {min(workers, ceiling):.0f} files/s "
                f"({'writer' if ceiling < workers else 'workers'}-bound)"
            )


if __name__ == "__main__":
    main()
