#!/usr/bin/env python3
"""Benchmark: a million instances (issue 14, target 3).

Writes ``--instances`` (default 1,000,000) small single-frame instances in
series (folders) of 500 (scripts/gen_archive.py ``clone_archive``), then
indexes them tenth by tenth: into one SQLite database with one
``metastore index`` per tenth, and (with ``--postgres URL``, a scratch
database is created there) into PostgreSQL with two sharded indexers per
tenth (``--shard 1/2`` and ``--shard 2/2`` run concurrently).  Each tenth's
files are read once first, untimed: whether they are still in the page
cache from being written moved a tenth by 5-10 % (docs/benchmarks.md).
Prints the rate per tenth (target: last tenth at least 0.9x the first; the
mean of the last five against the first five too, a steadier reading) in
wall time and
in CPU time of the indexers and their workers (the machine may be shared: CPU
per instance shows whether indexing slows as the store grows whatever else
runs; PostgreSQL's own server processes are not in it), the peak memory
of each indexer process (target: flat, under 300 MB), the database size per
image, and at the end, each in a fresh process after its imports, timed
against the 50 ms target:

* a cold series load of 500 images (``DatabaseProvider.load_series``),
* ``metastore query studies --patient-name 'bench*'`` (the command itself),
* ``metastore get imagePlaneModule IMAGE_ID`` (the command itself).

    python scripts/bench_million.py [--instances 1000000] [--workers N]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--no-sqlite]
        [--keep]
    python scripts/bench_million.py --lookups URL   (a database --keep left)

"Cold" is a lookup's first use in the process: the modules its path loads
lazily (the database driver among them) are in its time.  Each is also
timed in a process that imported those modules beforehand (the database
work alone), and again in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean
from typing import Any

from bench_index import _pg_db, _pg_drop
from benchlib import HERE, PYTHON, median, run_child, warm_page_cache

TARGET_MS = 50.0
PER_SERIES = 500

# Run in a fresh process: imports first (untimed), then each operation cold
# (its first use in the process: the modules it loads lazily, the driver's
# among them, are in its time), then again.  With a JSON list of modules as
# a fourth argument, those are imported first too (untimed): the cold time
# of the database work alone.  Prints the figures and the modules the run
# loaded after its imports.
COLD = r"""
import importlib, io, json, sys, time, contextlib
url, series, image_id = sys.argv[1:4]
import sqlalchemy, click
import metastore.store, metastore.cli
from metastore.providers.database import DatabaseProvider
for name in json.loads(sys.argv[4]) if len(sys.argv) > 4 else []:
    importlib.import_module(name)
before = set(sys.modules)
out = {}
for again in ("", "_again"):  # cold (first use in the process), then again
    t = time.perf_counter()
    db = DatabaseProvider(url)
    ids = db.load_series(series)
    out["series" + again] = (time.perf_counter() - t) * 1e3
    out["series_lines"] = len(ids)
    db.close()
    for name, argv in (
        ("query", ["query", "studies", "--patient-name", "bench*", "--json", "--db", url]),
        ("get", ["get", "imagePlaneModule", image_id, "--db", url]),
    ):
        raw = io.BytesIO()
        buf = io.TextIOWrapper(raw, encoding="utf-8")
        t = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            try:
                metastore.cli.cli.main(argv, standalone_mode=False)
            except SystemExit:
                pass
        buf.flush()
        out[name + again] = (time.perf_counter() - t) * 1e3
        out[name + "_lines"] = len(raw.getvalue().splitlines())
