"""The database provider: answers module lookups from a metastore database.

This module owns :class:`DatabaseProvider`, the read path that Cornerstone-
style lookups hit: a bounded in-process cache of every module of an image,
filled one series (or the part of it nearest the image asked) per query.
It imports only :mod:`metastore.store.api`, :mod:`metastore.imageid`,
:mod:`metastore.moduletypes` and :mod:`metastore.types` (and
:mod:`metastore.modules`' version, when asked how many answers are stale).
"""

from __future__ import annotations

import threading
from itertools import islice
from math import inf
from types import TracebackType
from typing import TYPE_CHECKING, Any

from metastore.errors import InvalidImageIdError
from metastore.moduletypes import typed_lookup_method, untyped_lookup_method
from metastore.store import Store
from metastore.types import ModuleValue

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = ["DatabaseProvider"]


def _stack_position(
    image_id: str, modules: dict[str, ModuleValue]
) -> tuple[float, str, int]:
    """Sort key of an image in its series: instance number, instance, frame."""
    general = modules.get("generalImageModule") or {}
    number = general.get("instanceNumber")
    # NaN and missing numbers sort last, like unnumbered images in a viewer
    position = number if isinstance(number, int | float) and number == number else inf
    # only here: a provider that never sorts a series need not import the
    # imageId parser (~3 ms); once imported, this costs a dict lookup
    from metastore.imageid import base_and_frame

    return (float(position), *base_and_frame(image_id))


#: Distinct values kept for sharing between images loaded on misses; past it
#: the table starts again (values already cached stay shared).
_SHARED_LIMIT = 20_000

#: Images loaded by one miss unless told otherwise (``read_ahead``): a CT
#: series of a few hundred slices in one query of a few tens of ms.
DEFAULT_READ_AHEAD = 500

#: The cached answer for an imageId the database does not know (no answer).
_UNKNOWN: dict[str, ModuleValue] = {}


