"""What every part's config shares: list keys that accept a list, a scalar or "1,4,16", positive
integer lists, request rates, and the command-line metadata a field carries (``cli``), from which
``effbench run``'s options are generated (effbench/cli/options.py): one place for a key's name, help
and default."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")

LIST_HELP = "comma-separated"


def split_list(value: Any) -> Any:
    """'1,4,16' -> ['1','4','16']; 4 -> [4]; lists pass through."""
    if value is None:
        return value
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        return [p for p in parts if p != ""] or [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def checked(check: Callable[[str], T], value: Any) -> T:
    """``check(value)`` (a registry's canonical name, a parser), its one-line ``EffbenchError`` turned
    into the field's validation error (pydantic reports it on the key, the message unchanged)."""
    from effbench.errors import EffbenchError

    try:
        return check(str(value))
    except EffbenchError as e:
        raise ValueError(str(e)) from None


def positive_ints(v: list[int]) -> list[int]:
    """The values, duplicates dropped in order; any value below 1 is an error naming it."""
    bad = [x for x in v if x < 1]
    if bad:
        raise ValueError(f"{bad[0]} is not a positive integer (every value must be >= 1)")
    return list(dict.fromkeys(v))


def request_rate(value: Any) -> float:
    """A requests/s rate: a positive number, or inf (all requests at once)."""
    text = str(value).strip().lower()
    if text in ("inf", "infinity", "max"):
        return math.inf
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"rate '{value}' is not a number; give requests/s like 1,2,4 or inf") from None
    if not rate > 0 or math.isnan(rate):
        raise ValueError(f"rate '{value}' must be > 0 requests/s (inf = all at once)")
    return rate


def cli(help: str, *flags: str, default: Optional[str] = None, listed: bool = False,
        hidden: bool = False) -> dict[str, Any]:
    """A field's command-line option, for ``Field(json_schema_extra=cli(...))``: its help, its flags
    (default ``--the-field-name``; "--a/--b" for an on/off pair), the default shown in the help when
    the model's own would mislead (``default``), whether it takes a comma-separated list (``listed``),
    and whether it is left off the command line (``hidden``: sweep-file only)."""
    return {"cli": {"help": help, "flags": list(flags), "default": default, "listed": listed, "hidden": hidden}}
