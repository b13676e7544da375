"""The HTML printer: one self-contained file. Every string from the document is ``html.escape``d
(quotes included); images are inlined as base64 data URIs; the template's Content-Security-Policy
forbids any network load or script, as a second line of defence."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from effbench.report import templates
from effbench.report.document import Block, Bullets, Cell, Code, Document, Facts, Image, Note, Paragraph, Section, Table


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(c: Cell) -> str:
    classes = " ".join(k for k, on in (("num", c.numeric), ("est", c.estimated and c.text != "-")) if on)
    title = ' title="estimated, not measured"' if "est" in classes else ""
    mark = "~" if "est" in classes else ""
    return f'<td class="{classes}"{title}>{mark}{esc(c.text)}</td>' if classes else f"<td>{esc(c.text)}</td>"


def _table(t: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
    rows = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t.rows)
    caption = f"<caption>{esc(t.caption)}</caption>" if t.caption else ""
    # a wide table scrolls inside its own box instead of widening the page
    return (f'<div class="table-wrap"><table>{caption}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>'
            "</table></div>")


CSS_DPI = 96  # a CSS pixel is 1/96 inch: a plot is shown at the size it was drawn, not at 300 dpi's pixel count


def _display_size(png: bytes) -> str:
    """width/height attributes for a PNG written at ``plots.DPI`` (read from its IHDR chunk)."""
    from effbench.report.plots import DPI

    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return ""
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return f' width="{round(w * CSS_DPI / DPI)}" height="{round(h * CSS_DPI / DPI)}"'


def _image(i: Image, base: Path) -> str:
    raw = (base / i.path).read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    also = f"Also as {', '.join(i.alternates)} beside this report." if i.alternates else ""
    text = f"{i.caption.rstrip('.')}. {also}" if i.caption and also else (i.caption or also)
    caption = f"<figcaption>{esc(text)}</figcaption>" if text else ""
    return f'<figure><img alt="{esc(i.alt)}"{_display_size(raw)} src="data:image/png;base64,{data}">{caption}</figure>'


def block(b: Block, level: int, base: Path) -> str:
    if isinstance(b, Section):
        return section(b, level + 1, base)
    if isinstance(b, Paragraph):
        return f"<p>{esc(b.text)}</p>"
    if isinstance(b, Note):
        return f'<div class="note {esc(b.kind)}">{esc(b.text)}</div>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b.items) + "</ul>"
    if isinstance(b, Facts):
        return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in b.items) + "</dl>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        return _image(b, base)
    if isinstance(b, Code):
        return f"<pre>{esc(b.text)}</pre>"
    raise TypeError(f"unknown block {type(b).__name__}")


def section(s: Section, level: int, base: Path) -> str:
    h = min(level, 6)
    inner = "\n".join(block(b, level, base) for b in s.blocks)
    return f'<section id="{esc(s.anchor)}">\n<h{h}>{esc(s.title)}</h{h}>\n{inner}\n</section>'


def _toc(doc: Document) -> str:
    def items(sections: list[Section]) -> str:
        out = []
        for s in sections:
            subs = [b for b in s.blocks if isinstance(b, Section)]
            out.append(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a>{items(subs) if subs else ""}</li>')
        return "<ul>" + "".join(out) + "</ul>"

    return items(doc.sections)


def render(doc: Document, base: Path, version: str, generated: str) -> str:
    """``base`` is the report directory that image paths are relative to."""
    body = "\n".join(section(s, 2, base) for s in doc.sections)
    return templates.fill(templates.load("report.html"), title=esc(doc.title), subtitle=esc(doc.subtitle),
                          style=templates.load("report.css"), toc=_toc(doc), body=body, version=esc(version),
                          generated=esc(generated))
