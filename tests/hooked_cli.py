"""``python tests/hooked_cli.py ARGS``: the ``metastore`` command with crash points.

The subprocess tests run the command through this launcher
(``reliability.command``): it installs the crash and pause points the
``METASTORE_TEST_*`` variables ask for (``tests/crashpoints.py``), then
runs ``metastore.cli.main()`` exactly as ``python -m metastore`` does.
The metastore it runs is the one of this checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# sys.path[0] is tests/ (crashpoints); the checkout comes next, as the cwd
# would for ``python -m metastore`` run from it.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from crashpoints import CrashPoints

from metastore.cli import main

if __name__ == "__main__":
    CrashPoints(os.environ).install()
    main()
