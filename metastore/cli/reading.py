"""The commands that read the store: ``get``, ``tags``, ``export``, ``query``,
``stats`` and ``errors``."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Literal

import click

from metastore.cli.base import F, Failure, cli, db_option, module_types
from metastore.cli.output import (
    cell,
    plain_numbers,
    print_table,
    stdout,
    tag_rows,
    write_js_lines,
    write_json_lines,
)
from metastore.errors import ImageNotFoundError
from metastore.keywords import keyword_row, tag_of

if TYPE_CHECKING:
    from metastore.store import ImageRef, Store


def frame_option(command: F) -> F:
    """``--frame N``: which frame of the image REF names."""
    option: Callable[[F], F] = click.option(
        "--frame",
        type=click.IntRange(min=1),
        help="Frame number (default: the one REF names, else 1).",
    )
    return option(command)


def resolve(store: Store, ref: str, frame: int | None, what: str) -> ImageRef:
    """``store.resolve``; nothing stored under REF is a message and exit 1."""
    try:
        return store.resolve(ref, frame)
    except ImageNotFoundError as exc:
        click.echo(f"{what}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None


@cli.command()
@click.argument("module_type", metavar="TYPE")
@click.argument("ref", metavar="REF")
@frame_option
@db_option
def get(module_type: str, ref: str, frame: int | None, url: str) -> None:
    """Print one module of one image as JSON (exit 1 if there is no answer).

    REF is an imageId in any form Cornerstone resolves to the same image,
    the path of an indexed file or zip member (archive.zip!/member), or a
    SOP Instance UID; --frame picks a frame (default 1).  The answer is the
    one a Registry with a DatabaseProvider gives.

    Example:

    \b
        metastore get imagePlaneModule scans/ct.dcm
        metastore get imagePlaneModule 1.2.840.113619.2.1.1.1 --frame 3
    """
    from metastore.providers.database import DatabaseProvider
    from metastore.store import Store

    module_types([module_type])
    with Store(url, read_only=True, create=False) as store:
        image = resolve(store, ref, frame, f"no {module_type}")
        # the product's read path: the database provider, which a Registry
        # holding it asks (the Registry itself would import the mapping)
        value = DatabaseProvider(store, read_ahead=0).get_any(
            module_type, image.image_id
        )
    if value is None:
        click.echo(f"no {module_type} for {image.image_id}", err=True)
        click.get_current_context().exit(1)
    write_js_lines([value], stdout())


@cli.command()
@click.argument("ref", metavar="REF")
@click.argument("attributes", nargs=-1, metavar="[ATTR]...")
@frame_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    help="DICOM JSON (default when piped) or a table (default on a terminal).",
)
@db_option
def tags(
    ref: str, attributes: tuple[str, ...], frame: int | None, fmt: str | None, url: str
) -> None:
    """Print the stored DICOM JSON of an image's instance: every element, or ATTRs.

    REF is an imageId in any form Cornerstone resolves to the same image,
    the path of an indexed file or zip member (archive.zip!/member), or a
    SOP Instance UID.  ATTR is a keyword (SliceThickness) or a tag
    (00180050); an ATTR the instance lacks is named on stderr, exit 1.

    Example:

    \b
        metastore tags scans/ct.dcm SliceThickness 00291010
        metastore tags 1.2.840.113619.2.1.1.1 --format json | jq .
    """
    from metastore.store import Store

    wanted = [tag_of(name) for name in attributes]  # bad names before the database
    with Store(url, read_only=True, create=False) as store:
        image = resolve(store, ref, frame, "no tags")
        instance = store.dicom_json(image.sop_instance_uid) or {}
    missing = [
        (n, t) for n, t in zip(attributes, wanted, strict=True) if t not in instance
    ]
    if wanted:
        instance = {t: instance[t] for t in dict.fromkeys(wanted) if t in instance}
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "json"
    if fmt == "json":
        write_json_lines([instance], stdout())
    else:
        print_table(tag_rows(instance), ["tag", "keyword", "vr", "value"])
    for name, tag in missing:
        click.echo(f"{name} ({tag[:4]},{tag[4:]}): not in the instance", err=True)
    if missing:
        click.get_current_context().exit(1)


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

    types = module_types(modules.split(",")) if modules else None
    if output != "-":
        _refuse_database_file(output, url)
    with Store(url, read_only=True, create=False) as store, _open_output(output) as out:
        rows = ({"imageId": i, "modules": m} for i, m in store.export(types))
        write_js_lines(rows, out)


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
            raise Failure(
                f"--output {output} is {path}, a file of the database: "
                "refusing to write over it"
            )


@contextmanager
def _open_output(output: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``, else the file, created or truncated."""
    if output == "-":
        yield stdout()
        return
    try:
        out = open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failure(f"--output {output}: {exc.strerror}") from None
    with out:
        yield out


