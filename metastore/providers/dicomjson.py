"""An in-memory provider of DICOM JSON instances: Cornerstone's WADO-RS pair.

This module owns :class:`DicomJsonProvider`, the counterpart of
``metaDataManager`` (``add`` / ``remove`` / ``purge``, multi-frame instances
keyed under frame 1) plus ``metaDataProvider`` (``get(type, image_id)``) of
``@cornerstonejs/dicom-image-loader``'s WADO-RS loader.  Values come from
``metastore.modules``; frames are combined once and cached, never mutating the
stored instance (divergence 4).  It imports the ``metastore.modules`` face,
``metastore.imageid``, ``metastore.errors``, ``metastore.moduletypes`` and
``metastore.types`` (pydicom
only lazily, through ``metastore.dicomjson`` in :meth:`add_dataset`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from metastore.errors import InvalidImageIdError
from metastore.imageid import image_id_to_uri, parse_image_id
from metastore.modules import (
    ANSWERED_TYPES,
    Frame,
    combine_frame,
    is_multiframe,
    module_from_frame,
    multiframe_module,
    parse_int,
)
from metastore.moduletypes import (
    ModuleAnswer,
    ModuleType,
    typed_lookup_method,
    untyped_lookup_method,
)
from metastore.types import DicomJson

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["DicomJsonProvider"]

_MISSING: Final = object()


_FRAMES = "/frames/"
_WADORS = "wadors:"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One added instance: its JSON and ``metaDataManager``'s isMultiframe flag."""

    json: DicomJson
    multiframe: bool


