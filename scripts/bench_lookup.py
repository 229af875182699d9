#!/usr/bin/env python3
"""Benchmark: ``DatabaseProvider.get`` against a dict and ``DicomJsonProvider``.

Indexes a deterministic synthetic archive (one 500-image CT series plus a mix
of CT, MR, PET and enhanced multi-frame MR) into SQLite, then, in the same
run, asks every module of every image from

* a plain dict ``{imageId: {type: value}}`` holding the same values (the
  baseline: ``table[image_id][type]`` inline);
* the same dict behind a function with the provider signature
  ``(type, image_id, *args)`` (a second baseline: what the call itself costs);
* ``DatabaseProvider.get`` warm (cache filled by gets) and cold (fresh provider);
* ``DicomJsonProvider.get`` (the in-memory WADO-RS counterpart) warm;

and times loading every module of the 500-image series from a cold process
(a fresh interpreter: import, connect, ``load_series``, every ``get``).
The warm passes alternate round by round, so machine noise hits them alike.
Prints medians per lookup and the ratios.

    python scripts/bench_lookup.py [--images 1500] [--rounds 15] [--postgres URL]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchlib import HERE, PYTHON, median

SERIES_IMAGES = 500

COLD_SERIES = """
import sys, time
t0 = time.perf_counter()
from metastore.modules import MODULE_TYPES
from metastore.providers.database import DatabaseProvider
t1 = time.perf_counter()
db = DatabaseProvider(sys.argv[1])
image_ids = db.load_series(sys.argv[2])
n = 0
for image_id in image_ids:
    for t in MODULE_TYPES:
        if db.get(t, image_id) is not None:
            n += 1
t2 = time.perf_counter()
print(f"{t2 - t1} {t2 - t0} {n}")
"""


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


def per_lookup(
    passes: dict[str, Callable[[Sequence[tuple[str, str]]], None]],
    pairs: Sequence[tuple[str, str]],
    rounds: int,
) -> dict[str, float]:
    """Median seconds per lookup of each pass over ``pairs``, rounds alternating."""
    samples: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, fn in passes.items():
            t = time.perf_counter()
            fn(pairs)
            samples[name].append((time.perf_counter() - t) / len(pairs))
    return {name: median(times) for name, times in samples.items()}


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--postgres", default=None, help="use this server instead of SQLite"
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="metastore-bench-lookup-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    """Build the archive in ``work``, measure, print."""
    from metastore.imageid import parse_image_id
    from metastore.modules import MODULE_TYPES
    from metastore.providers.database import DatabaseProvider
    from metastore.providers.dicomjson import DicomJsonProvider
    from metastore.store import Store

    url = args.postgres or f"sqlite:///{work / 'lookup.sqlite'}"
    build(work, args.images, url)

    with Store(url) as store:
        table = dict(store.export())
        series_uid = None
        djp = DicomJsonProvider()
        added = set()
        for image_id in table:
            parsed = parse_image_id(image_id)
            series_uid = series_uid or parsed.series_uid
            if parsed.sop_instance_uid not in added:
                added.add(parsed.sop_instance_uid)
                djp.add(parsed.with_frame(1), store.dicom_json(parsed.sop_instance_uid))
    pairs = [(t, i) for i in table for t in MODULE_TYPES]

    def dict_pass(ps):
        for t, i in ps:
            table[i][t]

    def dict_get(type, image_id, *args):
        """The baseline behind a function with the provider signature."""
        try:
            return table[image_id][type]
        except KeyError:
            return None

    def dict_get_pass(ps):
        get = dict_get
        for t, i in ps:
            get(t, i)

    db = DatabaseProvider(url)

    def db_pass(ps):
        get = db.get
        for t, i in ps:
            get(t, i)

    def djp_pass(ps):
        get = djp.get
        for t, i in ps:
            get(t, i)

    cold = []
    for _ in range(3):
        fresh = DatabaseProvider(url)
        t = time.perf_counter()
        for ty, i in pairs:
            fresh.get(ty, i)
        cold.append((time.perf_counter() - t) / len(pairs))
    db_pass(pairs)  # fill the cache
    djp_pass(pairs)
    warm_passes = {
        "dict": dict_pass,
        "dict_get": dict_get_pass,
        "db": db_pass,
        "djp": djp_pass,
    }
    medians = per_lookup(warm_passes, pairs, args.rounds)
    base, base_fn = medians["dict"], medians["dict_get"]
    warm, dj = medians["db"], medians["djp"]
    cold_t = median(cold)

    # the big series: pick the series with the most images
    counts: dict[str, int] = {}
    for i in table:
        s = parse_image_id(i).series_uid
        counts[s] = counts.get(s, 0) + 1
    big = max(counts, key=lambda s: counts[s])
    series_runs = []
    for _ in range(5):
        out = subprocess.run(
            [PYTHON, "-c", COLD_SERIES, url, big],
            capture_output=True,
            text=True,
            check=True,
        )
        series_runs.append([float(x) for x in out.stdout.split()])
    load = median([r[0] for r in series_runs])
    with_import = median([r[1] for r in series_runs])

    print(
        f"images: {len(table)}, lookups per pass: {len(pairs)} ({len(MODULE_TYPES)} types), backend: {url.split(':')[0]}"
    )
    print(f"dict lookup (baseline): {base * 1e9:.0f} ns median")
    print(
        f"DatabaseProvider.get warm: {warm * 1e9:.0f} ns median, ratio to dict {warm / base:.2f}x"
    )
    print(
        f"  (same dict behind a function with the provider signature: {base_fn * 1e9:.0f} ns median, "
        f"{base_fn / base:.2f}x the dict; DatabaseProvider.get warm / that function {warm / base_fn:.2f}x)"
    )
    print(
        f"DatabaseProvider.get cold: {cold_t * 1e6:.1f} us median, ratio to dict {cold_t / base:.0f}x"
    )
    print(
        f"DicomJsonProvider.get warm: {dj * 1e9:.0f} ns median, ratio to dict {dj / base:.2f}x; DatabaseProvider warm / DicomJsonProvider warm {warm / dj:.2f}x"
    )
    print(
        f"series of {counts[big]} images, every module, cold process: {load * 1e3:.0f} ms (connect+load+get), {with_import * 1e3:.0f} ms including imports"
    )


if __name__ == "__main__":
    main()