#: Per level, the UIDs every row carries (the level's and its parents').
LEVEL_UIDS = {
    "studies": ("StudyInstanceUID",),
    "series": ("StudyInstanceUID", "SeriesInstanceUID"),
    "instances": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}

#: Rows read before the CSV header is written: its columns are theirs.
CSV_HEADER_ROWS = 1000


@cli.command()
@click.argument("level", type=click.Choice(list(LEVEL_UIDS)))
@click.argument("matches", nargs=-1, metavar="[ATTR=VALUE]...")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="ATTR",
    help="Also return ATTR (repeat; 'all' for every stored attribute).",
)
@click.option("--fuzzy", is_flag=True, help="Names ignore accents, match any part.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip N rows.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "table", "csv"]),
    help="JSON Lines (default when piped), a table (default on a terminal) or CSV.",
)
@click.option("--json", "fmt", flag_value="jsonl", hidden=True)
@click.option("--table", "fmt", flag_value="table", hidden=True)
@click.option("--patient-id", "PatientID", multiple=True, help="PatientID=X.")
@click.option("--patient-name", "PatientName", multiple=True, help="PatientName=X.")
@click.option(
    "--modality",
    "Modality",
    multiple=True,
    help="Modality=X (ModalitiesInStudy=X for studies).",
)
@click.option("--date", "StudyDate", multiple=True, help="StudyDate=D or D1-D2.")
@click.option("--date-from", metavar="D", help="StudyDate=D- (on or after D).")
@click.option("--date-to", metavar="D", help="StudyDate=-D (on or before D).")
@click.option(
    "--accession", "AccessionNumber", multiple=True, help="AccessionNumber=X."
)
@click.option(
    "--description",
    "Description",
    multiple=True,
    help="StudyDescription=X (SeriesDescription=X for series, instances).",
)
@db_option
def query(
    level: Literal["studies", "series", "instances"],
    matches: tuple[str, ...],
    includes: tuple[str, ...],
    fuzzy: bool,
    limit: int | None,
    offset: int,
    fmt: str | None,
    date_from: str | None,
    date_to: str | None,
    url: str,
    **aliases: tuple[str, ...],
) -> None:
    """Find studies, series or instances matching ATTR=VALUE filters.

    ATTR is a keyword (PatientName) or a tag (00100010); VALUE takes DICOM
    matching: * and ? wildcards, a comma-separated list (any of), a date
    range (20200101-20201231, open ends).  A repeated ATTR or option means
    any of its values.  Each row is keyword -> value (names as DICOM
    strings, numbers as numbers, several values as a list) with the
    level's UIDs; instance rows add imageIds, every frame's imageId.

    Example:

    \b
        metastore query studies PatientName='doe*' StudyDate=20200101-20201231
        metastore query series --modality CT --modality PT --format csv
        metastore query instances 0020000E=1.2.3 --include SliceThickness
    """
    from metastore.store import Store

    filters = _filters(level, matches, aliases, date_from, date_to)
    include: Sequence[str] | Literal["all"] = "all" if "all" in includes else includes
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "jsonl"
    with Store(url, read_only=True, create=False) as store:
        found = store.query(
            level,
            filters or None,
            include=include,
            limit=limit,
            offset=offset,
            fuzzy=fuzzy,
        )
        rows = _keyword_rows(store, level, found)
        if fmt == "jsonl":
            write_json_lines(rows, stdout())
        elif fmt == "csv":
            _write_csv(rows)
        else:
            table = list(rows)
            columns = list(dict.fromkeys(key for row in table for key in row))
            cells = ([_text(row.get(c)) for c in columns] for row in table)
            print_table(cells, columns, empty="(no rows)")


