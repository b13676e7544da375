"""Quantization schemes by name (see ``registry``); importing this package registers the built-ins."""
from effbench.quant import schemes as _builtin  # noqa: F401  (registers the built-in schemes)
from effbench.quant.registry import (
    CAPABILITIES,
    DTYPE_WEIGHTS,
    GGUF_WEIGHTS,
    IN_PLACE,
    LOAD_TIME,
    SCHEMES,
    Scheme,
    check_scheme_names,
    get_scheme,
    register,
    schemes,
)

SCHEMES.seal()  # the built-ins are in: later registrations are plugins (effbench.registry)

__all__ = ["CAPABILITIES", "DTYPE_WEIGHTS", "GGUF_WEIGHTS", "IN_PLACE", "LOAD_TIME", "SCHEMES", "Scheme",
           "check_scheme_names", "get_scheme", "register", "schemes"]