class DicomJsonProvider:
    """Answers Cornerstone metadata questions from DICOM JSON added to it.

    Keying is Cornerstone's ``metaDataManager``'s: an instance is stored under
    the imageId's URI (everything after its first ``:``).  A question is
    answered from the entry stored under the imageId's own URI if that is a
    single-frame instance; otherwise from the entry stored under the frame-1
    URI, combined for the frame asked about.  Cornerstone finds both from the
    first ``/frames/`` of the URI (``.../frames/1`` and ``parseInt`` of what
    follows), so a multi-frame instance must be added under its frame-1
    imageId: added only under frame 2 it answers nothing.
    ``multiframeModule`` always reads the frame-1 entry.

    Differences from Cornerstone, all deliberate: the stored JSON is never
    mutated, so no frame depends on the frames asked before (divergence 4);
    re-adding or removing an instance drops its cached frames (Cornerstone
    keeps serving stale combined frames); frames past the end answer
    ``None`` (divergence 2); an imageId of another scheme without
    ``/frames/`` (``wadouri:``, ``dicomfile:`` with ``?frame=N``) finds its
    frame 1 through :func:`metastore.imageid.parse_image_id` (Cornerstone's
    WADO-RS manager cannot, and answers nothing for their other frames).  A
    ``wadors:`` imageId is always located as Cornerstone does.

    Answers may share objects with the stored JSON (a PN dict, functional
    group items): treat them as read-only.  The provider does not copy what
    is added; do not change it afterwards.  It is safe to use from several
    threads.

    Example:
        >>> provider = DicomJsonProvider()
        >>> provider.add(image_id, instance_json)  # doctest: +SKIP
        >>> provider.get("generalSeriesModule", image_id)["modality"]  # doctest: +SKIP
        'CT'
    """

    def __init__(self, *, cache_size: int = 1024) -> None:
        """Create an empty provider.

        Args:
            cache_size: How many instances keep their combined frames cached
                (least recently used first out).

        Raises:
            ValueError: ``cache_size`` is negative.
        """
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size!r}.")
        self._entries: dict[str, _Entry] = {}
        # frame-1 URI -> {asked URI -> combined Frame, or None}
        self._frames: OrderedDict[str, dict[str, Frame | None]] = OrderedDict()
        self._cache_size = cache_size
        # bumped by every change, so a frame computed meanwhile is not cached
        self._generation = 0
        self._lock = threading.Lock()

    # -- metaDataManager --------------------------------------------------

    def add(self, image_id: str, dicom_json: DicomJson) -> None:
        """Store one instance's DICOM JSON under ``image_id``.

        Args:
            image_id: The imageId (for a multi-frame instance: its frame 1).
            dicom_json: The instance (PS3.18 F.2), not copied.

        Raises:
            TypeError: ``image_id`` is not a string or ``dicom_json`` not a
                dict.
        """
        if not isinstance(image_id, str):
            raise TypeError(f"image_id must be a str, not {type(image_id).__name__}.")
        if not isinstance(dicom_json, dict):
            raise TypeError(
                f"dicom_json must be a dict, not {type(dicom_json).__name__}."
            )
        uri = image_id_to_uri(image_id)
        entry = _Entry(dicom_json, is_multiframe(dicom_json))
        group = self._locate(image_id)[1]
        with self._lock:
            self._entries[uri] = entry
            self._forget(uri, group)

    def add_dataset(
        self,
        image_id: str,
        dataset: Dataset,
        *,
        bulk_data_uri: Callable[[str], str] | None = None,
    ) -> DicomJson:
        """Convert a pydicom dataset to DICOM JSON and :meth:`add` it.

        Args:
            image_id: The imageId (for a multi-frame instance: its frame 1).
            dataset: The dataset (for example from ``dcmread``); the file
                meta's TransferSyntaxUID is kept as (0002,0010).
            bulk_data_uri: Passed to
                :func:`metastore.dicomjson.dataset_to_dicom_json`: makes the
                BulkDataURI of a bulk element from its tag (``None``: such
                elements are left out).

        Returns:
            The DICOM JSON that was added.

        Raises:
            TypeError: ``image_id`` is not a string.
            DicomError: The dataset cannot be converted.
        """
        from metastore.dicomjson import dataset_to_dicom_json  # pydicom only here

        if not isinstance(image_id, str):
            raise TypeError(f"image_id must be a str, not {type(image_id).__name__}.")
        dicom_json = dataset_to_dicom_json(dataset, bulk_data_uri=bulk_data_uri)
        self.add(image_id, dicom_json)
        return dicom_json

    def remove(self, image_id: str) -> None:
        """Forget what was added under ``image_id`` (nothing if unknown).

        Args:
            image_id: The imageId used with :meth:`add`.
        """
        uri = image_id_to_uri(image_id)
        group = self._locate(image_id)[1]
        with self._lock:
            self._entries.pop(uri, None)
            self._forget(uri, group)

    def purge(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
            self._frames.clear()
            self._generation += 1

    def __len__(self) -> int:
        """How many imageIds have something added under them."""
        return len(self._entries)

    # -- metaDataProvider -------------------------------------------------

    @typed_lookup_method
    def get(self, type: str, image_id: str, /, *args: Any) -> ModuleAnswer | None:
        """Answer one metadata question, as the WADO-RS provider does.

        Typed per module type as :meth:`metastore.Registry.get` is
        (``get("imagePlaneModule", image_id)`` is an ``ImagePlaneModule |
        None``); :attr:`get_any` is the same function for any string.

        Args:
            type: The module type (``"imagePlaneModule"``...).
            image_id: The imageId asked about.
            *args: Ignored (the registry passes extra arguments through).

        Returns:
            The module value; ``None`` for no answer: an unknown imageId, a
            type this provider does not answer, a frame that is not an image.

        Raises:
            DicomError: Where Cornerstone throws and no divergence applies (a
                null RadiopharmaceuticalInformationSequence or ultrasound
                region item).
        """
        if type not in ANSWERED_TYPES or not isinstance(image_id, str):
            return None
        uri, group, frame = self._locate(image_id)
        if type == ModuleType.MULTIFRAME:
            source = self._multiframe_source(uri, group, frame)
            return None if source is None else multiframe_module(source, image_id)
        combined = self._frame(uri, group, frame)
        if combined is None:
            return None
        if type == ModuleType.INSTANCE and self._is_direct(uri) and uri != group:
            # instance merges multiframeModule, which reads the frame-1 entry
            source = self._multiframe_source(uri, group, frame)
            mf = None if source is None else multiframe_module(source, image_id)
            return module_from_frame(
                type, combined, image_id, {ModuleType.MULTIFRAME: mf}
            )
        return module_from_frame(type, combined, image_id)

    #: :meth:`get` for any type string (the same function).
    get_any = untyped_lookup_method(get)
    __call__ = get

    # -- internals --------------------------------------------------------

    @staticmethod
    def _locate(image_id: str) -> tuple[str, str | None, int | None]:
        """``(URI, frame-1 URI, frame)`` of an imageId, as Cornerstone finds them.

        Cornerstone takes the first ``/frames/`` of the URI: the frame-1 URI
        is everything up to it plus ``1``, the frame ``parseInt`` of the rest.
        A ``wadors:`` imageId without ``/frames/`` keeps Cornerstone's rule
        too (cut at character 7).  Other imageIds without ``/frames/`` ask
        :func:`~metastore.imageid.parse_image_id` instead (``?frame=N``; no
        frame means frame 1 of itself).
        """
        uri = image_id_to_uri(image_id)
        # Cornerstone quirk: the *first* "/frames/", even one in the root URL
        index = uri.find(_FRAMES)
        if index >= 0 or image_id.startswith(_WADORS):
            # Cornerstone quirk: without "/frames/" indexOf gives -1, so a
            # wadors: URI is cut after 7 characters (its frame-1 URI is
            # "http://1"): a multi-frame instance answers nothing there, and
            # multiframeModule answers nothing for any instance.
            cut = index + len(_FRAMES)
            return uri, uri[:cut] + "1", parse_int(uri[cut:])
        try:
            parsed = parse_image_id(image_id)
        except InvalidImageIdError:
            return uri, None, None
        if parsed.frame is None:
            return uri, uri, 1
        return uri, image_id_to_uri(parsed.with_frame(1)), parsed.frame

    def _forget(self, uri: str, group: str | None) -> None:
        """Drop cached frames that may depend on ``uri`` (lock held)."""
        self._frames.pop(uri, None)
        if group is not None:
            self._frames.pop(group, None)
        self._generation += 1

    def _is_direct(self, uri: str) -> bool:
        """Whether a single-frame instance was added under exactly this URI."""
        entry = self._entries.get(uri)
        return entry is not None and not entry.multiframe

    def _multiframe_source(
        self, uri: str, group: str | None, frame: int | None
    ) -> Frame | None:
        """The frame of the frame-1 entry that multiframeModule reads."""
        if group is None or frame is None:
            return None
        if uri == group or not self._is_direct(uri):
            return self._frame(uri, group, frame)
        first = self._entries.get(group)
        if first is None:
            return None
        result = combine_frame(first.json, frame)
        if result is None:
            # The frame-1 entry has no functional groups to pick from: its
            # multiframeModule does not depend on the frame asked about.
            one = combine_frame(first.json, 1)
            if one is not None and not one.merged:
                result = one
        return result

    def _frame(self, uri: str, group: str | None, frame: int | None) -> Frame | None:
        """The combined frame ``metaDataManager.get`` would return (cached)."""
        key = uri if group is None else group
        with self._lock:
            frames = self._frames.get(key)
            if frames is not None:
                self._frames.move_to_end(key)
                cached = frames.get(uri, _MISSING)
                if cached is not _MISSING:
                    return cached  # type: ignore[return-value]
            entry = self._entries.get(uri)
            first = None if group is None else self._entries.get(group)
            generation = self._generation
        if entry is not None and not entry.multiframe:
            # A single-frame instance answers for the URI it was added under.
            result = combine_frame(entry.json, 1)
        elif first is None or frame is None:
            result = None
        else:
            result = combine_frame(first.json, frame)
        if self._cache_size:
            with self._lock:
                if self._generation == generation:  # nothing changed meanwhile
                    self._frames.setdefault(key, {})[uri] = result
                    self._frames.move_to_end(key)
                    while len(self._frames) > self._cache_size:
                        self._frames.popitem(last=False)
        return result
