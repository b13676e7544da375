"""What a serving point's requests add up to: latency distributions, throughput over the whole
point and over its steady window, goodput at the SLO, and whether the engine kept up."""
from __future__ import annotations

import math
from typing import Any, Optional

from effbench.measure.attribution import output_tokens_in
from effbench.scenarios.serving.client import Result
from effbench.stats import distribution_ms, percentile, poisson_rate_ci95

# The engine is saturated when it serves less than this share of the offered rate ...
SATURATION_RATE_SHARE = 0.9
# A steady window with fewer answers than this is mostly its edges: no steady figure from it.
MIN_STEADY_REQUESTS = 5
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


def sent_rate(measured: list[Result]) -> Optional[float]:
    """The rate at which the measured requests were really sent: (n - 1) / (last send - first send)."""
    starts = sorted(r.start for r in measured if r.start)
    if len(starts) < 2 or starts[-1] <= starts[0]:
        return None
    return (len(starts) - 1) / (starts[-1] - starts[0])


def window_figures(window_s: float, requests: float, output_tokens: float, completed: int) -> dict[str, Any]:
    """Requests/s and output tokens/s over one window, each with the exact Poisson 95% interval of
    the ``completed`` answers behind it (the token rate's relative interval is the request rate's:
    tokens come in requests). Never more than the counts and the window allow."""
    rps = requests / window_s
    tps = output_tokens / window_s
    ci = poisson_rate_ci95(completed, window_s)
    ci95: dict[str, list[float]] = {}
    if ci is not None and completed:
        rel = (ci[0] * window_s / completed, ci[1] * window_s / completed)
        ci95["requests_per_s"] = [rps * rel[0], rps * rel[1]]
        ci95["output_tokens_per_s"] = [tps * rel[0], tps * rel[1]]
    return {"window_s": window_s, "requests": requests, "completed": completed, "output_tokens": output_tokens,
            "requests_per_s": rps, "output_tokens_per_s": tps, "ci95": ci95}


def whole_figures(measured: list[Result]) -> Optional[dict[str, Any]]:
    """The field's whole-point figures (`vllm bench serve`, GuideLLM, AIPerf): completed requests and
    their output tokens over the span from the first send to the last answer."""
    starts = [r.start for r in measured if r.start]
    ends = [r.end for r in measured if r.end]
    ok = [r for r in measured if r.ok]
    if not starts or not ends or max(ends) <= min(starts):
        return None
    return window_figures(max(ends) - min(starts), len(ok), float(sum(r.tokens for r in ok)), len(ok))


def steady_figures(results: list[Result], start: Optional[float], end: Optional[float],
                   missed: Optional[str]) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """Figures over the steady window (start, end]: the tokens streamed inside it, and the requests
    they make at the point's mean output length (as ML.ENERGY counts a steady window). Counting the
    answers inside it instead would hinge on its edges: a closed loop's users answer in bursts, and
    the window opens and closes on an answer. None, with the reason, when the point had none."""
    if start is None or end is None:
        return None, missed or "no measured request was answered while requests were still being sent"
    if end <= start:
        return None, "the last measured request was sent as the first answer came back"
    ok = [r for r in results if r.ok]
    done = sum(1 for r in ok if start < r.end <= end)
    if done < MIN_STEADY_REQUESTS:
        return None, (f"only {done} request(s) completed inside the steady window ({end - start:.2f} s); "
                      f"at least {MIN_STEADY_REQUESTS} are needed: send more requests or a longer --duration")
    tokens = sum(output_tokens_in(r, start, end) for r in ok)
    mean_tokens = sum(r.tokens for r in ok) / len(ok)
    return window_figures(end - start, tokens / mean_tokens if mean_tokens else 0.0, tokens, done), None


def behind_offered(steady: Optional[dict[str, Any]], offered_rate: Optional[float]) -> bool:
    """The engine answers clearly less than it is offered: even the top of the steady completion
    rate's 95% interval is under SATURATION_RATE_SHARE of the offered rate."""
    if steady is None or offered_rate is None or not math.isfinite(offered_rate):
        return False
    top = (steady["ci95"].get("requests_per_s") or [None, steady["requests_per_s"]])[1]
    return bool(top < SATURATION_RATE_SHARE * offered_rate)


def summarize_point(measured: list[Result], steady_window: tuple[Optional[float], Optional[float]],
                    offered_rate: Optional[float], slo_ttft_ms: Optional[float], slo_tpot_ms: Optional[float],
                    steady_missed: Optional[str] = None) -> dict[str, Any]:
    """The ``serving`` fields measured from one point's measured (non-warm-up) requests and its
    steady window (``docs/method.md``: the whole point and the steady state, the headline being the
    steady figure where the point has one)."""
    ok = [r for r in measured if r.ok]
    out_tokens = sum(r.tokens for r in ok)
    whole = whole_figures(measured)
    steady, steady_reason = steady_figures(measured, *steady_window, steady_missed)
    head = steady or whole
    achieved = head["requests_per_s"] if head else None
    good = [r for r in ok if meets_slo(r, slo_ttft_ms, slo_tpot_ms)]
    errors: dict[str, int] = {}
    for r in measured:
        if not r.ok:
            key = r.error or "failed"
            errors[key] = errors.get(key, 0) + 1
    behind = behind_offered(steady, offered_rate)
    growing = queue_grows(measured)
    sources = {r.token_count_source for r in ok}
    return {
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution_ms([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl_ms": distribution_ms([g for r in ok for g in r.itl_s]),
        "e2e_ms": distribution_ms([r.e2e_s for r in ok if r.e2e_s is not None]),
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "errors": errors,
        "whole": whole,
        "steady": steady,
        "steady_reason": steady_reason,
        "achieved_rate": achieved,
        "realised_rate": sent_rate(measured),
        "output_tokens": out_tokens,
        "output_tokens_per_s": head["output_tokens_per_s"] if head else None,
        "token_count_source": ("usage" if sources == {"usage"} else "tokenizer" if "tokenizer" in sources
                               else "chunks" if sources else None),
        "mean_output_tokens": out_tokens / len(ok) if ok else None,
        "mean_prompt_tokens": sum(r.prompt_tokens for r in ok) / len(ok) if ok else None,
        "goodput": ((achieved or 0.0) * len(good) / len(ok)
                    if ok and (slo_ttft_ms is not None or slo_tpot_ms is not None) else None),
        "slo_attainment": len(good) / len(measured) if measured else None,
        "saturated": bool(behind or growing),
        "saturation_reason": (f"completed {steady['requests_per_s']:.3g} req/s over the steady window, below "
                              f"{SATURATION_RATE_SHARE:.0%} of the offered rate" if behind and steady else
                              "time to first token grew through the point (queue growing)" if growing else None),
        "client_lag_ms_max": max((r.client_lag_s for r in measured), default=0.0) * 1000,
    }
