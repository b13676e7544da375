"""Inference backends by name. Each is imported only when used (they pull heavy libraries)."""
from __future__ import annotations

import importlib
from typing import Callable, Union

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.errors import UnsupportedError

# name -> "module:Class" (imported lazily) or a factory registered at run time
_BACKENDS: dict[str, Union[str, Callable[[], Backend]]] = {
    "transformers": "effbench.backends.transformers:TransformersBackend",
    "llamacpp": "effbench.backends.llamacpp:LlamaCppBackend",
    "vllm": "effbench.backends.vllm:VLLMBackend",
}
_ALIASES = {"pytorch": "transformers", "torch": "transformers", "hf": "transformers",
            "llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "llama_cpp": "llamacpp"}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def canonical_backend_name(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BACKENDS:
        raise ValueError(f"unknown backend '{name}'; choose one of: {', '.join(_BACKENDS)}")
    return key


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Add a backend (plugins, tests). ``factory()`` returns a fresh ``Backend``."""
    _BACKENDS[name.lower()] = factory


def create_backend(name: str) -> Backend:
    key = canonical_backend_name(name)
    target = _BACKENDS[key]
    if callable(target):
        return target()
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnsupportedError(f"backend '{key}' cannot be imported here ({e}); install its extra: pip install 'effbench[{key}]'") from None
    return getattr(module, cls_name)()


__all__ = ["Backend", "LoadedModel", "OutputSize", "backend_names", "canonical_backend_name", "create_backend",
           "register_backend"]
