"""The sensor interface: measurement windows that return joules per domain, honestly labelled.

A sensor opens any number of (possibly overlapping) windows. Closing a window returns an
``EnergyReading`` that says whether its joules were *measured* (which sensor, how often it was
sampled, what fraction of the window the samples cover) or *estimated* (and from what), or are
*unavailable*, together with a relative uncertainty. The measurement loop only sees this interface.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional, Sequence

from effbench.stats import combine_rel, uniform_to_95, z95

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
    accuracy_rel: float | None = None  # the sensor's stated accuracy bound +-a (relative), None when unstated
    accuracy_source: str | None = None  # where that accuracy is stated, or "unstated"

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
    coverage: float | None = None  # share of the window the sensor actually observed (0..1)
    uncertainty_rel: float | None = None  # sensor-side relative half-width of a 95% interval of the joules
    basis: str | None = None  # what the figure was computed from / why unavailable
    error: str | None = None  # set when the sensor failed during the window
    flags: list[str] = field(default_factory=list)  # e.g. "accuracy-unstated", "short-window"

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


# Below this fraction of the window within reach of a sample, a polled figure is not called a
# measurement. (A sensor that by design observes only part of each update period, like the A100's
# and H100's, lowers ``coverage`` but not the reach: its blind share enters the uncertainty.)
MIN_COVERAGE = 0.5
# The sampling term below assumes the blind parts of successive samples err independently. A margin
# above 1 would widen it; benchmarks/energy_calibration.py finds the truth inside the stated 95%
# interval at least 95% of the time on the simulator's loads without one, so none is applied.
SAMPLING_SAFETY = 1.0
# A polled series' lag varies with when it is read: its bound gets this margin.
EDGE_LAG_MARGIN = 1.5
# A sensor whose observed share is unstated is assumed to be as blind as the worst documented one.
ASSUMED_DUTY = 0.25


def sampling_error_rel(rms_step_w: Optional[float], mean_w: Optional[float], duration_s: float,
                       interval_s: Optional[float], duty: Optional[float], average_s: Optional[float] = None,
                       period_s: float = 0.1) -> Optional[float]:
    """95% relative error of an energy integrated from power samples, for what the sensor did not
    observe, estimated from the samples' own variability.

    ``rms_step_w`` is the root-mean-square change between successive samples: a sample's scatter
    about the level is that over sqrt(2). Each sample stands for ``interval_s`` of which the sensor
    saw a share ``duty x span/interval`` (``span``: what one value averages, an update period or
    ``average_s``); the blind rest differs from the seen part by about that scatter, independently
    from sample to sample, so the window's error shrinks with the square root of their number. An
    averaged value scatters less than the periods inside it: its scatter is scaled back up."""
    if rms_step_w is None or not mean_w or mean_w <= 0 or not interval_s or duration_s <= 0:
        return None
    seen = (ASSUMED_DUTY if duty is None else duty) * min(1.0, max(period_s, average_s or 0.0) / interval_s)
    # Polled faster than an average moves, successive values share most of it: undo that shrinkage.
    shrink = max(1.0, (average_s or 0.0) / interval_s)
    scatter = rms_step_w / math.sqrt(2.0) * shrink
    n = max(1.0, duration_s / interval_s)
    per_sample = (1.0 - seen) * math.sqrt(2.0) * scatter  # blind share x (blind - seen)
    return SAMPLING_SAFETY * z95() * per_sample / (mean_w * math.sqrt(n))


def edge_error_rel(integral_mean_w: Optional[float], duration_s: float, lag_s: float, edge_step_w: Optional[float],
                   blur_s: float, max_dev_w: Optional[float]) -> Optional[float]:
    """Bound of the error at a polled window's edges, relative to its energy (before conversion to
    95%): a series that lags the power by ``lag_s`` (a sensor that samples early in each period, a
    trailing average) shifts the window, off by ``lag x (P_end - P_start)``; and each edge blurs
    over ``blur_s`` of power that may stray from the mean as far as the samples do."""
    if not integral_mean_w or integral_mean_w <= 0 or duration_s <= 0:
        return None
    # The lag itself varies with the reading's phase against the updates: bounded with a margin.
    shift = EDGE_LAG_MARGIN * lag_s * abs(edge_step_w or 0.0)
    blur = blur_s * (max_dev_w or 0.0)
    return (shift + blur) / (integral_mean_w * duration_s)


def sensor_uncertainty(accuracy_rel: Optional[float], reach: Optional[float],
                       resolution_s: Optional[float], duration_s: float,
                       sampling_rel: Optional[float] = None, edge_rel: Optional[float] = None) -> Optional[float]:
    """A window's relative uncertainty, a 95% half-width (docs/method.md, "Uncertainty: one 95% interval"), root-sum-square of:
    the sensor's stated accuracy bound (uniform inside +-a), the share of the window no sample
    reaches (its power could be anything near the observed: bounded by that share), the time
    resolution at the edges (an update period or averaging span, relative to the window, bounded),
    and the sampling error for what the sensor did not observe (already at 95%)."""
    unreached = None if reach is None else uniform_to_95(1.0 - reach)
    if edge_rel is None and resolution_s and duration_s > 0:
        edge_rel = resolution_s / duration_s
    edges = uniform_to_95(edge_rel)
    return combine_rel(uniform_to_95(accuracy_rel), unreached, edges, sampling_rel)


def observed_reading(
    sensor: str, duration_s: float, joules_by_domain: dict[str, float], *, accuracy_rel: Optional[float],
    status: EnergyStatus = "measured",
    coverage: Optional[float] = 1.0, sampling_interval_s: Optional[float] = None,
    resolution_s: Optional[float] = None, error: Optional[str] = None, basis: Optional[str] = None,
    reach: Optional[float] = None, sampling_rel: Optional[float] = None, flags: Sequence[str] = (),
    edge_rel: Optional[float] = None,
) -> EnergyReading:
    """A reading from a sensor that observed the window (``measured``, or ``estimated`` for the
    utilisation-based estimate); ``unavailable`` when its samples reach too little of it.
    ``coverage`` is the share the sensor observed; ``reach`` the share within reach of a sample
    (default: the coverage)."""
    reach = coverage if reach is None else reach
    if reach is not None and reach < MIN_COVERAGE:
        status = "unavailable"
        error = (f"{error}; " if error else "") + f"samples cover only {reach:.0%} of the window"
    return EnergyReading(
        status=status, sensor=sensor, duration_s=duration_s, joules_by_domain=dict(joules_by_domain),
        sampling_interval_s=sampling_interval_s, coverage=coverage,
        uncertainty_rel=sensor_uncertainty(accuracy_rel, reach, resolution_s or sampling_interval_s, duration_s,
                                           sampling_rel, edge_rel),
        basis=basis, error=error, flags=sorted(set(flags)),
    )


def unavailable_reading(sensor: str, duration_s: float, error: str) -> EnergyReading:
    return EnergyReading(status="unavailable", sensor=sensor, duration_s=duration_s, error=error)


# An energy window must span at least this many sensor update periods (docs/method.md, "Windows,
# coverage, totals"): shorter, a counter may not have moved at all. The one home of the rule.
WINDOW_PERIODS = 10


def min_window_s(info: "SensorInfo") -> float:
    """The shortest window a sensor can measure: WINDOW_PERIODS of its update periods (0 without one)."""
    return WINDOW_PERIODS * (info.update_period_s or 0.0)


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

    def interference(self) -> dict:
        """Other work on the measured device right now (a GPU's other processes and utilisation):
        ``{"flagged": bool, ...}``; empty where the sensor cannot see the device's users."""
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
