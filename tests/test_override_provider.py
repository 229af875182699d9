"""Tests for metastore.providers.override.OverrideProvider."""

from __future__ import annotations

import copy

import pytest

from metastore.imageid import wadors_image_id
from metastore.providers.memory import InMemoryProvider
from metastore.providers.override import OverrideProvider
from metastore.registry import Registry

ROOT = "https://pacs/dicomweb"
STUDY, SERIES, OTHER_SERIES = "1.2", "1.2.3", "1.2.9"
IMAGE = wadors_image_id(ROOT, STUDY, SERIES, "1.2.3.4", 1)
IMAGE_2 = wadors_image_id(ROOT, STUDY, SERIES, "1.2.3.5", 1)
OTHER = wadors_image_id(ROOT, STUDY, OTHER_SERIES, "1.2.9.1", 1)
FILE_IMAGE = "wadouri:file:///data/ct.dcm?frame=1"

PLANE = {
    "rows": 512,
    "columns": 512,
    "pixelSpacing": [0.661468, 0.661468],
    "rowPixelSpacing": 0.661468,
    "columnPixelSpacing": 0.661468,
    "imagePositionPatient": [-158.135803, -179.035797, -75.699997],
}
SPACING = {
    "pixelSpacing": [0.5, 0.5],
    "rowPixelSpacing": 0.5,
    "columnPixelSpacing": 0.5,
}


class FakeDicomJsonProvider:
    """A DicomJsonProvider-like callable: fixed modules per imageId, counted calls."""

    def __init__(self, modules):
        self.modules = modules  # imageId -> type -> value
        self.calls = []

    def __call__(self, type, image_id, *args):
        self.calls.append((type, image_id, args))
        return self.modules.get(image_id, {}).get(type)


def fake_store():
    """Planes for three wadors images and one file image, plus its series module."""
    return FakeDicomJsonProvider(
        {
            IMAGE: {"imagePlaneModule": copy.deepcopy(PLANE)},
            IMAGE_2: {"imagePlaneModule": copy.deepcopy(PLANE)},
            OTHER: {"imagePlaneModule": copy.deepcopy(PLANE)},
            FILE_IMAGE: {
                "imagePlaneModule": copy.deepcopy(PLANE),
                "generalSeriesModule": {
                    "seriesInstanceUID": SERIES,
                    "studyInstanceUID": STUDY,
                    "modality": "CT",
                },
                "ultrasoundEnhancedRegionModule": [{"regionSpatialFormat": 1}],
            },
        }
    )


def test_no_override_answers_none_without_asking_below():
    """With no override for the type, get is None and the value below is not read."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("voiLutModule", {"windowCenter": [40]}, series_uid=SERIES)
    assert o.get("imagePlaneModule", IMAGE) is None
    assert below.calls == []


def test_correct_pixel_spacing_of_one_series_without_restating_the_rest():
    """A series override patches the spacing fields and keeps every other field."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", SPACING, series_uid=SERIES)
    for image_id in (IMAGE, IMAGE_2, FILE_IMAGE):
        plane = o.get("imagePlaneModule", image_id)
        assert plane == {**PLANE, **SPACING}
    assert o.get("imagePlaneModule", OTHER) is None  # another series: no answer
    assert below.modules[IMAGE]["imagePlaneModule"] == PLANE  # base not mutated


def test_answer_is_a_new_dict_and_safe_to_mutate():
    """The patched answer is a fresh dict whose override values are copies."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", SPACING, image_id=IMAGE)
    first = o.get("imagePlaneModule", IMAGE)
    assert first is not below.modules[IMAGE]["imagePlaneModule"]
    first["pixelSpacing"].append(99)
    assert o.get("imagePlaneModule", IMAGE)["pixelSpacing"] == [0.5, 0.5]


def test_no_value_below_gives_a_copy_of_the_fields():
    """When nothing answers below, the override fields alone are the answer."""
    o = OverrideProvider(fake_store())
    o.set("scalingModule", {"suvbw": 2.5, "list": [1]}, study_uid=STUDY)
    answer = o.get("scalingModule", IMAGE)
    assert answer == {"suvbw": 2.5, "list": [1]}
    answer["list"].clear()
    assert o.get("scalingModule", IMAGE) == {"suvbw": 2.5, "list": [1]}


def test_non_dict_value_below_is_returned_unchanged():
    """A list below has no fields to patch and is returned as it is."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("ultrasoundEnhancedRegionModule", {"x": 1}, image_id=FILE_IMAGE)
    got = o.get("ultrasoundEnhancedRegionModule", FILE_IMAGE)
    assert got is below.modules[FILE_IMAGE]["ultrasoundEnhancedRegionModule"]


