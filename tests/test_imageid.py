"""Tests for metastore.imageid: parsing, formatting and their round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastore.errors import InvalidImageIdError
from metastore.imageid import (
    ImageId,
    base_and_frame,
    file_image_id,
    file_location,
    image_id_to_uri,
    parse_image_id,
    split_for_storage,
    wadors_image_id,
)

ROOT = "https://pacs.example/dicomweb"
WADORS = f"wadors:{ROOT}/studies/1.2/series/1.2.3/instances/1.2.3.4"


def test_wadors_with_frame():
    """A wadors imageId yields its UIDs, its url without frame and a 1-based frame."""
    p = parse_image_id(WADORS + "/frames/3")
    assert p == ImageId("wadors", WADORS[7:], 3, "1.2", "1.2.3", "1.2.3.4")
    assert p.base == WADORS
    assert p.with_frame(1) == WADORS + "/frames/1"
    assert str(p) == p.raw == WADORS + "/frames/3"


def test_wadors_without_frame():
    """A wadors imageId without /frames/ has frame None."""
    p = parse_image_id(WADORS)
    assert p.frame is None
    assert p.sop_instance_uid == "1.2.3.4"
    assert p.base == WADORS


def test_wadors_root_containing_studies_uses_last_studies():
    """The last /studies/ segment is the one that names the study."""
    s = "wadors:http://h/studies/x/studies/1/series/2/instances/3/frames/1"
    p = parse_image_id(s)
    assert (p.study_uid, p.series_uid, p.sop_instance_uid) == ("1", "2", "3")
    assert p.url == "http://h/studies/x/studies/1/series/2/instances/3"


@pytest.mark.parametrize(
    ("image_id", "url", "frame"),
    [
        ("wadouri:http://x/a.dcm", "http://x/a.dcm", None),
        ("wadouri:http://x/a.dcm?frame=2", "http://x/a.dcm", 2),
        ("wadouri:http://x/a.dcm&frame=2", "http://x/a.dcm", 2),
        ("wadouri:http://x/a.dcm?a=1&frame=5", "http://x/a.dcm?a=1", 5),
        ("wadouri:http://x/a.dcm?frame=5&a=1", "http://x/a.dcm?a=1", 5),
        ("wadouri:http://x/a?a=1&frame=5&b=2", "http://x/a?a=1&b=2", 5),
        ("dicomweb:http://x/a?frame=1&frame=4", "http://x/a?frame=1", 4),
        ("dicomfile:0", "0", None),
        ("dicomfile:12?frame=3", "12", 3),
        ("dicomfile:/data/a.dcm", "/data/a.dcm", None),
    ],
)
def test_query_frame_forms(image_id, url, frame):
    """Only the last frame= parameter counts; other parameters stay in url."""
    p = parse_image_id(image_id)
    assert (p.url, p.frame) == (url, frame)
    assert p.scheme == image_id.split(":", 1)[0]
    assert str(p) == image_id
    assert (p.study_uid, p.series_uid, p.sop_instance_uid) == (None, None, None)


def test_with_frame_on_query_forms():
    """with_frame appends ?frame= or &frame= as the url needs, and parses back."""
    assert parse_image_id("wadouri:http://x/a").with_frame(2) == (
        "wadouri:http://x/a?frame=2"
    )
    again = parse_image_id("wadouri:http://x/a?b=1&frame=9").with_frame(2)
    assert again == "wadouri:http://x/a?b=1&frame=2"
    assert parse_image_id(again).frame == 2


@pytest.mark.parametrize("frame", [0, -1, True, 1.0, "1"])
def test_with_frame_rejects_non_positive_int(frame):
    """with_frame refuses anything but a positive int."""
    with pytest.raises(ValueError, match="frame"):
        parse_image_id(WADORS).with_frame(frame)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "no-colon",
        "http://x/a.dcm",
        "streaming-wadors:http://x",
        "WADORS:" + WADORS[7:],
        WADORS + "/frames/0",
        WADORS + "/frames/x",
        WADORS + "/frames/",
        WADORS + "/frames/1/rendered",
        WADORS + "/frames/-1",
        "wadors:http://x/studies/1/series/2",
        "wadors:http://x/studies//series/2/instances/3",
        "wadouri:http://x/a?frame=-1",
        "wadouri:http://x/a?frame=",
        "wadouri:http://x/a?frame=1.5",
        "wadouri:http://x/a?frame=0",
        "wadouri:",
        "dicomfile:?frame=1",
    ],
)
def test_malformed_raises_naming_the_image_id(bad):
    """Malformed imageIds raise InvalidImageIdError whose message names them."""
    with pytest.raises(InvalidImageIdError) as info:
        parse_image_id(bad)
    assert repr(bad) in str(info.value)
    assert info.value.image_id == bad
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [None, 3, b"wadouri:x"])
def test_non_string_raises(bad):
    """A non-string imageId raises InvalidImageIdError, not TypeError."""
    with pytest.raises(InvalidImageIdError, match="not a string"):
        parse_image_id(bad)


@pytest.mark.parametrize(
    ("image_id", "uri"),
    [
        ("wadors:http://a/b", "http://a/b"),
        ("wadouri:derived:uuid", "derived:uuid"),
        ("dicomfile:0", "0"),
        ("http://a/b", "//a/b"),
        ("no-colon", "no-colon"),
        ("", ""),
    ],
)
def test_image_id_to_uri_classic_first_colon_rule(image_id, uri):
    """image_id_to_uri drops everything up to the first colon, if any."""
    assert image_id_to_uri(image_id) == uri


def test_wadors_image_id_strips_one_trailing_slash():
    """wadors_image_id drops a trailing slash of the root."""
    assert wadors_image_id(ROOT + "/", "1.2", "1.2.3", "1.2.3.4", 2) == (
        WADORS + "/frames/2"
    )


@pytest.mark.parametrize(
    "args",
    [("", "2", "3", 1), ("1", "a/b", "3", 1), ("1", "2", "3", 0)],
)
def test_wadors_image_id_rejects_bad_input(args):
    """Empty or slashed UIDs and bad frames are programmer errors (ValueError)."""
    with pytest.raises(ValueError):
        wadors_image_id(ROOT, *args)


def test_file_image_id_form(tmp_path):
    """A file imageId is wadouri: + file URI (+ !/member) + ?frame=N."""
    archive = tmp_path / "a b.zip"
    image_id = file_image_id(archive, 3, "dir/x #1.dcm")
    assert image_id == (
        f"wadouri:{archive.resolve().as_uri()}!/dir/x%20%231.dcm?frame=3"
    )
    assert file_location(image_id) == (archive.resolve(), "dir/x #1.dcm")
    assert file_location(file_image_id(str(archive), 1)) == (archive.resolve(), None)


def test_a_folder_named_like_an_archive_has_its_own_image_ids(tmp_path):
    """Member ``b.dcm`` of ``a.zip`` and file ``b.dcm`` of folder ``a.zip!``:
    the ``!`` of a path is percent-encoded, so only the member's imageId
    holds ``!/`` and each leads back to its own source (the locations the
    store keeps differ too: ``metastore.locations.location_of``)."""
    member = file_image_id(tmp_path / "a.zip", 1, "b.dcm")
    folder_file = file_image_id(tmp_path / "a.zip!" / "b.dcm", 1)
    nested = file_image_id(tmp_path / "a.zip!" / "c.zip", 1, "x!/b.dcm")
    assert member != folder_file
    assert "a.zip%21/b.dcm" in folder_file
    assert file_location(member) == ((tmp_path / "a.zip").resolve(), "b.dcm")
    assert file_location(folder_file) == ((tmp_path / "a.zip!" / "b.dcm"), None)
    assert file_location(nested) == ((tmp_path / "a.zip!" / "c.zip"), "x!/b.dcm")
    assert image_id_to_uri(member).count("!/") == 1


def test_file_image_id_resolves_relative_paths(tmp_path, monkeypatch):
    """A relative path is made absolute before it becomes a URI."""
    monkeypatch.chdir(tmp_path)
    path, member = file_location(file_image_id("x.dcm", 1))
    assert path == (tmp_path / "x.dcm").resolve()
    assert member is None


@pytest.mark.parametrize(
    "bad",
    [
        "wadors:http://x/studies/1/series/2/instances/3",
        "wadouri:http://x/a.dcm?frame=1",
        "wadouri:file://otherhost/a.dcm?frame=1",
        "dicomfile:0",
    ],
)
def test_file_location_rejects_non_file_ids(bad):
    """file_location only accepts local file: imageIds."""
    with pytest.raises(InvalidImageIdError):
        file_location(bad)


# -- property tests: format -> parse round trips ---------------------------

uids = st.from_regex(r"[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){1,6}", fullmatch=True)
frames = st.integers(min_value=1, max_value=10**6)
# Path segments: any printable text incl. spaces and non-ASCII, but no
# separators, NUL or lone surrogates (not encodable as file names).
segment = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc"),
        blacklist_characters="/\\",
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
roots = st.builds(
    lambda scheme, host, parts: f"{scheme}://{host}/" + "/".join(parts),
    st.sampled_from(["http", "https", "file"]),
    st.sampled_from(["pacs", "localhost:8042", "h.example"]),
    st.lists(segment, max_size=4),
).filter(lambda r: "/studies/" not in r)


@given(root=roots, study=uids, series=uids, sop=uids, frame=frames)
def test_wadors_round_trip(root, study, series, sop, frame):
    """wadors_image_id -> parse_image_id gives back every part."""
    image_id = wadors_image_id(root, study, series, sop, frame)
    p = parse_image_id(image_id)
    assert (p.scheme, p.frame) == ("wadors", frame)
    assert (p.study_uid, p.series_uid, p.sop_instance_uid) == (study, series, sop)
    assert p.url.startswith(root.removesuffix("/"))
    assert p.with_frame(frame) == image_id
    assert parse_image_id(p.base).frame is None


BASE = Path("/").resolve() / "metastore-roundtrip"


@given(
    parts=st.lists(segment, min_size=1, max_size=4),
    frame=frames,
    member=st.none() | st.lists(segment, min_size=1, max_size=3).map("/".join),
)
def test_file_round_trip(parts, frame, member):
    """file_image_id -> file_location/parse_image_id gives back path, member, frame."""
    path = BASE.joinpath(*parts)
    image_id = file_image_id(path, frame, member)
    p = parse_image_id(image_id)
    assert (p.scheme, p.frame) == ("wadouri", frame)
    assert p.with_frame(frame) == image_id
    assert file_location(image_id) == (path, member)
    assert file_location(p) == (path, member)


@given(
    url=st.from_regex(r"https?://[a-z]{1,8}/[a-z0-9._~%-]{0,12}", fullmatch=True),
    params=st.lists(st.from_regex(r"[a-eg-z]{1,4}=[a-z0-9]{0,4}", fullmatch=True)),
    frame=frames,
    scheme=st.sampled_from(["wadouri", "dicomweb", "dicomfile"]),
)
def test_query_round_trip(url, params, frame, scheme):
    """Adding a frame to a url with any other parameters parses back to it."""
    base = f"{scheme}:{url}" + ("?" + "&".join(params) if params else "")
    p0 = parse_image_id(base)
    assert p0.frame is None
    p = parse_image_id(p0.with_frame(frame))
    assert (p.scheme, p.url, p.frame, p.base) == (scheme, p0.url, frame, base)


FUZZ_CASES = Path(__file__).parent / "fixtures" / "oracle" / "cases_fuzz.json"

#: A UID-like path segment, or anything without "/" (what the parser takes).
_segment = st.one_of(
    st.from_regex(r"[0-9]+(\.[0-9]+){0,6}", fullmatch=True),
    st.text(min_size=0, max_size=8).filter(lambda s: "/" not in s),
)
_root = st.one_of(
    st.sampled_from(["", "http://h", "https://pacs.example/dicomweb", "file:///x"]),
    st.text(max_size=12),
)


@st.composite
def _wadors_ids(draw: st.DrawFn) -> str:
    """wadors imageIds, well-formed or nearly (empty parts, odd frames)."""
    frame = draw(
        st.one_of(
            st.none(),
            st.integers(min_value=0, max_value=10**6).map(str),
            st.sampled_from(["", "01", "x", "\u0663", "1/2", "-1"]),
        )
    )
    image_id = (
        f"wadors:{draw(_root)}/studies/{draw(_segment)}/series/{draw(_segment)}"
        f"/instances/{draw(_segment)}"
    )
    return image_id if frame is None else f"{image_id}/frames/{frame}"


@st.composite
def _wadouri_ids(draw: st.DrawFn) -> str:
    """wadouri imageIds: a file or zip member URI, a query, frame parameters."""
    path = "/".join(draw(st.lists(_segment, min_size=1, max_size=4)))
    member = draw(st.one_of(st.just(""), _segment.map(lambda m: f"!/{m}")))
    query = draw(
        st.lists(
            st.sampled_from(["frame=2", "frame=10", "x=1", "frame=", "a=/b"]),
            max_size=3,
        )
    )
    scheme = draw(st.sampled_from(["wadouri", "dicomweb", "dicomfile"]))
    tail = ("?" + "&".join(query)) if query else ""
    return f"{scheme}:file:///{path}{member}{tail}"


def _fuzz_corpus_ids() -> list[str]:
    cases = json.loads(FUZZ_CASES.read_text(encoding="utf-8"))
    return sorted({case["imageId"] for case in cases})


def _assert_agree(image_id: str) -> None:
    """The fast splitters say what :func:`parse_image_id` says of ``image_id``."""
    try:
        parsed = parse_image_id(image_id)
    except InvalidImageIdError:
        parsed = None
    # base_and_frame: the parser's base and frame, or the imageId itself, 1
    want = (image_id, 1) if parsed is None else (parsed.base, parsed.frame or 1)
    assert base_and_frame(image_id) == want
    # split_for_storage: lossless; a wadors imageId the parser takes splits
    # after the series, its rest the SOP Instance UID and the frame part
    prefix, rest = split_for_storage(image_id)
    assert prefix + rest == image_id
    if parsed is not None and parsed.scheme == "wadors":
        assert parsed.sop_instance_uid is not None
        assert prefix == parsed.base[: -len(parsed.sop_instance_uid)]
        assert prefix.endswith(
            f"/studies/{parsed.study_uid}/series/{parsed.series_uid}/instances/"
        )
        assert parsed.base == prefix + parsed.sop_instance_uid
    if parsed is not None:
        # every frame of an image shares its prefix (one row per series)
        first = split_for_storage(parsed.with_frame(1))[0]
        for frame in (2, 117):
            assert split_for_storage(parsed.with_frame(frame))[0] == first


def test_the_fuzz_corpus_has_imageids() -> None:
    """The corpus the agreement test reads is there and holds imageIds."""
    ids = _fuzz_corpus_ids()
    assert len(ids) > 100
    assert {i.partition(":")[0] for i in ids} >= {"wadors"}


@pytest.mark.parametrize("image_id", _fuzz_corpus_ids())
def test_splitters_agree_with_the_parser_on_the_fuzz_corpus(image_id: str) -> None:
    """split_for_storage and base_and_frame agree with parse_image_id (corpus)."""
    _assert_agree(image_id)


@given(st.one_of(_wadors_ids(), _wadouri_ids(), st.text()))
def test_splitters_agree_with_the_parser(image_id: str) -> None:
    """split_for_storage and base_and_frame agree with parse_image_id (generated)."""
    _assert_agree(image_id)


def test_split_for_storage_shares_the_series_part() -> None:
    """A wadors imageId's prefix ends after /instances/; a file's at its folder."""
    wadors = "wadors:http://h/studies/1/series/2/instances/3/frames/1"
    assert split_for_storage(wadors) == (
        "wadors:http://h/studies/1/series/2/instances/",
        "3/frames/1",
    )
    uri = "wadouri:file:///d/a/IM1?frame=1/2"
    assert split_for_storage(uri) == ("wadouri:file:///d/a/", "IM1?frame=1/2")
