"""JSON-lines files that a process appends to and may be killed while writing (worker events,
energy timelines): read back, a torn last line or a malformed one is skipped, never an error."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def json_lines(path: Path) -> Iterator[Any]:
    """The value on each line of ``path`` that parses, in order; none when there is no file."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            yield json.loads(line)
        except ValueError:  # JSONDecodeError: the line a kill cut short
            continue
