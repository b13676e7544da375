"""Quantization schemes by name (see ``registry``); importing this package registers the built-ins."""
from effbench.quant import schemes as _builtin  # noqa: F401  (registers the built-in schemes)
from effbench.quant.registry import Scheme, check_scheme_names, get_scheme, register, schemes

__all__ = ["Scheme", "check_scheme_names", "get_scheme", "register", "schemes"]
