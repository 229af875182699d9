"""The commands that read the store: ``get``, ``export``, ``query``, ``stats``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from metastore.cli.base import Failure, cli, db_option, module_types
from metastore.cli.output import stdout, write_json_lines
from metastore.imageid import parse_image_id
from metastore.store import Store, db

#: ``query`` levels as the command spells them, and as ``Store.query`` does.
LEVELS = {"studies": "study", "series": "series", "instances": "instance"}


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
    module_types([module_type])
    parse_image_id(image_id)  # a malformed imageId is an error, not "no answer"
    with Store(url, read_only=True, create=False) as store:
        value = (store.image_modules(image_id) or {}).get(module_type)
    if value is None:
        click.echo(f"no {module_type} for {image_id}", err=True)
        click.get_current_context().exit(1)
    write_json_lines([value], stdout())


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
    types = module_types(modules.split(",")) if modules else None
    if output != "-":
        _refuse_database_file(output, url)
    with Store(url, read_only=True, create=False) as store, _open_output(output) as out:
        rows = ({"imageId": i, "modules": m} for i, m in store.export(types))
        write_json_lines(rows, out)


def _refuse_database_file(output: str, url: str) -> None:
    """Refuse an output file that is the database or one of its companions.

    Opening it for writing would truncate the database (or its WAL) before a
    single row is read.  Compared as files (a hard link, a symlink or another
    spelling of the path is the same file) and, for files that do not exist
    yet, as resolved paths (a ``-wal`` created by the export would be taken
    for the database's).
    """
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
    if dates is not None:
        date_from, date_to = date_from or dates[0], date_to or dates[1]
    with Store(url, read_only=True, create=False) as store:
        rows = store.query(
            LEVELS[level],
            study_date_from=date_from,
            study_date_to=date_to,
            accession_number=accession,
            **filters,
        )
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        write_json_lines(rows, stdout())
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

    Example:

    \b
        metastore stats --db postgresql://user@host/pacs
    """
    with Store(url, read_only=True, create=False) as store:
        write_json_lines([store.stats()], stdout())
