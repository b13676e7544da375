"""The measurement loop: warm-up, then repeats of one full generation each, timed per token, until
the 95% interval of the median decode tokens/s is narrow enough or the time cap is reached.

It knows only the ``Backend`` and ``EnergySensor`` interfaces. Each repeat is one energy window
around a full generation; the backend reports when each token was ready, so TTFT (first token),
decode (last token - first token) and every inter-token latency come from the same call
(docs/method.md). A prefill-only window is kept only where the energy split needs it: on the first
``PREFILL_ENERGY_REPEATS`` repeats when a sensor reads energy (decode energy = full - prefill), and on
every repeat for an engine without a per-token hook (then decode time is full - prefill, too).
A repeat during which other processes took more than the interference share of the CPU, or after
which the sensor sees another process on the measured GPU, is left out of every figure and counted
(robust statistics; ``effbench.measure.host``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from effbench.backends.base import Backend, OutputSize
from effbench.measure.host import INTERFERENCE_CPU_FRAC, InterferenceProbe, peak_rss_bytes, reset_peak_rss, trim_heap
from effbench.sensors.base import EnergyReading, EnergySensor, min_window_s
from effbench.stats import median_ci95

# Never repeat one call more than this inside a window, whatever the sensor asks.
MAX_CALLS_PER_WINDOW = 1000
# Prefill-only energy windows taken when per-token timing makes them unnecessary for time.
PREFILL_ENERGY_REPEATS = 3


@dataclass(frozen=True)
class RepeatPolicy:
    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 30
    ci_target: float = 0.05
    max_time_s: float = 45.0
    fixed_repeats: Optional[int] = None  # exactly this many repeats, no adaptive stopping
    # Leave out repeats during which other processes used more than this share of the machine's CPU
    # (None: keep every repeat).
    interference_cpu_frac: Optional[float] = INTERFERENCE_CPU_FRAC


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


@dataclass(frozen=True)
class TokenTiming:
    """When each generated token of one full-generation window was ready, averaged over its calls."""

    ttft_s: float  # call start -> first token
    decode_s: float  # first token -> last token
    itl_s: tuple[float, ...]  # gaps between successive tokens (every call of the window)

    @staticmethod
    def of_calls(calls: list[tuple[float, list[float]]]) -> "TokenTiming":
        """``calls``: (call start, token-ready times) for each call of a window."""
        ttft = sum(times[0] - start for start, times in calls) / len(calls)
        decode = sum(times[-1] - times[0] for _, times in calls) / len(calls)
        gaps = tuple(b - a for _, times in calls for a, b in zip(times, times[1:]))
        return TokenTiming(ttft, decode, gaps)


@dataclass
class ExcludedRepeat:
    """A repeat left out of every figure, and why (kept whole, in case it has to be readmitted)."""

    other_cpu_frac: float
    window: WindowResult
    prefill: Optional[WindowResult] = None
    timing: Optional[TokenTiming] = None
    reason: str = "cpu"  # "cpu": other processes' CPU share; "gpu": another process on the measured GPU


@dataclass
class LoopResult:
    workload: Workload
    prefill: list[WindowResult] = field(default_factory=list)
    full: list[WindowResult] = field(default_factory=list)
    timings: list[TokenTiming] = field(default_factory=list)  # per kept repeat, when the engine reports tokens
    other_cpu: list[Optional[float]] = field(default_factory=list)  # per kept repeat
    excluded: list[ExcludedRepeat] = field(default_factory=list)
    output: Optional[OutputSize] = None  # of one full generation
    stop_reason: str = ""
    ci_target: Optional[float] = None  # the stopping rule's target (None for a fixed number of repeats)
    duration_s: float = 0.0
    peak_host_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    peak_device_reserved_bytes: Optional[int] = None

    @property
    def repeats(self) -> int:
        return len(self.full)

    @property
    def per_token(self) -> bool:
        return bool(self.timings) and len(self.timings) == len(self.full)

    def ttft_samples(self) -> list[float]:
        if self.per_token:
            return [t.ttft_s for t in self.timings]
        return [w.seconds_per_call for w in self.prefill]

    def full_samples(self) -> list[float]:
        return [w.seconds_per_call for w in self.full]

    def itl_samples(self) -> list[float]:
        return [g for t in self.timings for g in t.itl_s] if self.per_token else []

    def decode_tps_samples(self) -> list[float]:
        """Decode tokens/s per repeat: batch x (new_tokens - 1) / decode seconds, where decode seconds
        are last token - first token of the same call (or full - prefill without per-token times)."""
        wl = self.workload
        if wl.new_tokens < 2:
            return []
        if self.per_token:
            seconds = [t.decode_s for t in self.timings]
        else:
            seconds = [full.seconds_per_call - pre.seconds_per_call for pre, full in zip(self.prefill, self.full)]
        return [wl.batch_size * (wl.new_tokens - 1) / s for s in seconds if s > 0]

    def headline_samples(self) -> list[float]:
        """What the stopping rule and ``stats.ci95_rel`` describe: decode tokens/s, or calls/s when
        a generation has a single token."""
        return self.decode_tps_samples() or [1 / s for s in self.full_samples() if s > 0]


def _min_window_s(sensor: EnergySensor) -> float:
    return min_window_s(sensor.info())


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


def ci95_rel(samples: list[float]) -> Optional[float]:
    """Relative half-width of the 95% interval of the median (the larger side of the bootstrap
    interval); None when it cannot be bounded."""
    if len(samples) < 2:
        return None
    med, ci = median_ci95(samples)
    if med == 0:
        return None
    if ci is None:  # three or more identical values, or too few to bootstrap
        return 0.0 if len(samples) >= 3 and min(samples) == max(samples) else None
    return max(med - ci[0], ci[1] - med) / abs(med)


def _done(result: LoopResult, policy: RepeatPolicy, elapsed_s: float) -> Optional[str]:
    n, attempts = result.repeats, result.repeats + len(result.excluded)
    if policy.fixed_repeats is not None:
        if n >= policy.fixed_repeats:
            return "fixed-repeats"
        # too many disturbed tries: stop; the least disturbed are readmitted to make up N
        return "fixed-repeats" if attempts >= 3 * policy.fixed_repeats else None
    if n >= policy.min_repeats:
        rel = ci95_rel(result.headline_samples())
        if rel is not None and rel <= policy.ci_target:
            return "ci-target"
    if n >= policy.max_repeats or attempts >= 2 * policy.max_repeats:
        return "max-repeats"
    if elapsed_s >= policy.max_time_s and (n >= 2 or attempts >= 2):
        return "time-cap"
    return None


def _readmit_if_too_few(result: LoopResult, policy: RepeatPolicy) -> None:
    """Too few clean repeats (fewer than ``--repeats N``, or fewer than two for an interval): readmit
    the least disturbed ones up to that count rather than report nothing; the record then says
    interference."""
    needed = policy.fixed_repeats if policy.fixed_repeats is not None else 2
    if result.repeats >= needed or not result.excluded:
        return
    result.excluded.sort(key=lambda ex: ex.other_cpu_frac)
    while result.repeats < needed and result.excluded:
        ex = result.excluded.pop(0)
        _keep(result, ex.window, ex.prefill, ex.timing, ex.other_cpu_frac)


def _keep(result: LoopResult, full: WindowResult, pre: Optional[WindowResult], timing: Optional[TokenTiming],
          other: Optional[float]) -> None:
    result.full.append(full)
    result.other_cpu.append(other)
    if pre is not None:
        result.prefill.append(pre)
    if timing is not None:
        result.timings.append(timing)


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
    result = LoopResult(workload, ci_target=policy.ci_target if policy.fixed_repeats is None else None)
    min_window = _min_window_s(sensor)
    reads_energy = sensor.name != "none"
    # the engine's own processes are the workload: their CPU is not interference, their memory counts
    workers = tuple(backend.worker_pids())
    trim_heap()  # freed memory of earlier work (a GGUF conversion, a previous batch) is not this peak
    reset_peak_rss(workers)
    backend.reset_peak_device_memory()
    started = clock()

    for _ in range(policy.warmup):
        _, times = backend.generate_timed(batch, workload.new_tokens, clock)
        if times is None:
            backend.prefill(batch)
    backend.synchronize()

    last_output = None
    while True:
        probe = InterferenceProbe(workers)
        calls: list[tuple[float, list[float]]] = []

        def full_call(calls: list[tuple[float, list[float]]] = calls) -> Any:  # this window's list
            t0 = clock()
            out, times = backend.generate_timed(batch, workload.new_tokens, clock)
            if times:
                calls.append((t0, times))
            return out

        full, last_output = timed_window(full_call, backend.synchronize, sensor, min_window, clock)
        per_token = len(calls) == full.calls
        pre = None
        if not per_token or (reads_energy and len(result.prefill) < PREFILL_ENERGY_REPEATS):
            pre, _ = timed_window(lambda: backend.prefill(batch), backend.synchronize, sensor, min_window, clock)
        other = probe.stop().other_cpu_frac
        timing = TokenTiming.of_calls(calls) if per_token else None
        cpu_busy = policy.interference_cpu_frac is not None and other is not None and other > policy.interference_cpu_frac
        gpu_busy = policy.interference_cpu_frac is not None and bool(sensor.interference().get("flagged"))
        if cpu_busy or gpu_busy:
            result.excluded.append(ExcludedRepeat(other or 0.0, full, pre, timing, "cpu" if cpu_busy else "gpu"))
        else:
            _keep(result, full, pre, timing, other)
            if on_repeat:
                on_repeat(result)
        reason = _done(result, policy, clock() - started)
        if reason:
            result.stop_reason = reason
            break

    _readmit_if_too_few(result, policy)
    result.duration_s = clock() - started
    result.output = backend.output_size(last_output, batch)
    result.peak_host_bytes = peak_rss_bytes(workers)
    result.peak_device_bytes, result.peak_device_reserved_bytes = backend.peak_device_memory()
    return result
