"""The scenario interface: *what* is measured, one group at a time.

A group is one model under one scheme on one engine and device. The worker runs every scenario the
same way: ``place`` (the device), ``open`` (load the model, or start or reach a server), then for
each ``Point`` of the group ``skip_reason``, ``measure`` and ``observe``, and ``close``. A scenario
knows nothing of run directories, launchers or other groups: the worker builds each record from the
point, what ``open`` found (``Opened``) and the sections ``measure`` returned.

A scenario also says how its groups are made: which engines (``backends``) and which load axis
(``load_points``: batch sizes offline, rates or concurrency levels when serving).
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypedDict

from effbench.errors import EffbenchError, UnsupportedError, first_line

if TYPE_CHECKING:  # annotations only: the config (and so the CLI's start-up) imports this package
    from effbench.analysis.carbon import Intensity
    from effbench.backends.base import Backend, LoadedModel
    from effbench.config import SweepConfig
    from effbench.models import ModelSpec
    from effbench.quant import Scheme
    from effbench.results.schema import Carbon, Energy, Memory, ModelInfo, Quality, ServingInfo, Stats, Throughput
    from effbench.scenarios.loaded import InProcessModel
    from effbench.sensors.base import EnergySensor


@dataclass(frozen=True)
class Point:
    """One configuration: what one record describes (its ``config_id`` names it across runs)."""

    model: str  # ModelSpec.id
    backend: str
    device: str
    scheme: str
    prompt_set: str
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    compile: bool = False
    target: str = ""  # the fleet target (hardware) it runs on; "" for a single-machine sweep
    rate: Optional[float] = None  # serving: offered requests/s (math.inf = all at once)
    concurrency: Optional[int] = None  # serving: closed-loop users
    scenario: str = "offline"
    power_limit_w: Optional[float] = None  # --power-limits: the GPU power limit set for this point
    gpu_clock_mhz: Optional[int] = None  # --gpu-clocks: the SM clock locked for this point

    @property
    def config_id(self) -> str:
        fields = asdict(self)
        # Ids of configurations without these options stay what they were before the options existed.
        if not self.compile:
            del fields["compile"]
        if not self.target:
            del fields["target"]
        for name in ("rate", "concurrency", "power_limit_w", "gpu_clock_mhz"):
            if fields[name] is None:
                del fields[name]
        if self.scenario == "offline":
            del fields["scenario"]
        key = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def label(self) -> str:
        where = f" on {self.target}" if self.target else ""
        load = (f"rate={self.rate:g}" if self.rate is not None else  # :g writes inf as "inf"
                f"users={self.concurrency}" if self.concurrency is not None else f"bs={self.batch_size}")
        gpu = (f" {self.power_limit_w:g}W" if self.power_limit_w is not None else "") + \
              (f" {self.gpu_clock_mhz}MHz" if self.gpu_clock_mhz is not None else "")
        return (f"{self.model} {self.backend} {self.scheme} {load} "
                f"p={self.prompt_tokens} n={self.new_tokens} {self.prompt_set}{gpu}{where}")


@dataclass
class Group:
    """What ``open`` gets: the model, scheme and engine of one group, and the host's sensor."""

    spec: ModelSpec
    scheme: Scheme
    backend: str  # the engine's name (a backend offline, a serving engine or "endpoint" when serving)
    device: str  # as ``place`` resolved it
    threads: Optional[int]
    seed: int
    sensor: EnergySensor
    notify: Callable[[str], None] = lambda message: None


@dataclass
class Opened:
    """What opening a group found out, for every record of it."""

    version: Optional[str]  # the engine's version
    model: ModelInfo
    threads: Optional[int] = None  # threads the engine runs with, where it says
    quant_note: Optional[str] = None  # what the scheme did (layers quantized or skipped)
    quality: Optional[Quality] = None


class CannotRun(Exception):
    """The group cannot be measured here (an unsupported scheme, a model that does not load, an
    engine that does not start): every point of it becomes a record with this error, the sweep goes on."""

    def __init__(self, error: str, version: Optional[str] = None) -> None:
        super().__init__(error)
        self.error = error
        self.version = version  # the engine's version where it was known before the failure


@dataclass
class Context:
    """What the worker hands every ``measure`` call: what surrounds the measurement."""

    sensor: EnergySensor
    idle_power_w: Optional[float] = None  # this host's idle baseline (docs/method.md)
    engine: Optional[Backend] = None  # the model loaded in this process (None when the scenario drives a server)
    loaded: Optional[LoadedModel] = None
    grid: Optional[Intensity] = None
    on_repeat: Callable[[int], None] = lambda repeats: None


