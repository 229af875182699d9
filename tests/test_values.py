"""Tests of metastore.modules.jsvalues: JavaScript semantics and Cornerstone's getters.

Expected JavaScript results come from Node itself
(``tests/fixtures/oracle/js_semantics.mjs`` -> ``js_semantics.json``) and from
the oracle's ``parsefloat-corners`` case, never from hand-written tables.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracle_fixtures import FIXTURES, load_cases, load_expected

from metastore.modules.jsvalues import (
    UNDEFINED,
    get_first_number_value,
    get_number_value,
    get_number_values,
    get_sequence_items,
    get_tag_value,
    get_value,
    js_index,
    js_to_number,
    js_to_string,
    js_truthy,
    parse_float,
    parse_int,
    raw_value,
)


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$js"}:
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(
            value["$js"], -0.0
        )
    return value


def _js_rows() -> list[dict[str, Any]]:
    rows = json.loads((FIXTURES / "js_semantics.json").read_text(encoding="utf-8"))
    return [{k: _decode(v) for k, v in row.items()} for row in rows]


JS_ROWS = _js_rows()


def _same_number(expected: float, actual: float) -> bool:
    expected = float(expected)  # a JSON integer is a double in JavaScript
    if math.isnan(expected):
        return math.isnan(actual)
    if expected == 0 and actual == 0:
        return math.copysign(1, expected) == math.copysign(1, actual)
    return expected == actual


@pytest.mark.parametrize("row", JS_ROWS, ids=lambda r: repr(r["input"])[:40])
def test_parse_float_matches_node(row: dict[str, Any]) -> None:
    """parse_float(x) is exactly Node's parseFloat(x), sign of zero included."""
    result = parse_float(row["input"])
    assert isinstance(result, float)
    assert _same_number(row["parseFloat"], result), (row, result)


@pytest.mark.parametrize("row", JS_ROWS, ids=lambda r: repr(r["input"])[:40])
def test_js_to_number_matches_node(row: dict[str, Any]) -> None:
    """js_to_number(x) is Node's Number(x) (up to the sign of zero)."""
    result = js_to_number(row["input"])
    expected = row["number"]
    assert _same_number(expected, result) or float(expected) == result == 0, (
        row,
        result,
    )


@pytest.mark.parametrize("row", JS_ROWS, ids=lambda r: repr(r["input"])[:40])
def test_js_to_string_matches_node(row: dict[str, Any]) -> None:
    """js_to_string(x) is Node's String(x)."""
    if isinstance(row["input"], float) and math.isinf(row["input"]):
        assert js_to_string(row["input"]) == (
            "Infinity" if row["input"] > 0 else "-Infinity"
        )
        return
    assert js_to_string(row["input"]) == row["string"]


@pytest.mark.parametrize(
    "row",
    [r for r in JS_ROWS if isinstance(r["input"], str)],
    ids=lambda r: repr(r["input"])[:40],
)
def test_parse_int_matches_node(row: dict[str, Any]) -> None:
    """parse_int(s) is Node's parseInt(s, 10) (exact, not rounded); None is NaN."""
    result = parse_int(row["input"])
    expected = row["parseInt"]
    if isinstance(expected, float) and math.isnan(expected):
        assert result is None
    else:
        assert result is not None and float(result) == float(expected)


@pytest.mark.parametrize("row", JS_ROWS, ids=lambda r: repr(r["input"])[:40])
def test_js_truthy_matches_node(row: dict[str, Any]) -> None:
    """js_truthy(x) is Node's !!x."""
    assert js_truthy(row["input"]) is row["truthy"]


