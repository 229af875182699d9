"""The ``metastore`` command (also ``python -m metastore``): a skin over the library.

Every command is one library call plus formatting.  Machine output is JSON
Lines (NaN written as ``null``); ``query`` prints a table on a terminal.
Errors metastore raises on purpose (bad imageId, unknown module type,
unreachable database, schema behind head...) become one line on stderr and
exit status 2, in one place: :class:`MetastoreGroup`.

Start-up: ``metastore --help`` must not load SQLAlchemy, pydicom or the
indexer, and ``get`` only the store's read side, so the library is imported
inside the commands that use it (tests/test_cli_startup.py, issue 13).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
import orjson

from metastore.errors import MetastoreError, ModuleError
from metastore.locations import location_of

if TYPE_CHECKING:
    from metastore.index import IndexReport, ReindexReport
    from metastore.store import Store

F = TypeVar("F", bound=Callable[..., Any])

#: ``metastore.store.db.DEFAULT_URL`` and ``metastore.index.DEFAULT_BATCH_SIZE``,
#: needed to build the options (``--help`` too) without importing SQLAlchemy
#: and the indexer; tests/test_cli_startup.py checks they stay equal.
DEFAULT_URL = "sqlite:///metastore.sqlite"
DEFAULT_BATCH_SIZE = 500

#: Exit status for bad input and an unusable database (click's usage status).
EXIT_ERROR = 2
#: ``query`` levels as the command spells them, and as ``Store.query`` does.
LEVELS = {"studies": "study", "series": "series", "instances": "instance"}
#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


class MetastoreGroup(click.Group):
    """A click group that turns metastore's errors into one line and status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a :class:`MetastoreError` without a traceback.

        Database errors are among them: the store raises its own
        (:class:`~metastore.errors.StoreError` and below) for the driver's,
        with the URL redacted and its secrets scrubbed.
        """
        try:
            return super().invoke(ctx)
        except MetastoreError as exc:
            raise _Failure(str(exc)) from None


class _Failure(click.ClickException):
    exit_code = EXIT_ERROR


def db_option(command: F) -> F:
    """The ``--db URL`` option every command that opens the database takes."""
    option: Callable[[F], F] = click.option(
        "--db",
        "url",
        envvar="METASTORE_DATABASE_URL",
        default=DEFAULT_URL,
        show_default=True,
        metavar="URL",
        help="Database URL (env METASTORE_DATABASE_URL).",
    )
    return option(command)


def _write_json_lines(rows: Iterable[Any], out: IO[bytes]) -> None:
    """Write one compact JSON document per line (NaN and infinities as null)."""
    for row in rows:
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # lone surrogates, integers past 64 bits
            line = _stdlib_json_line(row)
        out.write(line)
    out.flush()


def _write_js_lines(rows: Iterable[Any], out: IO[bytes]) -> None:
    """One JSON document per line, as JavaScript's ``JSON.stringify`` writes it.

    For ``get`` and ``export``, whose output is diffed against a browser's
    ``JSON.stringify(metaData.get(...))``: ``800`` not ``800.0``, ``-0`` as
    ``0``, NaN as ``null`` (:mod:`metastore.jsjson`).
    """
    from metastore.jsjson import dumps

    for row in rows:
        out.write(dumps(row))
        out.write(b"\n")
    out.flush()


def _stdlib_json_line(row: Any) -> bytes:
    """What orjson refuses, by the standard library: lone surrogates as
    ``\\ud800`` escapes (ASCII output), big integers as they are, NaN and
    infinities as null like orjson."""
    text = json.dumps(_nan_to_null(row), ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii") + b"\n"


def _nan_to_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_null(item) for item in value]
    return value


def _stdout() -> IO[bytes]:
    sys.stdout.flush()
    return sys.stdout.buffer


def _module_types(names: Iterable[str]) -> list[str]:
    """Check module type names; raise ModuleError naming the valid ones."""
    # metastore.modules.MODULE_TYPES, without importing the mapping (~9 ms)
    from metastore.moduletypes import ModuleType

    known = [t.value for t in ModuleType]
    types = [name.strip() for name in names if name.strip()]
    for name in types:
        if name not in known:
            valid = ", ".join(known)
            raise ModuleError(f"unknown module type {name!r}; valid types: {valid}")
    return types


@click.group(
    cls=MetastoreGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="metastore")
def cli() -> None:
    """metastore: a persistent store of Cornerstone3D metadata for DICOM archives.

    Example:

    \b
        metastore index scans/ --wadors-root https://pacs/dicomweb
    """


def _shard(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """Parse ``--shard K/N``; a bad value is one line and exit status 2."""
    if value is None:
        return None
    from metastore.index import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise _Failure(f"--shard: {exc}") from None


def _wadors_root(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Check ``--wadors-root`` before the database is opened (exit status 2)."""
    if value is None:
        return None
    from metastore.imageid import check_wadors_root

    try:
        return check_wadors_root(value)
    except ValueError as exc:
        raise _Failure(f"--wadors-root: {exc}") from None


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--wadors-root",
    metavar="URL",
    callback=_wadors_root,
    help="Make wadors: imageIds under this DICOMweb root (http or https).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Worker processes (default: one per CPU; 0 or 1: none).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Instances per transaction.",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Remove what is no longer under PATHS from the store (a PATH deleted since "
    "it was indexed too).",
)
@click.option(
    "--upgrade", is_flag=True, help="Migrate a database whose schema is behind first."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as one JSON object."
)
@click.option(
    "--shard",
    metavar="K/N",
    callback=_shard,
    help="Index only share K of N of the sources (N processes cover all once).",
)
@db_option
def index(
    paths: tuple[str, ...],
    wadors_root: str | None,
    workers: int | None,
    batch_size: int,
    prune: bool,
    upgrade: bool,
    as_json: bool,
    shard: tuple[int, int] | None,
    url: str,
) -> None:
    """Index files, folders, zip archives and DICOM JSON files.

    Exit status: 0 when every DICOM source was indexed, 1 when some failed
    (the rest are indexed; see the errors on stderr), 2 on bad usage or an
    unusable database.  --shard K/N takes a fixed share of the sources (by a
    hash of each location), so N processes, K = 1..N, cover PATHS once.

    Example:

    \b
        metastore index /archive scans.zip --wadors-root https://pacs/dicomweb
        metastore index /archive --shard 2/3   # one of three workers
    """
    from metastore.index import index_paths, stale_instances
    from metastore.store import Store

    missing = [path for path in paths if _missing(path)]
    if missing and not prune:
        raise click.BadParameter(
            f"Path {missing[0]!r} does not exist.", param_hint="'PATHS...'"
        )
    with Store(url, upgrade=upgrade) as store:
        for path in missing:
            _check_deleted_root(store, path)
        with _progress() as progress:
            report = index_paths(
                store,
                paths,
                wadors_root=wadors_root,
                workers=workers,
                batch_size=batch_size,
                prune=prune,
                progress=progress,
                shard=shard,
            )
        stale = stale_instances(store)
    _print_report(report, as_json)
    _note_stale(stale)
    click.get_current_context().exit(report.exit_status)


