"""Shared terminal output: rich consoles (stdout for results, stderr for progress) and formatting."""
from __future__ import annotations

import math
import sys
from typing import Any, Optional

from rich.console import Console
from rich.text import Text

from effbench.report.document import size as fmt_bytes  # noqa: F401  (one byte formatter for tables and reports)


def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:  # pipes and CI logs: do not squeeze tables into 80 columns
        c = Console(stderr=stderr, highlight=False, width=180)
    return c


out = _console(False)
err = _console(True)


def unset(*flags: str, help: str) -> Any:
    """A command-line option that is None unless given (no default to show)."""
    import typer

    return typer.Option(None, *flags, help=help, show_default=False)


def fmt(value: Optional[float], digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value * scale:,.{digits}f}"


def cell(value: object) -> Text:
    """A table cell that shows user strings literally (no rich markup interpretation)."""
    return Text(str(value))


def comma_items(values: Optional[list[str]]) -> list[str]:
    """A repeatable option's values, each also comma-separated: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def one_line(text: object) -> str:
    """A message as one line: whitespace and newlines collapsed (scripts grep stderr line by line), and
    any other character a terminal would act on (escape sequences, zero-width marks) shown escaped, so a
    hostile model name or path cannot recolour, move or hide the message."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(text).split()))


def warn(message: str) -> None:
    """One unwrapped line on stderr, whatever the terminal width."""
    sys.stderr.write(f"effbench: warning: {one_line(message)}\n")
    sys.stderr.flush()
