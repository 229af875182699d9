"""Tests of DicomJsonProvider: metaDataManager keying, caching and ingest."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pydicom
import pytest
from oracle_fixtures import differences, load_cases, load_expected
from pydicom.data import get_testdata_file

from metastore.modules import MODULE_TYPES
from metastore.providers.dicomjson import DicomJsonProvider
from metastore.registry import Registry

ROOT = "wadors:http://h/dicomweb/studies/1/series/2/instances/3"


def _case(set_name: str, source: str, frame: int = 1) -> dict[str, Any]:
    return next(
        c for c in load_cases(set_name) if c["source"] == source and c["frame"] == frame
    )


def _ct() -> dict[str, Any]:
    return copy.deepcopy(_case("pydicom_testdata", "pydicom:CT_small.dcm")["metadata"])


def _enhanced() -> dict[str, Any]:
    return copy.deepcopy(_case("synthetic", "synthetic:enhanced-voi-leak")["metadata"])


def test_single_frame_answers_every_module() -> None:
    """A single-frame instance added under frames/1 answers like the oracle."""
    case = _case("pydicom_testdata", "pydicom:CT_small.dcm")
    provider = DicomJsonProvider()
    provider.add(case["imageId"], copy.deepcopy(case["metadata"]))
    expected = load_expected("expected_pydicom_testdata.json")[case["imageId"]]
    for module_type in MODULE_TYPES:
        if module_type in ("overlayPlaneModule",):
            continue
        got = provider.get(module_type, case["imageId"])
        assert not differences(expected[module_type], got), module_type


def test_unknown_imageid_and_type_give_none() -> None:
    """Unknown imageIds, unparsable ones and unanswered types give None."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _ct())
    assert provider.get("imagePlaneModule", f"{ROOT}x/frames/1") is None
    assert provider.get("imagePlaneModule", "nonsense") is None
    assert provider.get("scalingModule", f"{ROOT}/frames/1") is None
    assert provider.get("imagePlaneModule", 42) is None  # type: ignore[arg-type]


def test_multiframe_added_under_frame_1_answers_each_frame() -> None:
    """Every frame of a multi-frame instance is answered from the frame-1 entry."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _enhanced())
    positions = [
        provider.get("imagePlaneModule", f"{ROOT}/frames/{n}")["imagePositionPatient"]
        for n in (1, 2, 3)
    ]
    assert positions == [[0, 0, 0], [0, 0, 10], [0, 0, 20]]
    assert provider.get("imagePlaneModule", f"{ROOT}/frames/4") is None  # divergence 2


def test_multiframe_added_only_under_frame_2_answers_nothing() -> None:
    """As Cornerstone: a multi-frame instance is looked up under frames/1 only."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/2", _enhanced())
    for module_type in MODULE_TYPES:
        assert provider.get(module_type, f"{ROOT}/frames/2") is None


def test_single_frame_added_under_frame_2_answers_there() -> None:
    """A single-frame instance added under frames/2 answers for that imageId."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/2", _ct())
    assert provider.get("generalSeriesModule", f"{ROOT}/frames/2")["modality"] == "CT"
    assert provider.get("multiframeModule", f"{ROOT}/frames/2") is None  # reads frame 1
    assert "NumberOfFrames" not in provider.get("instance", f"{ROOT}/frames/2")
    assert provider.get("generalSeriesModule", f"{ROOT}/frames/1") is None


def test_single_frame_frame_2_not_added_is_not_an_image() -> None:
    """Divergence 2: frame 2 of a single-frame instance added under frame 1 is None."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _ct())
    assert provider.get("generalSeriesModule", f"{ROOT}/frames/2") is None


def test_frames_are_independent_of_query_order() -> None:
    """Divergence 4: frame 2 of the leak case keeps the top-level window always."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _enhanced())
    before = provider.get("voiLutModule", f"{ROOT}/frames/2")
    provider.get("voiLutModule", f"{ROOT}/frames/1")
    after = provider.get("voiLutModule", f"{ROOT}/frames/2")
    assert before == after
    assert after["windowCenter"] == [50] and after["windowWidth"] == [500]


def test_added_json_is_never_mutated() -> None:
    """Answering questions leaves the added DICOM JSON as it was."""
    instance = _enhanced()
    pristine = copy.deepcopy(instance)
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", instance)
    for frame in (1, 2, 3):
        for module_type in MODULE_TYPES:
            provider.get(module_type, f"{ROOT}/frames/{frame}")
    assert instance == pristine


def test_readding_replaces_cached_frames() -> None:
    """Re-adding an instance drops its cached frames (Cornerstone would keep them)."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _enhanced())
    assert provider.get("voiLutModule", f"{ROOT}/frames/3")["windowCenter"] == [102]
    changed = _enhanced()
    changed["52009230"]["Value"][2]["00289132"]["Value"][0]["00281050"]["Value"] = [7]
    provider.add(f"{ROOT}/frames/1", changed)
    assert provider.get("voiLutModule", f"{ROOT}/frames/3")["windowCenter"] == [7]


