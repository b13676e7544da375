"""The one statistics module (a leaf: every part may use it): summaries of repeated measurements with
their 95% intervals, Welch's test and the interval of a difference, a bootstrap interval of the median,
percentiles, and the conversion of uncertainties stated at other confidence levels to 95%
(docs/method.md, "Statistics"). The distributions come from ``scipy.stats``; nothing here hand-types a table.

numpy and scipy are imported by the functions that use them, not by this module: the CLI's start-up
and the serving client import it without loading either (tests/test_startup.py). ``Z95`` is
computed on first use (``z95()``; ``from effbench.stats import Z95`` still works)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Optional, Sequence

CONFIDENCE = 0.95


@cache
def z95() -> float:
    """The two-sided 95% normal quantile, 1.95996...: a 1-sigma term times this is a 95% term."""
    from scipy import stats as _sp

    return float(_sp.norm.ppf(0.5 + CONFIDENCE / 2))


def __getattr__(name: str) -> Any:
    if name == "Z95":  # the module constant, computed (with scipy) on first use
        return z95()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def t95(df: float) -> float:
    """Two-sided 95% Student-t critical value for ``df`` degrees of freedom (inf below 1)."""
    if not df >= 1:
        return math.inf
    from scipy import stats as _sp

    return float(_sp.t.ppf(0.5 + CONFIDENCE / 2, df))


def sigma_to_95(rel_sigma: Optional[float]) -> Optional[float]:
    """A 1-sigma (standard) uncertainty as a 95% half-width, assuming a normal error."""
    return None if rel_sigma is None else rel_sigma * z95()


def uniform_to_95(half_range: Optional[float]) -> Optional[float]:
    """A bound +-a with a uniform error inside it (a stated 'accuracy +-a' with no distribution) as a
    95% half-width: 0.95 a (GUM type B, rectangular)."""
    return None if half_range is None else CONFIDENCE * half_range


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n-1)
    ci95_half: float  # half-width of the 95% confidence interval of the mean

    @property
    def ci95_rel(self) -> Optional[float]:
        if self.n < 2 or self.mean == 0 or math.isinf(self.ci95_half):
            return None
        return abs(self.ci95_half / self.mean)


def summarize(values: Sequence[float]) -> Summary:
    import numpy as np

    xs = np.asarray([float(v) for v in values], dtype=float)
    n = len(xs)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(xs.mean())
    if n == 1:
        return Summary(1, mean, 0.0, math.inf)
    std = float(xs.std(ddof=1))
    return Summary(n, mean, std, t95(n - 1) * std / math.sqrt(n))


def spread_cv(values: Sequence[float]) -> Optional[float]:
    """The per-repeat spread: the coefficient of variation (sample standard deviation / |mean|); None
    for fewer than two values or a zero mean."""
    import numpy as np

    xs = np.asarray([float(v) for v in values], dtype=float)
    if len(xs) < 2 or float(xs.mean()) == 0:
        return None
    return float(xs.std(ddof=1) / abs(xs.mean()))


def repeats_for_target(repeats: int, ci95_rel: float, target: float) -> int:
    """About how many repeats an interval of ``ci95_rel`` after ``repeats`` repeats needs to narrow to
    ``target``, at the same spread (an interval narrows as 1/sqrt(n))."""
    if target <= 0:
        raise ValueError("target must be > 0")
    return max(repeats, math.ceil(repeats * (ci95_rel / target) ** 2))


def poisson_rate_ci95(count: int, seconds: float) -> Optional[tuple[float, float]]:
    """The exact (Garwood) 95% interval of an event rate from ``count`` events in ``seconds``: how
    precisely a serving point's completions pin its achieved rate. Conservative for arrivals more
    regular than Poisson (constant rate, a closed loop). None without a positive span."""
    if seconds <= 0 or count < 0:
        return None
    from scipy import stats as _sp

    alpha = 1 - CONFIDENCE
    lo = 0.0 if count == 0 else float(_sp.chi2.ppf(alpha / 2, 2 * count)) / 2
    hi = float(_sp.chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    return lo / seconds, hi / seconds


def mean_or_none(values: Sequence[float]) -> Optional[float]:
    return summarize(values).mean if values else None


def combine_rel(*parts: Optional[float]) -> Optional[float]:
    """Root-sum-square of independent relative uncertainties, all at the same (95%) level; None when
    none is known."""
    known = [p for p in parts if p is not None and math.isfinite(p)]
    return math.sqrt(sum(p * p for p in known)) if known else None


@dataclass(frozen=True)
class Difference:
    """new - base of two means, Welch's test: the difference, its 95% interval and the p-value."""
    delta: float
    ci95: tuple[float, float]
    p: float
    df: float


