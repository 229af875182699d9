"""Helpers for the crash, concurrency, shard and database-fault tests.

Runs the ``metastore`` command in subprocesses, through
``tests/hooked_cli.py`` (whose crash points, ``tests/crashpoints.py``, stop
them at chosen points), builds a small archive, and checks a database: its
export, its row counts and the SQL invariants that no crash or race may
break.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa
from dicom_samples import EMRI, copy, dicom_json, junk, write_ct, write_json, zip_of
from stored import query_rows

from metastore.store import Store, db

#: Instances per batch in these tests: the archive makes about ten batches.
BATCH = 4
#: Seconds any wait in these tests gives up after (never a timing assertion).
PATIENCE = 120.0
#: ``metastore`` with the crash points of the ``METASTORE_TEST_*`` variables.
HOOKED_CLI = Path(__file__).resolve().parent / "hooked_cli.py"


def module_rows_sql(url: str) -> str:
    """The text of the statement that writes a batch's ``image_modules`` rows.

    The hooks ``N:`` this text stop an indexer inside batch N's transaction,
    after its instances and images, before their module rows: PostgreSQL
    sends them with ``COPY`` (which the crash points see through
    ``metastore.store.db.on_statement``), SQLite with an ``INSERT``.
    """
    if url.startswith("postgresql"):
        return "COPY image_modules"
    return "INSERT INTO image_modules"


def build_archive(root: Path) -> Path:
    """About 40 sources over folders, a zip and DICOM JSON; all index cleanly."""
    for n in range(1, 9):
        write_ct(root / "a" / f"ct{n:02}.dcm", n, series=1)
        write_ct(root / "b" / f"ct{n:02}.dcm", n, series=2, study=2)
        write_ct(root / "c" / "deep" / f"ct{n:02}.dcm", n, series=3, study=3)
    members: dict[str, bytes | Path] = {}
    for n in range(1, 7):
        path = write_ct(root / "tmp" / f"z{n}.dcm", n, series=4, study=4)
        members[f"z/{n}.dcm"] = path.read_bytes()
    zip_of(root / "b" / "more.zip", members)
    for path in (root / "tmp").iterdir():
        path.unlink()
    (root / "tmp").rmdir()
    copy(EMRI, root / "c" / "enhanced")
    write_json(
        root / "a" / "series.json",
        [dicom_json("MR_small.dcm"), dicom_json("MR2_UNCR.dcm")],
    )
    junk(root / "c" / "junk.bin")
    (root / "a" / "README.txt").write_text("not DICOM\n")
    return root


def build_archive_with_duplicates(root: Path) -> Path:
    """:func:`build_archive` plus two copies of stored instances, refused.

    ``a/ct03x.dcm`` copies ``a/ct03.dcm`` under another study and series,
    ``b/ct02y.dcm`` copies ``b/ct02.dcm`` as is; both name another patient,
    modality and study description.  They fall into the first batches, so a
    run killed later reads them again.
    """
    build_archive(root)
    for original, name, uids in (
        ("a/ct03.dcm", "a/ct03x.dcm", ("1.2.826.0.1.3680043.8.498.77.9", "9")),
        ("b/ct02.dcm", "b/ct02y.dcm", None),
    ):
        ds = pydicom.dcmread(root / original)
        if uids is not None:
            ds.StudyInstanceUID = uids[0]
            ds.SeriesInstanceUID = f"{uids[0]}.{uids[1]}"
        ds.PatientID, ds.PatientName, ds.Modality = "WRONG", "Intruder^Eve", "MR"
        ds.StudyDescription = "INTRUDER"
        ds.save_as(root / name, enforce_file_format=True)
    return root


def env(**hooks: str) -> dict[str, str]:
    """The environment of a subprocess: ours, minus stray hooks, plus ``hooks``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("METASTORE_")}
    out.update(hooks)
    return out


def command(url: str, *args: str | os.PathLike[str]) -> list[str]:
    """``metastore ARGS --db URL``, through :data:`HOOKED_CLI`.

    The launcher runs the command as ``python -m metastore`` does, with the
    crash points of the ``METASTORE_TEST_*`` variables :func:`run` and
    :func:`start` are given (none without them).
    """
    return [sys.executable, str(HOOKED_CLI), *map(os.fspath, args), "--db", url]


