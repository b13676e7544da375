"""A small format-neutral document (sections of paragraphs, tables, images, notes).

The report is built once as this tree; ``markdown.py`` and ``html.py`` are two printers over it
(as llama-bench has one printer interface with md/csv/json/sql implementations). Every string in
the tree is plain, unescaped text: each printer escapes for its own format, so a hostile model id
cannot be forgotten in one place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union


@dataclass(frozen=True)
class Cell:
    text: str
    estimated: bool = False  # an estimated energy figure: printers mark it visibly
    numeric: bool = False  # right-aligned


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    """A call-out: ``kind`` is "info", "estimated" (estimated energy) or "warning"."""

    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Facts:
    """A two-column label/value list (the methodology's metadata)."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report directory
    alt: str
    caption: str = ""
    alternates: tuple[str, ...] = ()  # the same figure in other formats (SVG, PDF), for a paper


@dataclass(frozen=True)
class Code:
    text: str


Block = Union[Paragraph, Note, Bullets, Facts, Table, Image, Code, "Section"]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)


# -- number formatting shared by every printer ------------------------------------------------

def num(value: Optional[float], digits: Optional[int] = None) -> str:
    """Three significant figures by default, thousands separators, '-' for missing."""
    if value is None or not math.isfinite(value):
        return "-"
    if digits is not None:
        return f"{value:,.{digits}f}"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.3g}"


def pct(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 100:.{digits}f}%"


def size(n: Optional[float]) -> str:
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:,.0f} {unit}" if unit == "B" else f"{x:,.1f} {unit}"
        x /= 1024
    return str(n)


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size_unit(values: "Iterable[Optional[float]]") -> tuple[str, float]:
    """One binary unit for a whole column (the largest value's), so a column never mixes MiB and GiB."""
    top = max((abs(float(v)) for v in values if v is not None), default=0.0)
    i = 0
    while i < len(_BINARY_UNITS) - 1 and top >= 1024 ** (i + 1):
        i += 1
    return _BINARY_UNITS[i], float(1024 ** i)


def size_in(n: Optional[float], unit: str) -> str:
    if n is None:
        return "-"
    x = float(n) / 1024 ** _BINARY_UNITS.index(unit)
    return f"{x:,.0f}" if unit == "B" else f"{x:,.2f}" if x < 10 else f"{x:,.1f}"


def slug(text: str) -> str:
    """An ASCII anchor/file-name fragment, with a hash so distinct names never collide."""
    import hashlib
    import re

    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"
    return f"{base}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"
