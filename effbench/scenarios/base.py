"""The scenario interface: *what* is measured on a loaded engine.

A scenario is given a loaded engine (a ``Backend``), an energy sensor and one configuration, and
returns the record sections it measured (throughput, energy, memory, stats, ...). It knows nothing
of run directories, launchers or other configurations: the sweep builds the rest of the record.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from effbench.backends.base import Backend, LoadedModel
from effbench.sensors.base import EnergySensor


@dataclass(frozen=True)
class Point:
    """What a scenario needs of one configuration."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prompt_set: str


@dataclass
class Context:
    """What the sweep hands every scenario call: the engine and what surrounds the measurement."""

    engine: Backend
    loaded: LoadedModel
    sensor: EnergySensor
    idle_power_w: Optional[float] = None  # this host's idle baseline (brief rule 4)
    grid: Any = None  # effbench.analysis.carbon.Intensity
    on_repeat: Callable[[int], None] = lambda repeats: None
    extra: dict[str, Any] = field(default_factory=dict)


class Scenario(ABC):
    """Measures one configuration; ``config`` is the sweep's (its scenario sub-model lives there)."""

    name: ClassVar[str]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def measure(self, point: Point, ctx: Context) -> dict[str, Any]:
        """The record sections measured for ``point`` (keys are ``Record`` field names). Raises on a
        configuration that cannot be measured; the sweep turns that into the record's ``error``."""