class DatabaseProvider:
    """Answers ``(type, image_id)`` with exactly what the store holds.

    On a cache miss, every module of that image *and of its series* is
    loaded in one query and cached (read-ahead), since viewers and pipelines
    ask for many types of one imageId in a row, then for the next image of
    the series: "for each image of a series, get 6 modules" costs one query
    from a cold provider, not one per image.  A series of more than
    ``read_ahead`` images loads only the ``read_ahead`` images nearest the
    asked one in stack order (:meth:`metastore.store.Store.nearby_image_modules`),
    so walking such a series costs one query per ``read_ahead / 2`` images or
    so.  ``read_ahead=0`` (or 1) loads only the asked image: the better
    choice for a caller that asks one image per series (thumbnails), to
    whom read-ahead would only add work.  An unknown imageId is cached too,
    as "no answer".  :meth:`load_series` fills the cache for a whole series
    in one query, whatever its size.

    A hit is two dict lookups with no lock and no bookkeeping.  Memory is
    bounded by ``cache_size`` images: when a load would overflow it, the
    oldest entries are dropped (the oldest half, or more if the load needs
    the room), and a miss never loads more than ``cache_size`` images.

    The imageId must be the one the indexer stored, byte for byte, or,
    with ``wadors_root``, the same image under a client's DICOMweb root.
    Values are shared, not copied (several images of a series get the
    *same* patient module object): treat every answer as read-only.
    Lookups are safe from several threads.

    Args:
        source: a :class:`~metastore.store.Store` (used, not closed here), or
            a database URL or engine (a store is opened, and closed by
            :meth:`close`; a SQLite file that does not exist is an error).
        cache_size: how many images to keep in the cache.
        read_ahead: how many images of the asked image's series a miss
            loads (capped at ``cache_size``); 0 or 1 loads the image alone.
        wadors_root: the DICOMweb root of the client asking (re-rooting):
            ``wadors:ROOT/studies/S/series/SE/instances/I/frames/N`` is
            answered with the stored image of instance I, frame N (in study
            S and series SE), whatever the root or the form (``wadouri:``
            files) it was indexed under, and :meth:`load_series` returns
            imageIds under ``ROOT``.  Stored imageIds are still answered.

    Example:
        >>> provider = DatabaseProvider("sqlite:///metastore.sqlite")  # doctest: +SKIP
        >>> provider("imagePlaneModule", image_id)  # doctest: +SKIP
    """

    __slots__ = (
        "_cache",
        "_cache_size",
        "_lock",
        "_owns_store",
        "_prefix",
        "_read_ahead",
        "_shared",
        "store",
        "wadors_root",
    )

    def __init__(
        self,
        source: Store | str | URL | Engine,
        *,
        cache_size: int = 100_000,
        read_ahead: int = DEFAULT_READ_AHEAD,
        wadors_root: str | None = None,
    ) -> None:
        """Open (or use) the store and start with an empty cache."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        if read_ahead < 0:
            raise ValueError(f"read_ahead must be 0 or more, not {read_ahead}")
        #: The client's DICOMweb root (``wadors_root``), without a final ``/``.
        self.wadors_root = (
            None if wadors_root is None else wadors_root.removesuffix("/")
        )
        # the imageIds re-rooted: "wadors:ROOT/studies/"
        self._prefix = (
            None if self.wadors_root is None else f"wadors:{self.wadors_root}/studies/"
        )
        self._owns_store = not isinstance(source, Store)
        #: The store answers come from.
        # read_only: a database in a folder this process cannot write opens;
        # create=False: a mistyped SQLite path is an error, not an empty store
        self.store: Store = (
            source
            if isinstance(source, Store)
            else Store(source, read_only=True, create=False)
        )
        self._cache: dict[str, dict[str, ModuleValue]] = {}
        self._cache_size = cache_size
        # Never more than the cache holds: the bound on memory stays the bound.
        self._read_ahead = min(read_ahead, cache_size)
        # Values loaded on misses, by stored bytes, so that the images of a
        # series share one patient module object (etc.) as load_series gives
        # them: a third less memory per image, and hits that touch a few hot
        # objects instead of one copy per image.
        self._shared: dict[tuple[bytes, bytes | None], ModuleValue] = {}
        # Taken on misses only (loading and evicting), never on hits.
        self._lock = threading.Lock()

    @typed_lookup_method
    def get(self, type: str, image_id: str, *args: Any) -> object:
        """The stored value of module ``type`` for ``image_id``, or ``None``.

        Typed per module type as :meth:`metastore.Registry.get` is
        (``get("imagePlaneModule", image_id)`` is an ``ImagePlaneModule |
        None``); :attr:`get_any` is the same function for any string.

        Args:
            type: the module type, e.g. ``"imagePlaneModule"``.
            image_id: the imageId as stored.
            *args: accepted for the provider protocol and ignored.
        """
        # The hit path: two dict subscripts.  try/except costs nothing when
        # nothing is raised (Python 3.11), unlike .get() calls and branches.
        try:
            return self._cache[image_id][type]
        except KeyError:
            return self._miss(type, image_id)

    #: :meth:`get` for any type string (the same function), answer ``object``.
    get_any = untyped_lookup_method(get)
    __call__ = get

    def _miss(self, type: str, image_id: str) -> object:
        """``get`` for an image not cached yet, or a type it does not have."""
        modules = self._cache.get(image_id)
        if modules is None:
            modules = self._load(image_id)
        return modules.get(type)

    def _load(self, image_id: str) -> dict[str, ModuleValue]:
        """Load and cache every module of one image (cache miss path)."""
        stored: str | None = image_id
        rerooted = self._prefix is not None and image_id.startswith(self._prefix)
        if rerooted:
            stored = self._stored_image_id(image_id)
        if stored is not None and self._read_ahead > 1:
            return self._load_nearby(image_id, stored, rerooted=rerooted)
        modules = None
        if stored is not None:
            modules = self.store.image_modules(stored, shared=self._shared)
        if modules is None:
            modules = _UNKNOWN
        with self._lock:
            self._make_room(1)
            self._cache[image_id] = modules
            if len(self._shared) > _SHARED_LIMIT:
                self._shared.clear()
        return modules

    def _load_nearby(
        self, image_id: str, stored: str, *, rerooted: bool
    ) -> dict[str, ModuleValue]:
        """Load and cache an image and its read-ahead neighbours (one query).

        ``stored`` is the image's stored imageId; when ``image_id`` is a
        client's re-rooted one, the neighbours are cached under the client's
        imageIds too (the ones its next questions use).
        """
        images = self.store.nearby_image_modules(stored, self._read_ahead)
        modules = images.get(stored, _UNKNOWN)
        if rerooted:
            images = {self._client_image_id(i, m): m for i, m in images.items()}
        with self._lock:
            self._make_room(len(images) or 1)
            self._cache.update(images)
            self._cache[image_id] = modules
        return modules

    def _stored_image_id(self, image_id: str) -> str | None:
        """The stored imageId of a client's re-rooted one, or ``None``."""
        from metastore.imageid import parse_image_id  # only here: ~4 ms to import

        try:
            parsed = parse_image_id(image_id)
        except InvalidImageIdError:
            return None
        if parsed.sop_instance_uid is None:
            return None
        return self.store.image_id_for(
            parsed.sop_instance_uid,
            parsed.frame or 1,
            study_instance_uid=parsed.study_uid,
            series_instance_uid=parsed.series_uid,
        )

    def _client_image_id(self, image_id: str, modules: dict[str, ModuleValue]) -> str:
        """A stored imageId under the client's root (``wadors_root``).

        The UIDs come from the stored imageId when it is a wadors one, else
        from the image's (0020,000D), (0020,000E) and (0008,0018) as its
        modules hold them; the frame from the imageId.
        """
        assert self.wadors_root is not None
        from metastore.imageid import parse_image_id, wadors_image_id

        try:
            parsed = parse_image_id(image_id)
        except InvalidImageIdError:
            return image_id
        study, series, sop = (
            parsed.study_uid,
            parsed.series_uid,
            parsed.sop_instance_uid,
        )
        if parsed.scheme != "wadors":
            general = modules.get("generalSeriesModule") or {}
            common = modules.get("sopCommonModule") or {}
            study = general.get("studyInstanceUID")
            series = general.get("seriesInstanceUID")
            sop = common.get("sopInstanceUID")
        uids = (study, series, sop)
        if not all(isinstance(uid, str) and uid and "/" not in uid for uid in uids):
            return image_id  # cannot be spelled under the root: left as stored
        assert isinstance(study, str) and isinstance(series, str)
        assert isinstance(sop, str)
        return wadors_image_id(self.wadors_root, study, series, sop, parsed.frame or 1)

    def load_series(self, series_instance_uid: str) -> list[str]:
        """Cache every image of a series with one query; return its imageIds.

        Viewers ask for every image of a series at once: after this call each
        of them is a cache hit.  The imageIds come in stack order: by
        (0020,0013) InstanceNumber, then instance (imageId without its
        frame), then frame number.  With ``wadors_root`` they are the
        client's imageIds under that root.

        Args:
            series_instance_uid: (0020,000E) SeriesInstanceUID of the series.
        """
        images = self.store.series_image_modules(series_instance_uid)
        if self.wadors_root is not None:
            images = {self._client_image_id(i, m): m for i, m in images.items()}
        with self._lock:
            self._make_room(len(images))
            self._cache.update(images)
        return sorted(images, key=lambda i: _stack_position(i, images[i]))

    def _make_room(self, incoming: int) -> None:
        """Drop the oldest half of the cache if ``incoming`` would overflow it."""
        if len(self._cache) + incoming <= self._cache_size:
            return
        keep = max(self._cache_size // 2 - incoming, 0)
        drop = len(self._cache) - keep
        for key in list(islice(self._cache, drop)):
            self._cache.pop(key, None)

    def clear_cache(self) -> None:
        """Forget every cached answer (after the database changed)."""
        with self._lock:
            self._cache = {}
            self._shared.clear()

    def stale_instances(self) -> int:
        """How many stored instances hold answers of an older mapping.

        The provider answers them as stored (a stale answer beats none);
        ``metastore reindex`` recomputes them.  One count over an index,
        asked afresh each call.
        """
        # Here, not at the top: the mapping is not needed to answer lookups.
        from metastore.modules import MAPPING_VERSION

        return self.store.stale_instances(MAPPING_VERSION)

    def cache_info(self) -> dict[str, int]:
        """``{"images": cached, "cache_size": limit, "read_ahead": per miss}``."""
        return {
            "images": len(self._cache),
            "cache_size": self._cache_size,
            "read_ahead": self._read_ahead,
        }

    def close(self) -> None:
        """Close the store if this provider opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> DatabaseProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.wadors_root is None:
            return f"DatabaseProvider({self.store.url!r})"
        return f"DatabaseProvider({self.store.url!r}, wadors_root={self.wadors_root!r})"
