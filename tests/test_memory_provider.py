"""Tests for metastore.providers.memory.InMemoryProvider."""

from __future__ import annotations

import threading

from metastore.providers.memory import InMemoryProvider
from metastore.registry import Registry

IMAGE = (
    "wadors:https://pacs/dicomweb/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1"
)
SCALING = {"suvbw": 0.000251, "suvlbm": 0.000183}


def test_add_and_get():
    """A value added for (imageId, type) is answered for that pair only."""
    p = InMemoryProvider()
    p.add(IMAGE, "scalingModule", SCALING)
    assert p.get("scalingModule", IMAGE) is SCALING
    assert p.get("imagePlaneModule", IMAGE) is None
    assert p.get("scalingModule", IMAGE.replace("frames/1", "frames/2")) is None


def test_keyed_by_image_uri_so_schemes_coincide():
    """imageIds differing only in their scheme share an entry (imageURI key)."""
    p = InMemoryProvider()
    p.add("wadouri:http://h/a.dcm?frame=1", "scalingModule", SCALING)
    assert p.get("scalingModule", "dicomweb:http://h/a.dcm?frame=1") is SCALING
    p.add("wadors:X", "t", 1)
    assert p.get("t", "X") == 1


def test_call_is_get_and_extra_args_are_ignored():
    """Calling the provider is get, whatever extra arguments follow."""
    p = InMemoryProvider()
    p.add(IMAGE, "t", "v")
    assert p("t", IMAGE, {"noCache": True}) == "v"


def test_falsy_values_are_answers_in_a_registry():
    """A stored 0 or {} is an answer and stops the registry chain."""
    p = InMemoryProvider()
    p.add_instance(IMAGE, {"zero": 0, "empty": {}})
    r = Registry()
    r.add_provider(lambda t, i, *a: "below", 0)
    r.add_provider(p.get, 10)
    assert r.get("zero", IMAGE) == 0
    assert r.get("empty", IMAGE) == {}
    assert r.get("other", IMAGE) == "below"


def test_add_replaces_and_add_instance_merges():
    """add replaces one type's value; add_instance keeps the other types."""
    p = InMemoryProvider()
    p.add(IMAGE, "a", 1)
    p.add(IMAGE, "a", 2)
    p.add_instance(IMAGE, {"b": 3, "c": 4})
    assert [p.get(t, IMAGE) for t in "abc"] == [2, 3, 4]
    assert len(p) == 1


def test_remove_one_type_all_types_and_clear():
    """remove forgets one type or all; clear forgets everything; absent is fine."""
    p = InMemoryProvider()
    p.add_instance(IMAGE, {"a": 1, "b": 2})
    p.add("wadors:other", "a", 5)
    p.remove(IMAGE, "a")
    p.remove(IMAGE, "missing")
    p.remove("wadors:never", "a")
    assert (p.get("a", IMAGE), p.get("b", IMAGE)) == (None, 2)
    p.remove(IMAGE, "b")
    assert len(p) == 1
    p.add(IMAGE, "a", 1)
    p.remove(IMAGE)
    assert p.get("a", IMAGE) is None
    p.clear()
    assert len(p) == 0
    assert p.get("a", "wadors:other") is None


def test_registered_as_object_or_bound_get():
    """The registry accepts the provider object and its bound get alike."""
    p = InMemoryProvider()
    p.add(IMAGE, "t", "v")
    for registered in (p, p.get):
        r = Registry()
        r.add_provider(registered)
        assert r.get("t", IMAGE) == "v"


def test_concurrent_adds_lose_nothing():
    """Threads adding different types of one imageId all land."""
    p = InMemoryProvider()

    def work(n):
        for i in range(200):
            p.add(IMAGE, f"t{n}-{i}", i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(p.get(f"t{n}-{i}", IMAGE) == i for n in range(8) for i in range(200))
