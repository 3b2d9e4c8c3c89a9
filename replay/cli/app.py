"""The `facta` group, the one-line error handling and signals every command shares.

User mistakes (a bad URL, an unreachable server, a conflict: any
:class:`~facta.domain.FactaError`) print one line on stderr and exit 1; usage errors
(a bad option value, a missing argument, an unknown command) print one line and exit 2;
Ctrl-C prints ``facta: interrupted`` and exits 130; tracebacks are kept for bugs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from facta import __version__
from facta.domain import FactaError

from .output import printable

__all__ = ["async_command", "cli", "fail", "freeze_heap", "quiet_logging", "run", "stop_on_signals", "usage_error"]

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print ``facta: error: MESSAGE`` (escaped, one line) on stderr and exit 1."""
    click.echo(f"facta: error: {printable(message)}", err=True)
    sys.exit(1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn facta's errors into one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except FactaError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        click.echo("facta: interrupted", err=True)
        sys.exit(130)


def async_command(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A click command written as a coroutine function, run by :func:`run`."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run(fn(*args, **kwargs))

    return wrapper


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set: the work in flight finishes, then the command ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def quiet_logging(verbose: bool) -> None:
    """Log what a long-running command does and waits for (``verbose``); otherwise only
    errors, so a mistake ends in one line. aiokafka's connection noise repeats facta's own
    warnings, so it stays quiet either way."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def freeze_heap() -> None:
    """Move what start-up allocated out of the garbage collector's view. Applying a batch
    makes thousands of short-lived objects, and every full collection would otherwise
    walk the whole heap of imported modules: about a fifth of a rebuild's time."""
    gc.collect()
    gc.freeze()


class _OneLineUsageError(click.UsageError):
    """A usage mistake, shown as one line (exit 2) like facta's other errors."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(printable(f"facta: error: {self.format_message()}{hint}"), err=True)


def _one_line(exc: click.UsageError, ctx: click.Context) -> _OneLineUsageError:
    if isinstance(exc, _OneLineUsageError):
        return exc
    return _OneLineUsageError(exc.format_message(), exc.ctx or ctx)


class _OneLineCommand(click.Command):
    """A command whose usage errors (bad option values, missing arguments) are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc


class _OneLineGroup(click.Group):
    """A group whose usage errors (an unknown command or option) are one line, as are
    those of every command and group under it."""

    command_class = _OneLineCommand
    group_class = type  # subgroups are _OneLineGroups too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            # `facta` or `facta GROUP` alone: its help (the commands it has), exit 0.
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc


def usage_error(message: str) -> click.UsageError:
    """A usage mistake found after parsing (two options that exclude each other): raise
    it for one line on stderr and exit 2."""
    return _OneLineUsageError(message, click.get_current_context(silent=True))


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facta")
def cli() -> None:
    """facta: event sourcing with a permanent SQL event store.

    \b
    Start here:
      facta demo                      run a small taxi city on ./facta.db
      facta db upgrade                create or upgrade the schema
      facta projections list          read models: checkpoints and lag
      facta replay NAME --from-position 0 --dry-run
      facta audit history STREAM_ID   every event of a stream
    """
