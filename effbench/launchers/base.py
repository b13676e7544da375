"""The launcher interface: *where* a group of configurations runs.

A group is one model + scheme on one device with its configurations. A launcher runs the sweep's
worker function on a group somewhere (this process, a child process, a SLURM job, a Ray task) and
hands every event the worker emits back to the parent, which alone owns the run directory. Events
are plain picklable/JSON tuples: ("message", text), ("started", config_id), ("repeat", config_id, n),
("host", {...}), ("record", record_dict). A group that dies raises ``GroupFailed``: the parent then
records its unfinished configurations as errors and goes on.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from effbench.errors import ConfigError, EffbenchError
from effbench.jsonlines import json_lines

Event = tuple
Sink = Callable[[Event], None]
Work = Callable[[Any, Sink], None]  # a module-level function (picklable), e.g. effbench.sweep.worker.run_group


class GroupFailed(Exception):
    """The group's worker died or timed out; ``reason`` goes into its unfinished records' ``error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LauncherOptions(BaseModel):
    """A launcher's own options (``--launcher-opt key=value``, or the sweep file's ``launcher:``
    section); each launcher declares its subclass as ``Options``, its fields' descriptions the help."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TimeoutOptions(LauncherOptions):
    timeout: Optional[float] = Field(default=None, gt=0, description="seconds one group may run (default: none)")


def parse_options(launcher: type["Launcher"], raw: Mapping[str, Any] | LauncherOptions) -> LauncherOptions:
    """``raw`` (strings from the command line, or YAML values) as the launcher's typed options; an
    unknown or malformed option is one ``ConfigError`` line naming it and the launcher's options."""
    if isinstance(raw, LauncherOptions):
        return raw
    model = launcher.Options
    unknown = sorted(set(raw) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(f"--launcher-opt '{unknown[0]}' is not an option of the {launcher.name} launcher; its options: {known}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--launcher-opt {key}={raw.get(key)!r}: {msg}") from None


class Launcher(ABC):
    name: ClassVar[str]
    # Runs on this machine: the parent may check devices and measure the idle baseline here.
    local: ClassVar[bool] = True
    # Options this launcher understands (--launcher-opt key=value, or the sweep file's launcher: section).
    Options: ClassVar[type[LauncherOptions]] = LauncherOptions
    # Its workers see this process's run-time registrations (backends, sensors, ... registered by a test
    # or notebook) without being told: this process, or a fork of it. Otherwise the sweep hands them
    # over in the group (effbench.registry.carried_registrations) and the worker re-registers them.
    inherits_registrations: bool = False

    def __init__(self, options: Mapping[str, Any] | LauncherOptions, run_dir: Path) -> None:
        self.options: Any = parse_options(type(self), options)  # this launcher's Options
        self.run_dir = Path(run_dir)
        self.check()

    def check(self) -> None:
        """Fail fast, in seconds and in one line, when this launcher cannot work here (called by the
        constructor, so a launcher object is always a checked one)."""

    @abstractmethod
    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None: ...

    def close(self) -> None: ...


def collect_events(work: Work, group: Any, events_file: Optional[str] = None) -> list[Event]:
    """Run ``work`` on ``group`` and return its events; with ``events_file`` each event is also
    appended and fsynced there as it happens, so a job killed half-way still hands back its
    finished records (remote launchers read the file when the job fails)."""
    events: list[Event] = []
    f = open(events_file, "a", encoding="utf-8") if events_file else None

    def sink(event: Event) -> None:
        events.append(event)
        if f is not None:
            f.write(json.dumps(list(event)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    try:
        work(group, sink)
    finally:
        if f is not None:
            f.close()
    return events


def read_events(path: Path) -> list[Event]:
    """The events a (dead) job managed to write; a torn last line is dropped."""
    return [tuple(value) for value in json_lines(path) if isinstance(value, list)]


def require(module: str, extra: str, launcher: str) -> Any:
    """Import an optional engine (submitit, ray) or fail with the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EffbenchError(f"--launcher {launcher} needs {module}: pip install 'effbench[{extra}]'") from None