def _note_stale(stale: int) -> None:
    """One line on stderr when the store holds answers of an older mapping."""
    if stale:
        click.echo(
            f"{stale} instances hold answers of an older metastore mapping: "
            "metastore reindex brings them up to date",
            err=True,
        )


def _missing(path: str) -> bool:
    """``path`` is not there at all (not merely unreadable, nor a dangling link)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        pass  # there, but not readable: the run reports it and keeps its rows
    return False


def _check_deleted_root(store: Store, path: str) -> None:
    """Accept a missing PATH under --prune only if sources are stored under it.

    A deleted folder or archive that was indexed is pruned; a mistyped path
    (nothing stored under it) is refused, so a typo never looks like success.
    """
    count = len(store.known_sources([location_of(os.path.abspath(path))]))
    if not count:
        raise click.BadParameter(
            f"Path {path!r} does not exist, and no source is stored under it: "
            "nothing to prune.",
            param_hint="'PATHS...'",
        )
    click.echo(
        f"{path}: no longer exists; --prune forgets the {count} sources "
        "stored under it",
        err=True,
    )


def _print_report(report: IndexReport, as_json: bool) -> None:
    """The summary on stdout, the errors on stderr."""
    for error in report.errors:
        click.echo(f"{error.kind}: {error.location}: {error.reason}", err=True)
    if report.error_count > len(report.errors):
        click.echo(
            f"... {report.error_count - len(report.errors)} more errors", err=True
        )
    if as_json:
        fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
        fields["errors"] = [
            {"location": e.location, "kind": e.kind, "reason": e.reason}
            for e in report.errors
        ]
        _write_json_lines([{**fields, "rate": report.rate}], _stdout())
        return
    click.echo(f"{report.files_seen} files seen: {_counts(report)}")
    click.echo(
        f"{report.instances} instances ({report.duplicates} duplicates), "
        f"{report.images} images in {report.seconds:.1f} s ({report.rate:.0f} files/s)"
    )


def _counts(report: IndexReport) -> str:
    return (
        f"{report.indexed} indexed, {report.unchanged} unchanged, "
        f"{report.skipped} skipped, {report.failed} failed"
    )


@contextmanager
def _progress() -> Iterator[Callable[[IndexReport], None]]:
    """Report progress: a live line on a terminal, else a log line now and then."""
    tty = sys.stderr.isatty()
    last = [time.monotonic()]  # the first log line after LOG_INTERVAL

    def show(report: IndexReport) -> None:
        line = (
            f"{report.files_seen} files: {_counts(report)} ({report.rate:.0f} files/s)"
        )
        if tty:
            click.echo(f"\r{line}", nl=False, err=True)
        elif time.monotonic() - last[0] >= LOG_INTERVAL:
            last[0] = time.monotonic()
            click.echo(f"metastore index: {line}", err=True)

    try:
        yield show
    finally:
        if tty:
            click.echo(err=True)


@cli.command(name="reindex")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Worker processes (default: one per CPU; 0 or 1: none).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Instances per transaction.",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Recompute every instance, not only those of an older mapping.",
)
@click.option(
    "--upgrade", is_flag=True, help="Migrate a database whose schema is behind first."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as one JSON object."
)
@db_option
def reindex_command(
    workers: int | None,
    batch_size: int,
    everything: bool,
    upgrade: bool,
    as_json: bool,
    url: str,
) -> None:
    """Recompute stored answers of an older mapping from the stored DICOM JSON.

    No source file is opened: the store keeps every instance's DICOM JSON
    and the imageIds of its frames (kept as they are).  Only instances
    whose answers another metastore version computed are recomputed, unless
    --all.  Exit status: 0 when every one was, 1 when some could not be
    (they keep their old answers; see stderr), 2 on bad usage or an
    unusable database.

    Example:

    \b
        metastore db upgrade && metastore reindex --db postgresql://user@host/pacs
    """
    from metastore.index import reindex
    from metastore.store import Store

    with Store(url, upgrade=upgrade) as store, _reindex_progress() as progress:
        report = reindex(
            store,
            workers=workers,
            batch_size=batch_size,
            everything=everything,
            progress=progress,
        )
    for error in report.errors:
        click.echo(f"{error.kind}: {error.location}: {error.reason}", err=True)
    if report.error_count > len(report.errors):
        click.echo(
            f"... {report.error_count - len(report.errors)} more errors", err=True
        )
    if as_json:
        fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
        fields["errors"] = [
            {"location": e.location, "kind": e.kind, "reason": e.reason}
            for e in report.errors
        ]
        _write_json_lines([{**fields, "rate": report.rate}], _stdout())
    else:
        click.echo(f"{report.instances} instances: {_reindex_counts(report)}")
        click.echo(
            f"{report.images} images in {report.seconds:.1f} s "
            f"({report.rate:.0f} instances/s); {report.stale} instances stale"
        )
    click.get_current_context().exit(report.exit_status)


def _reindex_counts(report: ReindexReport) -> str:
    return (
        f"{report.reindexed} reindexed, {report.failed} failed, "
        f"{report.changed} changed meanwhile"
    )


@contextmanager
def _reindex_progress() -> Iterator[Callable[[ReindexReport], None]]:
    """Progress of a reindex, shown as ``index`` shows its own."""
    tty = sys.stderr.isatty()
    last = [time.monotonic()]

    def show(report: ReindexReport) -> None:
        line = (
            f"{report.instances} instances: {_reindex_counts(report)} "
            f"({report.rate:.0f} instances/s)"
        )
        if tty:
            click.echo(f"\r{line}", nl=False, err=True)
        elif time.monotonic() - last[0] >= LOG_INTERVAL:
            last[0] = time.monotonic()
            click.echo(f"metastore reindex: {line}", err=True)

    try:
        yield show
    finally:
        if tty:
            click.echo(err=True)


@cli.command()
@click.argument("module_type", metavar="TYPE")
@click.argument("image_id")
@db_option
def get(module_type: str, image_id: str, url: str) -> None:
    """Print one module of one image as JSON (exit 1 if there is no answer).

    Example:

    \b
        IMAGE_ID=$(metastore export | head -n 1 | jq -r .imageId)
        metastore get imagePlaneModule "$IMAGE_ID"
    """
    from metastore.imageid import parse_image_id
    from metastore.store import Store

    _module_types([module_type])
    parse_image_id(image_id)  # a malformed imageId is an error, not "no answer"
    with Store(url, read_only=True) as store:
        value = (store.image_modules(image_id) or {}).get(module_type)
    if value is None:
        click.echo(f"no {module_type} for {image_id}", err=True)
        click.get_current_context().exit(1)
    _write_js_lines([value], _stdout())


@cli.command()
@click.option(
    "--modules", metavar="A,B", help="Only these module types (comma separated)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write to FILE instead of stdout (never the database's own files).",
)
@db_option
def export(modules: str | None, output: str, url: str) -> None:
    """Export every image as JSON Lines: {"imageId": ..., "modules": {type: value}}.

    Example:

    \b
        metastore export --modules imagePlaneModule,voiLutModule -o modules.jsonl
    """
    from metastore.store import Store

    types = _module_types(modules.split(",")) if modules else None
    if output != "-":
        _refuse_database_file(output, url)
    with Store(url, read_only=True) as store, _open_output(output) as out:
        rows = ({"imageId": i, "modules": m} for i, m in store.export(types))
        _write_js_lines(rows, out)


def _refuse_database_file(output: str, url: str) -> None:
    """Refuse an output file that is the database or one of its companions.

    Opening it for writing would truncate the database (or its WAL) before a
    single row is read.  Compared as files (a hard link, a symlink or another
    spelling of the path is the same file) and, for files that do not exist
    yet, as resolved paths (a ``-wal`` created by the export would be taken
    for the database's).
    """
    from metastore.store import db

    for path in db.database_files(url):
        same = os.path.realpath(output) == os.path.realpath(path)
        if not same and os.path.exists(output) and os.path.exists(path):
            # a file that cannot be stat'ed leaves it to the paths
            with contextlib.suppress(OSError):
                same = os.path.samefile(output, path)
        if same:
            raise _Failure(
                f"--output {output} is {path}, a file of the database: "
                "refusing to write over it"
            )


@contextmanager
def _open_output(output: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``, else the file, created or truncated."""
    if output == "-":
        yield _stdout()
        return
    try:
        out = open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _Failure(f"--output {output}: {exc.strerror}") from None
    with out:
        yield out


class DateRange(click.ParamType[tuple[str | None, str | None]]):
    """``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``YYYYMMDD-`` or ``-YYYYMMDD``."""

    name = "range"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str | None, str | None]:
        """Split a range into its (first, last) dates; either may be ``None``."""
        if isinstance(value, tuple):
            return value
        first, sep, last = str(value).partition("-")
        if not sep:
            last = first
        if not (first or last) or not all(d.isdigit() for d in (first, last) if d):
            self.fail(f"{value!r} is not a date range like 20200101-20201231")
        return first or None, last or None


