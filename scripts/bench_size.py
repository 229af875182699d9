#!/usr/bin/env python3
"""Benchmark: database bytes per image against the instances' DICOM JSON.

Indexes a deterministic synthetic archive into SQLite (and PostgreSQL when
``--postgres URL`` is given; size from ``pg_database_size`` minus that of an
empty migrated database), and compares with the size of the same instances'
DICOM JSON text (compact ``json.dumps``, as a DICOMweb server would send it).
Prints bytes per image and the ratio database / DICOM JSON (target <= 0.5x,
full DICOM JSON included in the database).

    python scripts/bench_size.py [--images 2000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

from benchlib import HERE


def json_bytes(store, sop_uids) -> int:
    """Total size of the instances' DICOM JSON, compact."""
    return sum(
        len(json.dumps(store.dicom_json(u), separators=(",", ":"))) for u in sop_uids
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--postgres", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import sqlalchemy as sa
    from gen_archive import generate

    from metastore.imageid import parse_image_id
    from metastore.index import index_paths
    from metastore.store import Store
    from metastore.store.db import create_engine

    work = Path(tempfile.mkdtemp(prefix="metastore-bench-size-"))
    generate(work / "archive", args.images, 64)
    targets = [("sqlite", f"sqlite:///{work / 'size.sqlite'}")]
    if args.postgres:
        targets.append(("postgresql", args.postgres))
    for name, url in targets:
        dbname = None
        if name == "postgresql":
            admin = sa.create_engine(
                url.replace("postgresql://", "postgresql+psycopg://", 1),
                isolation_level="AUTOCOMMIT",
            )
            dbname = f"metastore_size_{uuid.uuid4().hex[:8]}"
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
            url = url.rsplit("/", 1)[0] + "/" + dbname
        try:
            with Store(url) as store:
                if name == "postgresql":
                    with store.engine.connect() as c:
                        empty = c.execute(
                            sa.text("SELECT pg_database_size(current_database())")
                        ).scalar_one()
                index_paths(
                    store, [work / "archive"], wadors_root="http://bench/dicomweb"
                )
                image_ids = [i for i, _ in store.export(["sopCommonModule"])]
                sops = {parse_image_id(i).sop_instance_uid for i in image_ids}
                jb = json_bytes(store, sops)
            if name == "sqlite":
                path = url.removeprefix("sqlite:///")
                con = sqlite3.connect(path)
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("VACUUM")
                con.close()
                dbb = Path(path).stat().st_size
            else:
                engine = create_engine(url)
                with engine.connect() as c:
                    dbb = (
                        c.execute(
                            sa.text("SELECT pg_database_size(current_database())")
                        ).scalar_one()
                        - empty
                    )
                engine.dispose()
            n = len(image_ids)
            print(
                f"{name}: {n} images, {len(sops)} instances; database {dbb / n:.0f} B/image, DICOM JSON {jb / n:.0f} B/image; ratio database / DICOM JSON = {dbb / jb:.2f}x"
            )
        finally:
            if dbname:
                with admin.connect() as c:
                    c.execute(
                        sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                    )
                admin.dispose()


if __name__ == "__main__":
    main()
