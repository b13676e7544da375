"""The one registry pattern: a name -> implementation table whose entries are imported lazily
("module:attr", so heavy libraries load only when used) or registered at run time (plugins, tests).
Backends, quantization schemes, sensors, scenarios, serving engines and launchers all use it;
unknown names are one-line errors with the choices.

Each kind is its own namespace, and every message names the kind: "backend 'vllm'" (offline
generation in this process) and "serving engine 'vllm'" (a server effbench starts) are different
things that share a library's name.

Plugins. An installed package adds an implementation without editing effbench through the entry-point
group of its kind (``GROUPS``), e.g. in its ``pyproject.toml``::

    [project.entry-points."effbench.backends"]
    mybackend = "mypkg.backend:MyBackend"

Entry points are read on the first lookup of a name the table does not hold, on ``names()`` and on
``register()``; their targets are imported only when used. They are read the same way in every
worker (a spawned process, a SLURM job, a Ray task), since those run in the same installation.
Registrations made at run time (a notebook, a test) exist only in the process that made them:
``carried_registrations`` writes them down as importable "module:attr" references for a launcher to
hand to its workers, and ``install`` re-registers them there. A name registered twice with different
targets, or provided by two packages, is an error (``register(..., replace=True)`` replaces on purpose).
"""
from __future__ import annotations

import difflib
import importlib
import pickle
import sys
import types
from typing import Any, Collection, Generic, Mapping, Optional, TypeVar, Union

from effbench.errors import ConfigError, UnsupportedError

T = TypeVar("T")

# Entry-point group of each registry -> where the registry lives ("module:attr"); a worker imports
# it to re-register what the parent registered at run time.
GROUPS = {
    "effbench.backends": "effbench.backends:BACKENDS",
    "effbench.scenarios": "effbench.scenarios:SCENARIOS",
    "effbench.engines": "effbench.scenarios.serving.engines:ENGINES",
    "effbench.sensors": "effbench.sensors:SENSORS",
    "effbench.launchers": "effbench.launchers:LAUNCHERS",
    "effbench.quant": "effbench.quant:SCHEMES",
}
_REGISTRIES: dict[str, "Registry[Any]"] = {}  # group -> the registry, once its module is imported


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, found without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("optimum" for "optimum.quanto")
        return False


def resolve(target: str) -> Any:
    """The object a "module:attr" (attr may be dotted: "module:Class.inner") reference names."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def reference(obj: Any) -> Optional[str]:
    """The "module:attr" another process can import ``obj`` by, or None: a lambda, a closure, a
    class or function defined in ``__main__`` (a script or notebook) or one not at its module's top."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module in ("__main__", "__mp_main__", "builtins") or module not in sys.modules:
        return None
    target = f"{module}:{qualname}"
    try:
        return target if resolve(target) is obj else None
    except (ImportError, AttributeError):
        return None


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return value
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return f"a {type(value).__name__} object"


