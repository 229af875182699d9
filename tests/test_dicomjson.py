"""Tests of metastore.dicomjson.convert: exactness against pydicom's to_json_dict."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config as pd_config
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from metastore.dicomjson.convert import (
    DEFAULT_INLINE_TAGS,
    OVERLAY_DATA_TAGS,
    dataset_to_dicom_json,
)
from metastore.errors import DicomError

ROOT = Path(__file__).resolve().parent
ORACLE_CASES = ROOT / "fixtures" / "oracle" / "cases_pydicom_testdata.json"
THRESHOLD = 1024


# --------------------------------------------------------------------------
# helpers


def _read(path: str | io.BytesIO, *, stop: bool = True) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=stop)


def _ours(ds: Dataset, **kwargs: Any) -> dict[str, Any]:
    return dataset_to_dicom_json(
        ds, bulk_data_uri=lambda tag: f"bulk/{tag}", bulk_threshold=THRESHOLD, **kwargs
    )


def _reference(ds: Dataset) -> dict[str, Any]:
    """What make_cases.convert() builds, with "bulk/<tag>" BulkDataURIs."""

    def handler(elem: DataElement) -> str:
        return f"bulk/{elem.tag:08X}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd_log = logging.getLogger("pydicom")
        level = pd_log.level
        pd_log.setLevel(logging.CRITICAL)
        try:
            try:
                meta = ds.to_json_dict(
                    bulk_data_threshold=THRESHOLD, bulk_data_element_handler=handler
                )
            except Exception:
                meta = ds.to_json_dict(
                    bulk_data_threshold=THRESHOLD,
                    bulk_data_element_handler=handler,
                    suppress_invalid_tags=True,
                )
        finally:
            pd_log.setLevel(level)
    for tag in ("7FE00010", "7FE00008", "7FE00009"):
        if tag in meta:
            meta[tag] = {"vr": meta[tag]["vr"], "BulkDataURI": f"bulk/{tag}"}
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        meta["00020010"] = {"vr": "UI", "Value": [str(ts)]}
    return dict(sorted(meta.items()))


def _canon(value: Any) -> str:
    """Order-insensitive, NaN-safe, type-strict (1 != 1.0) form for comparing."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _assert_sorted(dataset: dict[str, Any]) -> None:
    assert list(dataset) == sorted(dataset), "keys are not in tag order"
    for elem in dataset.values():
        if elem.get("vr") == "SQ":
            for item in elem.get("Value", []):
                _assert_sorted(item)


def _assert_same(ours: dict[str, Any], ref: dict[str, Any]) -> None:
    _assert_sorted(ours)
    diff = {
        k: (ours.get(k), ref.get(k))
        for k in set(ours) | set(ref)
        if _canon(ours.get(k)) != _canon(ref.get(k))
    }
    assert not diff, diff


