"""A background thread that polls power while windows are open, for sensors without an energy counter.

Any number of windows may overlap; the thread runs only while at least one is open. Each window
also takes a sample at its start and its end so its edges are observed. ``threaded=False`` leaves
sampling to the caller (``sample()``), which tests use with a simulated clock.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from effbench.sensors.base import (
    ASSUMED_DUTY,
    EnergyReading,
    EnergyStatus,
    Window,
    edge_error_rel,
    observed_reading,
    sampling_error_rel,
    unavailable_reading,
)
from effbench.sensors.integrate import Integral, integrate

Reader = Callable[[], dict[str, float]]  # domain -> watts now; raises when the device fails
Clock = Callable[[], float]


def describe_error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class Polled:
    """Samples of one window, integrated per domain."""

    start: float
    end: float
    integrals: dict[str, Optional[Integral]] = field(default_factory=dict)
    error: Optional[str] = None  # the first read failure inside the window

    def reading(self, sensor: str, accuracy_rel: Optional[float], basis: Optional[str] = None,
                status: EnergyStatus = "measured", domains: tuple[str, ...] = (),
                sensing: Optional[Sensing] = None, flags: tuple[str, ...] = ()) -> EnergyReading:
        """The window's reading. ``sensing`` says what each sample saw (a GPU generation's duty
        cycle and averaging): its blind share lowers the coverage and enters the uncertainty."""
        duration = self.end - self.start
        missing = [d for d in domains if self.integrals.get(d) is None]
        got = {d: i for d, i in self.integrals.items() if i is not None}
        if missing or not got:
            why = self.error or "no power sample could be read"
            return unavailable_reading(sensor, duration, f"no samples for {', '.join(missing) or 'any domain'} ({why})")
        reach = min(i.coverage for i in got.values())
        interval = max((i.sampling_interval_s or 0.0) for i in got.values()) or None
        coverage, sampling, edge = reach, None, None
        if sensing is not None:
            coverage = reach * sensing.observed_share(interval)
            # Domains err independently: their absolute errors add in quadrature.
            total = sum(i.joules for i in got.values())
            parts = [(sampling_error_rel(i.rms_step_w, i.mean_power_w, duration, i.sampling_interval_s or interval,
                                         sensing.duty, sensing.average_s, sensing.period_s) or 0.0) * i.joules
                     for i in got.values()]
            sampling = (sum(p * p for p in parts) ** 0.5 / total) if total > 0 else None
            edges = [(edge_error_rel(i.mean_power_w, duration, sensing.lag_s, i.edge_step_w,
                                     max(interval or 0.0, sensing.average_s or 0.0), i.max_dev_w) or 0.0) * i.joules
                     for i in got.values()]
            edge = sum(edges) / total if total > 0 else None
        return observed_reading(
            sensor, duration, {d: i.joules for d, i in got.items()}, accuracy_rel=accuracy_rel, status=status,
            coverage=coverage, reach=reach, sampling_interval_s=interval, sampling_rel=sampling,
            error=self.error, basis=basis, flags=flags, edge_rel=edge,
        )


@dataclass(frozen=True)
class Sensing:
    """What one power sample saw: ``duty`` of every ``period_s`` (None: unstated), averaged over
    ``average_s`` (None: the last period only)."""

    duty: Optional[float]
    average_s: Optional[float] = None
    period_s: float = 0.1

    @property
    def lag_s(self) -> float:
        """How far a polled series trails the power, on average: a value is published when its
        period ends and read up to a period later (1.5 periods), less half the sensed part at the
        period's start (a blind rest of unstated size counts as the assumed one); a trailing
        average over several periods lags by half of the rest of its span."""
        duty = ASSUMED_DUTY if self.duty is None else self.duty
        extra = max(0.0, (self.average_s or 0.0) - self.period_s) / 2.0
        return self.period_s * (1.5 - duty / 2.0) + extra

    def observed_share(self, interval_s: Optional[float]) -> float:
        """Share of the time a series of such samples, ``interval_s`` apart, observed (an unstated
        duty counts as fully observed here; its assumed blindness enters the uncertainty)."""
        span = max(self.period_s, self.average_s or 0.0)
        reach = 1.0 if not interval_s else min(1.0, span / interval_s)
        return (1.0 if self.duty is None else self.duty) * reach


class Poller:
    def __init__(self, read: Reader, interval_s: float, clock: Clock = time.monotonic, threaded: bool = True) -> None:
        self.read = read
        self.interval_s = interval_s
        self.clock = clock
        self.threaded = threaded
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._errors: list[tuple[float, str]] = []
        self._open: dict[int, float] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> None:
        t = self.clock()
        try:
            values = self.read()
        except Exception as e:  # noqa: BLE001 - a failing device is recorded, never raised in the thread
            with self._lock:
                self._errors.append((t, describe_error(e)))
            return
        with self._lock:
            self._samples.append((t, dict(values)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def begin(self) -> int:
        start = self.clock()
        self.sample()
        thread: Optional[threading.Thread] = None
        with self._lock:
            token = next(self._ids)
            self._open[token] = start
            if self.threaded and self._thread is None:
                self._stop.clear()
                self._thread = thread = threading.Thread(target=self._run, name="effbench-power-poller", daemon=True)
        if thread is not None:
            thread.start()
        return token

    def end(self, token: int) -> Polled:
        self.sample()
        end = self.clock()
        with self._lock:
            start = self._open.pop(token)
            samples = self._window_samples(start, end)
            errors = [msg for t, msg in self._errors if start <= t <= end]
            thread = self._thread if not self._open else None
            if not self._open:
                self._thread = None
            self._forget_before(min(self._open.values(), default=end))
        if thread is not None:
            self._stop.set()
            thread.join()
        polled = Polled(start, end, error=f"{errors[0]} ({len(errors)} failed reads)" if errors else None)
        domains = sorted({d for _, v in samples for d in v})
        for d in domains:
            pts = [(t, v[d]) for t, v in samples if d in v]
            polled.integrals[d] = integrate([p[0] for p in pts], [p[1] for p in pts], start, end, self.interval_s)
        return polled

    def _window_samples(self, start: float, end: float) -> list[tuple[float, dict[str, float]]]:
        """Samples inside the window plus the nearest one on each side, for the edges."""
        inside = [s for s in self._samples if start <= s[0] <= end]
        before = [s for s in self._samples if s[0] < start][-1:]
        after = [s for s in self._samples if s[0] > end][:1]
        return before + inside + after

    def _forget_before(self, t: float) -> None:
        keep_from = max(0, sum(1 for s in self._samples if s[0] < t) - 1)
        del self._samples[:keep_from]
        self._errors = [e for e in self._errors if e[0] >= t]

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._open.clear()
        if thread is not None:
            self._stop.set()
            thread.join()


class PolledWindow(Window):
    """A window over a poller; ``reading`` turns its samples into an ``EnergyReading``."""

    def __init__(self, poller: Poller, to_reading: Callable[[Polled], EnergyReading]) -> None:
        self._poller = poller
        self._to_reading = to_reading
        self._token = poller.begin()

    def stop(self) -> EnergyReading:
        return self._to_reading(self._poller.end(self._token))
