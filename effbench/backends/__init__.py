"""Inference backends by name. Each is imported only when used (they pull heavy libraries)."""
from __future__ import annotations

import importlib

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.errors import UnsupportedError

# name -> "module:Class"
_BACKENDS = {
    "transformers": "effbench.backends.transformers:TransformersBackend",
}
_ALIASES = {"pytorch": "transformers", "torch": "transformers", "hf": "transformers"}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def canonical_backend_name(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BACKENDS:
        raise ValueError(f"unknown backend '{name}'; choose one of: {', '.join(_BACKENDS)}")
    return key


def create_backend(name: str) -> Backend:
    key = canonical_backend_name(name)
    module_name, cls_name = _BACKENDS[key].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnsupportedError(f"backend '{key}' cannot be imported here ({e}); install its extra: pip install 'effbench[{key}]'") from None
    return getattr(module, cls_name)()


__all__ = ["Backend", "LoadedModel", "OutputSize", "backend_names", "canonical_backend_name", "create_backend"]