def test_parse_float_matches_oracle_parsefloat_corners() -> None:
    """The getters give the oracle's numbers for the parsefloat-corners case."""
    case = next(
        c for c in load_cases("synthetic") if c["source"].endswith("parsefloat-corners")
    )
    expected = load_expected("expected_synthetic_isolated.json")[case["imageId"]]
    meta = case["metadata"]
    pairs = [
        ("00200011", expected["generalSeriesModule"]["seriesNumber"]),
        ("00200013", expected["generalImageModule"]["instanceNumber"]),
        ("00180050", expected["imagePlaneModule"]["sliceThickness"]),
        ("00201041", expected["imagePlaneModule"]["sliceLocation"]),
        ("00281052", expected["modalityLutModule"]["rescaleIntercept"]),
        ("00281053", expected["modalityLutModule"]["rescaleSlope"]),
        ("00101010", expected["patientStudyModule"]["patientAge"]),
        ("00101030", expected["patientStudyModule"]["patientWeight"]),
        ("00101020", expected["patientStudyModule"]["patientSize"]),
        ("00280106", expected["imagePixelModule"]["smallestPixelValue"]),
    ]
    for tag, want in pairs:
        got = get_number_value(meta[tag])
        assert (got is not None and _same_number(want, got)) or want == got, (
            tag,
            want,
            got,
        )
    spacing = get_number_values(meta["00280030"], 2)
    assert spacing is not None and math.isnan(spacing[0]) and spacing[1] == 0.5
    assert expected["voiLutModule"]["windowWidth"] == get_number_values(
        meta["00281051"], 1
    )


def test_parse_float_keeps_negative_zero_from_text_only() -> None:
    """'-0' parses to -0.0 but the number -0.0 prints as '0' and parses to +0.0."""
    assert math.copysign(1, parse_float("-0")) == -1
    assert math.copysign(1, parse_float(-0.0)) == 1


def test_parse_float_huge_integer_becomes_infinity() -> None:
    """A JSON integer beyond the double range reads as Infinity, as in JavaScript."""
    assert parse_float(10**400) == math.inf
    assert parse_float(-(10**400)) == -math.inf


@given(st.floats(allow_nan=False))
def test_parse_float_round_trips_js_strings(x: float) -> None:
    """parseFloat(String(x)) == x for every double (JS shortest round-trip digits)."""
    assert parse_float(js_to_string(x)) == x


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_js_helpers_never_raise_on_json(value: Any) -> None:
    """parse_float, js_to_number, js_to_string and js_truthy accept any JSON value."""
    assert isinstance(parse_float(value), float)
    assert isinstance(js_to_number(value), float)
    assert isinstance(js_to_string(value), str)
    assert isinstance(js_truthy(value), bool)


@given(JSON_VALUES, st.integers(min_value=0, max_value=5))
def test_getters_never_raise_on_json(element: Any, index: int) -> None:
    """The Cornerstone getters accept any JSON as an element."""
    get_value(element, index)
    get_number_value(element, index)
    get_number_values(element, 2)
    get_sequence_items(element)
    get_tag_value(element, False)
    if isinstance(element, dict):
        get_first_number_value(element, "Value")


def test_get_value_raw_first_value() -> None:
    """getValue returns Value[index] raw, a PN stays an object."""
    pn = {"Alphabetic": "Doe^J"}
    assert get_value({"vr": "PN", "Value": [pn]}) is pn
    assert get_value({"vr": "IS", "Value": ["12"]}) == "12"
    assert get_value({"vr": "CS", "Value": ["A", "B"]}, 1) == "B"


def test_get_value_missing_gives_default() -> None:
    """Missing element, Value, empty Value or index out of range give the default."""
    for element in (
        None,
        {"vr": "CS"},
        {"vr": "CS", "Value": []},
        {"vr": "CS", "Value": None},
    ):
        assert get_value(element, 0, "d") == "d"
    assert get_value({"vr": "CS", "Value": ["A"]}, 3, "d") == "d"


def test_get_value_indexes_non_array_value() -> None:
    """A string Value is indexed by character; a number Value gives undefined."""
    assert get_value({"vr": "CS", "Value": "CT"}) == "C"
    assert get_value({"vr": "IS", "Value": 7}, 0, "d") is None
    assert raw_value({"vr": "IS", "Value": 7}) is UNDEFINED


