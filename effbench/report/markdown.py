"""The markdown printer. Record strings are escaped so they render as text: markdown syntax is
backslash-escaped and ``< > &`` become entities (markdown viewers pass raw HTML through)."""
from __future__ import annotations

import html
import re

from effbench.report import templates
from effbench.report.document import Block, Bullets, Cell, Code, Document, Facts, Image, Note, Paragraph, Section, Table

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#!{}])")
ESTIMATED_MARK = "~"


def escape(text: str) -> str:
    flat = " ".join(str(text).split())  # a newline would end a table row or paragraph
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _cell(c: Cell) -> str:
    return (ESTIMATED_MARK if c.estimated and c.text != "-" else "") + escape(c.text)


def _table(t: Table) -> str:
    align = ["---:" if any(row[i].numeric for row in t.rows) else "---" for i in range(len(t.columns))]
    lines = ["| " + " | ".join(escape(c) for c in t.columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{escape(t.caption)}*"]
    return "\n".join(lines)


def _note(n: Note) -> str:
    label = {"estimated": "**ESTIMATED ENERGY:** ", "warning": "**Warning:** "}.get(n.kind, "**Note:** ")
    return "> " + label + escape(n.text)


def _image(i: Image) -> str:
    # The path is ours (ASCII slug), but escape the alt text, which holds model ids.
    text = f"![{escape(i.alt)}]({i.path})"
    if i.alternates:
        text += "\n\nAlso as " + ", ".join(f"[{p.rsplit('.', 1)[-1].upper()}]({p})" for p in i.alternates) + "."
    return text + (f"\n\n*{escape(i.caption)}*" if i.caption else "")


def block(b: Block, level: int) -> str:
    if isinstance(b, Section):
        return section(b, level + 1)
    if isinstance(b, Paragraph):
        return escape(b.text)
    if isinstance(b, Note):
        return _note(b)
    if isinstance(b, Bullets):
        return "\n".join(f"- {escape(x)}" for x in b.items)
    if isinstance(b, Facts):
        return "\n".join(f"- **{escape(k)}**: {escape(v)}" for k, v in b.items)
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        return _image(b)
    if isinstance(b, Code):
        return "```\n" + b.text.replace("```", "'''") + "\n```"
    raise TypeError(f"unknown block {type(b).__name__}")


def section(s: Section, level: int = 2) -> str:
    parts = [f"{'#' * min(level, 6)} {escape(s.title)}"] + [block(b, level) for b in s.blocks]
    return "\n\n".join(parts)


def render(doc: Document, version: str, generated: str) -> str:
    body = "\n\n".join(section(s) for s in doc.sections)
    return templates.fill(templates.load("report.md"), title=escape(doc.title), subtitle=escape(doc.subtitle),
                          body=body, version=escape(version), generated=escape(generated))
