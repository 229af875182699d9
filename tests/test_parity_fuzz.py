"""Differential fuzzing against the real Cornerstone, replayed without Node.

``fixtures/oracle/make_fuzz_cases.py`` writes random but realistic DICOM JSON
instances (Orthanc, dcm4chee, Google, static-wado and dcmjs encodings; odd
numbers, empty elements, functional groups, NM, PET, US, overlays, video,
RTDOSE) and odd imageIds; ``expected_fuzz.json`` is Cornerstone 5.14's
``--isolate`` output for them.  As ``run_oracle.mjs --isolate`` does, each
imageId is asked of a fresh provider holding only its own case and the
frame-1 case of the same imageId prefix, so an instance listed under another
scheme (``dicomweb:``) does not find the ``wadors:`` frame 1.  Every output
must equal the oracle's or, for the four divergences, the contract.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections import Counter
from functools import cache
from typing import Any

import pytest
from oracle_fixtures import FIXTURES, load_cases
from test_parity import Tally, check_image

from metastore.modules import MODULE_TYPES
from metastore.providers.dicomjson import DicomJsonProvider

pytestmark = pytest.mark.oracle

SET = "fuzz"


def _frameless_first(image_id: str) -> str | None:
    """run_oracle.mjs's frame-1 imageId: up to the first ``/frames/``, plus 1."""
    index = image_id.find("/frames/")
    return None if index < 0 else image_id[: index + 8] + "1"


@cache
def _by_image_id() -> dict[str, dict[str, Any]]:
    return {case["imageId"]: case for case in load_cases(SET)}


def isolated_answers(image_id: str) -> dict[str, Any]:
    """Every module of one imageId, asked of a provider holding only its cases."""
    cases = _by_image_id()
    provider = DicomJsonProvider()
    first = _frameless_first(image_id)
    if first is not None and first != image_id and first in cases:
        provider.add(first, copy.deepcopy(cases[first]["metadata"]))
    provider.add(image_id, copy.deepcopy(cases[image_id]["metadata"]))
    row: dict[str, Any] = {}
    for module_type in MODULE_TYPES:
        try:
            row[module_type] = provider.get(module_type, image_id)
        except Exception as exc:  # recorded, then reported by check_image
            row[module_type] = exc
    return row


def check(image_id: str) -> Tally:
    """Compare one fuzz imageId with the oracle under the contract."""
    return check_image(SET, image_id, isolated_answers(image_id))


@pytest.mark.parametrize(
    "image_id",
    [
        pytest.param(case["imageId"], id=f"{i}-{case['source']}")
        for i, case in enumerate(load_cases(SET))
    ],
)
def test_fuzz_image_matches_oracle(image_id: str) -> None:
    """Every module of this fuzz imageId equals Cornerstone's, or its contract."""
    tally = check(image_id)
    assert not tally.problems, "\n".join(tally.problems[:30])
    assert tally.equal + sum(tally.divergent.values()) == tally.checked


def test_fuzz_set_is_fully_equal(capsys: pytest.CaptureFixture[str]) -> None:
    """Outside the counted divergences, 100% of the fuzz outputs are equal."""
    total = Tally()
    for case in load_cases(SET):
        total.add(check(case["imageId"]))
    divergent = sum(total.divergent.values())
    with capsys.disabled():
        print(
            f"\nparity fuzz: {total.checked} outputs checked, {total.equal} equal, "
            f"{divergent} divergent {dict(total.divergent)}"
        )
    assert not total.problems
    assert total.equal == total.checked - divergent
    assert total.divergent.keys() <= {
        "1: geometry without Modality",
        "2: frame past the end",
        "3: overlays",
        "3: instance.Overlays",
    }


def test_fuzz_set_covers_what_servers_send() -> None:
    """The committed fuzz set keeps its variety: styles, kinds, odd imageIds."""
    cases = load_cases(SET)
    sources = Counter(case["source"].split(":")[1].split("-")[0] for case in cases)
    styles = {case["source"].split(":")[2] for case in cases}
    assert styles == {"orthanc", "dcm4chee", "google", "static-wado", "dcmjs", "sloppy"}
    assert {"single", "enhanced", "nm", "us", "pet", "xa", "rtdose"} <= set(sources)
    ids = [case["imageId"] for case in cases]
    assert any("/frames/0" in i for i in ids)
    assert any(not i.startswith("wadors:") for i in ids)
    assert any("/frames/" not in i for i in ids)
    assert max(case["frame"] for case in cases) > 9


def test_fuzz_cases_come_from_the_generator() -> None:
    """make_fuzz_cases.py, seed 2024, rebuilds the committed cases exactly."""
    spec = importlib.util.spec_from_file_location(
        "make_fuzz_cases", FIXTURES / "make_fuzz_cases.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.generate(2024, 130, 4)
    assert json.loads(json.dumps(generated)) == load_cases(SET)
