"""metastore: a persistent store of Cornerstone3D metadata for DICOM archives.

The public API, re-exported here (``__all__`` is sorted, matches the lazy table, and is
checked by tests/test_public_api.py).  Names load on first use, so that
``import metastore`` (and the CLI, and indexer worker processes) do not pay
for SQLAlchemy or pydicom until they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metastore.dicomjson import dataset_to_dicom_json
    from metastore.errors import (
        DicomError,
        IndexingError,
        InvalidImageIdError,
        MetastoreError,
        ModuleError,
        QueryError,
        SchemaError,
        SchemaNotAtHeadError,
        StoreError,
    )
    from metastore.imageid import (
        ImageId,
        file_image_id,
        file_location,
        image_id_to_uri,
        parse_image_id,
        wadors_image_id,
    )
    from metastore.index import IndexReport, index_paths
    from metastore.modules import MODULE_TYPES, build_module, frame_modules
    from metastore.providers.database import DatabaseProvider
    from metastore.providers.dicomjson import DicomJsonProvider
    from metastore.providers.memory import InMemoryProvider
    from metastore.providers.override import OverrideProvider
    from metastore.registry import Registry, metadata
    from metastore.store import Store
    from metastore.types import ModuleType

_EXPORTS: dict[str, str] = {
    "DatabaseProvider": "metastore.providers.database",
    "DicomError": "metastore.errors",
    "DicomJsonProvider": "metastore.providers.dicomjson",
    "ImageId": "metastore.imageid",
    "InMemoryProvider": "metastore.providers.memory",
    "IndexReport": "metastore.index",
    "IndexingError": "metastore.errors",
    "InvalidImageIdError": "metastore.errors",
    "MODULE_TYPES": "metastore.modules",
    "MetastoreError": "metastore.errors",
    "ModuleError": "metastore.errors",
    "ModuleType": "metastore.types",
    "OverrideProvider": "metastore.providers.override",
    "QueryError": "metastore.errors",
    "Registry": "metastore.registry",
    "SchemaError": "metastore.errors",
    "SchemaNotAtHeadError": "metastore.errors",
    "Store": "metastore.store",
    "StoreError": "metastore.errors",
    "build_module": "metastore.modules",
    "dataset_to_dicom_json": "metastore.dicomjson",
    "file_image_id": "metastore.imageid",
    "file_location": "metastore.imageid",
    "frame_modules": "metastore.modules",
    "image_id_to_uri": "metastore.imageid",
    "index_paths": "metastore.index",
    "metadata": "metastore.registry",
    "parse_image_id": "metastore.imageid",
    "wadors_image_id": "metastore.imageid",
}

__all__ = [
    "MODULE_TYPES",
    "DatabaseProvider",
    "DicomError",
    "DicomJsonProvider",
    "ImageId",
    "InMemoryProvider",
    "IndexReport",
    "IndexingError",
    "InvalidImageIdError",
    "MetastoreError",
    "ModuleError",
    "ModuleType",
    "OverrideProvider",
    "QueryError",
    "Registry",
    "SchemaError",
    "SchemaNotAtHeadError",
    "Store",
    "StoreError",
    "build_module",
    "dataset_to_dicom_json",
    "file_image_id",
    "file_location",
    "frame_modules",
    "image_id_to_uri",
    "index_paths",
    "metadata",
    "parse_image_id",
    "wadors_image_id",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metastore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Public names, for tab completion."""
    return sorted(set(globals()) | set(__all__))