def test_more_specific_scope_wins_and_fields_merge():
    """Study, series and image fields merge; image beats series beats study."""
    o = OverrideProvider(fake_store())
    o.set("imagePlaneModule", {"rows": 1, "columns": 1, "a": "study"}, study_uid=STUDY)
    o.set("imagePlaneModule", {"rows": 2, "b": "series"}, series_uid=SERIES)
    o.set("imagePlaneModule", {"columns": 3}, image_id=IMAGE)
    got = o.get("imagePlaneModule", IMAGE)
    assert (got["rows"], got["columns"], got["a"], got["b"]) == (
        2,
        3,
        "study",
        "series",
    )
    assert got["pixelSpacing"] == PLANE["pixelSpacing"]
    other = o.get("imagePlaneModule", OTHER)
    assert (other["rows"], other["columns"], "b" in other) == (1, 1, False)


def test_image_scope_is_keyed_by_image_uri():
    """An image override set with one scheme applies to the same URI in another."""
    below = InMemoryProvider()
    below.add("dicomweb:http://h/a?frame=1", "imagePlaneModule", {"rows": 5})
    o = OverrideProvider(below)
    o.set("imagePlaneModule", {"columns": 6}, image_id="wadouri:http://h/a?frame=1")
    assert o.get("imagePlaneModule", "dicomweb:http://h/a?frame=1") == {
        "rows": 5,
        "columns": 6,
    }


def test_series_found_through_general_series_module_and_cached():
    """A non-wadors imageId learns its series from below once, then from the cache."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", SPACING, series_uid=SERIES)
    for _ in range(3):
        assert o.get("imagePlaneModule", FILE_IMAGE)["rowPixelSpacing"] == 0.5
    asked = [t for t, i, _ in below.calls if t == "generalSeriesModule"]
    assert asked == ["generalSeriesModule"]


def test_unknown_series_is_not_cached():
    """An imageId whose series is unknown below is asked again later."""
    below = InMemoryProvider()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", {"rows": 1}, series_uid=SERIES)
    assert o.get("imagePlaneModule", FILE_IMAGE) is None
    below.add(FILE_IMAGE, "generalSeriesModule", {"seriesInstanceUID": SERIES})
    assert o.get("imagePlaneModule", FILE_IMAGE) == {"rows": 1}


def test_over_in_memory_provider_object_with_get():
    """below may be an InMemoryProvider (or any object with get)."""
    memory = InMemoryProvider()
    memory.add(IMAGE, "scalingModule", {"suvbw": 1.0, "suvlbm": 2.0})

    class OnlyGet:
        def get(self, type, image_id, *args):
            return memory.get(type, image_id)

    for below in (memory, OnlyGet()):
        o = OverrideProvider(below)
        o.set("scalingModule", {"suvbw": 3.0}, image_id=IMAGE)
        assert o.get("scalingModule", IMAGE) == {"suvbw": 3.0, "suvlbm": 2.0}


def test_extra_arguments_reach_the_value_below():
    """Arguments after the imageId are passed to the provider below."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", {"rows": 1}, image_id=IMAGE)
    o("imagePlaneModule", IMAGE, {"noCache": True})
    assert below.calls == [("imagePlaneModule", IMAGE, ({"noCache": True},))]


def layered_registry():
    """A registry: store at 0, in-memory values at 10, overrides at 100."""
    registry = Registry()
    store = fake_store()
    memory = InMemoryProvider()
    registry.add_provider(store, 0)
    registry.add_provider(memory.get, 10)
    overrides = OverrideProvider(registry)
    registry.add_provider(overrides.get, 100)
    return registry, store, memory, overrides


def test_over_a_registry_with_several_providers():
    """The value below is the chain after the override's entry, first answer wins."""
    registry, _, memory, overrides = layered_registry()
    memory.add(IMAGE, "imagePlaneModule", {"rows": 7, "columns": 7})
    overrides.set("imagePlaneModule", {"columns": 8}, series_uid=SERIES)
    assert registry.get("imagePlaneModule", IMAGE) == {"rows": 7, "columns": 8}
    assert registry.get("imagePlaneModule", IMAGE_2) == {**PLANE, "columns": 8}
    assert registry.get("imagePlaneModule", OTHER) == PLANE  # no override: store


def test_higher_priority_provider_wins_over_the_override():
    """A provider above the override answers before it, unpatched."""
    registry, _, _, overrides = layered_registry()
    overrides.set("imagePlaneModule", {"columns": 8}, image_id=IMAGE)
    registry.add_provider(lambda t, i, *a: {"top": True}, 200)
    assert registry.get("imagePlaneModule", IMAGE) == {"top": True}


def test_ties_added_later_are_above_and_earlier_are_below():
    """At equal priority, providers added after the override sit above it."""
    registry = Registry()
    registry.add_provider(lambda t, i, *a: {"from": "earlier", "x": 1}, 100)
    overrides = OverrideProvider(registry)
    registry.add_provider(overrides, 100)  # the object itself, not .get
    overrides.set("m", {"x": 2}, image_id=IMAGE)
    assert registry.get("m", IMAGE) == {"from": "earlier", "x": 2}
    registry.add_provider(lambda t, i, *a: {"from": "later"}, 100)
    assert registry.get("m", IMAGE) == {"from": "later"}


