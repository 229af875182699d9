"""The progress of ``metastore index`` and ``metastore reindex`` on stderr.

On a terminal, a rich progress bar: sources (instances) done of the
pre-counted total, percentage, rate and time left, and the counts so far.
Elsewhere (a log file, CI), one plain line every :data:`LOG_INTERVAL`
seconds.  It draws only when the run reports (twice a second): no thread
of its own, so the indexer still forks its workers
(``index.workers._process_context``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, ProgressColumn, TaskID
    from rich.text import Text

    from metastore.index import IndexReport, ReindexReport

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


class _Report(Protocol):
    @property
    def rate(self) -> float: ...


R = TypeVar("R", bound=_Report)


def counts(report: IndexReport) -> str:
    """``N indexed, N unchanged, N skipped, N failed``."""
    return (
        f"{report.indexed} indexed, {report.unchanged} unchanged, "
        f"{report.skipped} skipped, {report.failed} failed"
    )


def reindex_counts(report: ReindexReport) -> str:
    """``N reindexed, N failed, N changed meanwhile``."""
    return (
        f"{report.reindexed} reindexed, {report.failed} failed, "
        f"{report.changed} changed meanwhile"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"


def _with_status(status: Text, *columns: ProgressColumn, console: Console) -> Progress:
    """A rich ``Progress`` that draws ``status`` (the counts) under its bar."""
    from rich.progress import Progress

    class WithStatus(Progress):
        def get_renderables(self) -> Iterator[RenderableType]:
            yield self.make_tasks_table(self.tasks)
            if status.plain:
                yield status

    # no refresh thread (auto_refresh): the indexer's pool forks
    return WithStatus(*columns, console=console, auto_refresh=False)


@dataclass(frozen=True, slots=True)
class Run(Generic[R]):
    """What the progress of one kind of run shows."""

    #: The command, as log lines name it (``index``).
    command: str
    #: What is counted (``files``).
    unit: str
    #: How many of the total a report has done.
    done: Callable[[R], int]
    #: A report's counts as text.
    counts: Callable[[R], str]


#: ``index_paths``: sources seen of the pre-counted total.
INDEX: Run[IndexReport] = Run("index", "files", lambda r: r.files_seen, counts)
#: ``reindex``: instances read of the stale total.
REINDEX: Run[ReindexReport] = Run(
    "reindex", "instances", lambda r: r.instances, reindex_counts
)


class RunProgress(Generic[R]):
    """A run's ``progress`` callback, drawn on stderr.

    Args:
        run: what it shows (:data:`INDEX`, :data:`REINDEX`).
        total: the pre-counted work (``index.count_sources``, the stale
            instances), or ``None``; more done than that raises it.
        console: where to draw (default: a rich console on stderr); a
            terminal gets the bar, anything else log lines.
        interval: seconds between two log lines.
    """

    def __init__(
        self,
        run: Run[R],
        total: int | None,
        *,
        console: Console | None = None,
        interval: float = LOG_INTERVAL,
    ) -> None:
        from rich.console import Console
        from rich.text import Text

        self.total = total
        self.command, self.unit = run.command, run.unit
        self.done, self.counts = run.done, run.counts
        self._status = Text()
        self.console = console or Console(stderr=True, highlight=False)
        self.interval = interval
        self._last = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.console.is_terminal:
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = _with_status(
            self._status,
            TextColumn(f"{self.command}ing"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task(self.command, total=self.total, rate="")
        self._bar.start()

    def __call__(self, report: R) -> None:
        """Show the run so far (the run calls this twice a second)."""
        total, done = self.total, self.done(report)
        if total is not None and done > total:
            total = self.total = done
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=done,
                total=total,
                rate=f"{report.rate:,.0f} {self.unit}/s",
            )
            self._status.plain = self.counts(report)
            self._bar.refresh()
        elif time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            click.echo(f"metastore {self.command}: {self.line(report)}", err=True)

    def line(self, report: R) -> str:
        """The progress as one plain line: done/total (%), rate, ETA, counts."""
        seen, total, rate = self.done(report), self.total, report.rate
        unit = self.unit
        if total is not None:
            total = max(total, seen)  # more than the pre-count
        done = f"{seen}/{total} {unit} ({100 * seen / total:.0f}%)" if total else ""
        done = done or f"{seen} {unit}"
        eta = ""
        if total and rate > 0:
            eta = f", ETA {_clock(max(total - seen, 0) / rate)}"
        return f"{done}, {rate:,.0f} {unit}/s{eta}: {self.counts(report)}"

    def close(self) -> None:
        """Leave the bar as it last was, and the terminal to what follows."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> RunProgress[R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
