"""Energy from power samples: trapezoid integration over a window, and how much of it samples saw.

Shared by the polling sensors (NVML without an energy counter, the GPU estimate) and by recorded
power traces, so every path integrates and reports coverage the same way (docs/method.md, "Windows, coverage, totals").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, TypeVar

if TYPE_CHECKING:  # pragma: no cover - numpy loads with the first window integrated, not with the sensors
    import numpy as np

# A counter's reading: RAPL's microjoules are integers, and so is their increase.
N = TypeVar("N", int, float)

# A gap between samples longer than this many sampling intervals counts as unobserved.
MAX_GAP_INTERVALS = 3.0


@dataclass(frozen=True)
class Integral:
    """Energy of one power series over one window."""

    joules: float
    duration_s: float
    coverage: float  # fraction of the window within reach of a sample (0..1)
    sampling_interval_s: Optional[float]  # median spacing of the samples used
    samples: int  # samples inside the window
    rms_step_w: Optional[float] = None  # RMS change between successive samples in reach of the window
    max_dev_w: Optional[float] = None  # largest distance of such a sample from the window's mean power
    edge_step_w: Optional[float] = None  # power at the window's end minus at its start (interpolated)


    @property
    def mean_power_w(self) -> Optional[float]:
        return self.joules / self.duration_s if self.duration_s > 0 else None


def median_interval(times: np.ndarray) -> Optional[float]:
    import numpy as np

    dt = np.diff(times)
    dt = dt[dt > 0]
    return float(np.median(dt)) if dt.size else None


def coverage(times: np.ndarray, start: float, end: float, reach_s: float) -> float:
    """Fraction of [start, end] within ``reach_s`` of some sample (union of [t-r, t+r])."""
    import numpy as np

    if times.size == 0:
        return 0.0
    if end <= start:  # an instant: observed if a sample reaches it
        return 1.0 if float(np.min(np.abs(times - start))) <= reach_s else 0.0
    lo = np.clip(times - reach_s, start, end)
    hi = np.clip(times + reach_s, start, end)
    # Samples are sorted, so the intervals are too; merge by a running maximum of their ends.
    covered, cur_lo, cur_hi = 0.0, lo[0], hi[0]
    for a, b in zip(lo[1:], hi[1:]):
        if a > cur_hi:
            covered += cur_hi - cur_lo
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    covered += cur_hi - cur_lo
    return float(min(1.0, covered / (end - start)))


def integrate(
    times: Sequence[float] | np.ndarray, watts: Sequence[float] | np.ndarray, start: float, end: float,
    interval_s: Optional[float] = None, max_gap_intervals: float = MAX_GAP_INTERVALS,
) -> Optional[Integral]:
    """Joules of the piecewise-linear power through the samples over [start, end].

    Power at the window edges is interpolated between the neighbouring samples (held constant
    beyond the first/last sample). ``interval_s`` is the nominal sampling interval (a poller's);
    without it the median spacing is used. Returns None when there is no sample at all.
    """
    import numpy as np

    t = np.asarray(times, dtype=float)
    w = np.asarray(watts, dtype=float)
    if t.size == 0:
        return None
    order = np.argsort(t, kind="stable")
    t, w = t[order], w[order]
    interval = interval_s or median_interval(t)
    duration = max(0.0, end - start)
    inside = (t > start) & (t < end)
    edge_w = np.interp([start, end], t, w)
    xs = np.concatenate(([start], t[inside], [end]))
    ys = np.concatenate(([edge_w[0]], w[inside], [edge_w[1]]))
    joules = float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2.0) if duration > 0 else 0.0
    reach = (max_gap_intervals * interval / 2.0) if interval else 0.0
    # Without a known interval (a single sample) nothing says how far a sample reaches.
    cov = coverage(t, start, end, reach) if reach > 0 else 0.0
    near = (t >= start - (interval or 0.0)) & (t <= end + (interval or 0.0))
    steps = np.diff(w[near])
    rms = float(np.sqrt(np.mean(steps * steps))) if steps.size else None
    mean_w = joules / duration if duration > 0 else float(np.mean(w[near])) if near.any() else 0.0
    dev = float(np.max(np.abs(w[near] - mean_w))) if near.any() else None
    return Integral(joules, duration, cov, interval, int(inside.sum()), rms, dev, float(edge_w[1] - edge_w[0]))


def counter_delta(before: N, after: N, wrap_range: Optional[N]) -> Optional[N]:
    """Increase of a monotonically increasing counter that restarts at zero after ``wrap_range``.

    One wrap between the two reads is undone; callers read often enough that two cannot happen.
    None when the counter went down and no wrap range is known: it was reset (a driver reload) or
    wrapped at an unknown range, and either way the increase is not known."""
    if after >= before:
        return after - before
    if not wrap_range:
        return None
    return after + wrap_range - before


def finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)
