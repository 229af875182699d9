"""Value objects passed from the indexer (write side) to the store.

An :class:`InstanceRecord` is everything metastore keeps of one DICOM instance:
where it came from, the attributes people search by, its full DICOM JSON and,
per frame, the Cornerstone modules.  The indexer builds them (in worker
processes, so they must pickle); ``metastore.store.api`` writes them.  This module
imports only ``metastore.types``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metastore.types import DicomJson, ModuleValue


@dataclass(frozen=True, slots=True)
class Source:
    """Where an instance was read from: a path, an archive member or a URL."""

    #: Absolute path, ``/abs/archive.zip!/member/path`` for a zip member, or a URL.
    location: str
    #: Size in bytes of the file (of the zip archive for a member); 0 if unknown.
    size: int
    #: Modification time in nanoseconds (of the archive for a member); 0 if unknown.
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image (one frame) of an instance, with its module values."""

    image_id: str
    #: 1-based frame number.
    frame: int
    #: ``{module type: value}`` for every module type metastore answers.
    modules: dict[str, ModuleValue]


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One DICOM instance ready to be stored."""

    source: Source
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str | None
    patient_id: str | None
    #: Person name as text: the Alphabetic group, then Ideographic and
    #: Phonetic, joined by ``=`` as in Part 10 (searchable, case-folded later).
    patient_name: str | None
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    instance_number: int | None
    number_of_frames: int
    dicom_json: DicomJson
    images: list[ImageRecord] = field(default_factory=list)
    #: The values of the store's other search columns (revision 0003), per
    #: table, computed from ``dicom_json`` by the store before the batch is
    #: written (in the indexer's workers, before the JSON is encoded);
    #: ``None`` until then.
    search_values: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A source that could not be indexed, or a duplicate that was skipped."""

    location: str
    #: ``"unreadable"``, ``"invalid"`` or ``"duplicate"``.
    kind: str
    reason: str
