"""Report templates: edited in the top-level ``reports/templates/``, shipped in the wheel as
``effbench/_data/reports/templates/`` (pyproject force-include).

Placeholders are ``{{ name }}``; values are inserted verbatim, so callers pass text already escaped
for the template's format. No template engine: nothing in a template can evaluate record data.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from effbench.errors import EffbenchError

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def load(name: str) -> str:
    """The template's text: the installed copy first, else the repository's (editable installs)."""
    try:
        packaged = resources.files("effbench")
        for part in ("_data", "reports", "templates", name):  # one part per call: 3.10 Traversables
            packaged = packaged.joinpath(part)
        if packaged.is_file():
            return packaged.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    repo = Path(__file__).resolve().parents[2] / "reports" / "templates" / name
    if repo.is_file():
        return repo.read_text(encoding="utf-8")
    raise EffbenchError(f"report template '{name}' is missing from this installation; reinstall effbench")


def fill(template: str, **values: str) -> str:
    """Replace every placeholder in one pass (so inserted text is never scanned for placeholders)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template placeholder '{m.group(1)}' has no value")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, template)
