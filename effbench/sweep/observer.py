"""The sweep's progress hooks, in a module of their own: the CLI subclasses them at import time
without loading the runner (and with it the backends, sensors and schema)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from effbench.results.schema import Record
    from effbench.scenarios import Point


class SweepObserver:
    """Progress hooks (the CLI draws a progress bar with them); all no-ops by default."""

    def start(self, total: int, done_before: int) -> None: ...
    def message(self, text: str) -> None: ...
    def config_started(self, point: Point) -> None: ...
    def repeat_done(self, point: Point, repeats: int) -> None: ...
    def config_done(self, point: Point, record: Record) -> None: ...
