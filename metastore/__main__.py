"""``python -m metastore``: the same as the ``metastore`` command."""

from metastore.cli import main

main()
