"""Part 10 to DICOM JSON: a pydicom ``Dataset`` as DICOMweb returns it.

Its public face is :func:`dataset_to_dicom_json`, with the VR table
:data:`LONG_VRS` the indexer's byte sniffing shares (attribute names live in
``metastore.keywords``).  The rooms:

- ``convert``: the dataset walk, bulk data and the fast/fallback paths;
- ``_values``: one element's value bytes -> DICOM JSON values, per VR;
- ``_sequences``: encoded sequences decoded without building datasets.

pydicom is imported here and by the indexer's reader, nowhere below.
"""

from metastore.dicomjson._values import LONG_VRS
from metastore.dicomjson.convert import (
    DEFAULT_INLINE_TAGS,
    OVERLAY_DATA_TAGS,
    PIXEL_DATA_TAGS,
    dataset_to_dicom_json,
    raw_elements_to_dicom_json,
)

__all__ = [
    "DEFAULT_INLINE_TAGS",
    "LONG_VRS",
    "OVERLAY_DATA_TAGS",
    "PIXEL_DATA_TAGS",
    "dataset_to_dicom_json",
    "raw_elements_to_dicom_json",
]
