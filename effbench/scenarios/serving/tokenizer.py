"""The model's tokenizer for the serving client, loaded light: a checkpoint's ``tokenizer.json``
through the ``tokenizers`` package (a fraction of a second, no torch), else transformers'
AutoTokenizer. The client needs it only to cut prompts to a token length, and to count output
tokens where the server sends no usage."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class _FastTokenizer:
    """``tokenizers.Tokenizer`` without special tokens (a prompt's own tokens, as the offline rows)."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=False))


class _HfTokenizer:
    def __init__(self, tok: Any) -> None:
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids))


def load_tokenizer(path: str) -> TextTokenizer:
    """The tokenizer of the checkpoint directory (or hub id) ``path``."""
    file = Path(path) / "tokenizer.json"
    if file.is_file():
        try:
            from tokenizers import Tokenizer

            return _FastTokenizer(Tokenizer.from_file(str(file)))
        except ImportError:
            pass
    from effbench.models.hf import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer

    return _HfTokenizer(AutoTokenizer.from_pretrained(path))
