"""Launchers (where a group of configurations runs): inline (default), process, slurm (submitit),
ray. Looked up by name through the one registry pattern."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from effbench.launchers.base import Event, GroupFailed, Launcher, Sink, Work, collect_events
from effbench.registry import Registry

LAUNCHERS: Registry[type[Launcher]] = Registry("launcher", {
    "inline": "effbench.launchers.inline:InlineLauncher",
    "process": "effbench.launchers.process:ProcessLauncher",
    "slurm": "effbench.launchers.slurm:SlurmLauncher",
    "ray": "effbench.launchers.ray:RayLauncher",
}, group="effbench.launchers")


def create_launcher(name: str, options: Mapping[str, Any], run_dir: Path) -> Launcher:
    """The launcher, checked: an unknown option, a missing extra or an unreachable cluster fails here."""
    return LAUNCHERS.get(name)(options, run_dir)


__all__ = ["Event", "GroupFailed", "LAUNCHERS", "Launcher", "Sink", "Work", "collect_events", "create_launcher"]
