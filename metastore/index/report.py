"""The report of an indexing run: what was seen, read, stored and refused.

Owns :class:`IndexReport` (returned by ``metastore.index_paths`` and
printed by ``metastore index``, with its exit status) and the mutable tally
the indexer counts into while it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from metastore.records import ErrorRecord, Outcome

__all__ = ["MAX_REPORTED_ERRORS", "IndexInterrupted", "IndexReport", "Tally"]

#: How many errors an :class:`IndexReport` keeps (``error_count`` has them all).
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What an indexing run did; every count is of sources (files or members).

    ``files_seen == indexed + unchanged + skipped + failed``.  A DICOM JSON
    file with some invalid instances counts as indexed; its invalid instances
    are in ``errors``.
    """

    #: Sources found under the given paths (files, archive members).
    files_seen: int = 0
    #: Sources read and stored (new or changed).
    indexed: int = 0
    #: Sources skipped because the store already has them at this size and time.
    unchanged: int = 0
    #: Sources that are not DICOM (or are DICOMDIRs): not an error.
    skipped: int = 0
    #: Sources that look like DICOM but could not be read, or held no valid instance.
    failed: int = 0
    #: Instances handed to the store.
    instances: int = 0
    #: Instances not stored because another source has the same SOP Instance UID.
    duplicates: int = 0
    #: Images (frames) of the instances handed to the store.
    images: int = 0
    #: Wall-clock seconds.
    seconds: float = 0.0
    #: The first :data:`MAX_REPORTED_ERRORS` problems (unreadable, invalid, duplicate).
    errors: tuple[ErrorRecord, ...] = ()
    #: How many problems there were in all.
    error_count: int = 0
    #: Problems other than duplicates: unreadable sources and invalid instances.
    problem_count: int = 0

    @property
    def rate(self) -> float:
        """Sources per second (seen, including unchanged and skipped ones)."""
        return self.files_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed (duplicates and skipped files are fine)."""
        return self.problem_count == 0

    @property
    def exit_status(self) -> int:
        """The ``metastore index`` exit status: 0 if :attr:`ok`, else 1."""
        return 0 if self.ok else 1


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped an indexing run; what was committed is kept.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still does.  The
    batch being written when it came was rolled back; running the same
    indexing again reads only what is not stored yet.
    """

    def __init__(self, report: IndexReport, pending: int) -> None:
        #: The run so far (sources read, including the batch not written).
        self.report = report
        #: Sources of the batch that was not written (read again next time).
        self.pending = pending
        super().__init__(f"indexing interrupted after {self.saved} sources saved")

    @property
    def saved(self) -> int:
        """Sources read and stored by this run before it stopped."""
        return max(self.report.indexed - self.pending, 0)


@dataclass
class Tally:
    """The mutable counts behind an :class:`IndexReport`."""

    started: float = field(default_factory=time.perf_counter)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorRecord] = field(default_factory=list)
    #: Sources in the batch being built or written, not committed yet.
    pending: int = 0

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, error: ErrorRecord) -> None:
        self.count("error_count")
        if error.kind != "duplicate":
            self.count("problem_count")
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def outcome(self, outcome: Outcome) -> None:
        self.count("files_seen")
        self.count(outcome.status)
        self.count("instances", len(outcome.instances))
        self.count("images", sum(len(i.images) for i in outcome.instances))
        for error in outcome.errors:
            self.error(error)

    def streamed(
        self,
        status: str,
        instances: int,
        images: int,
        errors: list[ErrorRecord],
        error_count: int,
    ) -> None:
        """Count a source read while it was written (``reading.SourceStream``).

        ``errors`` are the first of its ``error_count`` invalid items.
        """
        self.count("files_seen")
        self.count(status)
        self.count("instances", instances)
        self.count("images", images)
        for error in errors:
            self.error(error)
        rest = error_count - len(errors)
        self.count("error_count", rest)
        self.count("problem_count", rest)

    def written(self, found: list[ErrorRecord]) -> None:
        """Count what a store write found: duplicates, and every error."""
        self.count("duplicates", sum(e.kind == "duplicate" for e in found))
        for error in found:
            self.error(error)

    def retract_duplicates(self, location: str, n: int) -> None:
        """Take back the ``n`` duplicates counted for ``location``.

        For a source written again after a prune; the kept errors lose that
        location's duplicates.
        """
        self.count("duplicates", -n)
        self.count("error_count", -n)
        self.errors[:] = [
            e for e in self.errors if (e.kind, e.location) != ("duplicate", location)
        ]

    def report(self) -> IndexReport:
        return IndexReport(
            seconds=time.perf_counter() - self.started,
            errors=tuple(self.errors),
            **self.counts,
        )
