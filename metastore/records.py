"""Value objects passed from the indexer (write side) to the store.

An :class:`InstanceRecord` is everything metastore keeps of one DICOM instance:
where it came from, the attributes people search by, its full DICOM JSON and,
per frame, the Cornerstone modules.  The indexer builds them (in worker
processes, so they must pickle); ``metastore.store.api`` writes them.  An
:class:`Outcome` is what reading one source gave, as a worker hands it to the
run's pipeline and report.  A :class:`StoredInstance` goes the other way:
an instance as stored, read back for ``metastore reindex``.  This module
imports only ``metastore.types``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from metastore.types import DicomJson, ModuleValue

#: How reading one source ended (``unchanged`` is decided before reading).
#: ``stream``: a DICOM JSON source too large to hand over whole; the writing
#: process reads it again a part at a time (``index.read.SourceStream``).
OutcomeStatus = Literal["indexed", "skipped", "failed", "stream"]


def by_position(self: Any) -> tuple[type, tuple[Any, ...]]:
    """``__reduce__`` of a record: its class and its fields, in order.

    Records travel from the indexer's workers to the writing process by
    pickle.  A slots dataclass otherwise unpickles through a ``__setstate__``
    that sets each field from Python: twice the cost of calling the class
    (measured: 25 -> 13 us an instance record), paid by the writing process.
    """
    cls = type(self)
    return cls, tuple(map(self.__getattribute__, cls.__match_args__))


@dataclass(frozen=True, slots=True)
class Source:
    """Where an instance was read from: a path, an archive member or a URL."""

    __reduce__ = by_position

    #: Absolute path, ``/abs/archive.zip!/member/path`` for a zip member, or a URL.
    location: str
    #: Size in bytes of the file (of the zip archive for a member); 0 if unknown.
    size: int
    #: Modification time in nanoseconds (of the archive for a member); 0 if unknown.
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image (one frame) of an instance, with its module values."""

    __reduce__ = by_position

    image_id: str
    #: 1-based frame number.
    frame: int
    #: ``{module type: value}`` for every module type metastore answers (a
    #: ``FrameModules`` from the indexer; the store's encoded stand-in).
    modules: Mapping[str, ModuleValue]


class LazyImages(ABC):
    """The images of an instance with many frames, built only when stored.

    An instance of more than ``metastore.index.extract.EAGER_FRAMES`` image
    frames holds one of these instead of a list: the store iterates it a
    chunk of frames at a time while it writes them, so no process ever
    holds every frame of a whole-slide image at once.  It pickles as what
    it builds the frames from (the DICOM JSON), and every iteration builds
    the same images.
    """

    __slots__ = ()

    @abstractmethod
    def __len__(self) -> int:
        """How many images (frames that are images) it builds."""

    @abstractmethod
    def __iter__(self) -> Iterator[ImageRecord]:
        """Build the images, in frame order, one at a time."""

    @property
    @abstractmethod
    def first_image_id(self) -> str:
        """The imageId of frame 1; every image's differs in the frame number only."""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One DICOM instance ready to be stored."""

    __reduce__ = by_position

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
    #: One per frame that is an image; lazy for instances of many frames.
    images: list[ImageRecord] | LazyImages = field(default_factory=list)
    #: The ``metastore.modules.MAPPING_VERSION`` that computed the modules
    #: of ``images``; ``None``: unknown (the store counts it as stale).
    mapping_version: str | None = None
    #: The values of the store's other search columns (revision 0003), per
    #: table, computed from ``dicom_json`` by the store before the batch is
    #: written (in the indexer's workers, before the JSON is encoded);
    #: ``None`` until then.
    search_values: dict[str, dict[str, Any]] | None = None
    #: The store's encoding of this instance, made where it was read (the
    #: indexer's workers, ``metastore.store.encode.pack``): its DICOM JSON
    #: and module values compressed, ready for rows.  Then ``dicom_json`` is
    #: empty and ``images`` hold no modules.  Opaque outside the store.
    packed: object | None = None


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance as the store kept it, for ``metastore reindex``.

    What recomputing its modules needs without opening its source: the
    stored DICOM JSON, where it came from, and the imageIds its frames are
    stored under (a reindex keeps them).  The store hands these out
    (``Store.instances_to_reindex``) and takes them back with the new
    records (``Store.replace_modules``), which writes only if the instance
    is still the one read (``fingerprint``).
    """

    #: The ``instances.id`` row.
    id: int
    sop_instance_uid: str
    source: Source
    dicom_json: DicomJson
    #: ``{frame: imageId}`` of the images stored for it.
    image_ids: Mapping[int, str]
    #: The stored DICOM JSON's identity when read (its base row and digest).
    fingerprint: tuple[int | None, str]


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A source that could not be indexed, or a duplicate that was skipped."""

    __reduce__ = by_position

    location: str
    #: ``"unreadable"``, ``"invalid"`` or ``"duplicate"``.
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What reading one source gave."""

    __reduce__ = by_position

    location: str
    status: OutcomeStatus
    instances: list[InstanceRecord] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    #: Why it was skipped (``"not DICOM"``, ``"DICOMDIR"``...); empty otherwise.
    reason: str = ""