out["loaded"] = sorted(set(sys.modules) - before)
print(json.dumps(out))
"""


def _index_tenth(
    url: str, folders: list[Path], shards: int, extra: list[str]
) -> tuple[float, list[float], float]:
    """Index ``folders`` with ``shards`` concurrent indexers.

    Returns (wall s, peak MB per indexer, CPU s of the indexers and workers).
    """
    cmd = [PYTHON, "-m", "metastore", "index", "--db", url, *map(str, folders), *extra]
    if shards == 1:
        r = run_child(cmd)
        return r.seconds, [r.peak_mb], r.cpu
    # run_child in threads: each wrapper waits for its own indexer
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(shards) as pool:
        runs = list(
            pool.map(
                lambda k: run_child([*cmd, "--shard", f"{k}/{shards}"]),
                range(1, shards + 1),
            )
        )
    return time.perf_counter() - t, [r.peak_mb for r in runs], sum(r.cpu for r in runs)


def _size_and_images(url: str) -> tuple[int, int, str, str]:
    """(database bytes, images, a series UID of 500 images, one imageId)."""
    import sqlalchemy as sa

    from metastore.store.db import create_engine

    engine = create_engine(url)
    with engine.connect() as c:
        images = int(c.execute(sa.text("SELECT count(*) FROM images")).scalar_one())
        if engine.dialect.name == "sqlite":
            size = Path(engine.url.database or "").stat().st_size
        else:
            size = int(
                c.execute(
                    sa.text("SELECT pg_database_size(current_database())")
                ).scalar_one()
            )
    engine.dispose()
    from metastore.store import Store

    with Store(url, read_only=True) as store:
        row = next(iter(store.query("series", limit=1)))
        series = str(row["0020000E"]["Value"][0])  # SeriesInstanceUID
        image_id = next(iter(store.series_image_modules(series)))
    return size, images, series, image_id


def _cold(
    url: str, series: str, image_id: str, preload: list[str] | None = None
) -> dict[str, Any]:
    extra = [] if preload is None else [json.dumps(preload)]
    proc = subprocess.run(
        [PYTHON, "-c", COLD, url, series, image_id, *extra],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"cold timings failed:\n{proc.stderr}")
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def run(
    name: str, url: str, folders: list[Path], shards: int, extra: list[str]
) -> None:
    """Index the archive tenth by tenth into ``url`` and print the figures."""
    tenth = max(1, len(folders) // 10)
    parts = [folders[i : i + tenth] for i in range(0, len(folders), tenth)]
    rates, peaks, cpus = [], [], []
    done = 0
    for k, part in enumerate(parts, 1):
        n = len(part) * PER_SERIES
        warm_page_cache([f for folder in part for f in sorted(folder.iterdir())])
        seconds, mb, cpu = _index_tenth(url, part, shards, extra)
        done += n
        rates.append(n / seconds)
        peaks.append(mb)
        cpus.append(cpu / n)
        print(
            f"  {name} tenth {k}: {done} instances, {n / seconds:.0f} instances/s, "
            f"{cpu / n * 1e3:.3f} ms CPU/instance, "
            f"peak {' + '.join(f'{m:.0f}' for m in mb)} MB, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    size, images, series, image_id = _size_and_images(url)
    print(f"{name}: {done} instances in {len(parts)} runs of {shards} indexer(s)")
    print(
        f"  rate first tenth {rates[0]:.0f}/s, last tenth {rates[-1]:.0f}/s: "
        f"last / first = {rates[-1] / rates[0]:.2f}x (target >= 0.9x)"
    )
    print(
        f"  CPU per instance first tenth {cpus[0] * 1e3:.3f} ms, last "
        f"{cpus[-1] * 1e3:.3f} ms: rate in CPU terms last / first = "
        f"{cpus[0] / cpus[-1]:.2f}x (target >= 0.9x)"
    )
    if len(parts) >= 10:
        first, last = fmean(rates[:5]), fmean(rates[-5:])
        cpu_first, cpu_last = fmean(cpus[:5]), fmean(cpus[-5:])
        print(
            f"  mean of the last five tenths / the first five: rate "
            f"{last / first:.2f}x, in CPU terms {cpu_first / cpu_last:.2f}x"
        )
    flat = [max(p) for p in peaks]
    print(
        f"  peak memory per indexer process: first tenth {flat[0]:.0f} MB, "
        f"last {flat[-1]:.0f} MB, max {max(flat):.0f} MB (target < 300 MB)"
    )
    print(
        f"  database {size / 1e6:.0f} MB, {size / images:.0f} bytes/image ({images} images)"
    )
    lookups(url, series, image_id)


#: Fresh processes per way of timing the lookups: one sample is at the
#: mercy of whatever else the machine does in those 50 ms.
LOOKUP_RUNS = 5


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over ``runs`` (the other keys of the first run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = median([r[key] for r in runs])
            out[key + "_range"] = (min(r[key] for r in runs), max(r[key] for r in runs))
    return out


def _spread(figures: dict[str, Any], name: str) -> str:
    """``[min-max]`` of a figure :func:`_medians` took the median of."""
    low, high = figures[name + "_range"]
    return f"[{low:.1f}-{high:.1f}]"


def lookups(url: str, series: str, image_id: str) -> None:
    """Print the three lookups' times against the target (fresh processes).

    Each figure is the median of :data:`LOOKUP_RUNS` fresh processes, the
    two ways of timing alternating.
    """
    first = _cold(url, series, image_id)
    cold_runs, warm_runs = [first], []
    for n in range(LOOKUP_RUNS):
        # the same in a process that imported, beforehand, what the first
        # run loaded lazily: the database work alone, first time in the process
        warm_runs.append(_cold(url, series, image_id, first["loaded"]))
        if n + 1 < LOOKUP_RUNS:
            cold_runs.append(_cold(url, series, image_id))
    cold, warm = _medians(cold_runs), _medians(warm_runs)
    print(
        f"  lookups (medians of {LOOKUP_RUNS} fresh processes, [min-max]; cold = "
        f"first use, its lazy imports ({len(cold['loaded'])} modules) included):"
    )
    for key, label in (
        ("series", f"cold series load ({cold['series_lines']} images)"),
        (
            "query",
            f"query studies --patient-name 'bench*' ({cold['query_lines']} studies)",
        ),
        ("get", "get imagePlaneModule"),
    ):
        ms = cold[key]
        print(
            f"    {label}: {ms:.1f} ms cold {_spread(cold, key)}, {ms / TARGET_MS:.2f}x "
            f"the {TARGET_MS:.0f} ms target "
            f"({'met' if ms <= TARGET_MS else 'NOT met'}); {warm[key]:.1f} ms "
            f"cold with its modules imported beforehand {_spread(warm, key)} "
            f"({warm[key] / TARGET_MS:.2f}x); {cold[key + '_again']:.1f} ms again "
            "in the same process"
        )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--postgres", default=None, help="also index into this server")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the archive and database")
    ap.add_argument(
        "--lookups",
        metavar="URL",
        help="only time the lookups on this database (one --keep left)",
    )
    args = ap.parse_args()
    if args.lookups:
        _size, _images, series, image_id = _size_and_images(args.lookups)
        lookups(args.lookups, series, image_id)
        return
    sys.path.insert(0, str(HERE))
    from gen_archive import clone_archive

    count = max(PER_SERIES, args.instances // PER_SERIES * PER_SERIES)
    work = Path(tempfile.mkdtemp(prefix="metastore-bench-million-"))
    t = time.perf_counter()
    clone_archive(work / "archive", count, per_folder=PER_SERIES)
    print(
        f"archive: {count} instances written in {time.perf_counter() - t:.0f} s ({work})"
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    folders = sorted((work / "archive").iterdir())
    extra = [] if args.workers is None else ["--workers", str(args.workers)]
    pg_name = ""
    try:
        if not args.no_sqlite:
            run("sqlite", f"sqlite:///{work / 'million.sqlite'}", folders, 1, extra)
        if args.postgres:
            url, pg_name = _pg_db(args.postgres)
            run("postgresql", url, folders, 2, extra)
    finally:
        if pg_name and not args.keep:
            _pg_drop(args.postgres, pg_name)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