@cli.command()
@click.argument("level", type=click.Choice(list(LEVELS)))
@click.option("--patient-id", help="PatientID (* and ? are wildcards).")
@click.option("--patient-name", help="Patient name, any case; * and ? wildcards.")
@click.option("--modality", help="Modality (a study matches if a series does).")
@click.option("--date", "dates", type=DateRange(), help="StudyDate or a range of them.")
@click.option("--date-from", metavar="YYYYMMDD", help="StudyDate on or after.")
@click.option("--date-to", metavar="YYYYMMDD", help="StudyDate on or before.")
@click.option("--accession", help="AccessionNumber.")
@click.option("--description", help="Study (series) description; * and ? wildcards.")
@click.option("--limit", type=int, help="At most this many rows.")
@click.option("--json/--table", "as_json", default=None, help="Output format.")
@db_option
def query(
    level: str,
    dates: tuple[str | None, str | None] | None,
    date_from: str | None,
    date_to: str | None,
    accession: str | None,
    as_json: bool | None,
    url: str,
    **filters: Any,
) -> None:
    """Find studies, series or instances: JSON Lines, or a table on a terminal.

    Example:

    \b
        metastore query studies --patient-name 'doe*' --date 20200101-20201231 --table
    """
    from metastore.store import Store

    if dates is not None:
        date_from, date_to = date_from or dates[0], date_to or dates[1]
    with Store(url, read_only=True) as store:
        rows = store.search(
            LEVELS[level],
            study_date_from=date_from,
            study_date_to=date_to,
            accession_number=accession,
            **filters,
        )
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        _write_json_lines(rows, _stdout())
    else:
        click.echo(_table(rows))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    """Rows as an aligned text table (columns of the first row)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


@cli.command()
@db_option
def stats(url: str) -> None:
    """Print counts of studies, series, instances, images, values and errors as JSON.

    ``stale_instances``: instances whose answers an older metastore mapping
    computed (``metastore reindex`` recomputes them).

    Example:

    \b
        metastore stats --db postgresql://user@host/pacs
    """
    from metastore.index import stale_instances
    from metastore.store import Store

    with Store(url, read_only=True) as store:
        counts = {**store.stats(), "stale_instances": stale_instances(store)}
    _write_json_lines([counts], _stdout())


@cli.group(name="db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations shipped with metastore).

    Example:

    \b
        metastore db upgrade --db postgresql://user@host/pacs
    """