def index_command(
    url: str, paths: Sequence[Path], *extra: str, workers: int = 1
) -> list[str]:
    """``metastore index`` with the test batch size."""
    return command(
        url,
        "index",
        *paths,
        "--workers",
        str(workers),
        "--batch-size",
        str(BATCH),
        *extra,
    )


def run(
    args: list[str], hooks: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; output captured as text."""
    return subprocess.run(
        args,
        env=env(**(hooks or {})),
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )


def start(
    args: list[str], hooks: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start a command; the caller waits for it."""
    return subprocess.Popen(
        args,
        env=env(**(hooks or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_paused(
    procs: list[subprocess.Popen[str]],
    args: list[str],
    at_sql: str,
    go: Path,
    what: str,
) -> subprocess.Popen[str]:
    """Start a command that pauses just before SQL point ``at_sql`` (``N:TEXT``).

    It goes on once ``go`` exists.  Returns when it has paused (failing
    after :data:`PATIENCE` with ``what`` it was waiting for); the process is
    added to ``procs`` first, so the test's cleanup kills it either way.
    """
    hooks = {
        "METASTORE_TEST_PAUSE_AT_SQL": at_sql,
        "METASTORE_TEST_PAUSE_FILE": str(go),
    }
    proc = start(args, hooks)
    procs.append(proc)
    wait_for(Path(f"{go}.paused").exists, what)
    return proc


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until true; fail after :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def export(url: str) -> list[tuple[str, Any]]:
    """Every image with its modules, by imageId."""
    with Store(url) as store:
        return list(store.export())


def searched(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every study and series a query finds, by UID (the same on both backends)."""
    with Store(url) as store:
        studies, series = query_rows(store, "studies"), query_rows(store, "series")
    return (
        sorted(studies, key=lambda s: s["StudyInstanceUID"]),
        sorted(series, key=lambda s: s["SeriesInstanceUID"]),
    )


def counts(url: str) -> dict[str, int | None]:
    """Rows per table (the database size left out)."""
    with Store(url) as store:
        stats = store.stats()
    stats.pop("database_bytes")
    return stats


#: SQL that must count 0 rows in any database metastore left, crash or not
#: (``{collate}``: the code point collation, ``COLLATE "C"`` on PostgreSQL).
BROKEN = {
    "image without instance": "SELECT count(*) FROM images i "
    "WHERE NOT EXISTS (SELECT 1 FROM instances n WHERE n.id = i.instance_id)",
    "instance without series": "SELECT count(*) FROM instances n "
    "WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.id = n.series_id)",
    "instance without source": "SELECT count(*) FROM instances n "
    "WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE s.id = n.source_id)",
    "series without study": "SELECT count(*) FROM series s "
    "WHERE NOT EXISTS (SELECT 1 FROM studies t WHERE t.id = s.study_id)",
    "module row without image": "SELECT count(*) FROM image_modules m "
    "WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.id = m.image_id)",
    "module row without type": "SELECT count(*) FROM image_modules m WHERE NOT "
    "EXISTS (SELECT 1 FROM module_types y WHERE y.id = m.module_type_id)",
    "module row without value": "SELECT count(*) FROM image_modules m "
    "WHERE NOT EXISTS (SELECT 1 FROM module_values v WHERE v.id = m.value_id)",
    "value without its base": "SELECT count(*) FROM module_values v "
    "WHERE v.base_id IS NOT NULL AND NOT EXISTS "
    "(SELECT 1 FROM module_values b WHERE b.id = v.base_id)",
    "instance without its base": "SELECT count(*) FROM instances n "
    "WHERE n.dicom_json_base_id IS NOT NULL AND NOT EXISTS "
    "(SELECT 1 FROM module_values b WHERE b.id = n.dicom_json_base_id)",
    "image without prefix": "SELECT count(*) FROM images i WHERE NOT EXISTS "
    "(SELECT 1 FROM image_id_prefixes p WHERE p.id = i.prefix_id)",
    "source without instance": "SELECT count(*) FROM sources s WHERE NOT EXISTS "
    "(SELECT 1 FROM instances n WHERE n.source_id = s.id)",
    "series without instance": "SELECT count(*) FROM series s WHERE NOT EXISTS "
    "(SELECT 1 FROM instances n WHERE n.series_id = s.id)",
    "study without series": "SELECT count(*) FROM studies t WHERE NOT EXISTS "
    "(SELECT 1 FROM series s WHERE s.study_id = t.id)",
    # series.instance_count, kept by store.write.settle (revision 0006)
    "series with a wrong instance count": "SELECT count(*) FROM series s "
    "WHERE s.instance_count <> "
    "(SELECT count(*) FROM instances n WHERE n.series_id = s.id)",
    # first_instance_id, kept by store.write.settle (revision 0007): the
    # instance with the lowest SOP Instance UID ({collate}: by code point)
    "series whose first_instance_id is not its lowest-SOP instance": "SELECT "
    "count(*) FROM series s WHERE NOT EXISTS (SELECT 1 FROM instances f "
    "WHERE f.id = s.first_instance_id AND f.series_id = s.id AND NOT EXISTS "
    "(SELECT 1 FROM instances n WHERE n.series_id = s.id "
    "AND n.sop_instance_uid{collate} < f.sop_instance_uid))",
    "study whose first_instance_id is not its lowest-SOP instance": "SELECT "
    "count(*) FROM studies t WHERE NOT EXISTS (SELECT 1 FROM instances f "
    "JOIN series fs ON fs.id = f.series_id "
    "WHERE f.id = t.first_instance_id AND fs.study_id = t.id AND NOT EXISTS "
    "(SELECT 1 FROM instances n JOIN series ns ON ns.id = n.series_id "
    "WHERE ns.study_id = t.id AND n.sop_instance_uid{collate} < f.sop_instance_uid))",
    "image without modules": "SELECT count(*) FROM images i WHERE NOT EXISTS "
    "(SELECT 1 FROM image_modules m WHERE m.image_id = i.id)",
}
#: Garbage that only a prune sweeps: left by concurrent rewrites of a location.
UNREFERENCED = {
    "unreferenced value": "SELECT count(*) FROM module_values v "
    "WHERE NOT EXISTS (SELECT 1 FROM image_modules m WHERE m.value_id = v.id) "
    "AND NOT EXISTS (SELECT 1 FROM module_values d WHERE d.base_id = v.id) "
    "AND NOT EXISTS (SELECT 1 FROM instances n WHERE n.dicom_json_base_id = v.id)",
    "unreferenced prefix": "SELECT count(*) FROM image_id_prefixes p "
    "WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.prefix_id = p.id)",
}


def problems(url: str, *, garbage: bool = True) -> dict[str, int]:
    """The invariants :data:`BROKEN` (and :data:`UNREFERENCED`) that fail."""
    checks = {**BROKEN, **(UNREFERENCED if garbage else {})}
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            postgres = engine.dialect.name == "postgresql"
            collate = ' COLLATE "C"' if postgres else ""
            found = {
                name: int(
                    conn.exec_driver_sql(sql.format(collate=collate)).scalar_one()
                )
                for name, sql in checks.items()
            }
            if engine.dialect.name == "sqlite":
                ok = conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()
                found["integrity_check"] = 0 if ok == "ok" else 1
                keys = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                found["foreign_key_check"] = len(keys)
    finally:
        engine.dispose()
    return {name: n for name, n in found.items() if n}


def terminate_backends(admin_url: str, url: str) -> int:
    """Drop every connection to ``url``'s database; return how many."""
    name = sa.engine.make_url(url).database
    admin = db.create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).all()
    finally:
        admin.dispose()
    return len(rows)


def admin_sql(admin_url: str, sql: str) -> None:
    """Run one statement in autocommit on the server of ``admin_url``."""
    admin = db.create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        admin.dispose()


def processes_mentioning(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
