"""Inference backends by name, through the one registry pattern (``effbench.registry``): each is
imported only when used (they pull heavy libraries)."""
from __future__ import annotations

from typing import Callable

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.registry import Registry

BACKENDS: Registry[Callable[[], Backend]] = Registry("backend", {
    "transformers": "effbench.backends.transformers:TransformersBackend",
    "llamacpp": "effbench.backends.llamacpp:LlamaCppBackend",
    "vllm": "effbench.backends.vllm:VLLMBackend",
}, aliases={"pytorch": "transformers", "torch": "transformers", "hf": "transformers",
            "llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "llama_cpp": "llamacpp"}, group="effbench.backends")


def backend_names() -> list[str]:
    return BACKENDS.names()


def canonical_backend_name(name: str) -> str:
    """The backend's registered name (aliases resolved); unknown names are a ``ConfigError``."""
    return BACKENDS.canonical(name)


def register_backend(name: str, factory: Callable[[], Backend], replace: bool = False) -> None:
    """Add a backend (plugins, tests). ``factory()`` returns a fresh ``Backend``; a name already taken
    is an error unless ``replace``. Workers in other processes get it when ``factory`` is importable
    (effbench.registry); installed packages use the ``effbench.backends`` entry-point group instead."""
    BACKENDS.register(name, factory, replace=replace)


def create_backend(name: str) -> Backend:
    return BACKENDS.get(name)()


__all__ = ["BACKENDS", "Backend", "LoadedModel", "OutputSize", "backend_names", "canonical_backend_name",
           "create_backend", "register_backend"]
