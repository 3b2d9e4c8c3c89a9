"""How facta shows a name, an id or a reason in a line a person reads (an error, a table
cell), whichever layer writes the line.

A character that is not printable (C0 and C1 controls, DEL, bidi overrides such as
U+202E, zero-width and other invisible format characters, line and paragraph separators,
spaces other than ' ') is never shown raw: it would move the cursor, recolour or reorder
the line, or make a value that cannot be pasted back. It is written as an escape: \\n,
\\t, \\r, \\xHH (ASCII), \\uHHHH or \\UHHHHHHHH. A value holding one is shown whole in
bash's $'...' quoting (backslash and ' escaped too), which bash, zsh and ksh read back as
the exact value: `facta audit history $'ride-\\x1b[31m'` finds that stream.

Standard library only: the store's errors (``facta.eventstore``) and the command line
(``facta.replay.cli``) both use it.
"""

from __future__ import annotations

__all__ = ["escape", "printable", "quoted", "shown"]


def escape(text: str, quote: bool) -> str:
    """``text`` with every character that is not printable escaped; with ``quote``,
    backslash and ' are escaped too (the inside of a $'...' string)."""
    out = []
    for ch in text:
        if quote and ch in "\\'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def shown(value: str) -> str:
    """A name, id or reason as a table cell or a word of a line: as it is when every
    character is printable, else ``$'...'`` with escapes (see above), pasteable as is."""
    if value.isprintable() and not value.startswith("$'"):
        return value
    return "$'" + escape(value, quote=True) + "'"


def quoted(value: str) -> str:
    """A name, id or reason quoted in a line: ``'ride-1'``, or ``$'...'`` with escapes
    when it holds a ' or a character that is not printable (pasteable as is either way)."""
    if value.isprintable() and "'" not in value:
        return f"'{value}'"
    return "$'" + escape(value, quote=True) + "'"


def printable(line: str) -> str:
    """A whole message (an error, a note, a stored last error) with every character that
    is not printable escaped; the values inside it are quoted by whoever wrote it."""
    return line if line.isprintable() else escape(line, quote=False)
