"""Typed errors of the device layer, mapped from the vendor library's return codes (Zeus's
``device/exception.py`` and ``gpu/common.py`` are the model).

A failed library call raises a ``DeviceError`` subclass chosen by the return code (``NotSupported``,
``NotPermitted``, ``InvalidArgument``, ``NotFound``, ``GpuLost``; anything else is a plain
``DeviceError``). Its ``value`` is the library's code and its text the library's text; the class
keeps the library error's name (``NVMLError_NoPermission`` from pynvml), so a record or a message
that quotes ``Name: text`` reads as it did when the library's own exception was quoted.

A library that cannot be used at all (not installed, no driver, no GPU, every GPU hidden) is a
``DeviceUnavailable``, an ``UnsupportedError``: one line saying why, as every unavailable sensor gives.
"""
from __future__ import annotations

from typing import Any, Optional

from effbench.errors import UnsupportedError

__all__ = ["DeviceError", "DeviceUnavailable", "GpuLost", "InvalidArgument", "NotFound", "NotPermitted", "NotSupported"]


class DeviceError(Exception):
    """A device-library call failed. ``value``: the library's return code (None when it gave none)."""

    def __init__(self, message: str = "", value: Optional[int] = None) -> None:
        super().__init__(message)
        self.value = value

    def __reduce__(self) -> Any:  # a renamed subclass (see ``renamed``) pickles as its base
        return (_rebuild, (_base(type(self)), type(self).__name__, str(self), self.value))


class NotSupported(DeviceError):
    """The GPU, driver or binding cannot do this (NVML: Not Supported, or a function the binding lacks)."""


class NotPermitted(DeviceError):
    """The call needs privileges this process does not have (NVML: Insufficient Permissions)."""


class InvalidArgument(DeviceError):
    """A value outside what the GPU accepts (NVML: Invalid Argument)."""


class NotFound(DeviceError):
    """No such device (NVML: Not Found), e.g. a UUID this machine does not have."""


class GpuLost(DeviceError):
    """The GPU fell off the bus or stopped answering (NVML: GPU is lost)."""


class DeviceUnavailable(UnsupportedError):
    """The library cannot be used here; ``cause`` is the library's own error, when there was one."""

    def __init__(self, message: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.cause = cause


TYPED = (NotSupported, NotPermitted, InvalidArgument, NotFound, GpuLost, DeviceError)
_RENAMED: dict[tuple[type[DeviceError], str], type[DeviceError]] = {}


def renamed(base: type[DeviceError], name: str) -> type[DeviceError]:
    """``base`` under the library error's class name (one class per pair, made once)."""
    if name == base.__name__:
        return base
    key = (base, name)
    if key not in _RENAMED:
        _RENAMED[key] = type(name, (base,), {"__module__": base.__module__, "__doc__": base.__doc__})
    return _RENAMED[key]


def _base(cls: type) -> type[DeviceError]:
    return next(c for c in cls.__mro__ if c in TYPED)


def _rebuild(base: type[DeviceError], name: str, message: str, value: Optional[int]) -> DeviceError:
    return renamed(base, name)(message, value)
