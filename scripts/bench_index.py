#!/usr/bin/env python3
"""Benchmark: ``metastore index`` against a plain pydicom header-reading loop.

Generates a deterministic synthetic archive (scripts/gen_archive.py), then, in
alternating rounds on the same files with a warm page cache, times

* baseline: one process looping ``pydicom.dcmread(path, stop_before_pixels=True)``;
* metastore: the ``metastore index`` command into a fresh database (SQLite by
  default; PostgreSQL too when ``--postgres URL`` is given).

Prints files/s, images/s, the ratio baseline time / metastore time (>= 1.0
means indexing everything costs no more than merely reading the headers), and
the peak memory of both.

    python scripts/bench_index.py [--images 3000] [--size 64] [--rounds 3]
        [--workers N] [--postgres postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from pathlib import Path

from benchlib import PYTHON, ensure_archive, median, run_child, warm_page_cache

BASELINE = (
    "import sys,pydicom,warnings;warnings.simplefilter('ignore');"
    "[pydicom.dcmread(p,stop_before_pixels=True) for p in "
    "open(sys.argv[1]).read().split('\\n') if p]"
)


def _pg_db(url: str) -> tuple[str, str]:
    """Create a scratch PostgreSQL database; return (its url, its name)."""
    import sqlalchemy as sa

    name = f"metastore_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name, name


def _pg_drop(url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--postgres", default=None, help="also index into this server")
    ap.add_argument(
        "--archive",
        type=Path,
        default=Path(tempfile.gettempdir()) / "metastore-bench-archive",
    )
    args = ap.parse_args()

    files = ensure_archive(args.archive, args.images, args.size)
    listing = Path(tempfile.mkdtemp()) / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    warm_page_cache(files)
    extra = [] if args.workers is None else ["--workers", str(args.workers)]

    targets = ["sqlite"] + (["postgresql"] if args.postgres else [])
    times: dict[str, list[float]] = {"baseline": [], **{t: [] for t in targets}}
    peaks: dict[str, float] = {}
    images = 0
    for _ in range(args.rounds):
        r = run_child([PYTHON, "-c", BASELINE, str(listing)])
        times["baseline"].append(r.seconds)
        peaks["baseline"] = max(peaks.get("baseline", 0), r.peak_mb)
        for target in targets:
            work = Path(tempfile.mkdtemp())
            if target == "sqlite":
                url, name = f"sqlite:///{work / 'bench.sqlite'}", ""
            else:
                url, name = _pg_db(args.postgres)
            try:
                r = run_child(
                    [
                        PYTHON,
                        "-m",
                        "metastore",
                        "index",
                        "--db",
                        url,
                        str(args.archive),
                        *extra,
                    ]
                )
                times[target].append(r.seconds)
                peaks[target] = max(peaks.get(target, 0), r.peak_mb)
                images = max(images, _images(url))
            finally:
                shutil.rmtree(work, ignore_errors=True)
                if name:
                    _pg_drop(args.postgres, name)

    base = median(times["baseline"])
    print(f"archive: {len(files)} files, {images} images ({args.archive})")
    print(
        f"baseline dcmread loop: {base:.2f} s median, {len(files) / base:.0f} files/s, peak {peaks['baseline']:.0f} MB"
    )
    for target in targets:
        t = median(times[target])
        print(
            f"metastore index ({target}): {t:.2f} s median, {len(files) / t:.0f} files/s, "
            f"{images / t:.0f} images/s, peak {peaks[target]:.0f} MB (largest process)"
        )
        print(f"ratio {target}: baseline / metastore = {base / t:.2f}x")


def _images(url: str) -> int:
    import sqlalchemy as sa

    from metastore.store.db import create_engine

    engine = create_engine(url)
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT count(*) FROM images")).scalar_one()
    engine.dispose()
    return int(n)


if __name__ == "__main__":
    main()
