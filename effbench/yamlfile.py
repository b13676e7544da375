"""Reading a user's YAML file (sweep, hardware profile, price file) with one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from effbench.errors import EffbenchError, first_line

# libyaml's safe loader where PyYAML was built with it (about 10x faster: the hardware catalog is 16
# files read on every `effbench project`); the same documents, the same errors.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path, what: str, error: type[EffbenchError] = EffbenchError) -> Any:
    """The parsed content of ``path``; ``what`` names the file in messages ("sweep file", ...)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise error(f"{what} '{path}' does not exist; check the path") from None
    except UnicodeDecodeError:
        raise error(f"{what} '{path}' is not UTF-8 text") from None
    except OSError as e:
        raise error(f"{what} '{path}' cannot be read ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or first_line(e) or type(e).__name__
        raise error(f"{what} '{path}' is not valid YAML{where}: {problem}") from None
