"""DatabaseProvider: answers what was written, caches per image, loads series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from metastore.errors import InvalidImageIdError
from metastore.imageid import parse_image_id
from metastore.providers.database import DatabaseProvider, _stack_position
from metastore.records import ImageRecord, InstanceRecord
from metastore.store import Store
from tests.test_store import SERIES, make_instance, record_fields, same


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store holding three two-frame instances of one series."""
    with Store(db_url) as s:
        s.write_batch(
            [make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2) for i in range(3)]
        )
        yield s


def image_ids(store: Store) -> list[str]:
    """Every stored imageId."""
    return [image_id for image_id, _ in store.export()]


def test_answers_equal_what_was_written(store: Store) -> None:
    """Every (type, imageId) answer equals the value written."""
    provider = DatabaseProvider(store)
    record = make_instance("/a/0.dcm", "1.0", frames=2)
    for image in record.images:
        for module_type, value in image.modules.items():
            assert same(provider.get(module_type, image.image_id), value)
            assert same(provider(module_type, image.image_id, "extra"), value)


def test_unknown_image_or_type_is_none(store: Store) -> None:
    """No answer is None, for unknown imageIds and unknown types alike."""
    provider = DatabaseProvider(store)
    assert provider.get("imagePlaneModule", "wadors:unknown") is None
    first = image_ids(store)[0]
    assert provider.get("noSuchModule", first) is None


def test_a_miss_caches_all_modules_of_the_image(store: Store) -> None:
    """After one lookup the image's other modules come from the cache."""
    provider = DatabaseProvider(store, read_ahead=0)
    first = image_ids(store)[0]
    provider.get("patientModule", first)
    assert provider.cache_info()["images"] == 1
    # Delete the rows: cached answers survive until clear_cache().
    store.prune(["/a"], set())
    assert provider.get("imagePlaneModule", first) is not None
    provider.clear_cache()
    assert provider.get("imagePlaneModule", first) is None


def test_misses_share_values_between_images(store: Store) -> None:
    """Images loaded one by one share equal values, as load_series gives them."""
    provider = DatabaseProvider(store)
    first, second, *_ = image_ids(store)
    patient = provider.get("patientModule", first)
    assert provider.get("patientModule", second) is patient
    plane = provider.get("imagePlaneModule", first)
    assert provider.get("imagePlaneModule", second) is not plane
    # Store.image_modules without ``shared`` still decodes afresh.
    assert store.image_modules(first)["patientModule"] is not patient


def test_unknown_images_are_cached_as_no_answer(store: Store) -> None:
    """An unknown imageId is remembered, so repeated asks do not query again."""
    provider = DatabaseProvider(store)
    provider.get("patientModule", "wadors:nothing")
    assert provider.cache_info()["images"] == 1


def test_load_series_warms_the_cache(store: Store) -> None:
    """load_series caches every image of the series in one call, in stack order."""
    provider = DatabaseProvider(store)
    loaded = provider.load_series(SERIES)
    assert sorted(loaded) == sorted(image_ids_of_series())
    assert provider.cache_info()["images"] == 6
    # frames of one instance come together, frame 1 first
    for i in range(3):
        frames = [
            image.image_id
            for image in make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2).images
        ]
        at = loaded.index(frames[0])
        assert loaded[at : at + 2] == frames
    assert provider.load_series("9.9.9") == []
    store.prune(["/a"], set())
    assert all(
        provider.get("patientModule", i) is not None for i in image_ids_of_series()
    )


def image_ids_of_series() -> list[str]:
    """The imageIds the fixture wrote."""
    return [
        image.image_id
        for i in range(3)
        for image in make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2).images
    ]


def test_cache_is_bounded(store: Store) -> None:
    """The cache never grows past cache_size after a miss."""
    provider = DatabaseProvider(store, cache_size=4)
    for image_id in image_ids(store):
        provider.get("patientModule", image_id)
        assert provider.cache_info()["images"] <= 4


def test_cache_size_must_be_positive(store: Store) -> None:
    """A cache_size below one is a ValueError."""
    with pytest.raises(ValueError, match="cache_size"):
        DatabaseProvider(store, cache_size=0)


