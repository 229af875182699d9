"""``metastore index`` and ``metastore reindex``: the runs, their progress
and their reports."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from metastore.cli.base import (
    DEFAULT_BATCH_SIZE,
    EXIT_INTERRUPTED,
    Failure,
    cli,
    db_option,
)
from metastore.cli.output import stdout, write_json_lines
from metastore.cli.progress import counts, reindex_counts
from metastore.locations import location_of

if TYPE_CHECKING:
    from metastore.index import IndexInterrupted, IndexReport
    from metastore.store import Store


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
        raise Failure(f"--shard: {exc}") from None


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
        raise Failure(f"--wadors-root: {exc}") from None


#: ``--workers`` of the commands that run worker processes (index, reindex).
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Worker processes (default: one per CPU; 0 or 1: none).",
)
#: ``--batch-size`` of the commands that write in batches (index, reindex).
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Instances per transaction.",
)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--wadors-root",
    metavar="URL",
    callback=_wadors_root,
    help="Make wadors: imageIds under this DICOMweb root (http or https).",
)
@workers_option
@batch_size_option
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
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress (and no pre-count); the summary and failures still print.",
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
    quiet: bool,
    url: str,
) -> None:
    """Index files, folders, zip archives and DICOM JSON files.

    Exit status: 0 when every DICOM source was indexed, 1 when some failed
    (the rest are indexed; see the errors on stderr), 2 on bad usage or an
    unusable database, 130 after Ctrl-C (what was saved stays: run the same
    command again to continue).  --shard K/N takes a fixed share of the
    sources (by a hash of each location), so N processes, K = 1..N, cover
    PATHS once.  Progress (on stderr) counts against a quick pre-count.

    Example:

    \b
        metastore index /archive scans.zip --wadors-root https://pacs/dicomweb
        metastore index /archive --shard 2/3   # one of three workers
    """
    from metastore.cli.progress import INDEX, RunProgress
    from metastore.index import (
        IndexInterrupted,
        count_sources,
        index_paths,
        stale_instances,
    )
    from metastore.store import Store

    missing = [path for path in paths if _missing(path)]
    if missing and not prune:
        raise click.BadParameter(
            f"Path {missing[0]!r} does not exist.", param_hint="'PATHS...'"
        )
    with Store(url, upgrade=upgrade) as store:
        for path in missing:
            _check_deleted_root(store, path)
        total = None if quiet else count_sources(paths, shard)
        progress = None if quiet else RunProgress(INDEX, total)
        try:
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
        except IndexInterrupted as stop:
            if progress is not None:
                progress.close()
            _print_interrupted(stop, as_json)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        finally:
            if progress is not None:
                progress.close()
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
    """The summary on stdout; failures on stderr, duplicates counted apart."""
    failures = [e for e in report.errors if e.kind != "duplicate"]
    for error in failures:
        click.echo(f"{error.kind}: {error.location}: {error.reason}", err=True)
    if report.problem_count > len(failures):
        more = report.problem_count - len(failures)
        click.echo(
            f"... {more} more failures (metastore errors --kind unreadable "
            "--kind invalid lists them all)",
            err=True,
        )
    if as_json:
        write_json_lines([_report_json(report)], stdout())
        return
    click.echo(f"{report.files_seen} files seen: {counts(report)}")
    click.echo(
        f"{report.instances} instances, {report.images} images in "
        f"{report.seconds:.1f} s ({report.rate:.0f} files/s)"
    )
    if report.duplicates:
        click.echo(
            f"{report.duplicates} duplicates not stored again: their SOP Instance "
            "UIDs are stored from other files (metastore errors --kind duplicate)"
        )


def _report_json(report: IndexReport) -> dict[str, object]:
    """The report as one JSON object (the first 100 errors, ``rate`` added)."""
    fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
    fields["errors"] = [
        {"location": e.location, "kind": e.kind, "reason": e.reason}
        for e in report.errors
    ]
    return {**fields, "rate": report.rate}


def _print_interrupted(stop: IndexInterrupted, as_json: bool) -> None:
    """What Ctrl-C left: how much is saved, and how to go on."""
    report = stop.report
    click.echo(
        f"Interrupted: {stop.saved} files indexed and saved by this run "
        f"({report.unchanged} unchanged, {report.skipped} skipped, "
        f"{report.failed} failed); the {stop.pending} files of the batch being "
        "written were not.",
        err=True,
    )
    click.echo(
        "Nothing saved is lost: run the same command again to continue.", err=True
    )
    if as_json:
        fields = _report_json(report)
        write_json_lines(
            [{**fields, "interrupted": True, "saved": stop.saved}], stdout()
        )


@cli.command(name="reindex")
@workers_option
@batch_size_option
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
    unusable database, 130 after Ctrl-C (what was saved stays).

    Example:

    \b
        metastore db upgrade && metastore reindex --db postgresql://user@host/pacs
    """
    from metastore.cli.progress import REINDEX, RunProgress
    from metastore.index import reindex, stale_instances
    from metastore.store import Store

    with Store(url, upgrade=upgrade) as store:
        # the progress total: what the run will read
        total = store.stats()["instances"] if everything else stale_instances(store)
        progress = RunProgress(REINDEX, total)
        try:
            report = reindex(
                store,
                workers=workers,
                batch_size=batch_size,
                everything=everything,
                progress=progress,
            )
        finally:
            progress.close()
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
    else:
        click.echo(f"{report.instances} instances: {reindex_counts(report)}")
        click.echo(
            f"{report.images} images in {report.seconds:.1f} s "
            f"({report.rate:.0f} instances/s); {report.stale} instances stale"
        )
    click.get_current_context().exit(report.exit_status)
