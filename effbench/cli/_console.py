"""Shared terminal output: rich consoles (stdout for results, stderr for progress) and formatting."""
from __future__ import annotations

import math
from typing import Optional

from rich.console import Console
from rich.text import Text

def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:  # pipes and CI logs: do not squeeze tables into 80 columns
        c = Console(stderr=stderr, highlight=False, width=180)
    return c


out = _console(False)
err = _console(True)


def fmt(value: Optional[float], digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value * scale:,.{digits}f}"


def fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def cell(value: object) -> Text:
    """A table cell that shows user strings literally (no rich markup interpretation)."""
    return Text(str(value))
