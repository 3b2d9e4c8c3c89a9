"""Progress of the long commands on stderr, one helper for all of them.

``facta relay run --once``, ``facta projections run --once``, ``facta replay``, ``facta
demo`` and ``facta audit verify`` report how far they are through :class:`ProgressDisplay`:

- stderr is a terminal: a `rich <https://rich.readthedocs.io>`_ progress bar per task
  (done/total, rate, time left), redrawn in place and left on the screen at the end;
- stderr is not a terminal (a log, a pipe, a CI job): one line per task every
  ``FACTA_PROGRESS_INTERVAL_S`` seconds (5 by default)::

      relay 'default': 12000/50000 events (24%), 4100 events/s, ETA 9.3 s

Nothing goes to stdout, so ``--json`` and the summaries stay what they were. The library
reports through cheap callbacks (``on_progress`` of :meth:`facta.eventstore.relay.Relay.run`
and :meth:`facta.projections.ProjectionRunner.run`, ``progress`` of
:func:`facta.eventstore.integrity.verify`, of :func:`facta.projections.replay.replay` and of
:func:`facta.replay.demo.run_demo`), called once per batch; a task's update only stores
the count and, at most once per interval, prints. The totals come from the store's head
and the checkpoints (and Kafka's end offsets), read once when a task starts.

rich is imported only when a bar is drawn (a tenth of a second of start-up the other
commands do not pay).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from facta.display import printable
from facta.settings import settings

from .output import _is_terminal, duration

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["ProgressDisplay", "ProgressTask"]


class ProgressTask:
    """One piece of work of a :class:`ProgressDisplay`: ``task(done)`` (or
    :meth:`update`) after each batch, with ``done`` counted from the task's start.

    ``total``: how much there is (None: unknown); it grows to ``done`` when more arrived
    than was there when the task started. ``steps``: also log a line each time ``done``
    passes another 1/steps of the total (the demo's rides), besides the timed ones."""

    def __init__(self, display: ProgressDisplay, label: str, unit: str, total: int | None, steps: int | None) -> None:
        self.display, self.label, self.unit, self.total, self.steps = display, label, unit, total, steps
        self.done = 0
        self.started = display.clock()
        self.last_line = self.started  # a log gets its first line one interval in
        self.last_step = 0
        self.bar_task: TaskID | None = None
        self.finished = False

    def __call__(self, done: int) -> None:
        self.update(done)

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` units are done (of ``total``, when it is given anew)."""
        self.done = done
        if total is not None:
            self.total = total
        if self.total is not None and done > self.total:
            self.total = done
        self.display._changed(self)

    @property
    def rate(self) -> float:
        """Units per second since the task started."""
        elapsed = self.display.clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None: unknown)."""
        rate = self.rate
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def line(self, *, final: bool = False) -> str:
        """``LABEL: done/total UNIT (p%), r UNIT/s, ETA d`` (``, done`` at the end)."""
        of = f"/{self.total}" if self.total is not None else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        tail = ", done" if final else (f", ETA {duration(self.eta_s)}" if self.total is not None else "")
        return printable(f"{self.label}: {self.done}{of} {self.unit}{share}, {self.rate:.0f} {self.unit}/s{tail}")

    def finish(self, *, line: bool = False) -> None:
        """The task ended: its bar shows it complete; ``line``: also log a final line."""
        if self.finished:
            return
        self.finished = True
        self.display._finished(self, line)


class ProgressDisplay:
    """The progress of one command's tasks on stderr (see the module's docstring). Use
    in ``with``; ``quiet`` (``--json`` of the demo, say) shows nothing. ``interval_s``
    (default ``FACTA_PROGRESS_INTERVAL_S``) is how often a log gets a line per task;
    ``terminal`` (default: whether stderr is one) picks the bar or the lines."""

    def __init__(self, *, quiet: bool = False, interval_s: float | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.terminal = _is_terminal(sys.stderr) if terminal is None else terminal
        self.interval_s = settings().progress_interval_s if interval_s is None else interval_s
        self.clock = clock
        self.tasks: list[ProgressTask] = []
        self._bar: Progress | None = None

    def task(self, label: str, unit: str, total: int | None = None, *, steps: int | None = None) -> ProgressTask:
        """A new task (see :class:`ProgressTask`); on a terminal its bar shows at once."""
        task = ProgressTask(self, label, unit, total, steps)
        self.tasks.append(task)
        if self.terminal and not self.quiet:
            bar = self._progress()
            task.bar_task = bar.add_task(printable(label), total=total, unit=unit, rate="")
        return task

    def _progress(self) -> Progress:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=Console(stderr=True, highlight=False, markup=False, emoji=False), transient=False,
                refresh_per_second=4,
            )
            self._bar.start()
        return self._bar

    def _changed(self, task: ProgressTask) -> None:
        if self.quiet:
            return
        if self.terminal:
            if task.bar_task is not None and self._bar is not None:
                self._bar.update(task.bar_task, completed=task.done, total=task.total,
                                 rate=f"{task.rate:.0f} {task.unit}/s")
            return
        now = self.clock()
        stepped = False
        if task.steps and task.total:
            step = task.done * task.steps // task.total
            if step > task.last_step:
                task.last_step, stepped = step, True
        if stepped or now - task.last_line >= self.interval_s:
            task.last_line = now
            click.echo(task.line(), err=True)

    def _finished(self, task: ProgressTask, line: bool) -> None:
        if self.quiet:
            return
        if self.terminal and task.bar_task is not None and self._bar is not None:
            self._bar.update(task.bar_task, completed=task.done, total=task.total or task.done,
                             rate=f"{task.rate:.0f} {task.unit}/s")
        if line:
            self.stop()
            click.echo(task.line(final=True), err=True)

    def stop(self) -> None:
        """End the bars (they stay on the screen as they last were)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
