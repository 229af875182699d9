"""Awkward file and member names: indexed, their imageIds parse back, ``get`` answers.

Spaces, quotes, ``?``, ``#``, ``%``, ``!``, ``!/``, percent-escapes that are
not escapes, and non-ASCII, in folder names, file names and zip member names.
The imageIds metastore makes without a DICOMweb root must give the file back
through ``metastore.imageid.file_location``, and the store and the
``metastore get`` command must answer for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from dicom_samples import sample_path, write_ct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metastore import Store, file_location, index_paths, parse_image_id

NAMES = [
    "科室 ü/ct?1#%.dcm",
    'a b/it\'s "quoted".dcm',
    "bang!/x!y.dcm",
    "pct/%41%2F%zz.dcm",
    "hash#/#.dcm",
    "semi;colon/a&b=c+d.dcm",
    "emoji 🙂/ŝ\u0301.dcm",
    "back\\slash/a\\b.dcm",
    "tab\tname/new\nline.dcm",
]
MEMBERS = [
    "科室 ü/ct?1#%.dcm",
    "a!/b.dcm",
    "x/%2F/q?.dcm",
    'it\'s "m".dcm',
]


def images(store: Store) -> dict[str, str]:
    """``{imageId: SOP Instance UID}`` of every stored image."""
    return {
        image_id: modules["sopCommonModule"]["sopInstanceUID"]
        for image_id, modules in store.export()
    }


def test_awkward_file_names(sqlite_url: str, tmp_path: Path) -> None:
    """Every file is indexed; its imageId gives the file back and answers."""
    root = tmp_path / "root ?#%!"
    uids = {}
    for n, name in enumerate(NAMES, 1):
        path = write_ct(root / name, n)
        uids[str(path)] = f"1.2.826.0.1.3680043.8.498.77.1.1.{n}"
    with Store(sqlite_url) as store:
        report = index_paths(store, [root], workers=1)
        assert report.ok and report.indexed == len(NAMES)
        stored = images(store)
        assert len(stored) == len(NAMES)
        for image_id, uid in stored.items():
            path, member = file_location(image_id)
            assert member is None
            assert uids[str(path)] == uid
            assert parse_image_id(image_id).frame == 1
            modules = store.image_modules(image_id)
            assert modules is not None
            assert modules["sopCommonModule"]["sopInstanceUID"] == uid


def test_awkward_zip_member_names(sqlite_url: str, tmp_path: Path) -> None:
    """Members of a zip with an awkward name are indexed and located by imageId."""
    archive = tmp_path / "arch ü #?!.zip"
    uids = {}
    with zipfile.ZipFile(archive, "w") as zf:
        for n, member in enumerate(MEMBERS, 1):
            path = write_ct(tmp_path / "src" / f"{n}.dcm", n)
            zf.write(path, member)
            uids[member] = f"1.2.826.0.1.3680043.8.498.77.1.1.{n}"
    with Store(sqlite_url) as store:
        report = index_paths(store, [archive], workers=1)
        assert report.ok and report.indexed == len(MEMBERS)
        stored = images(store)
        located = {file_location(image_id): uid for image_id, uid in stored.items()}
        assert located == {(archive, member): uid for member, uid in uids.items()}


def test_cli_get_answers_for_an_awkward_image_id(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``metastore get`` takes the imageId of an awkward path as it was stored."""
    path = write_ct(tmp_path / NAMES[0], 1)
    with Store(sqlite_url) as store:
        index_paths(store, [path], workers=1)
        (image_id,) = images(store)
    assert file_location(image_id) == (path, None)
    done = subprocess.run(
        [sys.executable, "-m", "metastore", "get", "generalImageModule", image_id],
        env={"METASTORE_DATABASE_URL": sqlite_url, "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)["sopInstanceUID"]
        == "1.2.826.0.1.3680043.8.498.77.1.1.1"
    )


name_chars = st.characters(exclude_categories=["Cs"], exclude_characters="/\0")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    folder=st.text(name_chars, min_size=1, max_size=12),
    name=st.text(name_chars, min_size=1, max_size=12),
)
def test_any_file_name_round_trips(folder: str, name: str) -> None:
    """A random file name (any character a file name may hold) round-trips."""
    if folder in (".", "..") or name in (".", ".."):
        return
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "h" / folder / name
        target.parent.mkdir(parents=True)
        target.write_bytes(sample_path("CT_small.dcm").read_bytes())
        with Store(f"sqlite:///{Path(tmp) / 'h.sqlite'}") as store:
            report = index_paths(store, [target], workers=1)
            stored = images(store)
    assert report.indexed == 1
    assert [file_location(image_id) for image_id in stored] == [(target, None)]
