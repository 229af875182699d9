#!/usr/bin/env python3
"""Benchmark: does indexing stay fast and small as the archive grows?

Writes ``--instances`` (default 100,000) small single-frame instances in
folders of 1,000 (scripts/gen_archive.py ``clone_archive``), then indexes
them into ONE SQLite database folder by folder, each folder a separate
``metastore index`` run, and prints the rate of the last tenth of the
archive against the first tenth (target >= 0.9x) and the peak memory of each
run (largest process; target flat, under 300 MB).

    python scripts/bench_scale.py [--instances 100000] [--workers N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchlib import HERE, PYTHON, run_child


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the archive and database")
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(HERE))
    from gen_archive import clone_archive

    work = Path(tempfile.mkdtemp(prefix="metastore-bench-scale-"))
    clone_archive(work / "archive", args.instances)
    folders = sorted((work / "archive").iterdir())
    url = f"sqlite:///{work / 'scale.sqlite'}"
    extra = [] if args.workers is None else ["--workers", str(args.workers)]
    tenth = max(1, len(folders) // 10)
    rates, peaks = [], []
    done = 0
    for k, folder in enumerate(folders):
        n = sum(1 for _ in folder.iterdir())
        r = run_child(
            [PYTHON, "-m", "metastore", "index", "--db", url, str(folder), *extra]
        )
        done += n
        rates.append(n / r.seconds)
        peaks.append(r.peak_mb)
        if k % tenth == tenth - 1 or k == len(folders) - 1:
            print(
                f"  {done} instances indexed; last folder {n / r.seconds:.0f} instances/s, peak {r.peak_mb:.0f} MB",
                flush=True,
            )
    first = sum(rates[:tenth]) / tenth
    last = sum(rates[-tenth:]) / tenth
    print(f"instances: {done} in {len(folders)} runs into one SQLite database")
    print(
        f"rate first tenth: {first:.0f}/s, last tenth: {last:.0f}/s, ratio last / first = {last / first:.2f}x"
    )
    print(
        f"peak memory: first run {peaks[0]:.0f} MB, last run {peaks[-1]:.0f} MB, max {max(peaks):.0f} MB (largest process)"
    )
    db = work / "scale.sqlite"
    print(f"database: {db.stat().st_size / 1e6:.0f} MB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
