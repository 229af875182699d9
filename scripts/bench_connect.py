#!/usr/bin/env python3
"""Benchmark: a PostgreSQL engine's first connection, without and with hstore.

``metastore.store.db.create_engine`` turns off SQLAlchemy's native hstore
support (no column is HSTORE): otherwise the psycopg dialect looks the
hstore type up in ``pg_type`` on every engine's first connection, which
every cold lookup process pays (issue 14).  This program times, in the same
process and alternating round by round, a fresh engine's first connection
and first statement (``create_engine``, connect, ``SELECT 1``): metastore's
engine, and the same URL with SQLAlchemy's default.  The driver and the
dialect are imported, and one engine of each kind connected, before timing.

Prints the medians and metastore's time as a ratio of the default's.

    python scripts/bench_connect.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
        [--rounds 30]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import sqlalchemy as sa
from benchlib import median

from metastore.store import db


def _first_connection(make: Callable[[], sa.Engine]) -> float:
    """Seconds from a new engine to its first statement's answer."""
    t = time.perf_counter()
    engine = make()
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").scalar_one()
    seconds = time.perf_counter() - t
    engine.dispose()
    return seconds


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres", required=True, help="a PostgreSQL URL")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    url = db.create_engine(args.postgres).url  # as metastore spells it (psycopg)
    ways: dict[str, Callable[[], sa.Engine]] = {
        "metastore": lambda: db.create_engine(args.postgres),
        "default": lambda: sa.create_engine(url, pool_pre_ping=True),
    }
    for make in ways.values():  # imports and the server's caches, untimed
        _first_connection(make)
    times: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(_first_connection(ways[name]))
    ours, default = (median(times[name]) * 1e3 for name in names)
    print(
        f"first connection of a fresh engine, median of {args.rounds}: "
        f"metastore {ours:.2f} ms, with SQLAlchemy's hstore lookup {default:.2f} ms; "
        f"metastore / default = {ours / default:.2f}x"
    )


if __name__ == "__main__":
    main()
