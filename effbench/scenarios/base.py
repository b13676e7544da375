"""The scenario interface: *what* is measured on a loaded engine.

A scenario is given a loaded engine (a ``Backend``), an energy sensor and one configuration, and
returns the record sections it measured (throughput, energy, memory, stats, ...). It knows nothing
of run directories, launchers or other configurations: the sweep builds the rest of the record.

A scenario also says how its groups are made: which engines (``backends``) and which load axis
(``load_points``: batch sizes offline, rates or concurrency levels when serving), and whether the
sweep loads the model into a backend (``loads_model``) or the scenario reaches its own engine
(a server) through ``open``/``close``.
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
    rate: Optional[float] = None  # serving: offered requests/s (math.inf = all at once)
    concurrency: Optional[int] = None  # serving: closed-loop users


@dataclass
class Session:
    """What a scenario that runs its own engine (``loads_model = False``) gets for one group."""

    spec: Any  # effbench.models.ModelSpec
    scheme: Any  # effbench.quant.Scheme
    device: str
    threads: Optional[int]
    sensor: Optional[EnergySensor]
    notify: Callable[[str], None] = lambda message: None


@dataclass
class Context:
    """What the sweep hands every scenario call: the engine and what surrounds the measurement."""

    engine: Optional[Backend]  # None when the scenario runs its own engine (a server)
    loaded: Optional[LoadedModel]
    sensor: EnergySensor
    idle_power_w: Optional[float] = None  # this host's idle baseline (docs/method.md)
    grid: Any = None  # effbench.analysis.carbon.Intensity
    on_repeat: Callable[[int], None] = lambda repeats: None
    extra: dict[str, Any] = field(default_factory=dict)


class Scenario(ABC):
    """Measures one configuration; ``config`` is the sweep's (its scenario sub-model lives there)."""

    name: ClassVar[str]
    loads_model: ClassVar[bool] = True  # the sweep loads the model into a Backend for it

    @classmethod
    def backends(cls, config: Any) -> list[str]:
        """The engines one group each is made for."""
        return list(config.backend)

    @classmethod
    def load_points(cls, config: Any) -> list[dict[str, Any]]:
        """The load axis of a group, as ``ConfigPoint`` fields; offline: the batch sizes, smallest first."""
        return [{"batch_size": b} for b in sorted(config.batch_sizes)]

    @classmethod
    def point_sections(cls, config: Any, point: Any) -> dict[str, Any]:
        """Record sections that describe the point itself (not what was measured), so a record that
        failed still names it; ``point`` is a ``Point`` or the sweep's ``ConfigPoint``."""
        return {}

    @classmethod
    def check(cls, config: Any) -> None:
        """Fail fast, before the run directory is touched: libraries missing, an engine unreachable."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def open(self, session: Session) -> str:
        """Start or reach the scenario's own engine (``loads_model = False``); returns its version."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop what ``open`` started."""

    def engine_pids(self) -> list[int]:
        """Processes of the engine that are not interference (a server this scenario started)."""
        return []

    def skip_reason(self, point: Point) -> Optional[str]:
        """Why ``point`` is not measured (e.g. the engine saturated at a lower rate), else None."""
        return None

    @abstractmethod
    def measure(self, point: Point, ctx: Context) -> dict[str, Any]:
        """The record sections measured for ``point`` (keys are ``Record`` field names). Raises on a
        configuration that cannot be measured; the sweep turns that into the record's ``error``."""
