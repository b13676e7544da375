"""Summary statistics of repeated measurements: mean, standard deviation, Student-t 95% interval (a leaf: every part may use it)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

# Two-sided 95% Student-t critical values by degrees of freedom (1..30); beyond that ~normal.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t95(df: int) -> float:
    if df < 1:
        return math.inf
    if df <= len(_T95):
        return _T95[df - 1]
    if df <= 60:  # linear in 1/df between 30 (2.042) and 60 (2.000), then 120 (1.980), inf (1.960)
        return 2.000 + (2.042 - 2.000) * (1 / df - 1 / 60) / (1 / 30 - 1 / 60)
    if df <= 120:
        return 1.980 + (2.000 - 1.980) * (1 / df - 1 / 120) / (1 / 60 - 1 / 120)
    return 1.960 + (1.980 - 1.960) * (1 / df) / (1 / 120)


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
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(xs) / n
    if n == 1:
        return Summary(1, mean, 0.0, math.inf)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    std = math.sqrt(var)
    return Summary(n, mean, std, t95(n - 1) * std / math.sqrt(n))


def mean_or_none(values: Sequence[float]) -> Optional[float]:
    return summarize(values).mean if values else None


def combine_rel(*parts: Optional[float]) -> Optional[float]:
    """Root-sum-square of independent relative uncertainties; None when none is known."""
    known = [p for p in parts if p is not None and math.isfinite(p)]
    return math.sqrt(sum(p * p for p in known)) if known else None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("no values for a percentile")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def percentile_ci95(values: Sequence[float], q: float) -> Optional[tuple[float, float]]:
    """A distribution-free 95% interval of the ``q`` quantile: the order statistics whose ranks bound
    the binomial(n, q) count at 1.96 sigma. None when there are too few values to bound it."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    half = 1.96 * math.sqrt(n * q * (1 - q))
    lo, hi = math.floor(n * q - half), math.ceil(n * q + half)
    if n < 2 or lo < 0 or hi > n - 1:
        return None
    return xs[lo], xs[hi]