def test_not_registered_asks_the_whole_registry():
    """An override outside its registry treats the whole registry as below."""
    registry = Registry()
    registry.add_provider(lambda t, i, *a: {"x": 1, "y": 1})
    overrides = OverrideProvider(registry)
    overrides.set("m", {"y": 2}, image_id=IMAGE)
    assert overrides.get("m", IMAGE) == {"x": 1, "y": 2}


def test_wrapped_registration_does_not_recurse_forever():
    """Registered through a wrapper, re-entry answers None and the chain goes on."""
    registry = Registry()
    registry.add_provider(lambda t, i, *a: {"x": 1, "y": 1})
    overrides = OverrideProvider(registry)

    def wrapper(type, image_id, *args):
        return overrides.get(type, image_id, *args)

    registry.add_provider(wrapper, 50)
    overrides.set("m", {"y": 2}, image_id=IMAGE)
    assert registry.get("m", IMAGE) == {"x": 1, "y": 2}


def test_override_of_general_series_in_same_registry_uses_the_value_below():
    """Looking up a file imageId's series never consults the override itself."""
    registry = Registry()
    registry.add_provider(fake_store())
    overrides = OverrideProvider(registry)
    registry.add_provider(overrides.get, 100)
    overrides.set("generalSeriesModule", {"modality": "MR"}, series_uid=SERIES)
    overrides.set("imagePlaneModule", {"rows": 1}, series_uid=SERIES)
    assert registry.get("generalSeriesModule", FILE_IMAGE)["modality"] == "MR"
    assert registry.get("imagePlaneModule", FILE_IMAGE)["rows"] == 1


def test_set_merges_and_unset_removes_fields_then_scopes():
    """set adds to a scope's fields; unset removes fields, then the whole scope."""
    below = fake_store()
    o = OverrideProvider(below)
    o.set("imagePlaneModule", {"rows": 1}, image_id=IMAGE)
    o.set("imagePlaneModule", {"columns": 2}, image_id=IMAGE)
    assert o.get("imagePlaneModule", IMAGE)["rows"] == 1
    assert len(o) == 1
    o.unset("imagePlaneModule", image_id=IMAGE, fields="rows")
    got = o.get("imagePlaneModule", IMAGE)
    assert (got["rows"], got["columns"]) == (512, 2)
    o.unset("imagePlaneModule", image_id=IMAGE, fields=["columns"])
    assert o.get("imagePlaneModule", IMAGE) is None
    assert len(o) == 0
    o.unset("imagePlaneModule", image_id=IMAGE)  # absent: no error
    o.unset("never", series_uid=SERIES)


def test_unset_whole_scope_and_clear():
    """unset without fields drops a scope; clear drops everything."""
    o = OverrideProvider(fake_store())
    o.set("imagePlaneModule", {"rows": 1}, series_uid=SERIES)
    o.set("imagePlaneModule", {"rows": 2}, study_uid=STUDY)
    o.unset("imagePlaneModule", series_uid=SERIES)
    assert o.get("imagePlaneModule", IMAGE)["rows"] == 2
    o.clear()
    assert o.get("imagePlaneModule", IMAGE) is None
    assert len(o) == 0


def test_set_copies_the_fields():
    """Changing the dict passed to set afterwards does not change the override."""
    o = OverrideProvider(fake_store())
    fields = {"pixelSpacing": [0.5, 0.5]}
    o.set("imagePlaneModule", fields, image_id=IMAGE)
    fields["pixelSpacing"][0] = 9
    assert o.get("imagePlaneModule", IMAGE)["pixelSpacing"] == [0.5, 0.5]


@pytest.mark.parametrize(
    "scopes",
    [{}, {"image_id": IMAGE, "series_uid": SERIES}, {"study_uid": ""}],
)
def test_set_needs_exactly_one_scope(scopes):
    """set and unset refuse zero scopes, several scopes or an empty key."""
    o = OverrideProvider(fake_store())
    with pytest.raises(ValueError, match=r"exactly one|non-empty"):
        o.set("m", {"a": 1}, **scopes)
    with pytest.raises(ValueError, match=r"exactly one|non-empty"):
        o.unset("m", **scopes)


def test_set_rejects_non_mapping_fields():
    """Fields must be a mapping."""
    with pytest.raises(TypeError, match="mapping"):
        OverrideProvider(fake_store()).set("m", [("a", 1)], image_id=IMAGE)


def test_below_must_be_a_provider():
    """A below that is neither a registry nor a provider is refused."""
    with pytest.raises(TypeError):
        OverrideProvider(42)
