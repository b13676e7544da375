"""Capacity at an SLO: the highest offered rate at which a server's p95 TTFT and p95 TPOT stay
within the SLO, found by a bracketing search (docs/method.md, "Capacity at an SLO").

From the starting rate the search doubles while the SLO is met (or halves while it is missed)
until one rate meets it and a higher one does not, then bisects geometrically between the two
until they are within the asked resolution. Each rate tried is a full serving point, long enough
for a steady state; the answer is the last rate that met the SLO, with the bracket as its interval."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from effbench.scenarios.base import Sections

# A rate meets the SLO only if almost every request was answered: more failures than this share
# are a miss whatever the answered requests' latencies.
MAX_FAILED_SHARE = 0.05
MIN_TRIAL_REQUESTS = 16  # per tried rate, at least: a p95 from fewer is the maximum
HALVINGS = 6  # below start / 2**6 the server misses the SLO at any useful rate


@dataclass
class Trial:
    rate: float
    met: bool
    reason: str
    ttft_p95_ms: Optional[float] = None
    tpot_p95_ms: Optional[float] = None
    sections: Sections = field(default_factory=lambda: Sections())

    def summary(self) -> dict[str, Any]:
        serving = self.sections.get("serving")
        energy = self.sections.get("energy")
        return {"rate": self.rate, "met": self.met, "reason": self.reason, "ttft_p95_ms": self.ttft_p95_ms,
                "tpot_p95_ms": self.tpot_p95_ms,
                "achieved_rate": getattr(serving, "achieved_rate", None),
                "goodput": getattr(serving, "goodput", None),
                "joules_per_request": getattr(energy, "joules_per_request", None)}


@dataclass
class Search:
    trials: list[Trial]
    best: Optional[Trial]  # the highest rate that met the SLO
    failed: Optional[Trial]  # the lowest rate above it that missed
    reason: str


def _rounded(rate: float) -> float:
    """Rates a reader can repeat: 3 significant digits."""
    return float(f"{rate:.3g}")


def capacity_requests(rate: float, point_s: float, asked: Optional[int]) -> int:
    """Measured requests for one tried rate: ``point_s`` seconds of arrivals, at least the asked count."""
    return max(asked or 0, MIN_TRIAL_REQUESTS, math.ceil(rate * point_s))


def _p95(section: Any) -> Optional[float]:
    return getattr(section, "p95", None) if section is not None else None


def judge(rate: float, sections: Sections, slo_ttft_ms: Optional[float], slo_tpot_ms: Optional[float]) -> Trial:
    """Whether one measured point meets the SLO, and why not."""
    s = sections["serving"]
    ttft, tpot = _p95(s.ttft_ms), _p95(s.tpot_ms)
    trial = Trial(rate, False, "", ttft, tpot, sections)
    requests = s.requests or 0
    if not requests or (s.failed or 0) > MAX_FAILED_SHARE * requests:
        trial.reason = f"{s.failed} of {requests} requests failed"
    elif slo_ttft_ms is not None and (ttft is None or ttft > slo_ttft_ms):
        trial.reason = f"p95 TTFT {ttft:.0f} ms > {slo_ttft_ms:g} ms" if ttft is not None else "no TTFT"
    elif slo_tpot_ms is not None and tpot is not None and tpot > slo_tpot_ms:
        trial.reason = f"p95 TPOT {tpot:.1f} ms > {slo_tpot_ms:g} ms"
    elif s.saturated:
        trial.reason = f"saturated: {s.saturation_reason}"
    else:
        trial.met, trial.reason = True, "met"
    return trial


def search(measure: Callable[[float], Trial], start: float, resolution: float, max_points: int) -> Search:
    """Bracket, then bisect, the highest rate that ``measure`` finds meeting the SLO."""
    trials: list[Trial] = []

    def tried(rate: float) -> Trial:
        t = measure(_rounded(rate))
        trials.append(t)
        return t

    first = tried(start)
    best: Optional[Trial] = first if first.met else None
    failed: Optional[Trial] = None if first.met else first
    while best is None and len(trials) < max_points and len(trials) <= HALVINGS:
        t = tried(failed.rate / 2 if failed else start / 2)
        if t.met:
            best = t
        else:
            failed = t
    if best is None:
        return Search(trials, None, failed, f"missed the SLO at every rate tried, down to {trials[-1].rate:.3g} req/s")
    while failed is None and len(trials) < max_points:
        t = tried(best.rate * 2)
        if t.met:
            best = t
        else:
            failed = t
    if failed is None:
        return Search(trials, best, None, f"met the SLO up to {best.rate:.3g} req/s; no rate that misses it "
                                          f"within {max_points} points (raise --capacity-max-points)")
    digits_limit = False
    while failed.rate / best.rate - 1 > resolution and len(trials) < max_points:
        mid = _rounded(math.sqrt(best.rate * failed.rate))
        if mid in (best.rate, failed.rate):
            digits_limit = True  # the bracket is as narrow as 3 significant digits can say
            break
        t = tried(mid)
        if t.met:
            best = t
        else:
            failed = t
    bracket = f"bracket [{best.rate:.3g}, {failed.rate:.3g}] req/s "
    if failed.rate / best.rate - 1 <= resolution:
        return Search(trials, best, failed, bracket + f"within {resolution:.0%}")
    if digits_limit:
        return Search(trials, best, failed, bracket + "(as narrow as 3 significant digits of a rate allow)")
    return Search(trials, best, failed, bracket + f"after {max_points} points (wider than {resolution:.0%})")
