"""The quantization scheme registry: one name per scheme, which backends and devices run it.

Names follow ``library-type`` (brief, section 4). A scheme either passes ``load_kwargs`` to the
loader (bitsandbytes quantizes while loading) or ``apply``s itself in place to a model already loaded
in ``compute_dtype`` and returns a note on what it did (e.g. layers it had to skip). Backends call
``support()`` first so an unsupported combination becomes a record with a clear ``error``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from effbench.errors import ConfigError

GGUF_PATTERN = re.compile(r"^gguf-[a-z0-9_]+$")


@dataclass(frozen=True)
class Scheme:
    name: str
    library: str  # torch, torchao, quanto, bnb, gguf
    weight_bits: float
    compute_dtype: str  # torch dtype name the model is loaded in before ``apply``
    backends: tuple[str, ...]
    devices: tuple[str, ...]  # "cpu", "cuda"
    description: str
    apply: Optional[Callable[[Any, str], Optional[str]]] = field(default=None, compare=False)
    load_kwargs: Optional[Callable[[str], dict]] = field(default=None, compare=False)
    requires: tuple[str, ...] = ()  # importable modules it needs
    cuda_dtype: Optional[str] = None  # activations dtype on CUDA when it differs (bf16 for weight-only schemes)

    def dtype_for(self, device: str) -> str:
        """The torch dtype name to load the model in on ``device`` before quantizing."""
        return self.cuda_dtype if self.cuda_dtype and device.startswith("cuda") else self.compute_dtype

    @property
    def unquantized(self) -> bool:
        """Plain float weights: the perplexity baseline for quantized schemes."""
        return self.apply is None and self.load_kwargs is None and self.library == "torch"

    def support(self, backend: str, device_type: str) -> Optional[str]:
        """``None`` when the scheme can run on ``backend``/``device_type``, else the reason it cannot."""
        if backend not in self.backends:
            return f"scheme '{self.name}' does not run on the {backend} backend (it runs on: {', '.join(self.backends)})"
        if device_type not in self.devices:
            return f"scheme '{self.name}' needs a {' or '.join(self.devices).upper()} device, not {device_type}"
        missing = [m for m in self.requires if not _importable(m)]
        if missing:
            return f"scheme '{self.name}' needs the Python package '{missing[0]}' (pip install 'effbench[quant]')"
        return None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("optimum" for "optimum.quanto")
        return False


_REGISTRY: dict[str, Scheme] = {}


def register(scheme: Scheme) -> Scheme:
    _REGISTRY[scheme.name] = scheme
    return scheme


def schemes() -> dict[str, Scheme]:
    return dict(_REGISTRY)


def get_scheme(name: str) -> Scheme:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if GGUF_PATTERN.match(name):
        gtype = name.removeprefix("gguf-")
        bits = _gguf_bits(gtype)
        return Scheme(name, "gguf", bits, "float32", ("llamacpp",), ("cpu", "cuda"), f"llama.cpp {gtype.upper()} weights")
    raise ConfigError(unknown_scheme_message(name))


def unknown_scheme_message(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown quantization scheme '{name}'; {hint}known schemes: {', '.join(_REGISTRY)}, gguf-<type>"


def check_scheme_names(names: list[str]) -> list[str]:
    """Validate names for a config (raises ValueError, which the config turns into a keyed error)."""
    for n in names:
        if n not in _REGISTRY and not GGUF_PATTERN.match(n):
            raise ValueError(unknown_scheme_message(n))
    return names


def _gguf_bits(gtype: str) -> float:
    m = re.match(r"^[a-z]*(\d+)", gtype)
    return float(m.group(1)) if m else 0.0
