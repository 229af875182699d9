"""What a store holds, read back the way the product reads it (tests only).

Rows of ``Store.query`` as keyword rows (``keyword_row``: what ``metastore
query`` prints, ``{"PatientID": "P1", "NumberOfStudyRelatedInstances": 3}``)
and each instance's source location (``Store.instance_source``): the tests'
one view of the studies, series and instances stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metastore.keywords import keyword_row
from metastore.store import Store
from metastore.store.api import FilterValue, Level


def query_rows(
    store: Store,
    level: Level,
    filters: Mapping[str, FilterValue] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """``store.query(level, filters, **options)`` as keyword rows, in its order."""
    return [keyword_row(row) for row in store.query(level, filters, **options)]


def locations(
    store: Store, filters: Mapping[str, FilterValue] | None = None
) -> dict[str, str]:
    """The source location of every instance ``filters`` match, by SOP UID."""
    out: dict[str, str] = {}
    for row in query_rows(store, "instances", filters):
        source = store.instance_source(row["SOPInstanceUID"])
        assert source is not None, row
        out[row["SOPInstanceUID"]] = source.location
    return out
