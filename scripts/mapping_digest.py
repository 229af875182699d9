#!/usr/bin/env python3
"""The digest of the mapping's answers over the fixture corpus, and its record.

``metastore.modules.MAPPING_VERSION`` must move whenever an answer changes
(docs/store.md, "Mapping versions").  This prints the digest of the answers
of the current code (``tests/mapping_digest.py``) and compares it with the
one recorded for ``MAPPING_VERSION`` in ``tests/fixtures/mapping_version.json``.

    python scripts/mapping_digest.py            # print; exit 1 if it differs
    python scripts/mapping_digest.py --update   # record it for MAPPING_VERSION

After changing an answer: bump ``MAPPING_VERSION`` in
``metastore/modules/__init__.py``, then run ``--update``.  ``--update``
refuses to overwrite the digest of a version already recorded (the answers
changed without a bump) and to record a digest another version already has
(a bump without an answer change: nothing needs recomputing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mapping_digest import RECORD, corpus_digest, recorded  # noqa: E402

from metastore.modules import MAPPING_VERSION  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--update",
        action="store_true",
        help="record the digest for MAPPING_VERSION (a new version only)",
    )
    parser.add_argument(
        "--record", type=Path, default=RECORD, help="the record file (for tests)"
    )
    args = parser.parse_args(argv)
    digest = corpus_digest()
    versions = recorded(args.record) if args.record.exists() else {}
    known = versions.get(MAPPING_VERSION)
    print(f"{MAPPING_VERSION} {digest}")
    if known == digest:
        return 0
    if not args.update:
        if known is None:
            print(
                f"MAPPING_VERSION {MAPPING_VERSION} has no recorded digest: "
                "run scripts/mapping_digest.py --update",
                file=sys.stderr,
            )
        else:
            print(
                f"the answers changed but MAPPING_VERSION {MAPPING_VERSION} did "
                f"not (recorded {known}): bump it in metastore/modules/__init__.py, "
                "then run scripts/mapping_digest.py --update",
                file=sys.stderr,
            )
        return 1
    if known is not None:
        print(
            f"refusing to change the digest of {MAPPING_VERSION}: stored answers "
            "of that version would no longer be recomputed; bump MAPPING_VERSION",
            file=sys.stderr,
        )
        return 1
    same = [version for version, value in versions.items() if value == digest]
    if same:
        print(
            f"version {same[0]} has these answers already: no answer changed, "
            "so MAPPING_VERSION must not move (set it back)",
            file=sys.stderr,
        )
        return 1
    versions[MAPPING_VERSION] = digest
    text = json.dumps(versions, indent=2) + "\n"
    args.record.write_text(text, encoding="utf-8")
    print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
