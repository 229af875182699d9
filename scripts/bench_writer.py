#!/usr/bin/env python3
"""Benchmark: the writing process's ceiling (issue 14, target 2).

Prepares chunks as the indexer's workers do (``metastore.index.read.read_entry``
then ``metastore.store.encode.pack`` per chunk of ``CHUNK_SIZE`` files, and
pickled; in this process and untimed, except for the worker CPU per file it
reports), then writes them into a fresh database in batches of whole chunks
(the indexer's batch size or more, as it cuts them; ``--batch-size N``,
repeatable, compares sizes in the same run) and measures the CPU of
this process (``time.process_time``) two ways: ``write_batch``, the store's
call alone (the figure of earlier runs), and ``pipeline``, all the
indexer's writing process does per batch (unpickle the chunks,
``Store.screen``, ``write_batch``).

Prints the ratio to the target (0.1 ms of writer CPU per instance, i.e.
10,000 instances/s) and the projection for 8 and 16 cores,
``min(cores / worker_cpu_per_file, 1 / writer_cpu_per_file)`` files/s.
With ``--profile`` it also prints a cProfile of one write loop.

    python scripts/bench_writer.py [--images 3000] [--rounds 3] [--batch-size N ...]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pickle
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_index import _pg_db, _pg_drop
from benchlib import ensure_archive, median

TARGET_S = 0.0001  # writer CPU per instance
#: What is timed: ``write_batch`` alone, or all the writing process does.
WAYS = ("write_batch", "pipeline")


def prepare(archive: Path) -> tuple[list[tuple[int, bytes]], int, float]:
    """Chunks as the workers hand them over, pickled.

    Returns ((instances, pickle) per chunk, files, worker CPU s: read +
    pack + pickling).
    """
    from metastore.index.discovery import Entry, discover
    from metastore.index.pipeline import CHUNK_SIZE as CHUNK
    from metastore.index.read import ReadCache, read_entry
    from metastore.store.encode import EncodeMemo, pack

    entries = [e for e in discover([str(archive)]) if isinstance(e, Entry)]
    zips = ReadCache()
    blobs: list[tuple[int, bytes]] = []
    t = time.process_time()
    for i in range(0, len(entries), CHUNK):
        chunk = []
        for entry in entries[i : i + CHUNK]:
            chunk.extend(read_entry(entry, None, zips).instances)
        packed = pack(chunk, EncodeMemo())
        blobs.append((len(packed), pickle.dumps(packed, pickle.HIGHEST_PROTOCOL)))
    worker_cpu = time.process_time() - t
    zips.close()
    return blobs, len(entries), worker_cpu


def hand_over(archive: Path) -> None:
    """Print what the workers' results cost to pickle, packed and pre-encoded.

    The same chunks in both forms, in this run: ``pack`` (what the workers
    send now) against ``pre_encode`` (records encoded per value only, as
    before the encoding moved to the workers); bytes, and CPU to dump and
    to load (the writing process loads).
    """
    from metastore.index.discovery import Entry, discover
    from metastore.index.pipeline import CHUNK_SIZE as CHUNK
    from metastore.index.read import ReadCache, read_entry
    from metastore.store.encode import EncodeMemo, pack, pre_encode

    entries = [e for e in discover([str(archive)]) if isinstance(e, Entry)]
    zips = ReadCache()
    chunks = []
    for i in range(0, len(entries), CHUNK):
        chunk = []
        for entry in entries[i : i + CHUNK]:
            chunk.extend(read_entry(entry, None, zips).instances)
        chunks.append(chunk)
    zips.close()
    n = sum(map(len, chunks))
    figures = {}
    for form in (pre_encode, pack):
        results = [form(chunk, EncodeMemo()) for chunk in chunks]
        t = time.process_time()
        dumped = [pickle.dumps(r, pickle.HIGHEST_PROTOCOL) for r in results]
        dumps = time.process_time() - t
        t = time.process_time()
        for blob in dumped:
            pickle.loads(blob)
        loads = time.process_time() - t
        figures[form.__name__] = (sum(map(len, dumped)) / n, dumps / n, loads / n)
    (b0, d0, l0), (b1, d1, l1) = figures["pre_encode"], figures["pack"]
    print(
        f"hand-over per instance, pack / pre_encode: {b1:.0f} / {b0:.0f} bytes "
        f"= {b1 / b0:.2f}x; dumps {d1 * 1e3:.3f} / {d0 * 1e3:.3f} ms = {d1 / d0:.2f}x; "
        f"loads {l1 * 1e3:.3f} / {l0 * 1e3:.3f} ms = {l1 / l0:.2f}x"
    )


def write_all(
    url: str,
    blobs: list[tuple[int, bytes]],
    way: str,
    profile: cProfile.Profile | None,
    size: int,
) -> tuple[float, float]:
    """Write the chunks in batches of whole chunks; (CPU s, wall s) of the writer.

    A batch ends after the chunk that brings it to ``size`` instances.

    ``way``: ``write_batch``, the store's call alone (records unpickled
    before, untimed), or ``pipeline``, what the indexer's writing process
    does per batch: unpickle the chunks, ``Store.screen`` them, then
    ``write_batch`` what it keeps.
    """
    from metastore.store import Store

    store = Store(url, upgrade=True)
    try:
        gc.collect()
        gc.freeze()  # as the indexer does for its run
        batches: list[list[bytes]] = [[]]
        count = 0
        for n, blob in blobs:
            batches[-1].append(blob)
            count += n
            if count >= size:  # cut after the chunk that fills it, as the indexer
                batches.append([])
                count = 0
        cpu = wall = 0.0
        for batch in batches:
            if not batch:
                continue
            loaded = None
            if way == "write_batch":
                loaded = [r for blob in batch for r in pickle.loads(blob)]
            if profile is not None:
                profile.enable()
            t0, w0 = time.process_time(), time.perf_counter()
            if loaded is None:
                records = [r for blob in batch for r in pickle.loads(blob)]
                kept, _ = store.screen(records)
                store.write_batch(kept, [])
            else:
                store.write_batch(loaded, [])
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
        "--batch-size",
        type=int,
        action="append",
        default=[],
        help="instances per batch (repeatable; default: the indexer's)",
    )
    ap.add_argument(
        "--archive",
        type=Path,
        default=Path(tempfile.gettempdir()) / "metastore-bench-archive",
    )
    args = ap.parse_args()
    from metastore.index import DEFAULT_BATCH_SIZE

    sizes = args.batch_size or [DEFAULT_BATCH_SIZE]

    ensure_archive(args.archive, args.images, args.size)
    blobs, files, worker_cpu = prepare(args.archive)
    instances = sum(n for n, _ in blobs)
    hand_over(args.archive)
    per_file_worker = worker_cpu / files
    print(
        f"archive: {files} files, {instances} instances ({args.archive}); "
        f"worker CPU (read_entry + pack + pickling, one process) "
        f"{per_file_worker * 1e3:.3f} ms/file"
    )
    bases = ["sqlite"] + (["postgresql"] if args.postgres else [])
    targets = [(b, way, size) for b in bases for way in WAYS for size in sizes]
    cpus: dict[tuple[str, str, int], list[float]] = {t: [] for t in targets}
    walls: dict[tuple[str, str, int], list[float]] = {t: [] for t in targets}

    def label(backend: str, way: str, size: int) -> str:
        return f"{backend} {way}" + (f", batches of {size}" if len(sizes) > 1 else "")

    if args.profile:  # a round of its own: the profiler's overhead is not counted
        profile = cProfile.Profile()
        work = Path(tempfile.mkdtemp())
        try:
            url = f"sqlite:///{work / 'bench.sqlite'}"
            write_all(url, blobs, "pipeline", profile, sizes[0])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stats = pstats.Stats(profile, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
    for _ in range(args.rounds):
        for target in targets:
            work = Path(tempfile.mkdtemp())
            backend, way, size = target
            if backend == "sqlite":
                url, name = f"sqlite:///{work / 'bench.sqlite'}", ""
            else:
                url, name = _pg_db(args.postgres)
            try:
                cpu, wall = write_all(url, blobs, way, None, size)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                if name:
                    _pg_drop(args.postgres, name)
            cpus[target].append(cpu)
            walls[target].append(wall)

    for target in targets:
        name = label(*target)
        cpu, wall = median(cpus[target]), median(walls[target])
        per_instance = cpu / instances
        per_file_writer = cpu / files
        print(
            f"writer ({name}): {per_instance * 1e3:.3f} ms CPU/instance, "
            f"{instances / cpu:.0f} instances/s of writer CPU, {instances / wall:.0f} instances/s wall "
            f"(median of {args.rounds}); target {TARGET_S * 1e3:.1f} ms: "
            f"ratio target / measured = {TARGET_S / per_instance:.2f}x"
        )
        for cores in (2, 8, 16):
            workers = cores / per_file_worker
            ceiling = 1 / per_file_writer
            print(
                f"  projection {cores:2d} cores ({name}): min({workers:.0f} worker files/s, "
                f"{ceiling:.0f} writer files/s) = {min(workers, ceiling):.0f} files/s "
                f"({'writer' if ceiling < workers else 'workers'}-bound)"
            )
        backend, way, size = target
        first = (backend, way, sizes[0])
        if size != sizes[0]:
            ratio = cpu / median(cpus[first])
            print(
                f"  batches of {size} / of {sizes[0]} ({backend} {way}): {ratio:.2f}x CPU"
            )


if __name__ == "__main__":
    main()