def _readable(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            continue
        try:
            _read(p)
        except Exception:
            continue
        out.append(p)
    return out


def _all_files() -> list[str]:
    charset = sorted(f for f in get_charset_files() if f.endswith(".dcm"))
    return _readable(sorted(set(get_testdata_files())) + charset)


ALL_FILES = _all_files()


def _file_id(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


# --------------------------------------------------------------------------
# pydicom's test files


@pytest.mark.parametrize("path", ALL_FILES, ids=[_file_id(p) for p in ALL_FILES])
def test_testdata_file_equals_to_json_dict(path: str) -> None:
    """Every readable pydicom test file converts exactly as make_cases does."""
    for stop in (True, False):
        ref = _reference(_read(path, stop=stop))
        ds = _read(path, stop=stop)
        ours = _ours(ds)
        # Overlay data is always inline: same bytes as pydicom's value.
        for key in [k for k in ours if int(k, 16) in OVERLAY_DATA_TAGS]:
            elem = ds[int(key, 16)]
            assert ours[key]["vr"] == ref[key]["vr"]
            if elem.is_empty:
                assert ours[key] == ref[key]
            else:
                assert base64.b64decode(ours[key]["InlineBinary"]) == elem.value
            del ours[key], ref[key]
        _assert_same(ours, ref)


def test_no_warning_escapes() -> None:
    """pydicom's warnings about odd values stay inside the conversion."""
    for path in ALL_FILES:
        ds = _read(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _ours(ds)


def test_testdata_files_were_found() -> None:
    """The exactness test really covers pydicom and pydicom-data files."""
    assert len(ALL_FILES) > 150
    assert any("charset_files" in p for p in ALL_FILES)
    assert any("data_store" in p for p in ALL_FILES)


def _oracle_sources() -> list[tuple[str, dict[str, Any]]]:
    if not ORACLE_CASES.exists():
        return []
    cases = json.loads(ORACLE_CASES.read_text(encoding="utf-8"))
    seen: dict[str, dict[str, Any]] = {}
    for case in cases:
        src = case.get("source", "")
        if src.startswith(("pydicom:", "pydicom-data:")):
            seen.setdefault(src, case["metadata"])
    return sorted(seen.items())


def _path_for_source(source: str) -> str | None:
    rest = source.split(":", 1)[1]
    hits = [p for p in ALL_FILES if Path(p).as_posix().endswith("/" + rest)]
    return sorted(hits)[0] if hits else None


def _blank_uris(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("<uri>" if k == "BulkDataURI" else _blank_uris(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_blank_uris(v) for v in value]
    return value


@pytest.mark.skipif(not ORACLE_CASES.exists(), reason="oracle cases not copied yet")
@pytest.mark.parametrize(
    "source,metadata",
    _oracle_sources(),
    ids=[s for s, _ in _oracle_sources()],
)
def test_oracle_case_metadata(source: str, metadata: dict[str, Any]) -> None:
    """Our conversion of an oracle case's file equals its metadata."""
    path = _path_for_source(source)
    if path is None:
        pytest.skip(f"{source} not installed here")
    # make_cases reads whole files and has no inline exception.
    ours = _ours(_read(path, stop=False), inline_tags=frozenset())
    _assert_same(_blank_uris(ours), _blank_uris(metadata))


# --------------------------------------------------------------------------
# behaviour


def test_default_inline_tags_are_overlay_data() -> None:
    """Overlay data of groups 6000-601E is inline by default, nothing else."""
    assert DEFAULT_INLINE_TAGS == OVERLAY_DATA_TAGS
    assert 0x60003000 in OVERLAY_DATA_TAGS and 0x601E3000 in OVERLAY_DATA_TAGS
    assert 0x60203000 not in OVERLAY_DATA_TAGS and len(OVERLAY_DATA_TAGS) == 16


def test_long_vrs_are_the_explicit_vrs_with_a_32_bit_length() -> None:
    """The one long-VR table (PS3.5 7.1.2) is pydicom's, VR for VR."""
    from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

    from metastore.dicomjson import LONG_VRS

    assert {str(vr) for vr in EXPLICIT_VR_LENGTH_32} == LONG_VRS


def _big_binary_dataset(tag: int, vr: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = "X"
    ds.add_new(tag, vr, bytes(range(256)) * 8)
    return _roundtrip(ds, ExplicitVRLittleEndian)


def test_overlay_is_inline_above_threshold() -> None:
    """A 2 KiB overlay stays InlineBinary while other large data is bulk."""
    ds = _big_binary_dataset(0x60023000, "OW")
    ours = _ours(ds)
    assert base64.b64decode(ours["60023000"]["InlineBinary"]) == bytes(range(256)) * 8
    other = _ours(_big_binary_dataset(0x00420011, "OB"))
    assert other["00420011"] == {"vr": "OB", "BulkDataURI": "bulk/00420011"}


def test_inline_tags_override() -> None:
    """inline_tags replaces the default set."""
    ds = _big_binary_dataset(0x00420011, "OB")
    ours = _ours(ds, inline_tags=frozenset({0x00420011}))
    assert "InlineBinary" in ours["00420011"]
    ds = _big_binary_dataset(0x60003000, "OW")
    assert "BulkDataURI" in _ours(ds, inline_tags=frozenset())["60003000"]


def test_no_handler_leaves_bulk_data_out() -> None:
    """Without bulk_data_uri, bulk elements and Pixel Data are left out."""
    path = get_testdata_files("CT_small.dcm")[0]
    ds = _read(path, stop=False)
    ours = dataset_to_dicom_json(ds)
    assert "7FE00010" not in ours
    assert ours["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "CompressedSamples^CT1"}],
    }
    big = dataset_to_dicom_json(_big_binary_dataset(0x00420011, "OB"))
    assert "00420011" not in big
    small = dataset_to_dicom_json(_big_binary_dataset(0x60003000, "OW"))
    assert "InlineBinary" in small["60003000"]


def test_pixel_data_is_always_bulk() -> None:
    """Top-level Pixel Data is a BulkDataURI even when empty or small."""
    ds = Dataset()
    ds.add_new(0x7FE00010, "OB", b"\x00\x01")
    ds.add_new(0x7FE00008, "OF", b"")
    ours = _ours(_roundtrip(ds, ExplicitVRLittleEndian, stop=False))
    assert ours["7FE00010"] == {"vr": "OB", "BulkDataURI": "bulk/7FE00010"}
    assert ours["7FE00008"] == {"vr": "OF", "BulkDataURI": "bulk/7FE00008"}


def test_transfer_syntax_added() -> None:
    """The file meta's (0002,0010) TransferSyntaxUID is added as UI."""
    ds = _read(get_testdata_files("MR_small_bigendian.dcm")[0])
    assert _ours(ds)["00020010"] == {"vr": "UI", "Value": [ExplicitVRBigEndian]}
    assert "00020010" not in _ours(Dataset())


def test_results_share_nothing() -> None:
    """Memoised values never leak: changing one result leaves the next intact."""
    path = get_testdata_files("CT_small.dcm")[0]
    first = _ours(_read(path))
    expected = json.dumps(first)
    first["00100010"]["Value"][0]["Alphabetic"] = "changed"
    first["00280030"]["Value"].append(99.0)
    first["00200037"]["Value"][0] = -1.0
    assert json.dumps(_ours(_read(path))) == expected


def test_already_converted_elements() -> None:
    """Elements pydicom has converted already give the same result."""
    path = get_testdata_files("rtplan.dcm")[0]
    ref = _reference(_read(path))
    ds = _read(path)
    for _elem in ds.iterall():  # converts everything, nested too
        pass
    _assert_same(_ours(ds), ref)


# --------------------------------------------------------------------------
# invalid, truncated and corrupt input


def _roundtrip(ds: Dataset, ts: str, *, stop: bool = True) -> Dataset:
    """Write ``ds`` as a Part 10 file with transfer syntax ``ts``; read it back."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mode = pd_config.settings.writing_validation_mode
        pd_config.settings.writing_validation_mode = pd_config.IGNORE
        try:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        finally:
            pd_config.settings.writing_validation_mode = mode
    buf.seek(0)
    return _read(buf, stop=stop)


def _raw_dataset(*elems: tuple[int, str | None, bytes]) -> Dataset:
    """A dataset of raw elements, as dcmread leaves them (explicit VR LE)."""
    from pydicom.charset import convert_encodings

    ds = Dataset()
    charset: list[str] | None = None
    for tag, vr, value in elems:
        implicit = vr is None
        ds._dict[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), vr, len(value), value, 0, implicit, True
        )
        if tag == 0x00080005:
            charset = [c.strip() for c in value.decode().split("\\")]
    ds.set_original_encoding(False, True, convert_encodings(charset))
    return ds


def test_invalid_is_value_is_dropped_like_make_cases() -> None:
    """IS '1A' makes to_json_dict fail; that element is dropped, the rest kept."""
    elems = [
        (0x00100020, "LO", b"ID1 "),
        (0x00200013, "IS", b"1A"),
        (0x00280010, "US", b"\x10\x00"),
    ]
    ours = _ours(_raw_dataset(*elems))
    assert ours == _reference(_raw_dataset(*elems))
    assert "00200013" not in ours
    assert ours["00280010"] == {"vr": "US", "Value": [16]}


def test_invalid_value_in_sequence_drops_the_sequence() -> None:
    """As make_cases: an unconvertible value inside an item drops the sequence."""
    item = _raw_dataset((0x00200013, "IS", b"1A"))
    ds = Dataset()
    ds.PatientID = "X"
    ds.add_new(0x00081115, "SQ", Sequence([item]))
    ours = _ours(_roundtrip(ds, ExplicitVRLittleEndian))
    assert ours == _reference(_roundtrip(ds, ExplicitVRLittleEndian))
    assert "00081115" not in ours and ours["00100020"]["Value"] == ["X"]


@pytest.mark.parametrize("cut", [400, 900, 1000, 1400, 2600, 3000])
def test_truncated_file(cut: int) -> None:
    """A truncated file converts as make_cases does (short values dropped)."""
    data = Path(get_testdata_files("CT_small.dcm")[0]).read_bytes()[:cut]
    _assert_same(_ours(_read(io.BytesIO(data))), _reference(_read(io.BytesIO(data))))


def test_wrong_length_numbers_are_dropped() -> None:
    """US with an odd length (pydicom's BytesLengthException) is dropped."""
    ds = _raw_dataset(
        (0x00280010, "US", b"\x01\x00\x02"), (0x00280011, "US", b"\x01\x00")
    )
    assert _ours(ds) == {"00280011": {"vr": "US", "Value": [1]}}


def test_strict_raises_dicom_error_naming_the_tag() -> None:
    """strict=True: an unconvertible value raises DicomError with its tag."""
    ds = _raw_dataset((0x00100020, "LO", b"X "), (0x00200013, "IS", b"1A"))
    with pytest.raises(DicomError, match=r"\(0020,0013\)"):
        _ours(ds, strict=True)
    item = _raw_dataset((0x00280010, "US", b"\x01\x00\x02"))
    ds = Dataset()
    ds.add(DataElement(0x00081115, "SQ", Sequence([item])))
    with pytest.raises(DicomError, match=r"\(0008,1115\)\[0\]\(0028,0010\)"):
        _ours(ds, strict=True)


def test_truncated_sequence_strict_and_lenient() -> None:
    """A sequence cut mid-item is dropped, or named by DicomError when strict."""
    # CT_small.dcm cut inside (0010,1002) OtherPatientIDsSequence
    data = Path(get_testdata_files("CT_small.dcm")[0]).read_bytes()[:1000]
    lenient = _ours(_read(io.BytesIO(data)))
    assert lenient == _reference(_read(io.BytesIO(data)))
    assert "00101002" not in lenient and "00100010" in lenient
    with pytest.raises(DicomError, match=r"\(0010,1002\)"):
        _ours(_read(io.BytesIO(data)), strict=True)


def test_unreadable_transfer_syntax_raises_dicom_error() -> None:
    """A file meta whose (0002,0010) cannot be converted raises DicomError."""
    ds = _raw_dataset((0x00100020, "LO", b"X "))
    meta = FileMetaDataset()
    meta._dict[BaseTag(0x00020010)] = RawDataElement(
        BaseTag(0x00020010), "US", 3, b"\x01\x02\x03", 0, False, True
    )
    ds.file_meta = meta
    with pytest.raises(DicomError, match=r"\(0002,0010\)"):
        _ours(ds)


def test_internal_error_falls_back_to_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of the direct decoding costs speed, never exactness."""
    from metastore.dicomjson import _values as _vr

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(_vr, "decode", broken)
    _vr.clear_caches()
    path = get_testdata_files("CT_small.dcm")[0]
    _assert_same(_ours(_read(path)), _reference(_read(path)))


def test_pydicom_setting_changes_use_pydicom_conversion() -> None:
    """Non-default pydicom settings (here DS as Decimal) stay exact."""
    path = get_testdata_files("CT_small.dcm")[0]
    pd_config.DS_decimal(True)
    try:
        ref = _reference(_read(path))
        ours = _ours(_read(path))
    finally:
        pd_config.DS_decimal(False)
    _assert_same(ours, ref)


# --------------------------------------------------------------------------
# property-based: random datasets through dcmwrite/dcmread


def _tags_by_vr() -> dict[str, list[int]]:
    """A few public tags of each VR, spread over the dictionary."""
    from pydicom.datadict import DicomDictionary

    skip = {0x00080005, 0x7FE00010, 0x7FE00008, 0x7FE00009}
    found: dict[str, list[int]] = {}
    for tag, entry in sorted(DicomDictionary.items()):
        vr = entry[0]
        if tag >> 16 in (0x0000, 0x0002, 0xFFFE) or tag in skip or " " in vr:
            continue
        found.setdefault(vr, []).append(tag)
    return {vr: tags[:: max(1, len(tags) // 8)] for vr, tags in found.items()}


TAGS_BY_VR = _tags_by_vr()

CHARSETS: dict[str, str] = {
    "": "",
    "ISO_IR 100": "éüßÀ",
    "ISO_IR 192": "éЖ山田ά",
    "ISO_IR 144": "Жёщ",
    "ISO_IR 126": "αβΩ",
    "ISO_IR 138": "שלום",
    "ISO_IR 13": "ﾔﾏﾀﾞ",
    "ISO 2022 IR 6\\ISO 2022 IR 87": "山田やまだ",
    "\\ISO 2022 IR 149": "홍길동",
    "ISO 2022 IR 100\\ISO 2022 IR 126": "éα",
    "GB18030": "王小明",
    "GBK": "王明",
}

ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")


def _text(charset_chars: str, max_size: int = 12) -> st.SearchStrategy[str]:
    alphabet = st.one_of(ASCII, st.sampled_from(charset_chars or "abc"))
    return st.text(alphabet, max_size=max_size)


def _multi(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, st.lists(strategy, min_size=0, max_size=4))


def _value(vr: str, chars: str) -> st.SearchStrategy[Any]:
    nums: dict[str, st.SearchStrategy[Any]] = {
        "US": st.integers(0, 0xFFFF),
        "SS": st.integers(-0x8000, 0x7FFF),
        "UL": st.integers(0, 0xFFFFFFFF),
        "SL": st.integers(-(2**31), 2**31 - 1),
        "SV": st.integers(-(2**63), 2**63 - 1),
        "UV": st.integers(0, 2**64 - 1),
        "FL": st.floats(width=32),
        "FD": st.floats(),
    }
    if vr in nums:
        return _multi(nums[vr])
    if vr in ("OB", "UN"):
        return st.binary(max_size=1100)
    if vr in ("OW", "OF", "OD", "OL", "OV"):
        unit = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}[vr]
        return st.binary(max_size=1100).map(lambda b: b[: len(b) - len(b) % unit])
    if vr == "AT":
        return _multi(st.integers(0, 0xFFFFFFFF))
    if vr == "DS":
        ds_text = st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.6g}"),
            st.text(st.sampled_from("0123456789.+-eE "), max_size=8),
            st.sampled_from(["", " 1.5 ", "nan", "1_0", "abc", "1e999"]),
        )
        return _multi(ds_text)
    if vr == "IS":
        is_text = st.one_of(
            st.integers(-(2**31), 2**31 - 1).map(str),
            st.text(st.sampled_from("0123456789.+- A"), max_size=8),
            st.sampled_from(["", " 12 ", "1.0", "1.5", "1A", "99999999999999999999"]),
        )
        return _multi(is_text)
    if vr == "PN":
        comp = _text(chars, 8)
        name = st.lists(comp, min_size=0, max_size=3).map("=".join)
        return _multi(st.one_of(name, st.lists(comp, max_size=3).map("^".join)))
    if vr in ("LT", "ST", "UT"):
        return _text(chars, 40)
    if vr in ("SH", "LO", "UC"):
        return _multi(_text(chars))
    if vr == "UR":
        return st.text(ASCII, max_size=20)
    # AE AS CS DA DT TM UI: their default repertoire (ASCII), with padding
    return _multi(st.text(ASCII, max_size=10))


def _pad(data: bytes, vr: str) -> bytes:
    if len(data) % 2:
        data += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    return data


def _encode_value(vr: str, value: Any, encodings: list[str]) -> bytes:
    """Encode a drawn value the way a writer would (explicit VR little endian)."""
    from pydicom.charset import encode_string

    if isinstance(value, bytes):
        return _pad(value, vr)
    values = value if isinstance(value, list) else [value]
    if vr in NUMBER_FORMATS:
        return struct.pack(f"<{len(values)}{NUMBER_FORMATS[vr]}", *values)
    if vr == "AT":
        return b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in values)
    if vr == "PN":
        return _pad(
            b"\\".join(
                b"=".join(
                    b"^".join(encode_string(g, encodings) for g in comp.split("^"))
                    for comp in name.split("=")
                )
                for name in values
            ),
            vr,
        )
    text = "\\".join(values)
    if vr in ("SH", "LO", "UC", "ST", "LT", "UT"):
        return _pad(encode_string(text, encodings), vr)
    return _pad(text.encode("latin-1"), vr)


NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
NUMBER_FORMATS |= {"FL": "f", "FD": "d", "SV": "q", "UV": "Q"}


PRIVATE_BLOCKS = [
    (0x0019, "GEMS_ACQU_01", [(0x01, "LT"), (0x02, "SL"), (0x03, "DS")]),
    (0x0029, "SIEMENS CSA HEADER", [(0x08, "CS"), (0x09, "LO"), (0x10, "OB")]),
]


@st.composite
def _datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    """A dataset of raw elements (explicit VR little endian), maybe nested."""
    from pydicom.charset import convert_encodings

    elems: list[tuple[int, str | None, bytes]] = []
    charset = draw(st.sampled_from(sorted(CHARSETS)))
    if charset:
        elems.append((0x00080005, "CS", _pad(charset.encode(), "CS")))
    encodings = convert_encodings(charset.split("\\") if charset else None)
    chars = CHARSETS[charset]
    sequences: list[tuple[int, list[Dataset]]] = []
    for _ in range(draw(st.integers(0, 8))):
        vr = draw(st.sampled_from([*sorted(TAGS_BY_VR), *["SQ"] * 4, "PN", "DS", "IS"]))
        tag = draw(st.sampled_from(TAGS_BY_VR[vr]))
        if vr == "SQ":
            if depth < 2:
                sequences.append(
                    (tag, draw(st.lists(_datasets(depth + 1), max_size=3)))
                )
            continue
        value = draw(_value(vr, chars))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unencodable: replacement bytes
            elems.append((tag, vr, _encode_value(vr, value, encodings)))
    if draw(st.booleans()):
        # private blocks pydicom's private dictionary knows (implicit VR
        # data takes their VRs from it), in a drawn block slot
        for group, creator, offsets in PRIVATE_BLOCKS:
            slot = draw(st.integers(0x10, 0x12))
            elems.append((group << 16 | slot, "LO", _pad(creator.encode(), "LO")))
            for offset, vr in offsets:
                value = draw(_value(vr, chars))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data = _encode_value(vr, value, encodings)
                elems.append((group << 16 | slot << 8 | offset, vr, data))
    if depth == 0 and draw(st.booleans()):
        elems.append((0x00090010, "LO", b"METASTORE TEST"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            name = _encode_value("LO", draw(_text(chars)), encodings)
        elems.append((0x00091001, "LO", name))
        elems.append(
            (0x00091002, "US", struct.pack("<H", draw(st.integers(0, 0xFFFF))))
        )
    ds = _raw_dataset(*sorted(dict((t, (t, v, b)) for t, v, b in elems).values()))
    for tag, items in sequences:
        # pydicom writes defined lengths unless told otherwise: vary both.
        elem = DataElement(tag, "SQ", Sequence(items))
        elem.is_undefined_length = draw(st.booleans())
        for item in items:
            item.is_undefined_length_sequence_item = draw(st.booleans())
        ds.add(elem)
    return ds


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    ds=_datasets(),
    ts=st.sampled_from(
        [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
    ),
)
def test_random_datasets_equal_to_json_dict(ds: Dataset, ts: str) -> None:
    """Random written-and-read-back datasets convert exactly as to_json_dict."""
    try:
        _roundtrip(ds, ts)
    except Exception:
        return  # pydicom cannot write it: nothing to read back
    ref = _reference(_roundtrip(ds, ts))
    _assert_same(_ours(_roundtrip(ds, ts), inline_tags=frozenset()), ref)
