"""What the `facta` command line prints: tables, JSON and CSV, times, durations,
and the rule for showing names, ids and reasons.

Names, ids, reasons and messages reach the terminal through :func:`~facta.display.shown`,
:func:`~facta.display.quoted` and :func:`~facta.display.printable` only (:mod:`facta.display`
has the rule). --json (JSON escapes every control character) and --csv keep exact values.

Tables are drawn by `rich <https://rich.readthedocs.io>`_, without borders: columns two
spaces apart, every cell on one line whatever its length and the terminal's width (a
long stream id or payload is never folded or cut, so the table stays parseable by
column), no trailing spaces, and colour (bold headers) only when stdout is a terminal.
Progress goes to stderr (:mod:`facta.replay.cli.progress`).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any

import click

from facta.display import escape, printable, quoted, shown
from facta.eventstore.audit import utc_text
from facta.projections._tracking import LOG

__all__ = [
    "EVENT_COLUMNS", "a", "clip", "compact", "compact_json", "coords_json", "coords_text",
    "duration", "echo_json", "escape", "event_json", "event_row", "iso", "plural", "printable", "quoted", "shown",
    "table", "table_lines", "write_csv",
]


# -- values in a line -----------------------------------------------------------------------


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 event``, ``2 events``, ``0 events``."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def clip(text: str, width: int = 60) -> str:
    """A value as shown in an error: long ones cut, so the error stays one readable line."""
    return text if len(text) <= width else f"{text[:width]}...({len(text)} characters)"


def a(noun: str) -> str:
    """``noun`` with its indefinite article: "an event type", "a stream id", "a URL"."""
    first = noun.split()[0] if noun.split() else noun
    vowel_sound = first[:1].lower() in "aeio" or (first[:1].lower() == "u" and not first.lower().startswith(
        ("uni", "use", "usu", "utf", "url", "uuid")))
    return f"{'an' if vowel_sound or first in ('8', '11', '18') else 'a'} {noun}"


def compact(value: Any) -> str:
    """A value in a table cell: text as it is, None as '-', the rest as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return shown(value)
    return compact_json(value)


def compact_json(value: Any) -> str:
    """``value`` as JSON without spaces, keys sorted (a payload in a cell or a CSV field)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# -- times and durations ----------------------------------------------------------------------


def iso(value: Any) -> str | None:
    """A time as every command prints it: ISO 8601 in UTC with a Z (None stays None)."""
    return utc_text(value) if isinstance(value, datetime) else None


def duration(seconds: float | None) -> str:
    """A duration for people: ``under 0.1 s``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``
    (``?`` when unknown)."""
    if seconds is None:
        return "?"
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# -- checkpoints --------------------------------------------------------------------------------


def coords_json(values: dict[tuple[str, int], int]) -> Any:
    """A log checkpoint as its position, Kafka checkpoints as {"topic[partition]": offset}."""
    if not values:
        return None
    if set(values) == {LOG}:
        return values[LOG]
    return {f"{t}[{p}]": v for (t, p), v in sorted(values.items())}


def coords_text(values: dict[tuple[str, int], int]) -> str:
    """A checkpoint in a line or a cell: ``position 80``, ``topic[0]=5 topic[1]=7``, ``-``."""
    if not values:
        return "-"
    if set(values) == {LOG}:
        return f"position {values[LOG]}"
    return " ".join(f"{t}[{p}]={v}" for (t, p), v in sorted(values.items()))


# -- events ---------------------------------------------------------------------------------------


def event_json(record: Any) -> dict[str, Any]:
    """A :class:`~facta.eventstore.RecordedEvent` as the audit commands print it in JSON."""
    return {
        "position": record.position, "event_id": str(record.event_id), "stream_id": record.stream_id,
        "stream_type": record.stream_type, "version": record.version, "event_type": record.event_type,
        "schema_version": record.schema_version, "recorded_at": utc_text(record.recorded_at),
        "occurred_at": utc_text(record.occurred_at), "actor": record.actor,
        "correlation_id": record.correlation_id, "causation_id": record.causation_id,
        "payload": json.loads(record.payload),
    }


EVENT_COLUMNS = ["POSITION", "RECORDED AT (UTC)", "STREAM", "VERSION", "TYPE", "ACTOR", "CORRELATION", "CAUSATION",
                 "PAYLOAD"]


def event_row(e: dict[str, Any]) -> list[str]:
    """An :func:`event_json` as a row under :data:`EVENT_COLUMNS`."""
    return [str(e["position"]), e["recorded_at"], shown(e["stream_id"]), str(e["version"]), shown(e["event_type"]),
            compact(e["actor"]), compact(e["correlation_id"]), compact(e["causation_id"]), compact(e["payload"])]


# -- JSON and CSV -------------------------------------------------------------------------------


def echo_json(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> None:
    """``value`` as JSON on stdout, one document and a newline (``json.dumps``' defaults:
    ASCII, ``", "`` and ``": "`` separators)."""
    click.echo(json.dumps(value, indent=indent, sort_keys=sort_keys))


def write_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: IO[str] | None = None) -> None:
    """A header row and ``rows`` as CSV (``\\n`` line ends) on stdout or ``out``."""
    writer = csv.writer(out or sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


# -- tables -------------------------------------------------------------------------------------


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]], *, colour: bool | None = None) -> list[str]:
    """``rows`` in columns under ``headers``, as lines without trailing spaces: columns two
    spaces apart, left-aligned, each as wide as its widest cell (in terminal cells), no
    cell ever folded or cut. Cells holding names, ids or reasons are passed through
    :func:`shown` by the caller; any character that is still not printable is escaped
    here (:func:`printable`), so no cell reaches the terminal raw. ``colour``: bold
    headers (ANSI codes); by default only when stdout is a terminal."""
    # Lazy, like the progress bar's: rich costs a tenth of a second of start-up, which
    # --json, --csv and one-line commands do not need.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text as RichText

    if colour is None:
        colour = _is_terminal(sys.stdout)
    cells = [[printable(cell) for cell in row] for row in rows]
    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1),
                 show_header=True, header_style="bold" if colour else "", collapse_padding=False, expand=False)
    for header in headers:
        grid.add_column(header, no_wrap=True, overflow="ignore", min_width=None)
    for row in cells:
        grid.add_row(*(RichText(cell) for cell in row))
    # Wide enough for every row: the table is never squeezed to a terminal's width.
    widest = sum(max([RichText(h).cell_len, *(RichText(r[i]).cell_len for r in cells)]) for i, h in enumerate(headers))
    console = Console(file=io.StringIO(), width=widest + 2 * len(headers) + 2, force_terminal=colour,
                      color_system="standard" if colour else None, no_color=not colour, highlight=False,
                      emoji=False, markup=False, legacy_windows=False, soft_wrap=False)
    with console.capture() as capture:
        console.print(grid)
    return [line.rstrip() for line in capture.get().rstrip("\n").split("\n")]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """:func:`table_lines` as one text (lines joined by newlines, no final newline)."""
    return "\n".join(table_lines(headers, rows))
