"""The ``metastore`` command (also ``python -m metastore``): a skin over the library.

Every command is one library call plus formatting.  Machine output is JSON
Lines (NaN written as ``null``); ``query`` prints a table on a terminal.
Errors metastore raises on purpose become one line on stderr and exit
status 2, in one place (``base.MetastoreGroup``).  The rooms:

- ``output``: JSON Lines, tables and CSV;
- ``base``: the ``cli`` group, the options every command shares
  (``--db``, ``-v``), errors and Ctrl-C;
- ``progress``: the progress of ``index`` (rich on a terminal);
- ``indexing``: ``index`` and its report;
- ``reading``: ``get``, ``tags``, ``export``, ``query``, ``stats``, ``errors``;
- ``admin``: ``db upgrade``, ``db current`` and ``serve``.
"""

from __future__ import annotations

import io
import sys

from metastore.cli import admin, indexing, reading
from metastore.cli.base import cli

__all__ = ["cli", "main"]

# the rooms register their commands on ``cli`` when imported
_COMMANDS = (admin, indexing, reading)


def main() -> None:
    """Entry point of the ``metastore`` command."""
    # A file name that is not UTF-8 or a lone surrogate from a DICOM JSON
    # value must print as an escape, never end the command with a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="metastore")
