"""DatabaseProvider's series read-ahead: one query per series, the cap honoured.

Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on
the store's engine: what the database is actually sent, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from metastore.providers.database import DEFAULT_READ_AHEAD, DatabaseProvider
from metastore.records import InstanceRecord
from metastore.store import Store
from tests.test_store import SERIES, make_instance, same

#: Images of the fixture's big series (single-frame instances, numbered 1..N).
SIZE = 40
#: What store.read.no_jit sends on PostgreSQL before a bulk read.
NO_JIT = "SET LOCAL jit = off"
OTHER_SERIES = "1.2.826.0.1.1.2"
#: What a viewer asks of every image (six module types the fixture stores,
#: plus one it does not).
TYPES = (
    "patientModule",
    "generalSeriesModule",
    "imagePlaneModule",
    "ultrasoundEnhancedRegionModule",
    "voiLutModule",
    "patientModule",
)


def numbered(sop: str, number: int | None, **kwargs: Any) -> InstanceRecord:
    """An instance of the fixture series with (0020,0013) InstanceNumber set."""
    record = make_instance(f"/s/{sop}.dcm", sop, **kwargs)
    return dataclasses.replace(record, instance_number=number)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """SIZE numbered instances of SERIES (written out of order) + a small series."""
    with Store(db_url) as s:
        # written in reverse, so row order is not stack order
        s.write_batch(
            [numbered(f"1.{n}", n) for n in range(SIZE, 0, -1)]
            + [numbered(f"2.{n}", n, series=OTHER_SERIES) for n in range(1, 4)]
        )
        yield s


def stack(n: int) -> str:
    """The imageId at stack position ``n`` (1-based) of SERIES."""
    return make_instance(f"/s/1.{n}.dcm", f"1.{n}").images[0].image_id


class Statements:
    """Counts the statements an engine sends, by whether they read ahead."""

    def __init__(self, engine: sa.Engine) -> None:
        self.texts: list[str] = []
        self._engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.texts.append(statement)

    def close(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._seen)

    @property
    def read_aheads(self) -> int:
        return sum("ranked" in text for text in self.texts)


@pytest.fixture
def statements(store: Store) -> Iterator[Statements]:
    """The statements sent to ``store``'s engine from now on."""
    counter = Statements(store.engine)
    yield counter
    counter.close()


def test_a_cold_loop_over_a_series_costs_one_query(
    db_url: str, store: Store, statements: Statements
) -> None:
    """Every image of a series, six modules each: one read-ahead statement."""
    provider = DatabaseProvider(Store(db_url))  # a cold store: no names known
    counter = Statements(provider.store.engine)
    try:
        answers = {
            (t, stack(n)): provider.get(t, stack(n))
            for n in range(1, SIZE + 1)
            for t in TYPES
        }
        assert counter.read_aheads == 1
        # the constant: the module type names, read once (and SQLite's
        # BEGIN, PostgreSQL's SET LOCAL jit = off: store.read.no_jit)
        queries = [q for q in counter.texts if q not in ("BEGIN", NO_JIT)]
        assert len(queries) <= 2, queries
    finally:
        counter.close()
        provider.store.close()
    # and the answers are the store's
    for (t, image_id), value in answers.items():
        assert same(value, (store.image_modules(image_id) or {}).get(t))


def test_the_read_ahead_cap_is_honoured(store: Store, statements: Statements) -> None:
    """A series past the cap loads the cap's nearest images, in stack order."""
    cap = 8
    provider = DatabaseProvider(store, read_ahead=cap)
    assert provider.cache_info()["read_ahead"] == cap
    middle = SIZE // 2
    assert provider.get("patientModule", stack(middle)) is not None
    assert statements.read_aheads == 1
    # distances 0, 1, 1, 2, 2, 3, 3, 4 (ties to the earlier): middle-4..middle+3
    cached = provider.cache_info()["images"]
    assert cached == cap
    for n in range(middle - 4, middle + 4):
        provider.get("patientModule", stack(n))
    assert statements.read_aheads == 1  # all hits
    # at the start of the series the window runs forward
    provider.clear_cache()
    provider.get("patientModule", stack(1))
    for n in range(1, cap + 1):
        provider.get("generalSeriesModule", stack(n))
    assert statements.read_aheads == 2
    assert provider.cache_info()["images"] == cap


