#!/usr/bin/env python3
"""Benchmark: how long ``metastore --help`` and a cold ``metastore get`` take.

Indexes a small synthetic series into SQLite, then runs, in fresh
processes, alternating run by run so machine noise hits them alike:

* ``python -c pass``: the interpreter alone (the floor; not a target);
* ``import sqlalchemy``: the interpreter and SQLAlchemy Core with its SQLite
  dialect, which any ``get`` needs (the floor of ``get``; not a target);
* ``metastore --help``: target 0.15 s (issue 13);
* ``metastore get imagePlaneModule IMAGE_ID --db sqlite:///...``: target 0.3 s;

and prints the median wall time of each, its ratio to its target, and then
the largest import costs of each command (``python -X importtime``,
cumulative, top-level packages and metastore's modules).  The commands run
as ``python -m metastore`` from the checkout given by ``--tree`` (default:
this one); give ``--tree`` twice (the state before a change, then after) and
both are measured in the same run, alternating.

    python scripts/bench_startup.py [--runs 11] [--tree PATH]... [--top 12]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import HERE, PYTHON, ROOT, median

#: The floor of ``get``: what reading the store needs before metastore.
SQLALCHEMY = "import sqlalchemy, sqlalchemy.dialects.sqlite"

#: Seconds each command should stay under (issue 13).
TARGETS = {"--help": 0.15, "get": 0.3}


def build(work: Path) -> tuple[str, str]:
    """A SQLite store of one small series; its URL and one imageId."""
    sys.path.insert(0, str(HERE))
    from gen_archive import SeriesPlan, generate

    from metastore.index import index_paths
    from metastore.store import Store

    generate(work / "archive", 10, 16, plans=[SeriesPlan("CT", 10)])
    url = f"sqlite:///{work / 'startup.sqlite'}"
    with Store(url) as store:
        index_paths(
            store, [work / "archive"], wadors_root="http://bench/dicomweb", workers=1
        )
        image_id = next(image_id for image_id, _ in store.export([]))
    return url, image_id


def timed_run(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one child process (which must succeed)."""
    t = time.perf_counter()
    # cwd: ``python -m`` puts the working folder first on sys.path, which
    # must not be a checkout other than the tree measured
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def import_costs(
    argv: list[str], env: dict[str, str], cwd: Path, top: int
) -> list[str]:
    """The ``top`` largest cumulative import times of one run, as lines."""
    out = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        env=env,
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ).stderr
    line = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
    rows = []
    total = 0
    for match in line.finditer(out):
        cumulative, depth, name = int(match[2]), len(match[3]) // 2, match[4]
        if depth == 0:
            total += cumulative
        # packages (wherever first imported) and metastore's own modules
        if "." not in name or name.startswith("metastore."):
            rows.append((cumulative, name))
    rows.sort(reverse=True)
    lines = [f"    {c / 1000:7.1f} ms  {name}" for c, name in rows[:top]]
    return [f"    all imports: {total / 1000:.1f} ms", *lines]


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument(
        "--tree", type=Path, action="append", help="checkout to measure (repeatable)"
    )
    ap.add_argument("--top", type=int, default=12, help="import costs to show")
    args = ap.parse_args()
    trees = [tree.resolve() for tree in args.tree or [ROOT]]

    work = Path(tempfile.mkdtemp(prefix="metastore-bench-startup-"))
    try:
        url, image_id = build(work)
        base = {
            k: v for k, v in os.environ.items() if not k.startswith("METASTORE_TEST_")
        }
        envs = {tree: {**base, "PYTHONPATH": str(tree)} for tree in trees}
        get = ["get", "imagePlaneModule", image_id, "--db", url]
        commands = {
            "python -c pass": [PYTHON, "-c", "pass"],
            "import sqlalchemy": [PYTHON, "-c", SQLALCHEMY],
            "--help": [PYTHON, "-m", "metastore", "--help"],
            "get": [PYTHON, "-m", "metastore", *get],
        }
        runs = [(tree, name) for tree in trees for name in commands]
        for tree, name in runs:
            timed_run(commands[name], envs[tree], work)  # warm the page cache
        times: dict[tuple[Path, str], list[float]] = {run: [] for run in runs}
        for _ in range(args.runs):
            for tree, name in runs:
                times[tree, name].append(timed_run(commands[name], envs[tree], work))
        print(f"median of {args.runs} runs each, fresh processes, alternating")
        for tree in trees:
            print(f"tree: {tree}")
            floor = median(times[tree, "python -c pass"])
            sa_floor = median(times[tree, "import sqlalchemy"])
            print(f"  python -c pass    {floor * 1e3:6.0f} ms (the interpreter alone)")
            print(
                f"  import sqlalchemy {sa_floor * 1e3:6.0f} ms "
                "(+ its SQLite dialect: the floor of any get)"
            )
            for name, target in TARGETS.items():
                m = median(times[tree, name])
                print(
                    f"  metastore {name:7} {m * 1e3:6.0f} ms, ratio to the "
                    f"{target * 1e3:.0f} ms target {m / target:.2f}x "
                    f"({(m - floor) * 1e3:.0f} ms above the interpreter)"
                )
            for name in TARGETS:
                print(f"  largest imports of metastore {name} (cumulative, one run):")
                for line in import_costs(commands[name], envs[tree], work, args.top):
                    print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
