"""Type aliases and protocols shared by every layer (imports only moduletypes).

``DicomJson`` is one instance in DICOM JSON form (PS3.18 F.2): keys are
8-digit upper-case hex tags, values ``{"vr": ..., "Value": [...]}`` or
``{"vr": ..., "BulkDataURI": ...}`` / ``{"vr": ..., "InlineBinary": ...}``.

A provider is anything callable as ``provider(type, image_id, *args)`` that
returns a module value, or ``None`` for "no answer" (Cornerstone's
``undefined``; see ``metastore.registry``).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

# The module type names moved to metastore.moduletypes, the owner of the
# module vocabulary; kept importable from here.
from metastore.moduletypes import ModuleType as ModuleType

#: A JSON-like value: what module dicts and DICOM JSON are made of.
JSON: TypeAlias = Any
#: One DICOM JSON instance object.
DicomJson: TypeAlias = dict[str, Any]
#: The value of one module, untyped: usually a dict with camelCase keys,
#: sometimes a list (ultrasoundEnhancedRegionModule) or ``None``.  What the
#: store keeps and decodes; the typed answers are in ``metastore.moduletypes``.
ModuleValue: TypeAlias = Any


class Provider(Protocol):
    """A metadata provider: ``provider(type, image_id, *args) -> value | None``.

    The registry passes whatever type string it was asked.  ``type`` is
    annotated ``Any`` so that a provider whose ``get`` is typed per module
    name (``metastore.moduletypes.ModuleLookup``, as metastore's own) is a
    provider too: at run time it answers any string.
    """

    def __call__(self, type: Any, image_id: str, /, *args: Any) -> object:
        """Answer one metadata question, or return ``None`` for no answer."""
        ...
