"""The sensor interface: measurement windows that return joules per domain, honestly labelled.

A sensor opens any number of (possibly overlapping) windows. Closing a window returns an
``EnergyReading`` that says whether its joules were *measured* (which sensor, how often it was
sampled, what fraction of the window the samples cover) or *estimated* (and from what), or are
*unavailable*, together with a relative uncertainty. The measurement loop only sees this interface.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

from effbench.stats import combine_rel

EnergyStatus = Literal["measured", "estimated", "unavailable"]


@dataclass(frozen=True)
class SensorInfo:
    """What ``effbench sensors`` prints for one sensor."""

    name: str  # "nvml", "rapl", "estimate", "none", ...
    kind: str  # "energy-counter", "power-polling", "estimate", "trace", "none"
    available: bool
    reason: str  # why it is unavailable, or what it measures / is based on
    domains: tuple[str, ...] = ()  # e.g. ("gpu:0", "cpu:package-0", "dram:0")
    update_period_s: float | None = None  # how often the underlying value changes
    accuracy_rel: float | None = None  # the sensor's stated accuracy (relative, 1 sigma-ish)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EnergyReading:
    """Energy of one window. ``joules_by_domain`` is empty when the status is ``unavailable``."""

    status: EnergyStatus
    sensor: str
    duration_s: float
    joules_by_domain: dict[str, float] = field(default_factory=dict)
    sampling_interval_s: float | None = None
    coverage: float | None = None  # fraction of the window actually observed by samples (0..1)
    uncertainty_rel: float | None = None  # sensor-side relative uncertainty of this window's joules
    basis: str | None = None  # estimates: what the figure was computed from
    error: str | None = None  # set when the sensor failed during the window

    @property
    def joules(self) -> float | None:
        if self.status == "unavailable" or not self.joules_by_domain:
            return None
        return float(sum(self.joules_by_domain.values()))

    @property
    def mean_power_w(self) -> float | None:
        j = self.joules
        return None if j is None or self.duration_s <= 0 else j / self.duration_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["joules"] = self.joules
        d["mean_power_w"] = self.mean_power_w
        return d


# Below this fraction of the window observed, a polled figure is not called a measurement.
MIN_COVERAGE = 0.5


def sensor_uncertainty(accuracy_rel: Optional[float], coverage: Optional[float],
                       resolution_s: Optional[float], duration_s: float) -> Optional[float]:
    """A window's relative uncertainty: the sensor's stated accuracy, the unobserved share of the
    window (its power could be anything near the observed), and the time resolution at the edges
    (a sample interval or counter update period, relative to the window)."""
    unobserved = None if coverage is None else 1.0 - coverage
    edges = resolution_s / duration_s if resolution_s and duration_s > 0 else None
    return combine_rel(accuracy_rel, unobserved, edges)


def observed_reading(
    sensor: str, duration_s: float, joules_by_domain: dict[str, float], *, accuracy_rel: Optional[float],
    status: EnergyStatus = "measured",
    coverage: Optional[float] = 1.0, sampling_interval_s: Optional[float] = None,
    resolution_s: Optional[float] = None, error: Optional[str] = None, basis: Optional[str] = None,
) -> EnergyReading:
    """A reading from a sensor that observed the window (``measured``, or ``estimated`` for the
    utilisation-based estimate); ``unavailable`` when its samples cover too little of it."""
    if coverage is not None and coverage < MIN_COVERAGE:
        status = "unavailable"
        error = (f"{error}; " if error else "") + f"samples cover only {coverage:.0%} of the window"
    return EnergyReading(
        status=status, sensor=sensor, duration_s=duration_s, joules_by_domain=dict(joules_by_domain),
        sampling_interval_s=sampling_interval_s, coverage=coverage,
        uncertainty_rel=sensor_uncertainty(accuracy_rel, coverage, resolution_s or sampling_interval_s, duration_s),
        basis=basis, error=error,
    )


def unavailable_reading(sensor: str, duration_s: float, error: str) -> EnergyReading:
    return EnergyReading(status="unavailable", sensor=sensor, duration_s=duration_s, error=error)


class Window(ABC):
    """An open measurement window. ``stop()`` may be called once."""

    @abstractmethod
    def stop(self) -> EnergyReading: ...


class EnergySensor(ABC):
    """One source of energy figures (a GPU's NVML counter, RAPL, an estimate, ...)."""

    name: str = "sensor"
    # Device types ("cpu", "cuda") whose energy ``--sensor auto`` may take from this sensor, and its
    # rank there (lower is preferred): a sensor declares what it measures, the chooser knows no names.
    auto_for: tuple[str, ...] = ()
    auto_rank: int = 100

    @classmethod
    def for_device(cls, device: str) -> "EnergySensor":
        """A sensor of this kind set up for a run on ``device`` (``cpu``, ``cuda:1``)."""
        return cls()

    @abstractmethod
    def info(self) -> SensorInfo: ...

    @abstractmethod
    def start_window(self) -> Window: ...

    def attribute(self, pids: list[int]) -> None:
        """Count these processes as the workload too (a server effbench started). A device's own
        counter measures every process on it already: only estimates need to be told."""

    def environment(self) -> dict:
        """Device facts for ``run.json`` (power limit, clocks, temperature, ...); empty by default."""
        return {}

    def close(self) -> None:
        """Stop background threads and release handles."""

    # Context-manager sugar so a sensor can be used with ``with``.
    def __enter__(self) -> "EnergySensor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NullWindow(Window):
    def __init__(self, reason: str) -> None:
        self._t0 = time.perf_counter()
        self._reason = reason

    def stop(self) -> EnergyReading:
        return EnergyReading(
            status="unavailable",
            sensor="none",
            duration_s=time.perf_counter() - self._t0,
            basis=self._reason,
        )


class NullSensor(EnergySensor):
    """No energy at all: every window is ``unavailable``, with the reason."""

    name = "none"

    def __init__(self, reason: str = "energy measurement disabled (--sensor none)") -> None:
        self.reason = reason

    def info(self) -> SensorInfo:
        return SensorInfo(name="none", kind="none", available=True, reason=self.reason)

    def start_window(self) -> Window:
        return _NullWindow(self.reason)
