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

from effbench.errors import ConfigError, EffbenchError

Event = tuple
Sink = Callable[[Event], None]
Work = Callable[[Any, Sink], None]  # a module-level function (picklable), e.g. effbench.sweep.worker.run_group


class GroupFailed(Exception):
    """The group's worker died or timed out; ``reason`` goes into its unfinished records' ``error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Launcher(ABC):
    name: ClassVar[str]
    # Runs on this machine: the parent may check devices and measure the idle baseline here.
    local: ClassVar[bool] = True
    # Options this launcher understands (--launcher-opt key=value, or the sweep file's launcher: section).
    option_help: ClassVar[Mapping[str, str]] = {}
    # Its workers see this process's run-time registrations (backends, sensors, ... registered by a test
    # or notebook) without being told: this process, or a fork of it. Otherwise the sweep hands them
    # over in the group (effbench.registry.carried_registrations) and the worker re-registers them.
    inherits_registrations: bool = False

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        unknown = sorted(set(options) - set(self.option_help))
        if unknown:
            known = ", ".join(self.option_help) or "none"
            raise ConfigError(f"--launcher-opt '{unknown[0]}' is not an option of the {self.name} launcher; its options: {known}")
        self.options = dict(options)
        self.run_dir = Path(run_dir)
        self.check()

    def check(self) -> None:
        """Fail fast, in seconds and in one line, when this launcher cannot work here (called by the
        constructor, so a launcher object is always a checked one)."""

    @abstractmethod
    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None: ...

    def close(self) -> None: ...

    # -- option parsing shared by every launcher ---------------------------------------------
    def number(self, key: str, default: Optional[float] = None) -> Optional[float]:
        raw = self.options.get(key, default)
        if raw is None:
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"--launcher-opt {key}={raw!r} is not a number") from None
        if not value > 0:
            raise ConfigError(f"--launcher-opt {key}={raw!r} must be positive")
        return value


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
    events: list[Event] = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(tuple(json.loads(line)))
        except json.JSONDecodeError:
            continue
    return events


def require(module: str, extra: str, launcher: str) -> Any:
    """Import an optional engine (submitit, ray) or fail with the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EffbenchError(f"--launcher {launcher} needs {module}: pip install 'effbench[{extra}]'") from None