def _filters(
    level: str,
    matches: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]],
    date_from: str | None,
    date_to: str | None,
) -> dict[str, str | list[str]]:
    """ATTR=VALUE arguments and the alias options as ``Store.query`` filters.

    Values of the same ATTR (repeated, or an alias and ATTR=VALUE) are a
    list: any of them matches.
    """
    found: dict[str, list[str]] = {}
    for match in matches:
        attr, sep, value = match.partition("=")
        if not sep or not attr.strip():
            raise click.BadParameter(
                f"{match!r} is not ATTR=VALUE (e.g. PatientName='doe*')",
                param_hint="'[ATTR=VALUE]...'",
            )
        found.setdefault(attr.strip(), []).append(value)
    names = {
        "Modality": "ModalitiesInStudy" if level == "studies" else "Modality",
        "Description": (
            "StudyDescription" if level == "studies" else "SeriesDescription"
        ),
    }
    for option, values in aliases.items():
        if values:
            found.setdefault(names.get(option, option), []).extend(values)
    if date_from or date_to:
        # one range: both ends (DICOM's "D1-D2") or an open one
        found.setdefault("StudyDate", []).append(f"{date_from or ''}-{date_to or ''}")
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}


def _keyword_rows(
    store: Store, level: str, found: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """DICOM JSON rows as keyword rows: the UIDs first, imageIds on instances."""
    for dicom_json in found:
        plain = keyword_row(dicom_json)
        row = {uid: plain.pop(uid, None) for uid in LEVEL_UIDS[level]}
        row.update(plain)
        if level == "instances":
            sop = row["SOPInstanceUID"]
            row["imageIds"] = store.image_ids(sop) if isinstance(sop, str) else []
        yield row


def _write_csv(rows: Iterator[dict[str, Any]]) -> None:
    """CSV with a header, streamed: the columns are those of the first rows.

    An attribute that first appears after :data:`CSV_HEADER_ROWS` rows has
    no column; it is named on stderr (JSON Lines keeps every attribute).
    """
    head = list(itertools.islice(rows, CSV_HEADER_ROWS))
    columns = list(dict.fromkeys(key for row in head for key in row))
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    known, left_out = set(columns), set[str]()
    for row in itertools.chain(head, rows):
        for key in row.keys() - known - left_out:
            left_out.add(key)
            click.echo(f"{key}: not in the CSV columns; see --format jsonl", err=True)
        writer.writerow([_text(row.get(c)) for c in columns])
    sys.stdout.flush()


def _text(value: Any) -> str:
    """A keyword row's value as one cell: several values joined by ``\\`` (as
    DICOM does), a sequence as its JSON, ``None`` empty."""
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, list):
        return "\\".join(cell(v) for v in value)
    return cell(value)


@cli.command()
@click.option("--json/--table", "as_json", default=None, help="Output format.")
@db_option
def stats(as_json: bool | None, url: str) -> None:
    """Count studies, series, instances, images, sources, errors and duplicates.

    A table on a terminal, else (or with --json) one JSON object.
    ``stale_instances``: instances whose answers an older metastore mapping
    computed (``metastore reindex`` recomputes them).

    Example:

    \b
        metastore stats --db postgresql://user@host/pacs
    """
    from metastore.index import stale_instances
    from metastore.store import Store

    with Store(url, read_only=True, create=False) as store:
        counts = {**store.stats(), "stale_instances": stale_instances(store)}
        counts = plain_numbers(counts)
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        write_json_lines([counts], stdout())
    else:
        rows = [
            (name.replace("_", " "), _count(value)) for name, value in counts.items()
        ]
        print_table(rows, ["what", "count"])


def _count(value: Any) -> str:
    """A count with thousands separators; ``None`` (unknown) as empty."""
    return (
        "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    )


#: The kinds of recorded errors (``index_errors.kind``).
ERROR_KINDS = ("unreadable", "invalid", "duplicate")


@cli.command()
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(ERROR_KINDS),
    help="Only errors of this kind (repeat for several).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "table", "csv"]),
    help="JSON Lines (default when piped), a table (default on a terminal) or CSV.",
)
@db_option
def errors(kinds: tuple[str, ...], fmt: str | None, url: str) -> None:
    """List what the store recorded as not indexed: failures and duplicates.

    unreadable: a source that could not be read; invalid: an instance that
    cannot be stored; duplicate: an instance whose SOP Instance UID is
    stored from another source (not a failure).  Each source's errors are
    those of the last run that read it.

    Example:

    \b
        metastore errors --kind unreadable --kind invalid --format csv > failed.csv
    """
    from metastore.store import Store

    with Store(url, read_only=True, create=False) as store:
        records = store.errors(kinds or None)
    columns = ["location", "kind", "reason"]
    rows = [(r.location, r.kind, r.reason) for r in records]
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "jsonl"
    if fmt == "jsonl":
        write_json_lines((dict(zip(columns, r, strict=True)) for r in rows), stdout())
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(rows, columns, empty="(no errors)")