def test_provider_opens_and_closes_its_own_store(db_url: str) -> None:
    """Given a URL, the provider opens a store and closes it on exit."""
    with DatabaseProvider(db_url) as provider:
        assert provider.get("patientModule", "wadors:x") is None
        store = provider.store
    assert repr(provider) == f"DatabaseProvider({store.url!r})"


def test_load_series_sees_module_types_added_by_another_writer(db_url: str) -> None:
    """A type first written by another store after this one read its names."""
    with Store(db_url) as reader, Store(db_url) as writer:
        reader.write_batch([make_instance("/a/0.dcm", "1.0")])
        assert reader.series_image_modules(SERIES)  # names now known
        record = make_instance("/a/1.dcm", "1.1")
        record.images[0].modules["brandNewModule"] = {"n": 1}
        writer.write_batch([record])
        provider = DatabaseProvider(reader)
        provider.load_series(SERIES)
        image_id = record.images[0].image_id
        assert provider.get("brandNewModule", image_id) == {"n": 1}
        assert provider.get("patientModule", image_id) is not None


def test_load_series_keeps_an_image_without_modules(store: Store) -> None:
    """An image stored with no module answers None for every type."""
    record = make_instance("/a/9.dcm", "1.9")
    image = ImageRecord(record.images[0].image_id, 1, {})
    store.write_batch([InstanceRecord(**{**record_fields(record), "images": [image]})])
    provider = DatabaseProvider(store)
    assert image.image_id in provider.load_series(SERIES)
    assert store.series_image_modules(SERIES)[image.image_id] == {}
    assert provider.get("patientModule", image.image_id) is None


WADORS = "wadors:http://h/studies/1.2/series/1.2.3/instances/1.2.3.4"


@pytest.mark.parametrize(
    "image_id",
    [
        f"{WADORS}/frames/1",
        f"{WADORS}/frames/12",
        f"{WADORS}/frames/007",
        f"{WADORS}/frames/0",
        f"{WADORS}/frames/00",
        f"{WADORS}/frames/",
        f"{WADORS}/frames/x",
        f"{WADORS}/frames/-1",
        f"{WADORS}/frames/\u0661",  # an Arabic-Indic digit: not a frame number
        f"{WADORS}/frames/1/frames/2",
        f"{WADORS}/frames/1/",
        WADORS,
        "wadors:/studies/1/series/2/instances/3/frames/4",
        "wadors:studies/1/series/2/instances/3/frames/4",
        "wadors:http://h/studies//series/2/instances/3/frames/4",
        "wadors:http://h/studies/1/series/2/instances//frames/4",
        "wadors:http://h/studies/1/series/2/instance/3/frames/4",
        "wadors:a\n/studies/1/series/2\n/instances/3/frames/4",
        "wadors:http://h/studies/0/series/0/instances/0/studies/1/series/2"
        "/instances/3/frames/5",
        "wadors:http://h/studies/1/series/2/instances/frames/frames/3",
        "wadors:",
        "wadouri:file:///data/a.dcm?frame=3",
        "wadouri:file:///data/a.dcm?x=1&frame=2&y=3",
        "dicomfile:0",
        "noscheme",
        "other:http://h/studies/1/series/2/instances/3/frames/4",
    ],
)
def test_stack_position_agrees_with_the_parser(image_id: str) -> None:
    """The sort key's fast path gives what parse_image_id gives, or its fallback."""
    try:
        parsed = parse_image_id(image_id)
        want = (parsed.base, parsed.frame or 1)
    except InvalidImageIdError:
        want = (image_id, 1)
    modules: dict[str, Any] = {"generalImageModule": {"instanceNumber": 3}}
    assert _stack_position(image_id, modules) == (3.0, *want)


def test_a_colliding_image_key_is_not_the_image(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An imageId whose 64-bit key equals a stored one's gets no answer."""
    from metastore.store import encode as store_encode

    stored = image_ids(store)[0]
    other = stored + "-other"
    key = store_encode.image_key(stored)
    monkeypatch.setattr(store_encode, "image_key", lambda image_id: key)
    assert store.image_modules(stored) is not None
    assert store.image_modules(other) is None
    assert DatabaseProvider(store).get("patientModule", other) is None
