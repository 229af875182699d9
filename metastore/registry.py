"""The metadata-provider registry: Cornerstone's ``metaData`` chain in Python.

This module owns :class:`Registry` (``addProvider`` / ``removeProvider`` /
``get`` / ``getNormalized`` with the classic semantics) and the default
process-wide registry :data:`metadata`.  It re-exports the tag-name helpers
:func:`to_upper_camel_tag` / :func:`to_lower_camel_tag` of
``metastore.modules``, their one owner, which ``getNormalized`` uses.  It
imports only :mod:`metastore.types`, :mod:`metastore.moduletypes` (the
typed view of :meth:`Registry.get`) and :mod:`metastore.modules`.
"""

from __future__ import annotations

import logging
import math
import threading
import types as _pytypes
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias, runtime_checkable

from metastore.modules import to_lower_camel_tag, to_upper_camel_tag
from metastore.moduletypes import typed_lookup_method, untyped_lookup_method
from metastore.types import ModuleValue, Provider

__all__ = [
    "ProviderLike",
    "Registry",
    "SupportsGet",
    "as_provider",
    "metadata",
    "to_lower_camel_tag",
    "to_upper_camel_tag",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class SupportsGet(Protocol):
    """An object whose ``get(type, image_id, *args)`` method is the provider.

    ``type`` is ``Any`` for the reason given on :class:`metastore.types.Provider`.
    """

    def get(self, type: Any, image_id: str, /, *args: Any) -> object:
        """Answer one metadata question, or return ``None`` for no answer."""
        ...


#: What :meth:`Registry.add_provider` accepts: a provider callable, or an
#: object (not itself callable) with a callable ``get`` attribute.
ProviderLike: TypeAlias = Provider | SupportsGet

#: One registry entry: ``(priority, provider)``.
_Entry: TypeAlias = tuple[float, Provider]

# Bound methods are created afresh on each attribute access (``p.get is p.get``
# is False) but compare equal when they bind the same function to the same
# object, so they are matched by equality. Everything else by identity.
_METHOD_TYPES = (_pytypes.MethodType, _pytypes.BuiltinMethodType)


def _same(a: object, b: object) -> bool:
    """Whether two registered providers are "the same provider"."""
    if a is b:
        return True
    return isinstance(a, _METHOD_TYPES) and type(a) is type(b) and a == b


def as_provider(provider: ProviderLike) -> Provider:
    """Return the callable that represents ``provider`` in a registry.

    Args:
        provider: A provider callable, or an object (not itself callable)
            with a callable ``get`` attribute.

    Returns:
        ``provider`` itself when it is callable, else its bound ``get``.

    Raises:
        TypeError: ``provider`` is neither callable nor has a callable ``get``.
    """
    if callable(provider):
        return provider
    if isinstance(provider, Mapping):
        # A dict has a callable ``get`` too, but dict.get(type, image_id)
        # would answer every question with the imageId.
        raise TypeError(
            "A mapping is not a metadata provider; register a function or an "
            "object with a get(type, image_id, *args) method."
        )
    get = getattr(provider, "get", None)
    if callable(get):
        return get  # type: ignore[no-any-return]
    raise TypeError(
        f"{provider!r} is not a metadata provider: it is not callable and has no "
        "callable get attribute."
    )


def _check_priority(priority: float) -> float:
    """Validate a priority: a real number that can be ordered (not NaN)."""
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise TypeError(f"A provider priority must be a number, not {priority!r}.")
    if math.isnan(priority):
        raise ValueError("A provider priority cannot be NaN.")
    return priority


class Registry:
    """An ordered chain of metadata providers, as Cornerstone's ``metaData``.

    Semantics (checked against ``@cornerstonejs/metadata`` 5.14.0 and the
    classic 4.x ``metaData.ts``):

    * **Priority order.** Providers are kept in descending priority. A provider
      added at a priority equal to existing ones goes *before* them, so the
      provider added last wins ties (Cornerstone scans from the front and
      inserts before the first entry whose priority is ``<=`` the new one).
    * **No duplicates.** Adding a provider that is already registered does
      nothing, even with a different priority (the 5.x rule). Bound methods
      count as the same provider when they bind the same function to the same
      object (``obj.get == obj.get``); any other provider is matched by
      identity. An object that is not callable but has a callable ``get`` is
      registered as its bound ``get``.
    * **First answer wins.** :meth:`get` calls each provider in order as
      ``provider(type, image_id, *args)`` (extra arguments pass through, as in
      classic Cornerstone) and returns the first result that is not ``None``.
      ``None`` is JavaScript's ``undefined``, "no answer": falsy values such as
      ``0``, ``""``, ``False``, ``[]`` and ``{}`` are answers and stop the
      chain. With no answer, :meth:`get` returns ``None``.
    * **Errors propagate.** A provider's exception reaches the caller of
      :meth:`get` (Cornerstone has no try/catch). Only :meth:`get_normalized`
      catches and logs per type, as ``getNormalized`` does.
    * **No cache.** Every :meth:`get` asks the providers again.

    Registration is thread-safe: the chain is an immutable tuple replaced
    under a lock (copy-on-write), so :meth:`get` iterates a snapshot without
    locking, and a provider added or removed during a :meth:`get` takes effect
    from the next call.

    Example:
        >>> registry = Registry()
        >>> registry.add_provider(lambda t, i, *a: {"modality": "CT"} if t == "generalSeriesModule" else None)
        >>> registry.get("generalSeriesModule", "wadors:x")
        {'modality': 'CT'}
    """  # noqa: E501

    __slots__ = ("_entries", "_lock")

    def __init__(self) -> None:
        """Create an empty registry."""
        self._entries: tuple[_Entry, ...] = ()
        self._lock = threading.Lock()

    # -- registration -----------------------------------------------------

    def add_provider(self, provider: ProviderLike, priority: float = 0) -> None:
        """Register ``provider`` at ``priority`` (higher is asked first).

        Args:
            provider: A callable ``provider(type, image_id, *args)``, or an
                object with such a ``get`` method.
            priority: Any real number; ``0`` by default, as in Cornerstone.
                At equal priority the provider added last is asked first.

        Raises:
            TypeError: ``provider`` is not a provider, or ``priority`` is not
                a number.
            ValueError: ``priority`` is NaN.
        """
        fn = as_provider(provider)
        priority = _check_priority(priority)
        with self._lock:
            entries = self._entries
            if any(_same(p, fn) for _, p in entries):
                return  # 5.x: re-adding is a no-op, whatever the priority
            # Insert before the first entry whose priority is <= the new one,
            # so ties go to the provider added last (Cornerstone's rule).
            i = len(entries)
            for j, (prio, _) in enumerate(entries):
                if prio <= priority:
                    i = j
                    break
            self._entries = (*entries[:i], (priority, fn), *entries[i:])

    def remove_provider(self, provider: ProviderLike) -> None:
        """Remove ``provider`` from the chain; do nothing if it is absent.

        The provider is matched as in :meth:`add_provider` (bound methods by
        equality, objects with ``get`` through their bound ``get``, everything
        else by identity). At most one entry is removed.

        Args:
            provider: The provider, as it was passed to :meth:`add_provider`.

        Raises:
            TypeError: ``provider`` is not a provider.
        """
        fn = as_provider(provider)
        with self._lock:
            entries = self._entries
            for i, (_, p) in enumerate(entries):
                if _same(p, fn):
                    self._entries = entries[:i] + entries[i + 1 :]
                    return

    def remove_all_providers(self) -> None:
        """Empty the chain."""
        with self._lock:
            self._entries = ()

    def providers(self) -> list[tuple[float, Provider]]:
        """Return a snapshot of the chain as ``(priority, provider)`` pairs.

        Returns:
            The entries in the order :meth:`get` asks them. Objects registered
            through their ``get`` method appear as that bound method.
        """
        return list(self._entries)

    def __len__(self) -> int:
        """Return the number of registered providers."""
        return len(self._entries)

    def __contains__(self, provider: object) -> bool:
        """Whether ``provider`` is registered (by the matching rule above)."""
        try:
            fn = as_provider(provider)  # type: ignore[arg-type]
        except TypeError:
            return False
        return any(_same(p, fn) for _, p in self._entries)

    def __repr__(self) -> str:
        """Show the chain, highest priority first."""
        inner = ", ".join(f"({prio!r}, {p!r})" for prio, p in self._entries)
        return f"Registry([{inner}])"

    # -- lookup -----------------------------------------------------------

    @typed_lookup_method
    def get(self, type: str, image_id: str, /, *args: object) -> object:
        """Ask the providers in order and return the first answer.

        Typed per module type (:class:`metastore.moduletypes.ModuleLookup`):
        ``get("imagePlaneModule", image_id)`` is an ``ImagePlaneModule |
        None`` to a type checker, and a name that is not a
        :data:`~metastore.moduletypes.ModuleTypeName` is a type error.  At
        run time any string is asked, as in Cornerstone; :attr:`get_any` is
        this same function, typed to take any string.

        Args:
            type: The metadata type, e.g. ``"imagePlaneModule"``.
            image_id: The imageId asked about.
            *args: Extra arguments, passed unchanged to every provider.

        Returns:
            The first result that is not ``None``, or ``None`` when no
            provider answers.

        Raises:
            Exception: Whatever a provider raises propagates unchanged.
        """
        for _, provider in self._entries:
            result = provider(type, image_id, *args)
            if result is not None:
                return result
        return None

    #: :meth:`get` for any type string, answer typed ``object``: the same
    #: function, for names outside ``ModuleTypeName`` (custom types such as
    #: ``"calibratedPixelSpacing"``) and types held in a ``str`` variable.
    get_any = untyped_lookup_method(get)

    def chain_after(self, provider: ProviderLike) -> tuple[Provider, ...] | None:
        """Return the providers that come strictly after ``provider``.

        Args:
            provider: A provider, matched as in :meth:`remove_provider`.

        Returns:
            The providers after its entry, in chain order (a snapshot), or
            ``None`` when ``provider`` is not registered.
        """
        fn = as_provider(provider)
        entries = self._entries
        for i, (_, p) in enumerate(entries):
            if _same(p, fn):
                return tuple(q for _, q in entries[i + 1 :])
        return None

    def get_after(
        self,
        provider: ProviderLike,
        type: str,
        image_id: str,
        /,
        *args: object,
    ) -> object:
        """Continue the chain strictly after ``provider``'s entry.

        This is "the value below" ``provider``: the answer the registry would
        give if ``provider`` and every entry before it did not answer, i.e.
        the providers of lower priority and those of equal priority that were
        added before it. Override providers use it to find the value they
        patch without asking themselves again.  It is a tool for providers,
        which are asked any string: ``type`` is any ``str`` and the answer an
        ``object`` (not typed per module, unlike :meth:`get`).

        Args:
            provider: A registered provider, matched as in
                :meth:`remove_provider`.
            type: The metadata type.
            image_id: The imageId asked about.
            *args: Extra arguments, passed unchanged to every provider.

        Returns:
            The first answer that is not ``None`` after ``provider``, or
            ``None``.

        Raises:
            ValueError: ``provider`` is not registered.
        """
        chain = self.chain_after(provider)
        if chain is None:
            raise ValueError(f"{provider!r} is not registered in this registry.")
        for p in chain:
            result = p(type, image_id, *args)
            if result is not None:
                return result
        return None

    def get_normalized(
        self,
        image_id: str,
        types: Iterable[str],
        getter: Callable[[str, str], object] | None = None,
    ) -> dict[str, ModuleValue]:
        """Merge several modules into one dict with UpperCamel keys.

        Cornerstone's ``getNormalized``: for each type in order, ask
        ``getter(type, image_id)`` (by default :meth:`get_any`); when the answer
        is a non-empty dict, copy its keys renamed by
        :func:`to_upper_camel_tag` into the result. Later types overwrite
        earlier keys. An exception for one type is logged and that type is
        skipped.

        A truthy answer that is not a dict (for example the list of
        ``ultrasoundEnhancedRegionModule``) is skipped; Cornerstone would copy
        its array indices as keys ("0", "1", ...), which no caller wants.

        Args:
            image_id: The imageId asked about.
            types: The metadata types, in merge order.
            getter: What to ask instead of :meth:`get_any` (a typed lookup
                such as ``provider.get`` takes only known names: pass its
                ``get_any``).

        Returns:
            The merged dict; ``{}`` when nothing was found.
        """
        ask = self.get_any if getter is None else getter
        result: dict[str, ModuleValue] = {}
        for t in types:
            try:
                data = ask(t, image_id)
                if data and isinstance(data, dict):
                    result.update(
                        {to_upper_camel_tag(str(k)): v for k, v in data.items()}
                    )
            except Exception:
                # Cornerstone: getNormalized catches and logs per type.
                logger.exception("Error retrieving %s data for %s", t, image_id)
        return result


#: The default, process-wide registry (Cornerstone's module-level ``metaData``).
metadata = Registry()