def test_remove_and_purge() -> None:
    """remove forgets one imageId (and its frames); purge forgets everything."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _enhanced())
    provider.add("wadors:http://h/studies/9/series/9/instances/9/frames/1", _ct())
    assert provider.get("sopCommonModule", f"{ROOT}/frames/2") is not None
    provider.remove(f"{ROOT}/frames/1")
    assert provider.get("sopCommonModule", f"{ROOT}/frames/2") is None
    assert len(provider) == 1
    provider.remove(f"{ROOT}/frames/1")  # unknown: nothing happens
    provider.purge()
    assert len(provider) == 0
    other = "wadors:http://h/studies/9/series/9/instances/9/frames/1"
    assert provider.get("sopCommonModule", other) is None


@pytest.mark.parametrize("cache_size", [0, 1, 1024])
def test_cache_size_does_not_change_answers(cache_size: int) -> None:
    """Whatever the cache size, answers are the same."""
    provider = DicomJsonProvider(cache_size=cache_size)
    reference = DicomJsonProvider()
    for p in (provider, reference):
        p.add(f"{ROOT}/frames/1", _enhanced())
        p.add("wadors:http://h/studies/9/series/9/instances/9/frames/1", _ct())
    for frame in (3, 1, 2, 1):
        image_id = f"{ROOT}/frames/{frame}"
        assert provider.get("instance", image_id) == reference.get("instance", image_id)


def test_negative_cache_size_is_rejected() -> None:
    """A negative cache size is a programming error."""
    with pytest.raises(ValueError, match="cache_size"):
        DicomJsonProvider(cache_size=-1)


def test_add_rejects_non_dict_json() -> None:
    """add() needs a DICOM JSON dict and a string imageId."""
    provider = DicomJsonProvider()
    with pytest.raises(TypeError):
        provider.add(f"{ROOT}/frames/1", [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        provider.add(None, {})  # type: ignore[arg-type]


def test_wadouri_frames_find_frame_1() -> None:
    """wadouri ids with ?frame=N find the instance added under ?frame=1."""
    provider = DicomJsonProvider()
    base = "wadouri:file:///data/enhanced.dcm"
    provider.add(f"{base}?frame=1", _enhanced())
    plane = provider.get("imagePlaneModule", f"{base}?frame=3")
    assert plane["imagePositionPatient"] == [0, 0, 20]
    assert provider.get("multiframeModule", f"{base}?frame=2")["NumberOfFrames"] == 3
    assert provider.get("imagePlaneModule", f"{base}?frame=4") is None


def test_imageid_without_frame_is_frame_1() -> None:
    """An imageId without a frame part answers as frame 1 of itself."""
    provider = DicomJsonProvider()
    provider.add(ROOT, _ct())
    assert provider.get("generalSeriesModule", ROOT)["modality"] == "CT"


def test_call_is_get_and_registry_uses_it() -> None:
    """The provider is a callable provider for a Registry; extra args pass through."""
    provider = DicomJsonProvider()
    provider.add(f"{ROOT}/frames/1", _ct())
    assert provider("sopCommonModule", f"{ROOT}/frames/1", "extra") == provider.get(
        "sopCommonModule", f"{ROOT}/frames/1"
    )
    registry = Registry()
    registry.add_provider(provider)
    module = registry.get("generalSeriesModule", f"{ROOT}/frames/1")
    assert module["modality"] == "CT"
    assert registry.get("calibrationModule", f"{ROOT}/frames/1") is None


def test_add_dataset_matches_the_oracle() -> None:
    """add_dataset(dcmread(file)) answers as the oracle did for that file's JSON."""
    case = _case("pydicom_testdata", "pydicom:MR_small.dcm")
    expected = load_expected("expected_pydicom_testdata.json")[case["imageId"]]
    provider = DicomJsonProvider()
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    dicom_json = provider.add_dataset(case["imageId"], ds)
    assert dicom_json["00020010"]["Value"] == [str(ds.file_meta.TransferSyntaxUID)]
    for module_type in MODULE_TYPES:
        got = provider.get(module_type, case["imageId"])
        assert not differences(expected[module_type], got), module_type


def test_add_dataset_reads_real_overlays() -> None:
    """A Part 10 file's overlay comes with its bits (kept inline by the converter)."""
    provider = DicomJsonProvider()
    ds = pydicom.dcmread(get_testdata_file("examples_overlay.dcm"))
    provider.add_dataset(f"{ROOT}/frames/1", ds)
    (overlay,) = provider.get("overlayPlaneModule", f"{ROOT}/frames/1")["overlays"]
    assert (overlay["rows"], overlay["columns"]) == (300, 484)
    assert isinstance(overlay["pixelData"], list)
    assert sum(overlay["pixelData"]) > 0


def test_concurrent_gets_agree() -> None:
    """Several threads asking the same frames get the same answers."""
    provider = DicomJsonProvider(cache_size=1)
    provider.add(f"{ROOT}/frames/1", _enhanced())
    provider.add("wadors:http://h/studies/9/series/9/instances/9/frames/1", _ct())
    reference = {n: provider.get("instance", f"{ROOT}/frames/{n}") for n in (1, 2, 3)}
    errors: list[str] = []

    def work() -> None:
        for _ in range(50):
            for n in (3, 1, 2):
                if provider.get("instance", f"{ROOT}/frames/{n}") != reference[n]:
                    errors.append(f"frame {n}")
            provider.get(
                "instance", "wadors:http://h/studies/9/series/9/instances/9/frames/1"
            )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_wadors_without_frames_is_located_as_cornerstone_does() -> None:
    """wadors: without /frames/: a single frame answers, a multi-frame does not."""
    provider = DicomJsonProvider()
    provider.add(ROOT, _ct())
    assert provider.get("generalSeriesModule", ROOT) is not None
    # Cornerstone's manager looks for frame 1 under "http://1": no multiframeModule
    assert provider.get("multiframeModule", ROOT) is None
    assert "NumberOfFrames" not in provider.get("instance", ROOT)
    other = ROOT.replace("/instances/3", "/instances/4")
    provider.add(other, _enhanced())
    for module_type in MODULE_TYPES:
        assert provider.get(module_type, other) is None, module_type
