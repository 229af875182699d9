"""Store.known_sources(roots): only the stored locations under the indexed paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stored import locations
from test_store import make_instance

from metastore.store import Store

LOCATIONS = [
    "/data/a",  # the root itself (a file)
    "/data/a/1.dcm",
    "/data/a/sub/2.dcm",
    "/data/a!/member/3.dcm",  # a member of /data/a as a zip archive
    "/data/a.zip!/4.dcm",  # not under /data/a
    "/data/ab/5.dcm",  # not under /data/a
    "/data/a0/6.dcm",  # the range bound of "/data/a/": not under it
    "/data/a!0",  # nor is the bound of "/data/a!/"
    "/DATA/a/7.dcm",  # case matters
    "/data/b_%/8.dcm",  # LIKE metacharacters are data
    "/data/bx%/9.dcm",
    "/data/é/10.dcm",  # non-ASCII
    "/other/11.dcm",
]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store holding every location of :data:`LOCATIONS` (both backends)."""
    with Store(db_url) as s:
        s.write_batch(
            [
                make_instance(location, f"1.2.{n}", size=n, mtime_ns=10 + n)
                for n, location in enumerate(LOCATIONS, 1)
            ]
        )
        yield s


def under(root: str) -> set[str]:
    """The locations of LOCATIONS under ``root`` (the prune rule)."""
    if root.endswith("/"):
        return {loc for loc in LOCATIONS if loc.startswith(root)}
    return {
        loc
        for loc in LOCATIONS
        if loc == root or loc.startswith((root + "/", root + "!/"))
    }


@pytest.mark.parametrize(
    "roots",
    [
        ["/data/a"],
        ["/data/a.zip"],
        ["/data/b_%"],
        ["/data/é", "/other"],
        ["/data"],
        ["/"],
        ["/data/a", "/data/a/sub"],  # overlapping roots
        ["/nothing"],
        [],
    ],
)
def test_known_sources_under_roots(store: Store, roots: list[str]) -> None:
    """Exactly the locations under the roots, with their size and mtime."""
    everything = store.known_sources()
    assert set(everything) == set(LOCATIONS)
    expected = set().union(*(under(root) for root in roots))
    found = store.known_sources(roots)
    assert found == {loc: everything[loc] for loc in expected}


def test_known_sources_with_many_roots(store: Store) -> None:
    """Hundreds of roots (one per file given) are queried in parts."""
    roots = [f"/x/{n}.dcm" for n in range(450)] + ["/data/a/1.dcm", "/other"]
    assert set(store.known_sources(roots)) == {"/data/a/1.dcm", "/other/11.dcm"}


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (["/data/a"], under("/data/a")),  # a folder or archive that was unreadable
        (["/data/a/sub"], {"/data/a/sub/2.dcm"}),
        (["/data/a/1.dcm", "/data/ab"], {"/data/a/1.dcm", "/data/ab/5.dcm"}),
        (["/data/a.zip"], {"/data/a.zip!/4.dcm"}),  # a damaged archive's members
        (["/nothing"], set()),
    ],
)
def test_prune_keeps_what_is_under_a_kept_location(
    store: Store, keep: list[str], kept: set[str]
) -> None:
    """``Store.prune(keep=...)``: nothing under a location the indexer could not
    read is forgotten, by the same rule as the roots (``/`` or ``!/``)."""
    store.prune(["/data"], seen=set(), keep=keep)
    assert set(store.known_sources()) == kept | (set(LOCATIONS) - under("/data"))


def test_a_location_spelled_before_the_escape_is_replaced_when_written(
    store: Store,
) -> None:
    """A source stored as ``/x/f!/1.dcm`` (before names ending in ``!`` were
    escaped) is written as ``/x/f\ufffd21/1.dcm``: the old row goes in the
    same transaction when it holds the same imageIds, so the instance is not
    a duplicate of itself; rows that are not the source's stay."""
    old, new = "/x/f!/1.dcm", "/x/f\ufffd21/1.dcm"
    assert store.write_batch([make_instance(old, "9.1", frames=2)]) == []
    assert store.write_batch([make_instance(new, "9.1", frames=2)]) == []
    assert old not in store.known_sources()
    assert locations(store, {"SOPInstanceUID": "9.1"}) == {"9.1": new}
    # a zip member that really is at the old spelling (other imageIds) stays
    other_old, other_new = "/x/g!/2.dcm", "/x/g\ufffd21/2.dcm"
    store.write_batch([make_instance(other_old, "9.2")])
    found = store.write_batch([make_instance(other_new, "9.3")])
    assert found == []
    assert {other_old, other_new} <= set(store.known_sources())
    assert store.errors() == []