def test_walking_a_series_past_the_cap(store: Store, statements: Statements) -> None:
    """A walk costs about one query per half cap; no load exceeds the cap."""
    cap = 8
    provider = DatabaseProvider(store, read_ahead=cap)
    for n in range(1, SIZE + 1):
        before = provider.cache_info()["images"]
        for t in TYPES:
            provider.get(t, stack(n))
        assert provider.cache_info()["images"] - before <= cap
    # the first load covers cap images, each later one cap / 2 new ones
    assert statements.read_aheads <= 1 + -(-(SIZE - cap) // (cap // 2))


def test_read_ahead_stays_in_the_series(store: Store) -> None:
    """The other series is never loaded by a miss in this one."""
    provider = DatabaseProvider(store)
    provider.get("patientModule", stack(1))
    assert provider.cache_info()["images"] == SIZE
    other = make_instance("/s/2.1.dcm", "2.1", series=OTHER_SERIES).images[0]
    assert provider.get("generalSeriesModule", other.image_id) == {
        "modality": "CT",
        "seriesInstanceUID": OTHER_SERIES,
    }
    assert provider.cache_info()["images"] == SIZE + 3


def test_read_ahead_zero_loads_one_image(store: Store, statements: Statements) -> None:
    """read_ahead=0 (and 1) keep the per-image path: one image per miss."""
    for read_ahead in (0, 1):
        provider = DatabaseProvider(store, read_ahead=read_ahead)
        provider.get("patientModule", stack(3))
        assert provider.cache_info()["images"] == 1
    assert statements.read_aheads == 0


def test_read_ahead_is_capped_by_the_cache(store: Store) -> None:
    """A miss never loads more images than the cache may hold."""
    provider = DatabaseProvider(store, cache_size=5)
    assert provider.cache_info()["read_ahead"] == 5
    for n in range(1, SIZE + 1):
        provider.get("patientModule", stack(n))
        assert provider.cache_info()["images"] <= 5
    assert DatabaseProvider(store).cache_info()["read_ahead"] == DEFAULT_READ_AHEAD


def test_read_ahead_must_not_be_negative(store: Store) -> None:
    """A negative read_ahead is a ValueError naming it."""
    with pytest.raises(ValueError, match="read_ahead"):
        DatabaseProvider(store, read_ahead=-1)


def test_an_unknown_image_is_no_answer(store: Store, statements: Statements) -> None:
    """An unknown imageId loads nothing, is cached as no answer, asked once."""
    provider = DatabaseProvider(store)
    assert provider.get("patientModule", "wadors:nothing") is None
    assert provider.get("imagePlaneModule", "wadors:nothing") is None
    assert provider.cache_info()["images"] == 1
    assert statements.read_aheads == 1
    assert store.nearby_image_modules("wadors:nothing", 10) == {}
    assert store.nearby_image_modules("wadors:\ud800", 10) == {}  # unstorable
    with pytest.raises(ValueError, match="limit"):
        store.nearby_image_modules(stack(1), 0)


def test_stack_order_of_the_window(db_url: str) -> None:
    """Frames follow their instance; unnumbered instances come last."""
    with Store(db_url) as store:
        store.write_batch(
            [
                numbered("3.1", 2, frames=3),
                numbered("3.2", 1),
                numbered("3.3", None),
                numbered("3.4", 3),
            ]
        )
        first = make_instance("/s/3.2.dcm", "3.2").images[0].image_id
        multi = make_instance("/s/3.1.dcm", "3.1", frames=3).images
        last = make_instance("/s/3.4.dcm", "3.4").images[0].image_id
        unnumbered = make_instance("/s/3.3.dcm", "3.3").images[0].image_id
        # stack: 3.2, 3.1 f1-f3, 3.4, 3.3
        assert set(store.nearby_image_modules(first, 4)) == {
            first,
            *(i.image_id for i in multi),
        }
        assert set(store.nearby_image_modules(unnumbered, 2)) == {unnumbered, last}
        assert set(store.nearby_image_modules(multi[1].image_id, 3)) == {
            i.image_id for i in multi
        }
        everything = store.nearby_image_modules(last, 100)
        assert same(everything, store.series_image_modules(SERIES))


def test_bulk_reads_switch_postgresql_jit_off(store: Store) -> None:
    """The series and read-ahead loads run with JIT off on PostgreSQL.

    At a million instances the planner estimated the series load past
    ``jit_above_cost`` and compiled it: ~40 ms of a statement that runs in
    11 (docs/benchmarks.md).  ``SET LOCAL`` must come first in the same
    transaction; SQLite has no JIT and gets no such statement.
    """
    counter = Statements(store.engine)
    try:
        assert len(store.series_image_modules(SERIES)) == SIZE
        assert store.nearby_image_modules(stack(5), 3)
    finally:
        counter.close()
    texts = [q for q in counter.texts if q not in ("BEGIN", "COMMIT")]
    loads = [i for i, q in enumerate(texts) if "image_modules m" in q]
    assert len(loads) == 2, texts
    if store.engine.dialect.name == "postgresql":
        assert all(texts[i - 1] == NO_JIT for i in loads), texts
    else:
        assert NO_JIT not in texts
