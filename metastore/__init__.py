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
        ConnectionLostError,
        DataRefusedError,
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
    from metastore.moduletypes import (
        CalibrationModule,
        CineModule,
        EcgModule,
        FrameModules,
        FrameOfReferenceModule,
        GeneralImageModule,
        GeneralSeriesModule,
        GeneralStudyModule,
        ImagePixelModule,
        ImagePlaneModule,
        ImageUrlModule,
        InstanceModule,
        ModalityLutModule,
        ModuleAnswer,
        ModuleLookup,
        ModuleType,
        ModuleTypeName,
        MultiframeModule,
        NmMultiframeGeometryModule,
        Overlay,
        OverlayPlaneModule,
        PatientDemographicModule,
        PatientModule,
        PatientStudyModule,
        PersonName,
        PetImageModule,
        PetIsotopeModule,
        PetSeriesModule,
        RadiopharmaceuticalInfo,
        ScalingModule,
        SopCommonModule,
        TransferSyntaxModule,
        UltrasoundEnhancedRegionModule,
        UltrasoundRegion,
        VoiLutModule,
    )
    from metastore.providers.database import DatabaseProvider
    from metastore.providers.dicomjson import DicomJsonProvider
    from metastore.providers.memory import InMemoryProvider
    from metastore.providers.override import OverrideProvider
    from metastore.registry import Registry, metadata
    from metastore.store import Store

_EXPORTS: dict[str, str] = {
    "CalibrationModule": "metastore.moduletypes",
    "CineModule": "metastore.moduletypes",
    "ConnectionLostError": "metastore.errors",
    "DataRefusedError": "metastore.errors",
    "DatabaseProvider": "metastore.providers.database",
    "DicomError": "metastore.errors",
    "DicomJsonProvider": "metastore.providers.dicomjson",
    "EcgModule": "metastore.moduletypes",
    "FrameModules": "metastore.moduletypes",
    "FrameOfReferenceModule": "metastore.moduletypes",
    "GeneralImageModule": "metastore.moduletypes",
    "GeneralSeriesModule": "metastore.moduletypes",
    "GeneralStudyModule": "metastore.moduletypes",
    "ImageId": "metastore.imageid",
    "ImagePixelModule": "metastore.moduletypes",
    "ImagePlaneModule": "metastore.moduletypes",
    "ImageUrlModule": "metastore.moduletypes",
    "InMemoryProvider": "metastore.providers.memory",
    "IndexReport": "metastore.index",
    "IndexingError": "metastore.errors",
    "InstanceModule": "metastore.moduletypes",
    "InvalidImageIdError": "metastore.errors",
    "MODULE_TYPES": "metastore.modules",
    "MetastoreError": "metastore.errors",
    "ModalityLutModule": "metastore.moduletypes",
    "ModuleAnswer": "metastore.moduletypes",
    "ModuleError": "metastore.errors",
    "ModuleLookup": "metastore.moduletypes",
    "ModuleType": "metastore.moduletypes",
    "ModuleTypeName": "metastore.moduletypes",
    "MultiframeModule": "metastore.moduletypes",
    "NmMultiframeGeometryModule": "metastore.moduletypes",
    "Overlay": "metastore.moduletypes",
    "OverlayPlaneModule": "metastore.moduletypes",
    "OverrideProvider": "metastore.providers.override",
    "PatientDemographicModule": "metastore.moduletypes",
    "PatientModule": "metastore.moduletypes",
    "PatientStudyModule": "metastore.moduletypes",
    "PersonName": "metastore.moduletypes",
    "PetImageModule": "metastore.moduletypes",
    "PetIsotopeModule": "metastore.moduletypes",
    "PetSeriesModule": "metastore.moduletypes",
    "QueryError": "metastore.errors",
    "RadiopharmaceuticalInfo": "metastore.moduletypes",
    "Registry": "metastore.registry",
    "ScalingModule": "metastore.moduletypes",
    "SchemaError": "metastore.errors",
    "SchemaNotAtHeadError": "metastore.errors",
    "SopCommonModule": "metastore.moduletypes",
    "Store": "metastore.store",
    "StoreError": "metastore.errors",
    "TransferSyntaxModule": "metastore.moduletypes",
    "UltrasoundEnhancedRegionModule": "metastore.moduletypes",
    "UltrasoundRegion": "metastore.moduletypes",
    "VoiLutModule": "metastore.moduletypes",
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
    "CalibrationModule",
    "CineModule",
    "ConnectionLostError",
    "DataRefusedError",
    "DatabaseProvider",
    "DicomError",
    "DicomJsonProvider",
    "EcgModule",
    "FrameModules",
    "FrameOfReferenceModule",
    "GeneralImageModule",
    "GeneralSeriesModule",
    "GeneralStudyModule",
    "ImageId",
    "ImagePixelModule",
    "ImagePlaneModule",
    "ImageUrlModule",
    "InMemoryProvider",
    "IndexReport",
    "IndexingError",
    "InstanceModule",
    "InvalidImageIdError",
    "MetastoreError",
    "ModalityLutModule",
    "ModuleAnswer",
    "ModuleError",
    "ModuleLookup",
    "ModuleType",
    "ModuleTypeName",
    "MultiframeModule",
    "NmMultiframeGeometryModule",
    "Overlay",
    "OverlayPlaneModule",
    "OverrideProvider",
    "PatientDemographicModule",
    "PatientModule",
    "PatientStudyModule",
    "PersonName",
    "PetImageModule",
    "PetIsotopeModule",
    "PetSeriesModule",
    "QueryError",
    "RadiopharmaceuticalInfo",
    "Registry",
    "ScalingModule",
    "SchemaError",
    "SchemaNotAtHeadError",
    "SopCommonModule",
    "Store",
    "StoreError",
    "TransferSyntaxModule",
    "UltrasoundEnhancedRegionModule",
    "UltrasoundRegion",
    "VoiLutModule",
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
