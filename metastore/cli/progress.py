"""The progress of ``metastore index`` on stderr.

On a terminal, a rich progress bar: sources seen of the pre-counted total,
percentage, rate and time left, and the counts so far.  Elsewhere (a log
file, CI), one plain line every :data:`LOG_INTERVAL` seconds.  It draws
only when the indexer reports (twice a second): no thread of its own, so
the indexer still forks its workers (``index.pipeline._process_context``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import click

from metastore.index import IndexReport

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, ProgressColumn, TaskID
    from rich.text import Text

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def counts(report: IndexReport) -> str:
    """``N indexed, N unchanged, N skipped, N failed``."""
    return (
        f"{report.indexed} indexed, {report.unchanged} unchanged, "
        f"{report.skipped} skipped, {report.failed} failed"
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


class IndexProgress:
    """``index_paths``'s ``progress`` callback, drawn on stderr.

    Args:
        total: the pre-counted sources (``index.count_sources``), or
            ``None``; sources seen beyond it raise it.
        console: where to draw (default: a rich console on stderr); a
            terminal gets the bar, anything else log lines.
        interval: seconds between two log lines.
    """

    def __init__(
        self,
        total: int | None,
        *,
        console: Console | None = None,
        interval: float = LOG_INTERVAL,
    ) -> None:
        from rich.console import Console
        from rich.text import Text

        self.total = total
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
            TextColumn("indexing"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task("indexing", total=self.total, rate="")
        self._bar.start()

    def __call__(self, report: IndexReport) -> None:
        """Show the run so far (the indexer calls this twice a second)."""
        total = self.total
        if total is not None and report.files_seen > total:
            total = self.total = report.files_seen
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=report.files_seen,
                total=total,
                rate=f"{report.rate:,.0f} files/s",
            )
            self._status.plain = counts(report)
            self._bar.refresh()
        elif time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            click.echo(f"metastore index: {self.line(report)}", err=True)

    def line(self, report: IndexReport) -> str:
        """The progress as one plain line: seen/total (%), rate, ETA, counts."""
        seen, total, rate = report.files_seen, self.total, report.rate
        if total is not None:
            total = max(total, seen)  # more sources than the pre-count
        done = f"{seen}/{total} files ({100 * seen / total:.0f}%)" if total else ""
        done = done or f"{seen} files"
        eta = ""
        if total and rate > 0:
            eta = f", ETA {_clock(max(total - seen, 0) / rate)}"
        return f"{done}, {rate:,.0f} files/s{eta}: {counts(report)}"

    def close(self) -> None:
        """Leave the bar as it last was, and the terminal to what follows."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> IndexProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
