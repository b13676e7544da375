"""The measurement loop: warm-up, then repeats of (prefill, full generation) until the CI95 of
decode tokens/s is narrow enough or the time cap is reached, each inside an energy window.

It knows only the ``Backend`` and ``EnergySensor`` interfaces. Prefill is timed on its own
(generation of one token); decode is the full generation minus the prefill (brief rule 5).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from effbench.backends.base import Backend, OutputSize
from effbench.measure.host import peak_rss_bytes, reset_peak_rss, trim_heap
from effbench.stats import summarize
from effbench.sensors.base import EnergyReading, EnergySensor

# An energy window must span at least this many sensor update periods (rule 2).
WINDOW_PERIODS = 10
# Never repeat one call more than this inside a window, whatever the sensor asks.
MAX_CALLS_PER_WINDOW = 1000


@dataclass(frozen=True)
class RepeatPolicy:
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 20
    ci_target: float = 0.05
    max_time_s: float = 45.0
    fixed_repeats: Optional[int] = None  # exactly this many repeats, no adaptive stopping


@dataclass(frozen=True)
class Workload:
    batch_size: int
    prompt_tokens: int
    new_tokens: int


@dataclass
class WindowResult:
    seconds_per_call: float
    calls: int
    energy: EnergyReading
    short: bool = False  # shorter than the sensor needs even after repeating the call
    start_unix: float = 0.0  # wall-clock bounds of the window, to line it up with external power traces
    end_unix: float = 0.0

    @property
    def joules_per_call(self) -> Optional[float]:
        j = self.energy.joules
        return None if j is None else j / self.calls


@dataclass
class LoopResult:
    workload: Workload
    prefill: list[WindowResult] = field(default_factory=list)
    full: list[WindowResult] = field(default_factory=list)
    output: Optional[OutputSize] = None  # of one full generation
    stop_reason: str = ""
    duration_s: float = 0.0
    peak_host_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    peak_device_reserved_bytes: Optional[int] = None

    @property
    def repeats(self) -> int:
        return len(self.full)

    def ttft_samples(self) -> list[float]:
        return [w.seconds_per_call for w in self.prefill]

    def full_samples(self) -> list[float]:
        return [w.seconds_per_call for w in self.full]

    def decode_tps_samples(self) -> list[float]:
        """Decode tokens/s per repeat: batch x (new_tokens - 1) / (full - prefill)."""
        wl = self.workload
        if wl.new_tokens < 2:
            return []
        out = []
        for pre, full in zip(self.prefill, self.full):
            decode_s = full.seconds_per_call - pre.seconds_per_call
            if decode_s > 0:
                out.append(wl.batch_size * (wl.new_tokens - 1) / decode_s)
        return out


def _min_window_s(sensor: EnergySensor) -> float:
    period = sensor.info().update_period_s
    return WINDOW_PERIODS * period if period else 0.0


Clock = Callable[[], float]


def timed_window(
    call: Callable[[], Any], sync: Callable[[], None], sensor: EnergySensor, min_window_s: float,
    clock: Clock = time.perf_counter,
) -> tuple[WindowResult, Any]:
    """Run ``call`` inside one energy window, repeating it until the window is long enough for the
    sensor. Returns the mean seconds per call, the window's reading and the last output."""
    sync()
    window = sensor.start_window()
    start_unix = time.time()
    t0 = clock()
    calls = 0
    while True:
        out = call()
        sync()
        calls += 1
        elapsed = clock() - t0
        if elapsed >= min_window_s or calls >= MAX_CALLS_PER_WINDOW:
            break
    end_unix = time.time()
    reading = window.stop()
    return WindowResult(elapsed / calls, calls, reading, elapsed < min_window_s, start_unix, end_unix), out


def _done(result: LoopResult, policy: RepeatPolicy, elapsed_s: float) -> Optional[str]:
    n = result.repeats
    if policy.fixed_repeats is not None:
        return "fixed-repeats" if n >= policy.fixed_repeats else None
    if n >= policy.min_repeats:
        samples = result.decode_tps_samples() or [1 / s for s in result.full_samples()]
        rel = summarize(samples).ci95_rel
        if rel is not None and rel <= policy.ci_target:
            return "ci-target"
    if n >= policy.max_repeats:
        return "max-repeats"
    if n >= 2 and elapsed_s >= policy.max_time_s:
        return "time-cap"
    return None


def run_loop(
    backend: Backend,
    batch: Any,
    workload: Workload,
    sensor: EnergySensor,
    policy: RepeatPolicy,
    on_repeat: Optional[Callable[[LoopResult], None]] = None,
    clock: Clock = time.perf_counter,
) -> LoopResult:
    """Measure one configuration. ``batch`` comes from ``backend.prepare``; ``clock`` is
    injectable so tests can drive the loop with a simulated backend and exact timings."""
    result = LoopResult(workload)
    min_window = _min_window_s(sensor)
    trim_heap()  # freed memory of earlier work (a GGUF conversion, a previous batch) is not this peak
    reset_peak_rss()
    backend.reset_peak_device_memory()
    started = clock()

    for _ in range(policy.warmup):
        backend.prefill(batch)
        backend.generate(batch, workload.new_tokens)
    backend.synchronize()

    last_output = None
    while True:
        pre, _ = timed_window(lambda: backend.prefill(batch), backend.synchronize, sensor, min_window, clock)
        full, last_output = timed_window(
            lambda: backend.generate(batch, workload.new_tokens), backend.synchronize, sensor, min_window, clock
        )
        result.prefill.append(pre)
        result.full.append(full)
        if on_repeat:
            on_repeat(result)
        reason = _done(result, policy, clock() - started)
        if reason:
            result.stop_reason = reason
            break

    result.duration_s = clock() - started
    result.output = backend.output_size(last_output, batch)
    result.peak_host_bytes = peak_rss_bytes()
    result.peak_device_bytes, result.peak_device_reserved_bytes = backend.peak_device_memory()
    return result
