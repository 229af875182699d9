"""codec: NaN-safe deterministic module values, packed bits, compressed DICOM JSON."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastore.store import codec

# JSON-like values with every float, NaN, ±Infinity and -0.0 included.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0])
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN, -0.0 is not 0.0 and types match."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(json_values)
def test_values_round_trip(value: Any) -> None:
    """Any JSON-like value decodes to an equal value (NaN, inf, -0.0, unicode)."""
    _, blob = codec.encode_value(value)
    assert same(codec.decode_value(blob), value)


@given(json_values)
def test_packed_values_round_trip(value: Any) -> None:
    """Round trip holds with bit packing switched on, too."""
    _, blob = codec.encode_value(value, pack=True)
    assert same(codec.decode_value(blob), value)


@given(st.dictionaries(st.text(max_size=8), scalars, max_size=8))
def test_equal_values_have_equal_digests(value: dict[str, Any]) -> None:
    """Key order does not change the digest; the digest is 16 bytes."""
    reordered = dict(reversed(list(value.items())))
    assert codec.digest(value) == codec.digest(reordered)
    assert len(codec.digest(value)) == 16


def test_different_values_have_different_digests() -> None:
    """0, 0.0, -0.0, False and None are different values."""
    digests = {codec.digest(v) for v in (0, 0.0, -0.0, False, None, "0", [0])}
    assert len(digests) == 7


@given(st.lists(st.integers(min_value=0, max_value=1), max_size=3000))
def test_bit_lists_round_trip(bits: list[int]) -> None:
    """pack_bits/unpack_bits round trip any 0/1 list, the empty one included."""
    assert codec.unpack_bits(codec.pack_bits(bits)) == bits


def test_overlay_pixel_data_is_stored_packed() -> None:
    """A 512x512 overlay bit list costs about a bit per pixel, not a byte."""
    bits = [(i * 7919 >> 3) & 1 for i in range(512 * 512)]
    value = {"overlays": [{"rows": 512, "columns": 512, "pixelData": bits}]}
    _, blob = codec.encode_module("overlayPlaneModule", value)
    assert len(blob) < 512 * 512 // 8 * 1.5
    assert codec.decode_value(blob) == value


def test_bools_are_not_packed_as_bits() -> None:
    """A long list of booleans stays booleans."""
    value = [True, False] * 64
    _, blob = codec.encode_module("overlayPlaneModule", value)
    assert codec.decode_value(blob) == value
    assert all(type(x) is bool for x in codec.decode_value(blob))


def test_module_values_compress() -> None:
    """A typical module value is stored smaller than its JSON text."""
    value = {
        "rows": 512,
        "columns": 512,
        "rowCosines": [1, 0, 0],
        "columnCosines": [0, 1, 0],
        "imagePositionPatient": [-125.0, -125.0, 12.5],
        "pixelSpacing": [0.48828125, 0.48828125],
        "frameOfReferenceUID": "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
        "sliceThickness": 5,
        "sliceLocation": float("nan"),
        "usingDefaultValues": False,
    }
    _, blob = codec.encode_value(value)
    assert len(blob) < len(str(value)) * 0.8
    assert same(codec.decode_value(blob)["sliceLocation"], float("nan"))


@given(
    st.dictionaries(
        st.from_regex(r"[0-9A-F]{8}", fullmatch=True),
        st.fixed_dictionaries(
            {
                "vr": st.sampled_from(["CS", "DS", "PN", "UI"]),
                "Value": st.lists(scalars, max_size=3),
            }
        ),
        max_size=10,
    )
)
def test_dicom_json_round_trips(instance: dict[str, Any]) -> None:
    """DICOM JSON comes back equal after compression."""
    blob = codec.encode_dicom_json(instance)
    assert same(codec.decode_dicom_json(blob), instance)


def test_unknown_flags_are_refused() -> None:
    """A blob from a future format is a ValueError, not garbage."""
    with pytest.raises(ValueError, match="flags"):
        codec.decode_value(b"\x80{}")
    with pytest.raises(ValueError, match="flags"):
        codec.decode_dicom_json(b"\x84{}")


def test_base_compression_round_trips() -> None:
    """A value compressed against a base needs that base and then decodes."""
    base, _ = codec.canonical({"a": [1, 2, 3], "uid": "1.2.3.4"})
    data, flags = codec.canonical({"a": [1, 2, 4], "uid": "1.2.3.5", "n": float("nan")})
    blob = codec.compress(data, flags, base=base)
    assert codec.needs_base(blob)
    with pytest.raises(ValueError, match="base"):
        codec.decode_value(blob)
    assert same(
        codec.decode_value(blob, base),
        {"a": [1, 2, 4], "uid": "1.2.3.5", "n": float("nan")},
    )
