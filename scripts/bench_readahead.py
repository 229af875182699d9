#!/usr/bin/env python3
"""Benchmark: a cold per-image loop over a series, with and without read-ahead.

Indexes a deterministic synthetic archive (one 500-image CT series plus a mix
of other series) into SQLite (or the PostgreSQL database ``--postgres``
names, which should be empty), then times, in fresh processes, what a viewer
or a pipeline does from a cold start: construct a ``DatabaseProvider`` and,
for each image of the 500-image series in stack order, get 6 modules.
Imports (the library, the database driver, SQLAlchemy's dialect) happen
before the clock starts; construction, connecting and every query are timed.

Three ways, alternating run by run so machine noise hits them alike:

* ``read-ahead``: the default provider (a miss loads the image's series);
* ``per-image``: ``read_ahead=0``, one query per image (the behaviour before
  read-ahead);
* ``load_series``: the explicit ``load_series`` call first (the floor).

Prints the median milliseconds of each, the ratio of read-ahead to its
target (100 ms on SQLite, 200 ms on PostgreSQL: issue 13), the speed-up over
per-image, and each child's peak RSS.

    python scripts/bench_readahead.py [--images 1500] [--runs 7] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import HERE, PYTHON, median

SERIES_IMAGES = 500
#: Milliseconds the read-ahead loop must stay under, by backend (issue 13).
TARGET_MS = {"sqlite": 100.0, "postgresql": 200.0}
#: The modules asked of every image (what a viewer asks to display one).
TYPES = (
    "imagePlaneModule",
    "imagePixelModule",
    "voiLutModule",
    "modalityLutModule",
    "generalSeriesModule",
    "generalImageModule",
)

CHILD = """
import json, resource, sys, time
from metastore.providers.database import DatabaseProvider
import sqlalchemy.dialects.sqlite
if sys.argv[1].startswith("postgresql"):
    import psycopg, sqlalchemy.dialects.postgresql.psycopg  # imports: untimed
url, ids_file, mode = sys.argv[1:4]
types = json.loads(sys.argv[4])
with open(ids_file) as f:
    image_ids = f.read().split("\\n")
t0 = time.perf_counter()
db = DatabaseProvider(url, read_ahead=0 if mode == "per-image" else 500)
if mode == "load_series":
    db.load_series(sys.argv[5])
n = 0
for image_id in image_ids:
    for t in types:
        if db.get(t, image_id) is not None:
            n += 1
t1 = time.perf_counter()
db.close()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": t1 - t0, "answers": n, "peak_mb": peak}))
"""

MODES = ("read-ahead", "per-image", "load_series")


def build(work: Path, images: int, url: str) -> None:
    """Generate the archive and index it with wadors imageIds."""
    sys.path.insert(0, str(HERE))
    from gen_archive import SeriesPlan, generate, plan_archive

    from metastore.index import index_paths
    from metastore.store import Store

    plans = [
        SeriesPlan("CT", SERIES_IMAGES),
        *plan_archive(max(images - SERIES_IMAGES, 1)),
    ]
    generate(work / "archive", images, 32, plans=plans)
    with Store(url) as store:
        index_paths(store, [work / "archive"], wadors_root="http://bench/dicomweb")


def biggest_series(url: str) -> tuple[str, list[str]]:
    """The series with the most images and its imageIds in stack order."""
    from metastore.imageid import parse_image_id
    from metastore.providers.database import DatabaseProvider
    from metastore.store import Store

    with Store(url) as store:
        counts: dict[str, int] = {}
        for image_id, _ in store.export(["generalSeriesModule"]):
            uid = parse_image_id(image_id).series_uid or ""
            counts[uid] = counts.get(uid, 0) + 1
        big = max(counts, key=lambda uid: counts[uid])
        return big, DatabaseProvider(store).load_series(big)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--postgres", default=None, help="an empty PostgreSQL database")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="metastore-bench-readahead-"))
    try:
        url = args.postgres or f"sqlite:///{work / 'readahead.sqlite'}"
        build(work, args.images, url)
        series, image_ids = biggest_series(url)
        ids_file = work / "image_ids.txt"
        ids_file.write_text("\n".join(image_ids))
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                argv = [url, str(ids_file), mode, json.dumps(TYPES), series]
                out = subprocess.run(
                    [PYTHON, "-c", CHILD, *argv],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[mode].append(json.loads(out.stdout))
        report(url, len(image_ids), runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(url: str, images: int, runs: dict[str, list[dict[str, float]]]) -> None:
    """Print the medians, the ratio to the target and the speed-up."""
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    ms = {mode: median([r["s"] for r in rs]) * 1e3 for mode, rs in runs.items()}
    answers = {mode: {r["answers"] for r in rs} for mode, rs in runs.items()}
    if len({frozenset(a) for a in answers.values()}) != 1:
        raise SystemExit(f"the three ways answered differently: {answers}")
    target = TARGET_MS[backend]
    print(
        f"backend: {backend}; series of {images} images, {len(TYPES)} modules each, "
        f"cold process (provider construction included, imports excluded), "
        f"median of {len(runs['read-ahead'])} runs"
    )
    for mode in MODES:
        peak = median([r["peak_mb"] for r in runs[mode]])
        print(f"  {mode:12} {ms[mode]:7.1f} ms   peak RSS {peak:.0f} MB")
    print(
        f"read-ahead: {ms['read-ahead']:.1f} ms, ratio to the {target:.0f} ms target "
        f"{ms['read-ahead'] / target:.2f}x; {ms['per-image'] / ms['read-ahead']:.1f}x "
        f"faster than per-image; {ms['read-ahead'] / ms['load_series']:.2f}x "
        "an explicit load_series"
    )


if __name__ == "__main__":
    main()
