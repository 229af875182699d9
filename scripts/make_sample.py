#!/usr/bin/env python3
"""Build the demo's sample archive from the DICOM files bundled with pydicom.

    python scripts/make_sample.py OUT_DIR

Copies a handful of pydicom's own test files (no download) into OUT_DIR,
adds a zip of some of them and a few files that are not DICOM or are broken,
so that the demo shows indexing, skipping and error reporting.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

from pydicom.data import get_testdata_file

FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "rtdose.dcm",
    "examples_ybr_color.dcm",
    "examples_overlay.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEG2000.dcm",
]
ZIPPED = ["liver_1frame.dcm", "examples_palette.dcm"]


def main() -> None:
    """Write the sample archive."""
    out = Path(sys.argv[1])
    (out / "scans").mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src = get_testdata_file(name)
        if src is None:
            continue
        # no .dcm suffix on some: DICOM is recognised by content, not name
        shutil.copy(src, out / "scans" / Path(str(src)).stem)
    with zipfile.ZipFile(out / "more.zip", "w") as z:
        for name in ZIPPED:
            src = get_testdata_file(name)
            if src is not None:
                z.write(str(src), f"zipped/{name}")
    (out / "README.txt").write_text("not DICOM: skipped\n")
    ct = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    (out / "truncated.dcm").write_bytes(ct[:400])  # reported as failed
    print(
        f"make_sample: wrote {sum(1 for p in out.rglob('*') if p.is_file())} files to {out}"
    )


if __name__ == "__main__":
    main()
