"""Part 10 to DICOM JSON: the first step every indexed file goes through.

This module owns the conversion of a pydicom ``Dataset`` to a DICOM JSON
instance (PS3.18 F.2) equal, element for element, to what the oracle's
``make_cases.py`` builds with ``Dataset.to_json_dict``, only much faster:
raw values and encoded sequences are decoded directly (``_values``,
``_sequences``) and pydicom converts only what is tricky.  pydicom is
imported only by this package and by the indexer's reader.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, MutableMapping, MutableSequence
from typing import Any, cast

from pydicom import config as _pd_config
from pydicom import hooks as _pd_hooks
from pydicom import valuerep as _pd_valuerep
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from metastore.dicomjson import _sequences as _sq
from metastore.dicomjson import _values as _vr
from metastore.dicomjson._values import DELEGATE, Abort, Ctx, implicit_vr, key, tag_str
from metastore.errors import DicomError
from metastore.types import DicomJson

__all__ = [
    "DEFAULT_INLINE_TAGS",
    "OVERLAY_DATA_TAGS",
    "PIXEL_DATA_TAGS",
    "dataset_to_dicom_json",
    "raw_elements_to_dicom_json",
]

logger = logging.getLogger(__name__)

#: (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data and (7FE0,0009)
#: Double Float Pixel Data: always a BulkDataURI at the top level.
PIXEL_DATA_TAGS: frozenset[int] = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: (60xx,3000) Overlay Data of the 16 overlay groups 6000-601E.
OVERLAY_DATA_TAGS: frozenset[int] = frozenset(
    ((0x6000 + 2 * i) << 16) | 0x3000 for i in range(16)
)
#: What is kept as InlineBinary whatever its size, unless told otherwise:
#: metastore reads overlays for real (overlayPlaneModule, divergence 3).
DEFAULT_INLINE_TAGS: frozenset[int] = OVERLAY_DATA_TAGS

# Text VRs whose JSON values are the element's str values, unchanged.
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


class _Fallback(Exception):
    """pydicom cannot convert an element: redo the dataset as make_cases does."""

    def __init__(self, where: str, exc: BaseException) -> None:
        self.where = where
        self.reason = f"{type(exc).__name__}: {exc}"
        super().__init__(f"{where}: {self.reason}")


class _Bulk(str):
    """Placeholder pydicom puts in "BulkDataURI"; resolved by :func:`_vr.bulk`."""

    __slots__ = ("elem",)
    elem: DataElement


def _bulk_marker(elem: DataElement) -> str:
    """Our bulk_data_element_handler for pydicom: remember the element."""
    marker = _Bulk()
    marker.elem = elem
    return marker


def dataset_to_dicom_json(
    ds: Dataset,
    *,
    bulk_data_uri: Callable[[str], str] | None = None,
    bulk_threshold: int = 1024,
    inline_tags: frozenset[int] | None = None,
    strict: bool = False,
) -> DicomJson:
    """Convert a pydicom dataset to a DICOM JSON instance, fast and exactly.

    The result equals what the oracle's ``make_cases.convert()`` builds:
    ``ds.to_json_dict(bulk_data_threshold=bulk_threshold,
    bulk_data_element_handler=...)``, every top-level Pixel Data element
    ((7FE0,0010), (7FE0,0008), (7FE0,0009)) as a BulkDataURI, the file
    meta's (0002,0010) TransferSyntaxUID added, keys in tag order (in
    sequence items too).  When pydicom cannot convert some value (e.g. IS
    ``"1A"``), the whole dataset is redone the way make_cases does:
    ``to_json_dict(suppress_invalid_tags=True)`` with strict reading, which
    drops the offending elements (logged as warnings) and keeps the rest.

    Args:
        ds: The dataset, typically from ``dcmread(path, stop_before_pixels=True)``.
            Elements pydicom has not converted yet are decoded here without
            being converted in ``ds``.
        bulk_data_uri: Called with the 8-hex-digit tag (``"7FE00010"``) of an
            element that is bulk data; returns its BulkDataURI.  ``None``:
            elements that would be bulk data (Pixel Data included) are left
            out of the result.
        bulk_threshold: Binary values whose base64 text would be longer than
            this become bulk data (pydicom's ``bulk_data_threshold``).
        inline_tags: Tags always kept as InlineBinary whatever their size;
            default :data:`DEFAULT_INLINE_TAGS` (overlay data of groups
            6000-601E).
        strict: Raise :class:`DicomError` on the first value pydicom cannot
            convert instead of dropping it the make_cases way.

    Returns:
        The DICOM JSON instance.

    Raises:
        DicomError: With ``strict``, a value pydicom cannot convert; always,
            an unreadable (0002,0010) TransferSyntaxUID.  The message names
            the offending tag, with its path through sequences.
    """
    ctx = Ctx(
        bulk_data_uri,
        bulk_threshold,
        DEFAULT_INLINE_TAGS if inline_tags is None else inline_tags,
    )
    try:
        try:
            try:
                meta = _convert(ds, ctx, "", _fast_path_allowed(), top=True)
            except _Fallback:
                raise
            except Exception as exc:  # a bug here must not cost exactness
                logger.warning("direct decoding failed, using pydicom: %r", exc)
                meta = _convert(ds, ctx, "", False, top=True)
        except _Fallback as fb:
            if strict:
                raise DicomError(f"{fb.where} cannot be converted: {fb.reason}") from fb
            logger.debug("to_json_dict fallback: %s", fb)
            meta = _make_cases_fallback(ds, ctx)
        ts = _transfer_syntax(ds, ctx)
    finally:
        ctx.close()
    return _with_transfer_syntax(meta, ts)


def raw_elements_to_dicom_json(
    elements: dict[BaseTag, RawDataElement | DataElement],
    *,
    implicit: bool,
    little: bool,
    transfer_syntax: str,
    bulk_data_uri: Callable[[str], str] | None = None,
    bulk_threshold: int = 1024,
    inline_tags: frozenset[int] | None = None,
) -> DicomJson | None:
    """Convert a file's data set from its raw elements, without a ``FileDataset``.

    ``elements`` is what pydicom's ``read_dataset`` collects from
    ``data_element_generator`` for the top-level data set of a file (tag ->
    ``RawDataElement``, or ``DataElement`` for a sequence of undefined
    length, which pydicom reads into datasets; in the order read; no pixel
    data).  The answer is the one :func:`dataset_to_dicom_json` gives for
    the ``dcmread(stop_before_pixels=True)`` dataset of that file:

    - every element is decoded as :func:`dataset_to_dicom_json` decodes it,
      through read-only views, as long as none needs pydicom itself;
    - else (nothing having been converted in place) the dataset
      ``read_partial`` builds is built from the same elements (the same
      ``Dataset``, encodings and character set; a ``FileDataset`` adds only
      the file meta and file attributes, which the conversion does not
      read) and converted;
    - else ``None``: the caller reads the file with ``dcmread``.

    Args:
        elements: The raw elements, unconverted.
        implicit: Implicit VR data (ambiguous VRs are resolved with it).
        little: Little endian data.
        transfer_syntax: (0002,0010) TransferSyntaxUID, as pydicom's UID.
        bulk_data_uri: As for :func:`dataset_to_dicom_json`.
        bulk_threshold: As for :func:`dataset_to_dicom_json`.
        inline_tags: As for :func:`dataset_to_dicom_json`.
    """
    ctx = Ctx(
        bulk_data_uri,
        bulk_threshold,
        DEFAULT_INLINE_TAGS if inline_tags is None else inline_tags,
    )
    meta = _from_raw(elements, little, ctx) if _fast_path_allowed() else None
    if meta is None:
        # _from_raw changed nothing (no element was converted in place, not
        # even in the items of sequences pydicom read): the elements are as
        # read_partial found them.
        try:
            meta = dataset_to_dicom_json(
                _dataset(elements, implicit, little),
                bulk_data_uri=bulk_data_uri,
                bulk_threshold=bulk_threshold,
                inline_tags=inline_tags,
            )
        except Exception:  # dcmread's dataset decides
            return None
    return _with_transfer_syntax(meta, transfer_syntax)


def _from_raw(
    elements: dict[BaseTag, RawDataElement | DataElement], little: bool, ctx: Ctx
) -> DicomJson | None:
    """The direct decoding of raw elements; None if one needs pydicom."""
    try:
        # What dcmread's dataset decodes text with (its _character_set):
        # pydicom's convert_encodings of (0008,0005) converted as CS, or the
        # default without one.
        charset = elements.get(_CHARSET_TAG)
        if charset is None:
            enc = [default_encoding]
        elif (
            type(charset) is RawDataElement
            and charset.VR in (None, "CS")
            and type(charset.value) is bytes
        ):
            enc = _vr.item_encodings(charset.value, ctx)
        else:
            return None
        # _convert reads only these attributes of a dataset until it needs
        # pydicom to convert an element (ds[tag]), which _RawDataset refuses.
        view = cast(Dataset, _RawDataset(elements, little, enc))
        return _convert(view, ctx, "", True, top=True)
    except Exception:  # _NeedsDataset (as _Fallback) or anything else: pydicom's
        return None
    finally:
        ctx.close()


def _dataset(
    elements: dict[BaseTag, RawDataElement | DataElement], implicit: bool, little: bool
) -> Dataset:
    """The data set ``read_partial`` builds from these elements (without file meta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as around dcmread
        # read_dataset: Dataset(raw, parent_encoding=default_encoding), its
        # original encoding then replaced by read_partial's, whose character
        # set is the dataset's _character_set (which converts (0008,0005))
        ds = Dataset(elements, parent_encoding=default_encoding)
        ds.set_original_encoding(implicit, little, ds._character_set)
    return ds


_CHARSET_TAG = BaseTag(0x00080005)


class _NeedsDataset(Exception):
    """An element only pydicom converts: convert the dcmread dataset instead."""


class _RawDataset:
    """The parts of a dataset :func:`_convert` reads, over raw elements only.

    Converting through it never changes a dataset: an element that pydicom
    would have to convert (in place, in a real ``Dataset``) raises
    :class:`_NeedsDataset` instead, so the elements can still be handed to
    the ``Dataset`` that ``read_partial`` would have built.
    """

    __slots__ = ("_dict", "_read_little", "original_character_set")

    def __init__(
        self,
        elements: MutableMapping[BaseTag, Any],
        little: bool,
        enc: str | MutableSequence[str],
    ) -> None:
        self._dict = elements
        self._read_little = little
        self.original_character_set = enc

    def __getitem__(self, tag: int) -> DataElement:
        # Dataset.__getitem__ converts a raw element, and returns any other
        # as it is: a sequence of undefined length, whose items pydicom has
        # read into datasets already.  Those items are read through views
        # too (their raw elements, encoding and character set as read).
        elem = self._dict[tag]  # type: ignore[index]
        if type(elem) is DataElement and elem.VR == "SQ":
            items = [
                _RawDataset(item._dict, item._read_little, item.original_character_set)
                for item in elem.value
            ]
            return cast(DataElement, _RawSequence(items))
        raise _NeedsDataset(tag_str(hash(tag)))


class _RawSequence:
    """What :func:`_element` reads of a sequence element: its VR and items."""

    __slots__ = ("value",)
    VR = "SQ"

    def __init__(self, items: list[_RawDataset]) -> None:
        self.value = items


def _with_transfer_syntax(meta: DicomJson, ts: Any) -> DicomJson:
    """Add (0002,0010) TransferSyntaxUID as make_cases does, keeping tag order."""
    # meta is in tag order; keep it so without sorting again when we can.
    if ts:
        ts_value = {"vr": "UI", "Value": [str(ts)]}
        if "00020010" in meta:
            meta["00020010"] = ts_value
        elif next(iter(meta), "FFFFFFFF") > "00020010":
            meta = {"00020010": ts_value, **meta}
        else:
            meta["00020010"] = ts_value
            meta = dict(sorted(meta.items()))
    return meta


def _transfer_syntax(ds: Dataset, ctx: Ctx) -> Any:
    """make_cases': ``ds.file_meta.TransferSyntaxUID``, or None."""
    meta = getattr(ds, "file_meta", None)
    elem = getattr(meta, "_dict", {}).get(0x00020010)
    if type(elem) is DataElement:
        return elem.value  # what meta.TransferSyntaxUID returns, sooner
    try:
        ctx.quiet()
        return getattr(meta, "TransferSyntaxUID", None)
    except Exception as exc:
        raise DicomError(
            f"(0002,0010) TransferSyntaxUID cannot be read: {exc}"
        ) from exc


def _fast_path_allowed() -> bool:
    """Whether pydicom's settings are the defaults the direct decoding assumes."""
    c = _pd_config
    h = _pd_hooks.hooks
    return (
        c.settings.reading_validation_mode != c.RAISE
        and not c.datetime_conversion
        and not c.use_DS_numpy
        and not c.use_IS_numpy
        and not c.use_DS_decimal
        and _pd_valuerep.DSclass is _pd_valuerep.DSfloat
        and not c.use_none_as_empty_text_VR_value
        and c.replace_un_with_known_vr
        and c.data_element_callback is None
        and h.raw_element_vr is _pd_hooks.raw_element_vr
        and h.raw_element_value is _pd_hooks.raw_element_value
        and not h.raw_element_kwargs
    )


def _encodings(ds: Dataset, ctx: Ctx) -> list[str]:
    """The Python encodings pydicom decodes ``ds``'s text with."""
    # What Dataset.__getitem__ passes to convert_raw_data_element: the
    # charset read with the dataset (sequence items inherit their parent's
    # unless they have their own (0008,0005)), else (0008,0005) itself.
    enc = ds.original_character_set
    if not enc:
        ctx.quiet()
        enc = ds._character_set
    if isinstance(enc, str):
        return [enc]
    return list(enc) or ["iso8859"]


def _convert(ds: Dataset, ctx: Ctx, path: str, fast: bool, *, top: bool) -> DicomJson:
    """Convert one dataset (the instance or a sequence item)."""
    out: DicomJson = {}
    enc = _encodings(ds, ctx) if fast else []
    # The value memo of this dataset's encoding; elements encoded otherwise
    # (never seen in practice) take the slow path.
    little = ds._read_little if ds._read_little is not None else True
    caches = _vr.caches_for(little, enc) if fast else {}
    raw_type = RawDataElement
    tuple_type = tuple
    bytes_type = bytes
    empty = _vr.EMPTY
    keys = _vr.KEYS
    implicit_vrs = _vr.IMPLICIT_VRS
    last = -1
    ordered = True
    value: Any
    # A copy: converting an element through pydicom replaces it in ds._dict.
    for tag, elem in list(ds._dict.items()):
        t = hash(tag)  # the plain int: BaseTag's __eq__ is slow in dict lookups
        if type(elem) is raw_type:
            _, vr, _, data, _, _, elem_little, _, _ = elem
            if vr is None:
                vr = implicit_vrs.get(t) or implicit_vr(t)
            cache = caches.get(vr)  # type: ignore[arg-type]
            if (
                cache is not None
                and data.__class__ is bytes_type
                and data
                and elem_little is little
            ):
                # the hot path: a text or number value, usually memoised
                v = cache.get(data)
                if v is None:
                    v = _vr.decode(cache, vr, data, little, enc)  # type: ignore[arg-type]
                if v.__class__ is tuple_type:
                    value = {"vr": vr, "Value": list(v)}
                elif v is empty:
                    value = {"vr": vr}
                else:
                    value = _vr.element(v, vr)  # type: ignore[arg-type]
                    if value is DELEGATE:
                        value = _element(ds, tag, ctx, path, fast)
            else:
                value = _raw(ds, tag, elem, vr, ctx, path, fast, enc)
        elif type(elem) is DataElement and elem.VR in _STRING_VRS:
            # Already converted text, e.g. (0008,0005) that dcmread reads:
            # to_json_dict's own rule, minus its overhead.
            v = elem.value
            if isinstance(v, str):
                value = {"vr": elem.VR, "Value": [v]} if v else {"vr": elem.VR}
            elif type(v) is MultiValue and len(v) > 1:
                value = {"vr": elem.VR, "Value": list(v)}
            else:
                value = _element(ds, tag, ctx, path, fast)
        else:
            value = _element(ds, tag, ctx, path, fast)
        if value is not None:
            k = keys.get(t)
            out[k if k is not None else key(t)] = value
        if t < last:
            ordered = False
        last = t
    if top:
        _pixel_data(out, ctx)
    return out if ordered else dict(sorted(out.items()))


def _raw(
    ds: Dataset,
    tag: int,
    raw: RawDataElement,
    vr: str | None,
    ctx: Ctx,
    path: str,
    fast: bool,
    enc: list[str],
) -> Any:
    """A raw element off the hot path: binary, SQ, SS, empty, private, UN..."""
    t = hash(tag)
    data = raw.value
    if not fast or (data is None and raw.length) or (data and type(data) is not bytes):
        # deferred read, or bytes in a form we do not memoise
        return _element(ds, tag, ctx, path, fast)
    if (vr is None or vr == "UN") and t >> 16 & 1:
        # a private tag without a VR (implicit) or UN: pydicom looks it up
        # in its private dictionary under the block's private creator
        vr = _private_vr(ds, t, enc, ctx)
        if vr == "UN":
            value: Any = _vr.binary(t, vr, data, ctx) if data else {"vr": vr}
            return value
    if vr is None or vr not in _vr.KNOWN_VRS:
        # UN of a public tag, ambiguous VR in implicit VR data, unknown VR
        return _element(ds, tag, ctx, path, fast)
    if not data:
        return {"vr": "SQ", "Value": []} if vr == "SQ" else {"vr": vr}
    little = raw.is_little_endian
    cache = _vr.caches_for(little, enc).get(vr)
    try:
        if cache is None:
            value = _sq.other(t, vr, data, little, enc, ctx, raw.is_implicit_VR)
        else:
            v = cache.get(data)
            if v is None:
                v = _vr.decode(cache, vr, data, little, enc)
            value = _vr.element(v, vr)
    except Abort:
        value = DELEGATE
    if value is DELEGATE:
        return _element(ds, tag, ctx, path, fast)
    return value


def _private_vr(ds: Dataset, tag: int, enc: list[str], ctx: Ctx) -> str | None:
    """pydicom's ``_private_vr_for_tag`` for a private ``tag``; None: ask pydicom."""
    element = tag & 0xFFFF
    if 0x0010 <= element < 0x0100:
        return "LO"  # a private creator
    if not element & 0xFF00:
        return "UN"
    creator_elem = ds._dict.get((tag & 0xFFFF0000) | element >> 8)  # type: ignore[call-overload]
    if creator_elem is None:
        return "UN"
    if type(creator_elem) is RawDataElement:
        data = creator_elem.value
        if creator_elem.VR not in (None, "LO") or (
            data is None and creator_elem.length
        ):
            return None
        if not data:
            return "UN"  # "" is no private creator pydicom knows
        cache = _vr.caches_for(creator_elem.is_little_endian, enc)["LO"]
        v = cache.get(data)
        if v is None:
            v = _vr.decode(cache, "LO", data, creator_elem.is_little_endian, enc)
        if v.__class__ is not tuple:
            return "UN" if v is _vr.EMPTY else None
        if len(v) != 1:
            return "UN"  # a multi-valued creator is no key of the dictionary
        creator = v[0]
    else:
        creator = creator_elem.value
        if not isinstance(creator, str):
            return None
    return _vr.private_vr(tag, creator, ctx)


def _pixel_data(out: DicomJson, ctx: Ctx) -> None:
    """Top-level Pixel Data is always a BulkDataURI (or left out), as in make_cases."""
    for tag in PIXEL_DATA_TAGS:
        k = key(tag)
        value = out.get(k)
        if value is not None:
            if ctx.handler is None:
                del out[k]
            else:
                out[k] = {"vr": value["vr"], "BulkDataURI": ctx.handler(k)}


def _element(
    ds: Dataset, tag: int, ctx: Ctx, path: str, fast: bool
) -> dict[str, Any] | None:
    """Convert one element through pydicom (exact by construction)."""
    ctx.quiet()
    try:
        elem = ds[tag]
        if elem.VR == "SQ":
            where = path + tag_str(tag)
            return {
                "vr": "SQ",
                "Value": [
                    _convert(item, ctx, f"{where}[{i}]", fast, top=False)
                    for i, item in enumerate(elem.value)
                ],
            }
        value: dict[str, Any] = elem.to_json_dict(_bulk_marker, ctx.threshold)
    except _Fallback:
        raise
    except Exception as exc:
        raise _Fallback(path + tag_str(tag), exc) from exc
    marker = value.get("BulkDataURI")
    if isinstance(marker, _Bulk):
        return _vr.bulk(hash(tag), elem.VR, marker.elem.value, ctx)
    return value


def _make_cases_fallback(ds: Dataset, ctx: Ctx) -> DicomJson:
    """What make_cases.convert() does when to_json_dict raises."""
    ctx.quiet()
    try:
        meta: DicomJson = ds.to_json_dict(
            bulk_data_threshold=ctx.threshold, bulk_data_element_handler=_bulk_marker
        )
    except Exception:
        # Dataset.to_json_dict(suppress_invalid_tags=True), spelled out to log
        # what is dropped: elements still raw are now converted strictly.
        meta = {}
        with _pd_config.strict_reading():
            for tag in list(ds.keys()):
                try:
                    elem = ds[tag]
                    meta[key(hash(tag))] = elem.to_json_dict(
                        _bulk_marker, ctx.threshold
                    )
                except Exception as exc:
                    logger.warning(
                        "dropped %s: %s: %s", tag_str(tag), type(exc).__name__, exc
                    )
    return _resolve(meta, ctx, top=True)


def _resolve(meta: DicomJson, ctx: Ctx, *, top: bool) -> DicomJson:
    """Replace the placeholders of a to_json_dict result; sort the top level."""
    for k in list(meta):
        value = meta[k]
        tag = int(k, 16)
        if top and tag in PIXEL_DATA_TAGS:
            continue  # _pixel_data() below
        marker = value.get("BulkDataURI")
        if isinstance(marker, _Bulk):
            resolved = _vr.bulk(tag, value["vr"], marker.elem.value, ctx)
            if resolved is None:
                del meta[k]
            else:
                meta[k] = resolved
        elif value.get("vr") == "SQ":
            items = value.get("Value", [])
            for item in items:
                _resolve(item, ctx, top=False)
            value["Value"] = [dict(sorted(item.items())) for item in items]
    if top:
        _pixel_data(meta, ctx)
        return dict(sorted(meta.items()))
    return meta
