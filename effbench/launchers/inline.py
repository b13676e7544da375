"""The inline launcher: the group runs in this process (the default; lowest overhead)."""
from __future__ import annotations

from typing import Any

from effbench.launchers.base import Launcher, Sink, Work


class InlineLauncher(Launcher):
    name = "inline"
    inherits_registrations = True

    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None:
        work(group, sink)  # errors of the group are the worker's records; anything else is the user's