def welch(base: Sequence[float], new: Sequence[float]) -> Difference:
    """Welch's unequal-variance t-test of new vs base (each needs n >= 2) with the Welch-Satterthwaite
    95% interval of the difference of the means."""
    import numpy as np
    from scipy import stats as _sp

    a, b = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    delta = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = float(va + vb)
    if se2 == 0.0:
        return Difference(delta, (delta, delta), 1.0 if delta == 0 else 0.0, math.inf)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t95(df) * math.sqrt(se2)
    p = float(2 * _sp.t.sf(abs(delta) / math.sqrt(se2), df))
    return Difference(delta, (delta - half, delta + half), p, float(df))


def welch_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided p-value of Welch's test."""
    return welch(base, new).p


def median_ci95(values: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, Optional[tuple[float, float]]]:
    """The median and its bootstrap 95% interval (percentile method, fixed seed so a record is reproducible from its
    samples). With two values the median is their mean and the interval is Student-t's; None for one
    value or when all values are equal."""
    import numpy as np
    from scipy import stats as _sp

    xs = np.asarray([float(v) for v in values], dtype=float)
    if len(xs) == 0:
        raise ValueError("no values for a median")
    med = float(np.median(xs))
    if len(xs) == 2 and xs[0] != xs[1]:  # the median is the mean: its Student-t interval (df 1, wide)
        s = summarize(xs.tolist())
        return med, (med - s.ci95_half, med + s.ci95_half)
    if len(xs) < 3 or float(xs.min()) == float(xs.max()):
        return med, None
    res = _sp.bootstrap((xs,), np.median, confidence_level=CONFIDENCE, n_resamples=resamples,
                        method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return med, (min(lo, med), max(hi, med))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    import numpy as np

    xs = np.asarray([float(v) for v in values], dtype=float)
    if len(xs) == 0:
        raise ValueError("no values for a percentile")
    return float(np.quantile(xs, q))


def percentile_ci95(values: Sequence[float], q: float) -> Optional[tuple[float, float]]:
    """A distribution-free 95% interval of the ``q`` quantile: the order statistics whose ranks bound
    the binomial(n, q) count at the normal 95% point. None when there are too few values to bound it."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    half = z95() * math.sqrt(n * q * (1 - q))
    lo, hi = math.floor(n * q - half), math.ceil(n * q + half)
    if n < 2 or lo < 0 or hi > n - 1:
        return None
    return xs[lo], xs[hi]


QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def distribution_ms(seconds: Sequence[float]) -> Optional[dict[str, Any]]:
    """A latency distribution in milliseconds: p50/p90/p95/p99 and mean, with n and each
    percentile's distribution-free 95% interval (the fields of a record's ``Latency``)."""
    if not seconds:
        return None
    ms = [s * 1000.0 for s in seconds]
    out: dict[str, Any] = {k: percentile(ms, q) for k, q in QUANTILES.items()}
    out["mean"] = sum(ms) / len(ms)
    out["n"] = len(ms)
    out["ci95"] = {k: list(ci) for k, q in QUANTILES.items() if (ci := percentile_ci95(ms, q)) is not None}
    return out
