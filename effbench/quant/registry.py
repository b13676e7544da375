"""The quantization scheme registry: one name per scheme, which backends and devices run it.

Names follow ``library-type`` (docs/method.md); the table is the one registry pattern
(``effbench.registry``), with ``gguf-<type>`` names made on demand. A scheme either passes ``load_kwargs`` to the
loader (bitsandbytes quantizes while loading) or ``apply``s itself in place to a model already loaded
in ``compute_dtype`` and returns a note on what it did (e.g. layers it had to skip). The sweep calls
``support()`` with the backend first so an unsupported combination becomes a record with a clear ``error``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Optional, Protocol

from effbench.errors import ConfigError
from effbench.registry import Registry, importable

GGUF_PATTERN = re.compile(r"^gguf-[a-z0-9_]+$")


# What a scheme can ask of a backend. Schemes declare what they need, backends what they offer
# (``Backend.offers``); neither names the other. One home for the words users see in messages.
DTYPE_WEIGHTS = "dtype-weights"  # loads a float checkpoint in a chosen torch dtype
IN_PLACE = "in-place"  # hands the loaded torch model to the scheme to quantize in place
LOAD_TIME = "load-time"  # passes the scheme's quantization_config to the checkpoint loader
GGUF_WEIGHTS = "gguf-weights"  # runs a GGUF file's own quantized weights
CAPABILITIES = {
    DTYPE_WEIGHTS: "float weights in a torch dtype",
    IN_PLACE: "quantizing a loaded torch model in place",
    LOAD_TIME: "quantizing while loading (quantization_config)",
    GGUF_WEIGHTS: "GGUF quantized weights",
}


@dataclass(frozen=True)
class Scheme:
    name: str
    library: str  # torch, torchao, quanto, bnb, gguf
    weight_bits: float
    compute_dtype: str  # torch dtype name the model is loaded in before ``apply``
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
    def needs(self) -> frozenset[str]:
        """The backend capabilities this scheme runs on (see ``CAPABILITIES``)."""
        if self.library == "gguf":
            return frozenset({GGUF_WEIGHTS})
        return frozenset({DTYPE_WEIGHTS} | ({IN_PLACE} if self.apply else set()) | ({LOAD_TIME} if self.load_kwargs else set()))

    def runs_on(self, offers: Collection[str]) -> bool:
        return self.needs <= set(offers)

    @property
    def unquantized(self) -> bool:
        """Plain float weights: the perplexity baseline for quantized schemes."""
        return self.apply is None and self.load_kwargs is None and self.library == "torch"

    def support(self, backend: "OffersCapabilities", device_type: str) -> Optional[str]:
        """``None`` when the scheme can run on ``backend``/``device_type``, else the reason it cannot."""
        missing_caps = sorted(self.needs - set(backend.offers))
        if missing_caps:
            return (f"scheme '{self.name}' needs {' and '.join(CAPABILITIES[c] for c in missing_caps)}, which the "
                    f"{backend.name} backend does not do (it does: "
                    f"{', '.join(CAPABILITIES[c] for c in sorted(backend.offers)) or 'none'})")
        if device_type not in self.devices:
            return f"scheme '{self.name}' needs a {' or '.join(self.devices).upper()} device, not {device_type}"
        missing = [m for m in self.requires if not importable(m)]
        if missing:
            return f"scheme '{self.name}' needs the Python package '{missing[0]}' (pip install 'effbench[quant]')"
        return None


class OffersCapabilities(Protocol):
    name: str
    offers: frozenset[str]


# Built-ins are registered by effbench.quant.schemes, then sealed (effbench/quant/__init__.py).
SCHEMES: Registry[Scheme] = Registry("quantization scheme", {}, open_choice="gguf-<type>", group="effbench.quant", sealed=False)


def register(scheme: Scheme, replace: bool = False) -> Scheme:
    """Add a scheme (built-ins, plugins, tests); a name already taken is an error unless ``replace``."""
    SCHEMES.register(scheme.name, scheme, replace=replace)
    return scheme


def schemes() -> dict[str, Scheme]:
    return {name: SCHEMES.get(name) for name in SCHEMES.names()}


def get_scheme(name: str) -> Scheme:
    key = str(name).strip().lower()
    if key not in SCHEMES.entries and GGUF_PATTERN.match(key):
        gtype = key.removeprefix("gguf-")
        return Scheme(key, "gguf", _gguf_bits(gtype), "float32", ("cpu", "cuda"), f"llama.cpp {gtype.upper()} weights")
    return SCHEMES.get(key)


def check_scheme_names(names: list[str]) -> list[str]:
    """Validate names for a config (raises ValueError, which the config turns into a keyed error)."""
    for n in names:
        try:
            get_scheme(n)
        except ConfigError as e:
            raise ValueError(str(e)) from None
    return names


def _gguf_bits(gtype: str) -> float:
    m = re.match(r"^[a-z]*(\d+)", gtype)
    return float(m.group(1)) if m else 0.0
