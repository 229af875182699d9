"""MAPPING_VERSION moves with the answers, and only with them.

The committed digest of the mapping's answers over the fixture corpus
(``tests/mapping_digest.py``) is recorded per version in
``tests/fixtures/mapping_version.json``.  Changing an answer without
bumping ``metastore.modules.MAPPING_VERSION`` fails here, and so does a bump
that changes no answer.  The injected changes below are test-only mapping
variants: each must move the digest, so that none could slip through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mapping_digest import RECORD, corpus_digest, recorded

import metastore.modules as modules
from metastore.index import extract
from metastore.modules import MAPPING_VERSION

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "mapping_digest.py"
BUMP = (
    "bump MAPPING_VERSION in metastore/modules/__init__.py, then run "
    "scripts/mapping_digest.py --update"
)


def test_the_answers_are_those_recorded_for_this_version() -> None:
    """The corpus digest equals the one recorded for MAPPING_VERSION."""
    versions = recorded()
    assert MAPPING_VERSION in versions, (
        f"MAPPING_VERSION {MAPPING_VERSION} has no recorded digest: run "
        "scripts/mapping_digest.py --update"
    )
    assert corpus_digest() == versions[MAPPING_VERSION], (
        f"the mapping's answers over the fixture corpus changed while "
        f"MAPPING_VERSION stayed {MAPPING_VERSION}: {BUMP}"
    )


def test_every_version_has_answers_of_its_own() -> None:
    """No two versions share a digest: a bump must come with an answer change."""
    versions = recorded()
    by_digest: dict[str, list[str]] = {}
    for version, digest in versions.items():
        by_digest.setdefault(digest, []).append(version)
    same = [names for names in by_digest.values() if len(names) > 1]
    assert not same, f"versions with the same answers (no bump needed): {same}"


def _wrap(
    module_type: str, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[..., Any]:
    """A builder for ``module_type`` that changes the real one's answers."""
    real = modules._BUILDERS[module_type]

    def variant(frame: Any, image_id: str) -> Any:
        value = real(frame, image_id)
        return None if value is None else change(dict(value))

    return variant


def _float_to_int(value: dict[str, Any]) -> dict[str, Any]:
    number = value.get("seriesNumber")
    if isinstance(number, float) and number.is_integer():
        value["seriesNumber"] = int(number)  # 800.0 -> 800: a new answer
    return value


def _one_frame(instance: Any) -> int:
    return 1


@pytest.mark.parametrize(
    "variant",
    ["value", "float-to-int", "new-key", "new-module-type", "frame-count"],
)
def test_an_injected_mapping_change_moves_the_digest(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    """Each test-only variant of the mapping gives another digest.

    So changing any of these answers while MAPPING_VERSION stays put fails
    :func:`test_the_answers_are_those_recorded_for_this_version`.
    """
    before = recorded()[MAPPING_VERSION]  # the real mapping's (tested above)
    if variant == "value":
        change = _wrap(
            "voiLutModule", lambda v: {**v, "voiLUTFunction": "SIGMOID_VARIANT"}
        )
        monkeypatch.setitem(modules._BUILDERS, "voiLutModule", change)
    elif variant == "float-to-int":
        change = _wrap("generalSeriesModule", _float_to_int)
        monkeypatch.setitem(modules._BUILDERS, "generalSeriesModule", change)
    elif variant == "new-key":
        change = _wrap("imagePixelModule", lambda v: {**v, "variantKey": None})
        monkeypatch.setitem(modules._BUILDERS, "imagePixelModule", change)
    elif variant == "new-module-type":
        # a module type added in a later release: every image answers it
        monkeypatch.setattr(
            modules, "MODULE_TYPES", (*modules.MODULE_TYPES, "variantModule")
        )
        monkeypatch.setitem(modules._BUILDERS, "variantModule", lambda f, i: None)
    else:  # which frames are images: only the first of a multi-frame
        monkeypatch.setattr(extract, "number_of_frames", _one_frame)
    assert corpus_digest() != before


def _every_frame(instance: Any, frames: int) -> int:
    return frames


def test_an_unchanged_mapping_keeps_the_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code changes that change no answer leave the digest alone.

    A builder replaced by one with the same answers; and building every
    frame past the per-frame functional groups (whose modules are all
    ``None``, divergence 2), which the indexer skips only to save time.
    """
    before = recorded()[MAPPING_VERSION]
    same = _wrap("imagePlaneModule", lambda v: v)
    monkeypatch.setitem(modules._BUILDERS, "imagePlaneModule", same)
    monkeypatch.setattr(extract, "_image_frames", _every_frame)
    assert corpus_digest() == before


def _script(record: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--record", str(record), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_the_script_checks_and_records(tmp_path: Path) -> None:
    """scripts/mapping_digest.py: check, record a new version, refuse the rest."""
    record = tmp_path / "mapping_version.json"
    record.write_text(RECORD.read_text(encoding="utf-8"), encoding="utf-8")
    digest = recorded()[MAPPING_VERSION]

    checked = _script(record)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == [MAPPING_VERSION, digest]

    # The answers changed (here: the record says otherwise) and no bump.
    record.write_text(json.dumps({MAPPING_VERSION: "0" * 64}), encoding="utf-8")
    stale = _script(record)
    assert stale.returncode == 1
    assert "bump it" in stale.stderr
    refused = _script(record, "--update")
    assert refused.returncode == 1
    assert json.loads(record.read_text(encoding="utf-8")) == {MAPPING_VERSION: "0" * 64}

    # A bump that changes no answer: the old version has these answers.
    record.write_text(json.dumps({"0.0-0": digest}), encoding="utf-8")
    idle = _script(record, "--update")
    assert idle.returncode == 1
    assert "must not move" in idle.stderr

    # A new version with new answers is recorded next to the old ones.
    record.write_text(json.dumps({"0.0-0": "1" * 64}), encoding="utf-8")
    new = _script(record, "--update")
    assert new.returncode == 0, new.stderr
    assert json.loads(record.read_text(encoding="utf-8")) == {
        "0.0-0": "1" * 64,
        MAPPING_VERSION: digest,
    }