class Sections(TypedDict, total=False):
    """Record sections a scenario measured (keys are ``Record`` field names)."""

    throughput: Throughput
    energy: Energy
    carbon: Carbon
    memory: Memory
    stats: Stats
    serving: ServingInfo
    quality: Quality


def config_error(e: BaseException, out_of_memory: bool = False) -> str:
    """The ``error`` of a configuration that could not be measured: its kind, then the reason."""
    if out_of_memory:
        return failure("out of memory", e)
    if isinstance(e, UnsupportedError):
        return f"unsupported: {first_line(e)}"
    if isinstance(e, EffbenchError):
        return f"failed: {first_line(e)}"
    return failure("failed", e)


def failure(kind: str, e: BaseException) -> str:
    """An error naming what failed and the exception: ``load failed: OSError: ...``."""
    return f"{kind}: {type(e).__name__}: {first_line(e)}"


class Scenario(ABC):
    """Measures the points of one group; ``config`` is the sweep's (its scenario section lives there)."""

    name: ClassVar[str]
    # The model runs in this process (a Backend): the sweep checks its memory fit before anything loads.
    loads_model: ClassVar[bool] = True

    @classmethod
    def backends(cls, config: SweepConfig) -> list[str]:
        """The engines one group each is made for."""
        return list(config.backend)

    @classmethod
    def load_points(cls, config: SweepConfig) -> list[dict[str, Any]]:
        """The load axis of a group, as ``Point`` fields; offline: the batch sizes, smallest first."""
        return [{"batch_size": b} for b in sorted(config.batch_sizes)]

    @classmethod
    def point_sections(cls, config: SweepConfig, point: Point) -> Sections:
        """Record sections that describe the point itself (not what was measured), so a record that
        failed still names it."""
        return {}

    @classmethod
    def check(cls, config: SweepConfig) -> None:
        """Fail fast, before the run directory is touched: libraries missing, an engine unreachable."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        self._in_process: Optional[InProcessModel] = None

    @property
    def in_process(self) -> InProcessModel:
        """The model this scenario loads in this process (made on first use; a server scenario never uses it)."""
        if self._in_process is None:
            from effbench.scenarios.loaded import InProcessModel

            self._in_process = InProcessModel(self.config)
        return self._in_process

    @property
    def engine(self) -> Optional[Backend]:
        """The backend loaded for the group, where the scenario runs one in this process."""
        return self._in_process.engine if self._in_process is not None else None

    @property
    def loaded(self) -> Optional[LoadedModel]:
        return self._in_process.loaded if self._in_process is not None else None

    # The defaults run the model in this process (effbench/scenarios/loaded.py); a scenario that drives
    # its own engine (a server) overrides place, open, close, engine_pids and skip_reason.
    def place(self, backend: str, device: str) -> str:
        """The device the group runs on (``device`` may be "auto"); raises ``CannotRun``."""
        return self.in_process.place(backend, device)

    def open(self, group: Group) -> Opened:
        """Load the model or start (reach) the engine; raises ``CannotRun`` for this group alone and
        ``EffbenchError`` for the user's input (it ends the sweep with one line)."""
        return self.in_process.open(group)

    def close(self) -> None:
        """Release what ``open`` took, also after an error or Ctrl-C."""
        if self._in_process is not None:
            self._in_process.close()

    def engine_pids(self) -> list[int]:
        """Processes of the engine that are not interference (a server this scenario started)."""
        return self._in_process.engine_pids() if self._in_process is not None else []

    def skip_reason(self, point: Point) -> Optional[str]:
        """Why ``point`` is not measured (it cannot fit, a lower load already failed), else None."""
        return self._in_process.skip_reason(point) if self._in_process is not None else None

    @abstractmethod
    def measure(self, point: Point, ctx: Context) -> Sections:
        """The record sections measured for ``point``. Raises on a configuration that cannot be
        measured; ``error_of`` turns that into the record's ``error``."""

    def error_of(self, e: BaseException) -> str:
        """The record's ``error`` for an exception ``measure`` raised."""
        return self._in_process.error_of(e) if self._in_process is not None else config_error(e)

    def observe(self, point: Point, error: Optional[str]) -> None:
        """Told how each measured point ended (its record's ``error``), to skip what cannot succeed after it."""
        if self._in_process is not None:
            self._in_process.observe(point, error)