def test_get_number_value_null_is_nan_missing_is_none() -> None:
    """A JSON null value parses to NaN; a missing value is None."""
    assert math.isnan(get_number_value({"vr": "IS", "Value": [None]}) or 0.0)
    assert get_number_value({"vr": "IS"}) is None
    assert get_number_value(None) is None


def test_get_number_values_minimum_length() -> None:
    """getNumberValues returns None below the minimum and [] for an empty array."""
    assert get_number_values({"vr": "DS", "Value": [1, "2"]}, 2) == [1.0, 2.0]
    assert get_number_values({"vr": "DS", "Value": [1]}, 2) is None
    assert get_number_values({"vr": "DS", "Value": []}) == []
    assert get_number_values({"vr": "DS", "Value": []}, 1) is None
    assert get_number_values({"vr": "DS", "Value": "1\\2"}) is None


def test_get_first_number_value() -> None:
    """getFirstNumberValue: the first number or None; a null item throws."""
    assert get_first_number_value({"X": {"vr": "FD", "Value": ["0.5", 1]}}, "X") == 0.5
    assert get_first_number_value({}, "X") is None
    with pytest.raises(TypeError):
        get_first_number_value(None, "X")


def test_get_sequence_items() -> None:
    """getSequenceItems: [] when empty, wraps an object only when it has a length."""
    item = {"a": 1}
    assert get_sequence_items({"vr": "SQ", "Value": [item]}) == [item]
    assert get_sequence_items({"vr": "SQ", "Value": []}) == []
    assert get_sequence_items({"vr": "SQ", "Value": item}) == []
    with_length = {"length": 1, "a": 1}
    assert get_sequence_items({"vr": "SQ", "Value": with_length}) == [with_length]
    assert get_sequence_items({"vr": "SQ", "Value": "ab"}) == []
    assert get_sequence_items(None) == []


def test_get_tag_value() -> None:
    """getTagValue: first value if truthy, else the Value array, else the element."""
    assert get_tag_value({"Value": [3]}) == 3
    assert get_tag_value({"Value": [0]}) == [0]
    assert get_tag_value({"Value": [3]}, False) == [3]
    element = {"vr": "IS"}
    assert get_tag_value(element) is element


def test_js_index_counts_utf16_units() -> None:
    """String indexing is by UTF-16 code unit, so a non-BMP character splits."""
    assert js_index("𝒞T", 0) == "\ud835"
    assert js_index("𝒞T", 2) == "T"
    assert js_index({"0": "zero"}, 0) == "zero"
    assert js_index(5, 0) is UNDEFINED
    with pytest.raises(TypeError):
        js_index(None, 0)


def test_js_own_keys_put_integer_like_keys_first() -> None:
    """Object.keys order: array-index keys ascending first, then insertion order."""
    from metastore.modules.jsvalues import js_entries, js_own_keys, js_values

    item = {"00289132": 1, "20051401": 2, "0": 3, "10": 4, "01": 5, "4294967295": 6}
    assert js_own_keys(item) == ["0", "10", "20051401", "00289132", "01", "4294967295"]
    assert js_values(item) == [3, 4, 2, 1, 5, 6]
    assert [k for k, _ in js_entries(item)] == js_own_keys(item)


def test_raw_values_are_doubles_as_in_javascript() -> None:
    """Integers past 2**53 come back as the double JSON.parse gives (raw getters)."""
    from metastore.modules.jsvalues import js_json

    big = 2**53 + 1
    assert get_value({"vr": "UV", "Value": [big]}) == 2**53
    assert isinstance(get_value({"vr": "UV", "Value": [big]}), float)
    assert get_value({"vr": "IS", "Value": [7]}) == 7
    item = {"00189999": {"vr": "UV", "Value": [2**60 + 1, 3]}}
    assert js_json(item) == {"00189999": {"vr": "UV", "Value": [2.0**60, 3]}}
    small = {"a": [1, "x", None]}
    assert js_json(small) is small
    assert js_json(10**400) == math.inf
