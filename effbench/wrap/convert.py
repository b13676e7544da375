"""A tool's requests as effbench's serving ``Result`` objects on the wall clock, checked for order,
so the serving scenario's own window figures apply to them unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from effbench.scenarios.serving.client import Result
from effbench.wrap.formats import MAX_CHUNKS, TIME_SLACK_S, ResultsError, ToolBenchmark, ToolRequest

# A tool's times placed on the wall clock must fall inside the wrapped command's run, give or take
# this much (process start-up, clock reads a little apart).
PLACEMENT_SLACK_S = 2.0


@dataclass
class Placement:
    offset_s: float  # add to the tool's times to get unix seconds
    how: str


def place(bench: ToolBenchmark, run_start: float, run_end: float, mono_to_unix: float) -> Placement:
    """How the tool's clock maps onto unix time. Unix stamps are taken as they are; a monotonic
    clock (``time.perf_counter()``, system-wide on Linux) is shifted by the offset effbench read when
    it started the command. Either way the requests must lie inside the command's run."""
    starts = [r.start for r in bench.requests]
    ends = [r.end for r in bench.requests]
    if not starts:
        raise ResultsError(f"{bench.label}: the results hold no requests")
    offset, how = (0.0, "unix timestamps") if bench.clock == "unix" else (
        mono_to_unix, "the tool's monotonic clock, shifted to unix time by effbench's reading of both clocks")
    lo, hi = min(starts) + offset, max(ends) + offset
    if lo < run_start - PLACEMENT_SLACK_S or hi > run_end + PLACEMENT_SLACK_S:
        raise ResultsError(f"{bench.label}: its requests ({lo:.1f} to {hi:.1f}, {how}) do not lie inside the wrapped "
                           f"command's run ({run_start:.1f} to {run_end:.1f}): results of another run?")
    return Placement(offset, how)


def _check_order(i: int, r: ToolRequest) -> None:
    where = f"request {i + 1}"
    if r.end < r.start:
        raise ResultsError(f"timestamps out of order: {where} ends {r.start - r.end:.3f} s before it starts")
    if r.error:
        return
    e2e = r.end - r.start
    if r.ttft_s is not None and (r.ttft_s < 0 or r.ttft_s > e2e + TIME_SLACK_S):
        raise ResultsError(f"timestamps out of order: {where} has a first token {r.ttft_s:.3f} s after its send, "
                           f"outside its {e2e:.3f} s life")
    if r.itl_s is not None and any(g < 0 for g in r.itl_s):
        raise ResultsError(f"timestamps out of order: {where} has a negative gap between streamed chunks")
    if r.first_token is not None and r.last_token is not None and not (
            r.start - TIME_SLACK_S <= r.first_token <= r.last_token <= r.end + TIME_SLACK_S):
        raise ResultsError(f"timestamps out of order: {where}'s first and last tokens are not between its send and answer")


def _even(first: float, last: float, n: int) -> list[float]:
    n = max(1, min(n, MAX_CHUNKS))
    if n == 1:
        return [first]
    return [first + (last - first) * k / (n - 1) for k in range(n)]


def chunk_times(r: ToolRequest) -> tuple[list[float], bool]:
    """The request's chunk times and whether its TTFT is known: the tool's own gaps where it kept
    them; else its tokens spread evenly from the first token (or send + TTFT) to the last (or the
    answer); with neither, one chunk at the answer (TTFT then unknown)."""
    tokens = r.output_tokens if r.output_tokens is not None else (r.chunks or 0)
    if tokens <= 0 and not r.itl_s:
        return [], r.ttft_s is not None
    if r.itl_s is not None and r.ttft_s is not None:
        t = r.start + r.ttft_s
        out = [t]
        for g in r.itl_s:
            t += g
            out.append(t)
        return out, True
    first = r.first_token if r.first_token is not None else (r.start + r.ttft_s if r.ttft_s is not None else None)
    last = r.last_token if r.last_token is not None else r.end
    if first is None:
        return [r.end], False
    n = r.chunks if r.chunks else tokens
    return _even(first, max(first, last), n), True


def to_results(bench: ToolBenchmark, placement: Placement) -> tuple[list[Result], bool]:
    """(results on unix time, whether every answered request's TTFT is known)."""
    out: list[Result] = []
    ttft_known = True
    for i, r in enumerate(bench.requests):
        _check_order(i, r)
        off = placement.offset_s
        times, known = chunk_times(r) if not r.error else ([], True)
        ttft_known &= known
        res = Result(index=i, warmup=False, scheduled=r.start + off, start=r.start + off, end=r.end + off,
                     chunk_times=[t + off for t in times], prompt_tokens=r.prompt_tokens or 0,
                     usage_prompt_tokens=r.prompt_tokens, usage_completion_tokens=r.output_tokens, error=r.error)
        if res.error is None and not res.chunk_times:
            res.error = "no output tokens"
        out.append(res)
    return out, ttft_known


def max_in_flight(results: list[Result]) -> int:
    """Most requests open at once (sends and answers swept in time order)."""
    events = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def steady_bounds(results: list[Result]) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """The steady window as effbench's serving scenario opens it: from the first answer (every
    request then in flight was sent under load) to the last send (after it the engine only drains)."""
    ok = [r for r in results if r.ok]
    if not ok:
        return None, None, "no request was answered"
    first_answer = min(r.end for r in ok)
    last_send = max(r.start for r in results)
    if first_answer >= last_send:
        return None, None, "every request was sent before the first answer came back"
    return first_answer, last_send, None
