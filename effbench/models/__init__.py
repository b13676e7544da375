"""Which model a name means (bundled GGUF, local dir or file, hub id), prompt sets and quality texts."""
from effbench.models.prompts import PromptSet, build_token_rows, load_prompt_set, load_quality_text
from effbench.models.resolve import BUNDLED_MODEL, ModelSpec, bundled_gguf_path, resolve_model

__all__ = [
    "BUNDLED_MODEL", "ModelSpec", "PromptSet", "build_token_rows", "bundled_gguf_path",
    "load_prompt_set", "load_quality_text", "resolve_model",
]
