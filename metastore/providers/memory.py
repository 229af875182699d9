"""An in-memory provider of values set at runtime, per imageId and type.

This module owns :class:`InMemoryProvider`, the pattern of Cornerstone's demo
``ptScalingMetaDataProvider`` and of ``calibratedPixelSpacingMetadataProvider``:
values computed elsewhere (SUV scaling factors, calibrations) are kept by
imageURI and handed back as they are. It imports only
:mod:`metastore.imageid`, :mod:`metastore.moduletypes` and
:mod:`metastore.types`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from metastore.imageid import image_id_to_uri
from metastore.moduletypes import typed_lookup_method, untyped_lookup_method
from metastore.types import ModuleValue

__all__ = ["InMemoryProvider"]


class InMemoryProvider:
    """Answers ``(type, image_id)`` from values added to it.

    Values are keyed by :func:`~metastore.imageid.image_id_to_uri` of the
    imageId (everything after the first ``:``), as Cornerstone's demo keys by
    imageURI: imageIds that differ only in their scheme name the same entry
    (``"wadouri:X"``, ``"dicomweb:X"`` and ``"wadors:X"``). A bare URL is not
    its own key: ``image_id_to_uri("http://h/x")`` is ``"//h/x"``, so ask with
    the scheme-prefixed imageId. Frames are distinct imageIds, so a value for
    a multi-frame instance is added per frame.

    Values are stored and returned as they are, not copied (as in
    Cornerstone): treat answers as read-only. Adding or removing is safe from
    several threads; :meth:`get` takes no lock.

    The object is callable (``__call__`` is :meth:`get`), so it can be
    registered itself or as its bound ``get``; register one or the other,
    not both: to a :class:`~metastore.registry.Registry` they are two
    providers.

    Example:
        >>> pt_scaling = InMemoryProvider()
        >>> pt_scaling.add("wadors:http://pacs/x", "scalingModule", {"suvbw": 2.5})
        >>> pt_scaling.get("scalingModule", "wadouri:http://pacs/x")
        {'suvbw': 2.5}
    """

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        """Create an empty provider."""
        # imageURI -> type -> value. Inner dicts are replaced, never mutated
        # in place, so a concurrent get() sees either the old or the new one.
        self._values: dict[str, dict[str, ModuleValue]] = {}
        self._lock = threading.Lock()

    def add(self, image_id: str, type: str, value: ModuleValue) -> None:
        """Set the value of ``type`` for ``image_id``, replacing any earlier one.

        Args:
            image_id: The imageId (any scheme; keyed by its URI).
            type: The metadata type, e.g. ``"scalingModule"``.
            value: The answer. ``None`` is stored but means "no answer".
        """
        key = image_id_to_uri(image_id)
        with self._lock:
            self._values[key] = {**self._values.get(key, {}), type: value}

    def add_instance(self, image_id: str, values: Mapping[str, ModuleValue]) -> None:
        """Set several types at once for ``image_id``.

        Args:
            image_id: The imageId (any scheme; keyed by its URI).
            values: ``{type: value}``; other types already set are kept.
        """
        key = image_id_to_uri(image_id)
        with self._lock:
            self._values[key] = {**self._values.get(key, {}), **values}

    def remove(self, image_id: str, type: str | None = None) -> None:
        """Forget one type of ``image_id``, or all of its types.

        Args:
            image_id: The imageId (any scheme; keyed by its URI).
            type: The type to forget; ``None`` forgets every type.
        """
        key = image_id_to_uri(image_id)
        with self._lock:
            if type is None:
                self._values.pop(key, None)
                return
            current = self._values.get(key)
            if current is None or type not in current:
                return
            rest = {t: v for t, v in current.items() if t != type}
            if rest:
                self._values[key] = rest
            else:
                del self._values[key]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._values = {}

    def __len__(self) -> int:
        """Return the number of imageURIs with at least one value."""
        return len(self._values)

    @typed_lookup_method
    def get(self, type: str, image_id: str, /, *args: object) -> object:
        """Return the value added for ``type`` and ``image_id``.

        Typed per module type as :meth:`metastore.Registry.get` is: the
        value added for ``"scalingModule"`` is taken to be a
        ``ScalingModule`` (nothing is checked when it is added).  Types
        outside ``ModuleTypeName`` (``"calibratedPixelSpacing"``...) are
        asked through :attr:`get_any`, the same function for any string.

        Args:
            type: The metadata type.
            image_id: The imageId (any scheme; looked up by its URI).
            *args: Ignored (extra registry arguments).

        Returns:
            The stored value, or ``None`` when there is none.
        """
        by_type = self._values.get(image_id_to_uri(image_id))
        return None if by_type is None else by_type.get(type)

    #: :meth:`get` for any type string (the same function), answer ``object``.
    get_any = untyped_lookup_method(get)
    __call__ = get
