"""Energy per request under continuous batching: each power-timeline segment's energy goes to the
requests in flight in it, by their share of the tokens processed in it (docs/method.md, "Energy per
request").

A request's work is its computed prefill tokens (prompt tokens less cached ones), spread over the
span from its send to its first token, and its output tokens, each chunk's share spread over the
span since the previous chunk (the first's since the send), as the serving scenario counts tokens
inside a window. A token is one unit whichever phase computes it: per token, prefill and decode
do the same matrix work, and a decode step's memory traffic is shared by the tokens of its batch.
Cached prefill tokens take nothing. The idle power's share of each segment is split the same way
and kept apart."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from effbench.measure.timeline import Segment
from effbench.stats import QUANTILES, percentile, percentile_ci95

if TYPE_CHECKING:  # a serving request's result; measure/ does not import the scenarios at run time
    from effbench.scenarios.serving.client import Result

RULE = ("each power-timeline segment's energy to the requests in flight by their share of the tokens processed "
        "in it: computed prefill tokens over send-to-first-token, output tokens over their chunk spans; cached "
        "prefill tokens take none; idle power split the same way and kept apart")


@dataclass
class _Work:
    """One request's cumulative work over time: prefill (linear to its first chunk) and decode."""

    result: Result
    prefill: float
    times: list[float]  # send, then each chunk
    decode: list[float]  # output tokens done by each of ``times``
    joules: float = 0.0
    idle: float = 0.0
    joules_prefill: float = 0.0
    joules_decode: float = 0.0

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    def prefill_in(self, a: float, b: float) -> float:
        t0, t1 = self.times[0], self.times[1]
        if t1 <= t0:
            return self.prefill if a < t1 <= b else 0.0
        return self.prefill * max(0.0, min(b, t1) - max(a, t0)) / (t1 - t0)

    def _decode_at(self, t: float) -> float:
        ts, ds = self.times, self.decode
        if t <= ts[0]:
            return 0.0
        if t >= ts[-1]:
            return ds[-1]
        k = bisect.bisect_right(ts, t)
        t0, t1 = ts[k - 1], ts[k]
        return ds[k - 1] + (ds[k] - ds[k - 1]) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def decode_in(self, a: float, b: float) -> float:
        return self._decode_at(b) - self._decode_at(a)


def _work(r: Result) -> Optional[_Work]:
    if not r.ok:
        return None
    per = r.tokens / len(r.chunk_times)
    computed = r.usage_prompt_tokens or 0
    times = [r.start, *r.chunk_times]
    return _Work(r, float(computed), times, [per * k for k in range(len(times))])


def output_tokens_in(r: Result, start: float, end: float) -> float:
    """Output tokens of ``r`` generated inside (start, end]: each chunk's tokens over the span since the
    previous chunk (the first's since the send), pro rata. The one rule for a serving window's tokens
    and for the attribution's shares."""
    w = _work(r)
    return w.decode_in(start, end) if w is not None else 0.0


@dataclass
class Attribution:
    per_request: list[float]
    per_request_dynamic: list[float]
    joules_prefill: float
    joules_decode: float
    idle: float
    unattributed: float
    prefill_tokens: float
    output_tokens: float
    notes: list[str] = field(default_factory=list)


def attribute(results: Sequence[Result], segments: Sequence[Segment], idle_power_w: Optional[float],
              cached: Optional[dict[int, int]] = None) -> Attribution:
    """Split the energy of every usable segment among the requests in flight in it."""
    works = []
    for r in results:
        w = _work(r)
        if w is not None:
            if cached and r.index in cached:
                w.prefill = max(0.0, w.prefill - cached[r.index])
            works.append(w)
    works.sort(key=lambda w: w.start)
    segs = sorted((s for s in segments if s.usable), key=lambda s: s.start_unix)
    active: list[_Work] = []
    nxt = 0
    unattributed = 0.0
    lo = works[0].start if works else 0.0
    hi = max((w.end for w in works), default=0.0)
    for s in segs:
        a, b = max(s.start_unix, lo), min(s.end_unix, hi)
        if b <= a or s.joules is None:
            continue
        j = s.joules * (b - a) / s.seconds
        idle = min(j, (idle_power_w or 0.0) * (b - a))
        while nxt < len(works) and works[nxt].start < b:
            active.append(works[nxt])
            nxt += 1
        active = [w for w in active if w.end > a]
        shares = [(w, w.prefill_in(a, b), w.decode_in(a, b)) for w in active]
        total = sum(p + d for _, p, d in shares)
        if total <= 0:
            unattributed += j
            continue
        for w, p, d in shares:
            if p + d <= 0:
                continue
            w.joules += j * (p + d) / total
            w.idle += idle * (p + d) / total
            w.joules_prefill += j * p / total
            w.joules_decode += j * d / total
    return Attribution(
        per_request=[w.joules for w in works], per_request_dynamic=[w.joules - w.idle for w in works],
        joules_prefill=sum(w.joules_prefill for w in works), joules_decode=sum(w.joules_decode for w in works),
        idle=sum(w.idle for w in works), unattributed=unattributed,
        prefill_tokens=sum(w.prefill for w in works), output_tokens=sum(w.decode[-1] for w in works))


def _distribution(values: Sequence[float], widen_rel: Optional[float]) -> Optional[dict[str, Any]]:
    """p50/p90/p95 and the mean, each percentile with its distribution-free 95% interval over the
    requests, widened by the sensor's own relative uncertainty (it scales every request alike)."""
    if not values:
        return None
    u = widen_rel or 0.0
    out: dict[str, Any] = {k: percentile(values, q) for k, q in QUANTILES.items() if k != "p99"}
    out["mean"] = sum(values) / len(values)
    out["n"] = len(values)
    ci: dict[str, list[float]] = {}
    for k, q in QUANTILES.items():
        if k == "p99":
            continue
        bounds = percentile_ci95(values, q)
        if bounds is not None:
            ci[k] = [bounds[0] * (1 - u), bounds[1] * (1 + u)]
    out["ci95"] = ci
    return out


def summary(att: Attribution, uncertainty_rel: Optional[float], prompt_known: bool) -> dict[str, Any]:
    """The record's ``energy.attribution`` block."""
    total = sum(att.per_request)
    out: dict[str, Any] = {
        "rule": RULE,
        "joules_per_request": _distribution(att.per_request, uncertainty_rel),
        "joules_dynamic_per_request": _distribution(att.per_request_dynamic, uncertainty_rel),
        "idle_share": att.idle / total if total > 0 else None,
        "joules_attributed": total,
        "joules_unattributed": att.unattributed,  # while no request made progress (gaps in the load)
        "joules_per_output_token": att.joules_decode / att.output_tokens if att.output_tokens else None,
        "joules_per_computed_prefill_token": (att.joules_prefill / att.prefill_tokens
                                              if prompt_known and att.prefill_tokens else None),
        "joules_per_cached_prefill_token": 0.0 if prompt_known else None,
        "uncertainty_rel": uncertainty_rel,
        "confidence": 0.95,
    }
    if not prompt_known:
        out["note"] = "the tool's results state no prompt token counts: output tokens carry all the energy"
    return out