class Registry(Generic[T]):
    def __init__(self, kind: str, entries: Mapping[str, Union[str, T]], aliases: Optional[Mapping[str, str]] = None,
                 extra: Optional[Mapping[str, str]] = None, open_choice: Optional[str] = None,
                 group: Optional[str] = None, sealed: bool = True) -> None:
        """``group``: the entry-point group plugins of this kind use (one of ``GROUPS``). ``sealed``:
        the built-ins are all in ``entries``; False for a registry its module fills through
        ``register`` (quantization schemes), which calls ``seal()`` once its built-ins are in."""
        self.kind = kind  # "backend", "sensor", ...: used in messages
        self.group = group
        self.entries: dict[str, Union[str, T]] = dict(entries)
        self._aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self._extra = dict(extra or {})  # name -> the pip extra that provides its library
        self._open_choice = open_choice  # a family of names made on demand ("gguf-<type>"), listed in messages
        # What every process has without being told: the built-ins and what entry points provide.
        self._fixed: Optional[dict[str, Union[str, T]]] = dict(self.entries) if sealed else None
        self._plugin_of: dict[str, str] = {}  # name -> the installed distribution whose entry point provides it
        self._discovered = group is None
        if group is not None:
            _REGISTRIES[group] = self

    def seal(self) -> None:
        """Every entry so far is a built-in; later ones are run-time registrations."""
        self._fixed = dict(self.entries)

    # -- plugins ---------------------------------------------------------------------------------
    def _discover(self) -> None:
        """Add the entry points of this kind's group (once; their targets stay unimported strings)."""
        if self._discovered or self.group is None:
            return
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            name = ep.name.strip().lower()
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
            current = self.entries.get(name)
            if name in self._aliases or (current is not None and not _same(current, ep.value)):
                was = (f"an alias of the built-in {self.kind} '{self._aliases[name]}'" if name in self._aliases
                       else f"the {self.kind} of '{self._plugin_of[name]}' ({_describe(current)})" if name in self._plugin_of
                       else f"{_describe(current)}")
                raise ConfigError(f"{self.kind} '{name}' from '{dist}' (entry point {self.group}: {ep.value}) clashes with "
                                  f"{was}; uninstall one of them or rename the entry point")
            self.entries[name] = ep.value
            self._plugin_of[name] = dist
            if self._fixed is not None:
                self._fixed[name] = ep.value
        self._discovered = True

    def added(self) -> dict[str, Union[str, T]]:
        """The entries registered in this process at run time: neither built in nor from an entry point."""
        fixed = self._fixed if self._fixed is not None else self.entries
        return {k: v for k, v in self.entries.items() if k not in fixed or not _same(fixed[k], v)}

    # -- lookups ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return list(self.entries)

    def canonical(self, name: str) -> str:
        key = self._aliases.get(str(name).strip().lower(), str(name).strip().lower())
        if key not in self.entries:
            self._discover()
        if key not in self.entries:
            close = difflib.get_close_matches(key, self.entries, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            choices = [*self.entries, *([self._open_choice] if self._open_choice else [])]
            raise ConfigError(f"unknown {self.kind} '{name}'; {hint}choose one of: {', '.join(choices)}")
        return key

    def register(self, name: str, value: Union[str, T], replace: bool = False) -> None:
        """Add ``value`` (an object, or a "module:attr" string imported on first use) under ``name``.
        A name that already means something else is an error unless ``replace``."""
        key = str(name).strip().lower()
        if self._fixed is not None:
            self._discover()  # an installed plugin of the same name is a clash too
        current = self.entries.get(key)
        if not replace and (key in self._aliases or (current is not None and not _same(current, value))):
            was = f"an alias of '{self._aliases[key]}'" if key in self._aliases else _describe(current)
            raise ConfigError(f"{self.kind} '{key}' is already registered ({was}); register {_describe(value)} "
                              "under another name, or pass replace=True to replace it")
        self.entries[key] = value

    def get(self, name: str) -> T:
        key = self.canonical(name)
        target = self.entries[key]
        if not isinstance(target, str):
            return target
        try:
            return resolve(target)
        except ImportError as e:
            if key in self._plugin_of:
                raise UnsupportedError(f"{self.kind} '{key}' of the installed package '{self._plugin_of[key]}' "
                                       f"cannot be imported here ({e})") from None
            extra = self._extra.get(key, key)
            raise UnsupportedError(f"{self.kind} '{key}' cannot be imported here ({e}); "
                                   f"install its extra: pip install 'effbench[{extra}]'") from None
        except AttributeError as e:
            raise UnsupportedError(f"{self.kind} '{key}' names {target}, which does not exist ({e})") from None


def _same(a: Any, b: Any) -> bool:
    """Whether two targets are one implementation (an object and the "module:attr" naming it are)."""
    if a is b:
        return True
    if isinstance(a, str) or isinstance(b, str):
        left = a if isinstance(a, str) else reference(a)
        right = b if isinstance(b, str) else reference(b)
        return left is not None and left == right
    return False


# -- run-time registrations across processes ------------------------------------------------------
def _carried(value: Any) -> Optional[Any]:
    """How ``value`` travels to another process: its "module:attr" reference; any other object (a
    quantization ``Scheme``, a ``functools.partial`` of an importable class) as itself when it pickles;
    else None (a class or function that cannot be imported by name)."""
    if isinstance(value, str):
        return value
    ref = reference(value)
    if ref is not None:
        return ref
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return None
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the object cannot travel
        return None
    return value


def carried_registrations(used: Mapping[str, Collection[str]], where: str) -> dict[str, dict[str, Any]]:
    """This process's run-time registrations in a form a fresh process can re-register (``install``):
    group -> name -> "module:attr" (or a picklable object). One that cannot travel (a lambda, a
    closure, a class defined in ``__main__``) is a one-line error when ``used`` (group -> names the
    run needs) names it, and is left out otherwise. ``where``: the workers, for the message."""
    carried: dict[str, dict[str, Any]] = {}
    for group, registry in sorted(_REGISTRIES.items()):
        for name, value in registry.added().items():
            form = _carried(value)
            if form is not None:
                carried.setdefault(group, {})[name] = form
            elif name in set(used.get(group, ())):
                raise ConfigError(f"{registry.kind} '{name}' is registered at run time as {_describe(value)}, which "
                                  f"{where} cannot import; define it at the top level of an importable module "
                                  f"(not __main__, a lambda or a closure), or use --launcher inline")
    return carried


def registry_of(group: str) -> "Registry[Any]":
    """The registry of an entry-point group, importing its module if needed."""
    if group not in _REGISTRIES:
        if group not in GROUPS:
            raise ConfigError(f"unknown plugin group '{group}'; choose one of: {', '.join(GROUPS)}")
        resolve(GROUPS[group])
    return _REGISTRIES[group]


def install(carried: Mapping[str, Mapping[str, Any]]) -> None:
    """Re-register, in a worker, what ``carried_registrations`` wrote down in its parent."""
    for group, entries in carried.items():
        registry = registry_of(group)
        for name, value in entries.items():
            registry.register(name, value, replace=True)
