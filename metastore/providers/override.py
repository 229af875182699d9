"""Field-level runtime overrides layered over other providers.

This module owns :class:`OverrideProvider`: it patches chosen fields of a
module for one image, one series or one study and lets every other field come
from "the value below" (the provider or registry entries it sits above),
instead of restating whole modules as Cornerstone's providers must. It imports
:mod:`metastore.imageid`, :mod:`metastore.errors`, :mod:`metastore.moduletypes`
and :mod:`metastore.types` (the registry only for type annotations: a registry
is recognised by its ``chain_after`` method).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final, Literal, cast

from metastore.errors import InvalidImageIdError
from metastore.imageid import image_id_to_uri, parse_image_id
from metastore.moduletypes import (
    ModuleType,
    typed_lookup_method,
    untyped_lookup_method,
)
from metastore.types import JSON, Provider

if TYPE_CHECKING:
    # For annotations only: providers sit below the registry and do not
    # import it at run time; a registry is recognised by its chain_after.
    from metastore.registry import ProviderLike, Registry

__all__ = ["OverrideProvider"]

_Scope = Literal["image", "series", "study"]
#: Scopes from least to most specific: the merge order of their fields.
_SCOPES: Final[tuple[_Scope, ...]] = ("study", "series", "image")
_Fields = dict[str, JSON]
#: The (type, image_id) questions a thread is asking below (re-entry guard).
_Active = set[tuple[str, str]]


class OverrideProvider:
    """Overrides chosen fields of a module, per image, series or study.

    ``get(type, image_id, *args)`` works in three steps:

    1. **Does an override apply?** If no override was set for ``type`` the
       answer is ``None`` at once (one dict look-up), so in a registry the
       chain simply continues. Otherwise the fields set for the study, the
       series and the image of ``image_id`` are merged in that order, the
       more specific scope winning. An image override is keyed like
       :class:`~metastore.providers.memory.InMemoryProvider`, by
       :func:`~metastore.imageid.image_id_to_uri`. Series and study UIDs come
       from a ``wadors:`` imageId itself, else from ``generalSeriesModule``
       (``seriesInstanceUID``, ``studyInstanceUID``) of the value below,
       cached per imageId. If no scope matches, the answer is ``None``.
    2. **The value below.** With ``below`` a provider (a callable, or an
       object with ``get``), it is asked ``below(type, image_id, *args)``.
       With ``below`` a :class:`~metastore.registry.Registry` in which this
       provider is registered (as itself or as its bound ``get``), the
       registry continues its chain strictly after this provider's entry
       (:meth:`Registry.chain_after`): the providers of lower priority, and
       those of equal priority added earlier. If this provider is not
       registered there, the whole registry is asked.
    3. **Patch.** A dict below gives a new dict ``{**below, **fields}`` (the
       value below is never mutated). No value below (``None``) gives a copy
       of the fields alone. Any other value (for example the list of
       ``ultrasoundEnhancedRegionModule``) is returned unchanged: there are
       no fields to patch.

    Override values are deep-copied when set and when answered, so callers
    may mutate what they get. Setting and removing overrides is thread-safe;
    :meth:`get` takes no lock.

    If this provider is reached again while it is looking up the value below
    for the same ``(type, image_id)`` in the same thread (for example when it
    is registered through a wrapper function that ``chain_after`` cannot
    recognise), the nested call answers ``None``, which makes the chain
    continue below it instead of recursing forever.

    Example:
        >>> from metastore.registry import Registry
        >>> registry = Registry()
        >>> registry.add_provider(lambda t, i, *a: {"rows": 512, "pixelSpacing": [1, 1]})
        >>> overrides = OverrideProvider(registry)
        >>> registry.add_provider(overrides.get, 100)
        >>> overrides.set("imagePlaneModule", {"pixelSpacing": [0.5, 0.5]}, series_uid="1.2.3")
        >>> registry.get("imagePlaneModule", "wadors:h/studies/1/series/1.2.3/instances/4/frames/1")
        {'rows': 512, 'pixelSpacing': [0.5, 0.5]}
    """  # noqa: E501

    def __init__(
        self, below: Registry | ProviderLike, *, uid_cache_size: int = 65536
    ) -> None:
        """Create an override layer with no overrides.

        Args:
            below: Where the value below comes from: a
                :class:`~metastore.registry.Registry` (usually the one this
                provider is then registered in) or a provider.
            uid_cache_size: How many imageIds' series/study UIDs (found through
                ``generalSeriesModule``) to remember.

        Raises:
            TypeError: ``below`` is neither a registry (anything with
                ``chain_after``, see :class:`~metastore.registry.Registry`)
                nor a provider.
        """
        self._registry: Registry | None = None
        self._below: Provider | None = None
        if callable(getattr(below, "chain_after", None)):
            self._registry = cast("Registry", below)
        elif callable(below):
            self._below = below
        elif callable(getattr(below, "get", None)):
            self._below = below.get
        else:
            raise TypeError(f"below must be a Registry or a provider, not {below!r}.")
        # type -> scope -> key -> fields. Field dicts are replaced, never
        # mutated, so get() reads them without a lock.
        self._overrides: dict[str, dict[_Scope, dict[str, _Fields]]] = {}
        self._uid_cache: dict[str, tuple[str | None, str | None]] = {}
        self._uid_cache_size = uid_cache_size
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- setting overrides ------------------------------------------------

    @staticmethod
    def _scope(
        image_id: str | None, series_uid: str | None, study_uid: str | None
    ) -> tuple[_Scope, str]:
        """Return the one scope given, with its key."""
        candidates: tuple[tuple[_Scope, str | None], ...] = (
            ("image", image_id),
            ("series", series_uid),
            ("study", study_uid),
        )
        given = [(scope, key) for scope, key in candidates if key is not None]
        if len(given) != 1:
            raise ValueError(
                "Give exactly one of image_id, series_uid and study_uid, "
                f"not {len(given)}."
            )
        scope, key = given[0]
        if not key:  # a programmer mistake
            raise ValueError(f"The {scope} key must be a non-empty string.")
        return scope, (image_id_to_uri(key) if scope == "image" else key)

    def set(
        self,
        type: str,
        fields: Mapping[str, JSON],
        *,
        image_id: str | None = None,
        series_uid: str | None = None,
        study_uid: str | None = None,
    ) -> None:
        """Override ``fields`` of ``type`` for one image, series or study.

        Fields already overridden at the same scope and key are kept unless
        ``fields`` names them again.

        Args:
            type: The metadata type, e.g. ``"imagePlaneModule"``.
            fields: ``{field: value}`` to put over the value below.
            image_id: The one image (frame) to override.
            series_uid: The SeriesInstanceUID to override.
            study_uid: The StudyInstanceUID to override.

        Raises:
            ValueError: Not exactly one of ``image_id``, ``series_uid`` and
                ``study_uid`` is given.
            TypeError: ``fields`` is not a mapping.
        """
        if not isinstance(fields, Mapping):
            raise TypeError(f"fields must be a mapping, not {fields!r}.")
        scope, key = self._scope(image_id, series_uid, study_uid)
        new = copy.deepcopy(dict(fields))
        with self._lock:
            by_scope = self._overrides.get(type)
            if by_scope is None:
                by_scope = {"image": {}, "series": {}, "study": {}}
            by_key = by_scope[scope]
            by_key[key] = {**by_key.get(key, {}), **new}
            self._overrides[type] = by_scope

    def unset(
        self,
        type: str,
        *,
        image_id: str | None = None,
        series_uid: str | None = None,
        study_uid: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> None:
        """Remove overrides of ``type`` at one scope.

        Args:
            type: The metadata type.
            image_id: The image whose override to remove.
            series_uid: The series whose override to remove.
            study_uid: The study whose override to remove.
            fields: The field names to stop overriding; ``None`` removes every
                field at that scope and key.

        Raises:
            ValueError: Not exactly one of ``image_id``, ``series_uid`` and
                ``study_uid`` is given.
        """
        scope, key = self._scope(image_id, series_uid, study_uid)
        drop = None if fields is None else frozenset(fields)
        if isinstance(fields, str):
            drop = frozenset((fields,))  # a lone name, not its characters
        with self._lock:
            by_scope = self._overrides.get(type)
            if by_scope is None or key not in by_scope[scope]:
                return
            by_key = by_scope[scope]
            rest = (
                {}
                if drop is None
                else {f: v for f, v in by_key[key].items() if f not in drop}
            )
            if rest:
                by_key[key] = rest
            else:
                del by_key[key]
                if not any(by_scope.values()):
                    del self._overrides[type]

    def clear(self) -> None:
        """Remove every override and forget the cached series/study UIDs."""
        with self._lock:
            self._overrides = {}
            self._uid_cache = {}

    def __len__(self) -> int:
        """Return the number of (type, scope, key) overrides set."""
        overrides = self._overrides
        return sum(len(k) for s in overrides.values() for k in s.values())

    # -- answering --------------------------------------------------------

    @typed_lookup_method
    def get(self, type: str, image_id: str, /, *args: object) -> object:
        """Answer ``type`` for ``image_id`` with the overridden fields applied.

        Typed per module type as :meth:`metastore.Registry.get` is (the
        patched value is taken to keep its module's shape: nothing checks the
        fields set); :attr:`get_any` is the same function for any string.

        Args:
            type: The metadata type.
            image_id: The imageId asked about.
            *args: Extra arguments, passed on to the value below.

        Returns:
            ``None`` when no override applies; else the value below patched
            as described in the class docstring.
        """
        by_scope = self._overrides.get(type)
        if by_scope is None:
            return None  # the cheap path: no override for this type
        if (type, image_id) in self._active():
            return None  # re-entered while asking below: let the chain go on
        found: list[_Fields] = []
        if by_scope["study"] or by_scope["series"]:
            study_uid, series_uid = self._uids(image_id)
            by_uid: tuple[tuple[_Scope, str | None], ...] = (
                ("study", study_uid),
                ("series", series_uid),
            )
            for scope, uid in by_uid:
                fields = None if uid is None else by_scope[scope].get(uid)
                if fields is not None:
                    found.append(fields)
        if by_scope["image"]:
            fields = by_scope["image"].get(image_id_to_uri(image_id))
            if fields is not None:
                found.append(fields)
        if not found:
            return None
        merged: _Fields = {}
        for fields in found:  # study, series, image: the most specific last
            merged.update(fields)
        base = self._value_below(type, image_id, *args)
        if base is None:
            return copy.deepcopy(merged)
        if isinstance(base, dict):
            return {**base, **copy.deepcopy(merged)}
        return base  # not a dict: nothing to patch

    #: :meth:`get` for any type string (the same function), answer ``object``.
    get_any = untyped_lookup_method(get)
    __call__ = get

    def _value_below(self, type: str, image_id: str, *args: object) -> object:
        """Ask what answers below this provider, marking the question active."""
        active = self._active()
        key = (type, image_id)
        if key in active:
            return None  # re-entered through an unrecognised wrapper
        active.add(key)
        try:
            if self._below is not None:
                return self._below(type, image_id, *args)
            assert self._registry is not None
            chain = self._registry.chain_after(self)
            if chain is None:
                chain = self._registry.chain_after(self.get)
            if chain is None:  # not registered there: the whole registry
                return self._registry.get_any(type, image_id, *args)
            for provider in chain:
                result = provider(type, image_id, *args)
                if result is not None:
                    return result
            return None
        finally:
            active.discard(key)

    def _active(self) -> _Active:
        """The questions this thread is asking below right now."""
        active: _Active | None = getattr(self._local, "active", None)
        if active is None:
            active = self._local.active = set()
        return active

    def _uids(self, image_id: str) -> tuple[str | None, str | None]:
        """Return ``(study_uid, series_uid)`` of ``image_id`` (None if unknown)."""
        cached = self._uid_cache.get(image_id)
        if cached is not None:
            return cached
        if image_id.startswith("wadors:"):
            try:
                parsed = parse_image_id(image_id)  # itself cached
            except InvalidImageIdError:
                pass
            else:
                return parsed.study_uid, parsed.series_uid
        series = self._value_below(ModuleType.GENERAL_SERIES.value, image_id)
        if not isinstance(series, dict):
            return None, None  # not cached: the series may be added later
        uids = (series.get("studyInstanceUID"), series.get("seriesInstanceUID"))
        with self._lock:
            cache = self._uid_cache
            if len(cache) >= self._uid_cache_size:
                del cache[next(iter(cache))]  # drop the oldest entry
            cache[image_id] = uids
        return uids
