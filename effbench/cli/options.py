"""``effbench run``'s options, generated from the sweep config's models (effbench/config.py and each
part's section): a field's flags, help and default live once, on the field (``config_fields.cli``).
An option left unset is not passed on, so the sweep file's value (else the model's default) holds."""
from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from effbench.cli._console import unset


@dataclass(frozen=True)
class ConfigOption:
    """One generated option: the key it sets in the config (``load_config`` overrides), its flags,
    its Python type on the command line and its help."""

    key: str
    flags: tuple[str, ...]
    kind: type
    help: str


def _shown_default(field: FieldInfo, meta: dict[str, Any]) -> Optional[str]:
    if meta.get("default") is not None:
        return str(meta["default"])
    value = field.get_default(call_default_factory=True)
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return "on" if value is True else "off" if value is False else str(value)


def _cli_type(field: FieldInfo, listed: bool) -> type:
    """What the command line parses: a comma-separated list and Literal choices arrive as text (the
    config's validators check them with one-line errors); numbers and on/off flags as themselves."""
    if listed:
        return str
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation if annotation in (bool, int, float) else str


def _option(name: str, field: FieldInfo) -> Optional[ConfigOption]:
    extra = field.json_schema_extra
    found = extra.get("cli") if isinstance(extra, dict) else None
    if not isinstance(found, dict) or found.get("hidden"):
        return None
    meta: dict[str, Any] = dict(found)  # what config_fields.cli wrote
    flags = tuple(str(f) for f in meta.get("flags") or []) or (f"--{name.replace('_', '-')}",)
    key = flags[0].split("/")[0].removeprefix("--").replace("-", "_")
    shown = _shown_default(field, meta)
    text = str(meta["help"]) + (f" (default: {shown})" if shown is not None else "")
    return ConfigOption(key, flags, _cli_type(field, bool(meta.get("listed"))), text)


def config_options(model: type[BaseModel]) -> list[ConfigOption]:
    """The options of ``model``'s fields, a section's fields in the section's place."""
    found: list[ConfigOption] = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += config_options(field.annotation)
        elif (opt := _option(name, field)) is not None:
            found.append(opt)
    return found


def with_config_options(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Any]:
    """Give a command the options of ``model``: the command's own parameters stay, and it receives the
    generated ones as one ``overrides`` mapping of the keys the user gave."""
    options = config_options(model)

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "overrides"]
        generated = [inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[o.kind],
                                       default=unset(*o.flags, help=o.help))
                     for o in options]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            overrides = {o.key: values.pop(o.key) for o in options}
            return command(**values, overrides={k: v for k, v in overrides.items() if v is not None})

        hints = typing.get_type_hints(command)
        positional = [p for p in own if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not None
                      and type(p.default).__name__ == "ArgumentInfo"]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in positional]
        # the command's arguments, then the generated options, then its own options (help lists them so)
        run.__signature__ = inspect.Signature([*positional, *generated, *rest])  # type: ignore[attr-defined]
        run.__annotations__ = {**{p.name: hints.get(p.name, Any) for p in own}, **{p.name: p.annotation for p in generated}}
        del run.__wrapped__  # typer reads the signature above, not the wrapped command's
        return run

    return wrap
