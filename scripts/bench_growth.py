#!/usr/bin/env python3
"""Benchmark: does indexing get dearer as the SQLite database grows?

Issue 14, target 3 asks that the last tenth of a million instances index at
0.9x the rate of the first or better.  The fourth session found the writing
process's CPU growing with the database: module value digests and imageId
keys are random, so every batch dirties index leaves all over the file, and
each dirty page is written to the WAL and checkpointed back.  Two settings
act on it: ``metastore.store.db.SQLITE_WAL_AUTOCHECKPOINT`` (16,384 pages;
SQLite's default is 1,000) and the batch size (instances per transaction:
more rows land in each dirtied leaf).  This program measures both:

* it writes ``--large`` + ``--new`` small instances (series of 500,
  scripts/gen_archive.py ``clone_archive``) and indexes the first
  ``--large`` into a SQLite database once (untimed);
* then, in alternating rounds, it indexes the ``--new`` instances with
  ``metastore index`` into a fresh copy of an empty database (its schema
  made) and into a fresh copy of the large one, with each setting:
  metastore's defaults, SQLite's checkpoint interval (set in the indexing
  process before it opens the database), and each ``--batch-size`` given;
* and reads each run's CPU with ``getrusage``: the writing process
  (RUSAGE_SELF, minus the fixed cost of indexing an empty folder) and the
  workers (RUSAGE_CHILDREN).

Prints, per setting, the medians and how much dearer an instance is in the
grown database (large / empty; 1.00 is no growth), and each setting's
writer CPU as a ratio of the defaults' (below 1.00: cheaper).  CPU, not
wall: the machine is shared.

    python scripts/bench_growth.py [--large 200000] [--new 20000] [--rounds 3]
        [--batch-size N ...] [--dir DIR]  (kept: archive and databases reused)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchlib import HERE, PYTHON, cpu_driver, median

PER_SERIES = 500
#: SQLite's own default ``wal_autocheckpoint`` (pages).
SQLITE_DEFAULT = 1000

#: Runs ``metastore ARGS...`` here, with the WAL checkpoint interval given
#: first (or "-": metastore's); prints the writing process's CPU and its
#: workers', in seconds.
DRIVER = cpu_driver(
    "from metastore.store import db\n"
    "if sys.argv[1] != '-':\n"
    "    db.SQLITE_WAL_AUTOCHECKPOINT = int(sys.argv[1])",
    skip=1,
)


def _index(
    db_file: Path,
    folders: list[Path],
    pages: int | None = None,
    batch: int | None = None,
) -> tuple[float, float]:
    """(writer CPU s, workers' CPU s) of one ``metastore index`` run.

    ``pages`` and ``batch``: the WAL checkpoint interval and ``--batch-size``
    (``None``: metastore's).
    """
    args = [PYTHON, "-c", DRIVER, "-" if pages is None else str(pages), "index", "-q"]
    if batch is not None:
        args += ["--batch-size", str(batch)]
    args += ["--db", f"sqlite:///{db_file}", *map(str, folders)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=db_file.parent)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"rc": proc.returncode}
    if proc.returncode != 0 or result["rc"] != 0:
        raise SystemExit(f"metastore index exited {result['rc']}:\n{proc.stderr}")
    return float(result["self"]), float(result["children"])


def _archive(root: Path, large: int, new: int) -> tuple[list[Path], list[Path]]:
    """The series folders of the large database and of the new instances.

    Each part is written once and kept (with ``--dir``): a later run with
    another ``--new`` adds to the new part and reuses the large one.
    """
    if large % PER_SERIES:
        raise SystemExit(f"--large must be a multiple of {PER_SERIES}")
    archive = root / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    from gen_archive import clone_archive

    for part, count, start in (("large", large, 0), ("new", new, large)):
        marker = archive / f".{part}-{start}-{count}"
        if not marker.exists():
            t = time.perf_counter()
            clone_archive(archive, count, per_folder=PER_SERIES, start=start)
            print(f"archive: {count} {part} files in {time.perf_counter() - t:.0f} s")
            marker.touch()
    folders = sorted(p for p in archive.iterdir() if p.is_dir())
    split = large // PER_SERIES
    return folders[:split], folders[split : split - (-new // PER_SERIES)]


def _large_db(root: Path, folders: list[Path], large: int) -> Path:
    """The database holding the first ``large`` instances, made once."""
    path = root / f"large-{large}.sqlite"
    if not path.exists():
        t = time.perf_counter()
        part = path.with_suffix(".partial")
        part.unlink(missing_ok=True)
        _index(part, folders)
        part.rename(path)
        print(f"large database: {large} instances in {time.perf_counter() - t:.0f} s")
    return path


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--new", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--batch-size",
        type=int,
        action="append",
        default=[],
        help="also index with this --batch-size (repeatable)",
    )
    ap.add_argument("--dir", type=Path, default=None, help="keep and reuse here")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="metastore-growth-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        _run(root, args.large, args.new, args.rounds, args.batch_size)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


class Setting(NamedTuple):
    """What one indexing run is given: WAL checkpoint interval, batch size."""

    label: str
    pages: int | None  # None: metastore's
    batch: int | None  # None: metastore's


def _settings(batches: list[int]) -> list[Setting]:
    from metastore.index import DEFAULT_BATCH_SIZE
    from metastore.store import db

    ours = db.SQLITE_WAL_AUTOCHECKPOINT
    settings = [
        Setting(
            f"metastore's defaults ({ours} pages, batches of {DEFAULT_BATCH_SIZE})",
            None,
            None,
        ),
        Setting(
            f"SQLite's checkpoint interval ({SQLITE_DEFAULT} pages)",
            SQLITE_DEFAULT,
            None,
        ),
    ]
    settings += [Setting(f"batches of {b}", None, b) for b in batches]
    return settings


def _run(root: Path, large: int, new: int, rounds: int, batches: list[int]) -> None:
    old, fresh = _archive(root, large, new)
    big = _large_db(root, old, large)
    empty_folder = root / "empty"
    empty_folder.mkdir(exist_ok=True)
    # an empty database with its schema made: both starts skip the migrations
    blank = root / "empty.sqlite"
    blank.unlink(missing_ok=True)
    _index(blank, [empty_folder])
    start_from = {"empty": blank, "large": big}
    settings = _settings(batches)
    cells = [(s, start) for s in settings for start in start_from]
    writer: dict[tuple[Setting, str], list[float]] = {cell: [] for cell in cells}
    workers: dict[tuple[Setting, str], list[float]] = {cell: [] for cell in cells}
    fixed: list[float] = []
    work = root / "work"
    for r in range(rounds):
        # alternate the order so that drift in the host's speed hits all alike
        for setting, start in cells if r % 2 == 0 else cells[::-1]:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            target = work / "db.sqlite"
            shutil.copyfile(start_from[start], target)
            w, c = _index(target, fresh, setting.pages, setting.batch)
            writer[setting, start].append(w)
            workers[setting, start].append(c)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        shutil.copyfile(blank, work / "db.sqlite")
        fixed.append(_index(work / "db.sqlite", [empty_folder])[0])
    shutil.rmtree(work, ignore_errors=True)

    cost = median(fixed)
    print(
        f"{new} new instances into an empty database and into one of {large}; "
        f"{rounds} rounds, medians; writer CPU less {cost:.2f} s of fixed cost"
    )

    def ms(values: list[float], less: float = 0.0) -> float:
        return (median(values) - less) / new * 1e3

    base = settings[0]
    for setting in settings:
        e, g = ms(writer[setting, "empty"], cost), ms(writer[setting, "large"], cost)
        we, wg = ms(workers[setting, "empty"]), ms(workers[setting, "large"])
        print(
            f"{setting.label}: writer {e:.3f} -> {g:.3f} ms/instance, "
            f"{g / e:.2f}x large/empty; workers {we:.3f} -> {wg:.3f}, {wg / we:.2f}x"
        )
        if setting is base:
            continue
        for start in start_from:
            a, b = ms(writer[setting, start], cost), ms(writer[base, start], cost)
            print(
                f"  into the {start} database: writer {a / b:.2f}x metastore's defaults"
            )


if __name__ == "__main__":
    main()
