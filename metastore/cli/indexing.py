"""``metastore index``: the indexing run, its progress and its report."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from metastore.cli.base import Failure, cli, db_option
from metastore.cli.output import stdout, write_json_lines
from metastore.imageid import check_wadors_root
from metastore.index import DEFAULT_BATCH_SIZE, IndexReport, index_paths, parse_shard
from metastore.locations import location_of
from metastore.store import Store

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def _shard(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """Parse ``--shard K/N``; a bad value is one line and exit status 2."""
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise Failure(f"--shard: {exc}") from None


def _wadors_root(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Check ``--wadors-root`` before the database is opened (exit status 2)."""
    if value is None:
        return None
    try:
        return check_wadors_root(value)
    except ValueError as exc:
        raise Failure(f"--wadors-root: {exc}") from None


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
    _print_report(report, as_json)
    click.get_current_context().exit(report.exit_status)


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
        write_json_lines([{**fields, "rate": report.rate}], stdout())
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
