"""The one registry pattern: a name -> implementation table whose entries are imported lazily
("module:attr", so heavy libraries load only when used) or registered at run time (plugins, tests).
Backends, quantization schemes, sensors, scenarios and launchers all use it; unknown names are one-line errors with the choices."""
from __future__ import annotations

import difflib
import importlib
from typing import Generic, Mapping, Optional, TypeVar, Union

from effbench.errors import ConfigError, UnsupportedError

T = TypeVar("T")


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, found without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("optimum" for "optimum.quanto")
        return False


class Registry(Generic[T]):
    def __init__(self, kind: str, entries: Mapping[str, Union[str, T]], aliases: Optional[Mapping[str, str]] = None,
                 extra: Optional[Mapping[str, str]] = None, open_choice: Optional[str] = None) -> None:
        self.kind = kind  # "backend", "sensor", ...: used in messages
        self.entries: dict[str, Union[str, T]] = dict(entries)
        self._aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self._extra = dict(extra or {})  # name -> the pip extra that provides its library
        self._open_choice = open_choice  # a family of names made on demand ("gguf-<type>"), listed in messages

    def names(self) -> list[str]:
        return list(self.entries)

    def canonical(self, name: str) -> str:
        key = self._aliases.get(str(name).strip().lower(), str(name).strip().lower())
        if key not in self.entries:
            close = difflib.get_close_matches(key, self.entries, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            choices = [*self.entries, *([self._open_choice] if self._open_choice else [])]
            raise ConfigError(f"unknown {self.kind} '{name}'; {hint}choose one of: {', '.join(choices)}")
        return key

    def register(self, name: str, value: T) -> None:
        self.entries[name.lower()] = value

    def get(self, name: str) -> T:
        key = self.canonical(name)
        target = self.entries[key]
        if not isinstance(target, str):
            return target
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            extra = self._extra.get(key, key)
            raise UnsupportedError(f"{self.kind} '{key}' cannot be imported here ({e}); "
                                   f"install its extra: pip install 'effbench[{extra}]'") from None
        return getattr(module, attr)
