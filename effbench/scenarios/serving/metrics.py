"""What a serving point's requests add up to: latency distributions, achieved rate, goodput at the
SLO, and whether the engine kept up with the offered load."""
from __future__ import annotations

import math
from typing import Any, Optional

from effbench.scenarios.serving.client import Result
from effbench.stats import distribution_ms, percentile

# The engine is saturated when it serves less than this share of the offered rate ...
SATURATION_RATE_SHARE = 0.9
# ... or its queue grows: the last third of requests waits this much longer for a first token
# than the first third, and at least MIN_QUEUE_GROWTH_S longer (a few ms is jitter, not a queue).
QUEUE_GROWTH_RATIO = 2.0
MIN_QUEUE_GROWTH_S = 0.25


def meets_slo(r: Result, ttft_ms: Optional[float], tpot_ms: Optional[float]) -> bool:
    if not r.ok:
        return False
    if ttft_ms is not None and (r.ttft_s is None or r.ttft_s * 1000 > ttft_ms):
        return False
    if tpot_ms is not None and r.tpot_s is not None and r.tpot_s * 1000 > tpot_ms:
        return False
    return True


def queue_grows(measured: list[Result]) -> bool:
    """TTFT rising through the point: requests are waiting behind an ever longer queue."""
    ok = sorted((r for r in measured if r.ok), key=lambda r: r.start)
    if len(ok) < 9:
        return False
    third = len(ok) // 3
    first = percentile([r.ttft_s for r in ok[:third]], 0.5)  # type: ignore[misc]
    last = percentile([r.ttft_s for r in ok[-third:]], 0.5)  # type: ignore[misc]
    return last > QUEUE_GROWTH_RATIO * first and last - first > MIN_QUEUE_GROWTH_S


def completion_rate(answered: list[Result], span_s: float) -> Optional[float]:
    """Requests/s the engine answers: (n - 1) / (last answer - first answer), but never over a span
    shorter than the one in which those requests were sent (last send - first send). Unlike n / (first
    send to last answer) it does not count the drain of the last requests as serving time, so a short
    point of an engine that keeps up reads the offered rate and a saturated one its service rate; the
    send span keeps answers that an engine batches into a burst from reading faster than they came."""
    ends = sorted(r.end for r in answered)
    starts = sorted(r.start for r in answered if r.start)
    window = max(ends[-1] - ends[0], starts[-1] - starts[0] if len(starts) >= 2 else 0.0) if ends else 0.0
    if len(ends) >= 2 and window > 0:
        return (len(ends) - 1) / window
    return len(ends) / span_s if ends and span_s > 0 else None


def summarize_point(measured: list[Result], span_s: float, offered_rate: Optional[float],
                    slo_ttft_ms: Optional[float], slo_tpot_ms: Optional[float]) -> dict[str, Any]:
    """The ``serving`` fields measured from one point's measured (non-warm-up) requests; ``span_s``
    is from the first measured send to the last measured response."""
    ok = [r for r in measured if r.ok]
    out_tokens = sum(r.tokens for r in ok)
    achieved = completion_rate(ok, span_s)
    good = [r for r in ok if meets_slo(r, slo_ttft_ms, slo_tpot_ms)]
    errors: dict[str, int] = {}
    for r in measured:
        if not r.ok:
            key = r.error or "failed"
            errors[key] = errors.get(key, 0) + 1
    # Keeping up means answering, well or with an error: failures are counted apart (failed, errors).
    answered = completion_rate([r for r in measured if r.end], span_s)
    behind = (offered_rate is not None and math.isfinite(offered_rate) and answered is not None
              and answered < SATURATION_RATE_SHARE * offered_rate)
    growing = queue_grows(measured)
    return {
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution_ms([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl_ms": distribution_ms([g for r in ok for g in r.itl_s]),
        "e2e_ms": distribution_ms([r.e2e_s for r in ok if r.e2e_s is not None]),
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "errors": errors,
        "achieved_rate": achieved,
        "output_tokens": out_tokens,
        "output_tokens_per_s": achieved * out_tokens / len(ok) if achieved and ok else None,
        "mean_output_tokens": out_tokens / len(ok) if ok else None,
        "mean_prompt_tokens": sum(r.prompt_tokens for r in ok) / len(ok) if ok else None,
        "goodput": (achieved or 0.0) * len(good) / len(ok) if ok and (slo_ttft_ms is not None or slo_tpot_ms is not None) else None,
        "slo_attainment": len(good) / len(measured) if measured else None,
        "saturated": bool(behind or growing),
        "saturation_reason": ("achieved rate below 90% of the offered rate" if behind else
                              "time to first token grew through the point (queue growing)" if growing else None),
        "client_lag_ms_max": max((r.client_lag_s for r in measured), default=0.0) * 1000,
    }