@db_group.command()
@db_option
def upgrade(url: str) -> None:
    """Create or migrate the schema to the newest revision.

    Example:

    \b
        metastore db upgrade --db sqlite:///archive.sqlite
    """
    from metastore.store import db

    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        click.echo(
            f"{db.redact(engine.url)} is at revision {db.current(engine)} (head)"
        )
    finally:
        engine.dispose()


@db_group.command()
@db_option
def current(url: str) -> None:
    """Print the schema revision and whether it is the newest (head).

    Example:

    \b
        metastore db current --db sqlite:///archive.sqlite
    """
    from metastore.store import db

    engine = db.create_engine(url, read_only=True)
    try:
        # an unknown (newer) revision or a damaged version table is an error
        revision, head = db.known_revision(engine), db.head()
    finally:
        engine.dispose()
    if revision == head:
        click.echo(f"{revision} (head)")
    else:
        click.echo(
            f"{revision or 'no schema'} (behind head {head}; run: metastore db upgrade)"
        )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8042, show_default=True)
@click.option(
    "--token",
    envvar="METASTORE_TOKEN",
    help="Require Authorization: Bearer TOKEN (env METASTORE_TOKEN).",
)
@click.option(
    "--insecure", is_flag=True, help="Allow a non-loopback --host without a token."
)
@db_option
def serve(host: str, port: int, token: str | None, insecure: bool, url: str) -> None:
    """Serve the store read-only over DICOMweb at http://HOST:PORT/dicomweb.

    Example:

    \b
        metastore index /archive && metastore serve
    """
    from metastore.web import run  # the web extra: Starlette, uvicorn

    run(url, host=host, port=port, token=token, insecure=insecure)


def main() -> None:
    """Entry point of the ``metastore`` command."""
    # A file name that is not UTF-8 or a lone surrogate from a DICOM JSON
    # value must print as an escape, never end the command with a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="metastore")
