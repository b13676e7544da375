"""Shipped prompt sets (English, Korean, Japanese, written for effbench) and quality texts,
and how a batch of equal-length prompts is built from them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from effbench.errors import EffbenchError

SHIPPED_SETS = ("en", "ko", "ja")
QUALITY_TEXTS = ("en", "ko")


@dataclass(frozen=True)
class PromptSet:
    name: str
    texts: tuple[str, ...]


def _data(*parts: str) -> str:
    return resources.files("effbench.models").joinpath("data", *parts).read_text(encoding="utf-8")


def _paragraphs(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip())


def load_prompt_set(name: str) -> PromptSet:
    """A shipped set by language code, or a file: paragraphs separated by blank lines, or JSONL
    with a ``prompt`` (or ``text``) field per line."""
    if name in SHIPPED_SETS:
        return PromptSet(name, _paragraphs(_data("prompts", f"{name}.txt")))
    path = Path(name).expanduser()
    if not path.is_file():
        raise EffbenchError(
            f"prompt set '{name}' not found; use one of {', '.join(SHIPPED_SETS)} or the path of a text/JSONL file"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EffbenchError(f"cannot read prompt file '{name}': {e}") from None
    if path.suffix.lower() == ".jsonl":
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                texts.append(str(obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else obj))
            except json.JSONDecodeError:
                raise EffbenchError(f"prompt file '{name}' line {i} is not valid JSON") from None
        texts_t = tuple(t for t in texts if t and t != "None")
    else:
        texts_t = _paragraphs(raw)
    if not texts_t:
        raise EffbenchError(f"prompt file '{name}' holds no prompts")
    return PromptSet(path.stem, texts_t)


def load_quality_text(lang: str = "en") -> str:
    if lang not in QUALITY_TEXTS:
        raise EffbenchError(f"no quality text for '{lang}'; shipped: {', '.join(QUALITY_TEXTS)}")
    return _data("quality", f"{lang}.txt").strip()


def build_token_rows(
    tokenize: Callable[[str], Sequence[int]], prompts: PromptSet, batch_size: int, prompt_tokens: int
) -> list[list[int]]:
    """``batch_size`` rows of exactly ``prompt_tokens`` token ids. Row i starts at prompt i and
    continues through the following prompts (cyclically) until long enough, so rows differ but
    every configuration does the same amount of work and no row needs padding."""
    encoded = [list(tokenize(t)) for t in prompts.texts]
    if not any(encoded):
        raise EffbenchError(f"prompt set '{prompts.name}' tokenizes to nothing")
    rows = []
    n = len(encoded)
    for i in range(batch_size):
        row: list[int] = []
        j = i
        while len(row) < prompt_tokens:
            row.extend(encoded[j % n])
            j += 1
        rows.append(row[:prompt_tokens])
    return rows
