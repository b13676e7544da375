"""The server-metrics scraper: the Prometheus text parser, histogram quantiles over bucket increases,
vLLM and SGLang metric names, the asyncio scraper against a real local HTTP server, and the
client/server cross-check. Every expected figure is worked out by hand in the test."""
from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from effbench.scenarios.serving import server_metrics
from effbench.scenarios.serving.server_metrics import (
    CLIENT_GAP_ABS_TOL_MS,
    CLIENT_GAP_REL_TOL,
    MetricsScraper,
    ServerMetrics,
    cross_check,
    detect_source,
    histogram_quantile,
    metrics_url,
    parse_prometheus,
    summarize_scrapes,
)

httpx = pytest.importorskip("httpx")

# vLLM's TTFT buckets (vllm/v1/metrics/loggers.py), cut after 0.25 s to keep the text short.
TTFT_LE = ["0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "+Inf"]
ITL_LE = ["0.01", "0.025", "0.05", "0.075", "0.1", "+Inf"]
E2E_LE = ["0.3", "0.5", "0.8", "1.0", "+Inf"]


def _hist(name: str, les: list[str], cum: list[float], total_s: float, labels: str) -> str:
    out = [f"# HELP {name} Histogram.", f"# TYPE {name} histogram"]
    out += [f'{name}_bucket{{{labels},le="{le}"}} {c}' for le, c in zip(les, cum)]
    out += [f"{name}_sum{{{labels}}} {total_s}", f"{name}_count{{{labels}}} {cum[-1]}"]
    return "\n".join(out)


def _counter(name: str, series: dict[str, float]) -> str:
    return "\n".join([f"# HELP {name} Counter.", f"# TYPE {name} counter"]
                     + [f"{name}{{{labels}}} {v}" for labels, v in series.items()])


def _gauge(name: str, series: dict[str, float]) -> str:
    return "\n".join([f"# HELP {name} Gauge.", f"# TYPE {name} gauge"]
                     + [f"{name}{{{labels}}} {v}" for labels, v in series.items()])


E0 = 'engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"'
E1 = 'engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"'


def vllm_text(*, running: tuple[float, float], waiting: tuple[float, float], kv: tuple[float, float],
              ttft: list[float], ttft_sum: float, itl: list[float], itl_sum: float, e2e: list[float],
              e2e_sum: float, gen: tuple[float, float], prompt: tuple[float, float], stop: float, length: float,
              abort: float, preempt: float, queries: float, hits: float) -> str:
    """A vLLM v1 body: two engines (data parallel); the histograms and most counters on engine 0,
    engine 1 idle, as an uneven load leaves them."""
    zero_ttft, zero_itl, zero_e2e = [0.0] * len(TTFT_LE), [0.0] * len(ITL_LE), [0.0] * len(E2E_LE)
    return "\n".join([
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
        'python_gc_objects_collected_total{generation="0"} 12345.0',
        _gauge("vllm:num_requests_running", {E0: running[0], E1: running[1]}),
        _gauge("vllm:num_requests_waiting", {E0: waiting[0], E1: waiting[1]}),
        _gauge("vllm:kv_cache_usage_perc", {E0: kv[0], E1: kv[1]}),
        _counter("vllm:prefix_cache_queries_total", {E0: queries, E1: 0.0}),
        _counter("vllm:prefix_cache_hits_total", {E0: hits, E1: 0.0}),
        _counter("vllm:num_preemptions_total", {E0: preempt, E1: 0.0}),
        _counter("vllm:prompt_tokens_total", {E0: prompt[0], E1: prompt[1]}),
        _counter("vllm:generation_tokens_total", {E0: gen[0], E1: gen[1]}),
        _counter("vllm:request_success_total", {f'{E0},finished_reason="stop"': stop,
                                                f'{E0},finished_reason="length"': length,
                                                f'{E0},finished_reason="abort"': abort}),
        _hist("vllm:time_to_first_token_seconds", TTFT_LE, ttft, ttft_sum, E0),
        _hist("vllm:time_to_first_token_seconds", TTFT_LE, zero_ttft, 0.0, E1),
        _hist("vllm:inter_token_latency_seconds", ITL_LE, itl, itl_sum, E0),
        _hist("vllm:inter_token_latency_seconds", ITL_LE, zero_itl, 0.0, E1),
        # the deprecated twin of inter_token_latency, carrying the same data: must not be added
        _hist("vllm:time_per_output_token_seconds", ITL_LE, itl, itl_sum, E0),
        _hist("vllm:e2e_request_latency_seconds", E2E_LE, e2e, e2e_sum, E0),
        _hist("vllm:e2e_request_latency_seconds", E2E_LE, zero_e2e, 0.0, E1),
    ]) + "\n"


# The first scrape: history from before the point (which must not leak into the summary).
VLLM_FIRST: dict[str, Any] = {
    "running": (0, 0), "waiting": (0, 0), "kv": (0.0, 0.0),
    "ttft": [0, 0, 0, 5, 10, 10, 10, 10, 10, 10], "ttft_sum": 0.2,
    "itl": [0, 50, 50, 50, 50, 50], "itl_sum": 0.9,
    "e2e": [0, 0, 4, 10, 10], "e2e_sum": 8.0,
    "gen": (1000, 0), "prompt": (5000, 0), "stop": 8, "length": 2, "abort": 1, "preempt": 3,
    "queries": 5000, "hits": 1000}
# The last scrape: 100 more requests. Increases: TTFT cumulative buckets 0,0,0,0,10,40,80,95,100,100
# with _sum +6.0; ITL 0,100,300,380,400,400 with _sum +12.0; e2e 0,10,50,90,100 with _sum +70.0.
VLLM_LAST: dict[str, Any] = {
    "running": (7, 3), "waiting": (2, 0), "kv": (0.5, 0.3),
    "ttft": [0, 0, 0, 5, 20, 50, 90, 105, 110, 110], "ttft_sum": 6.2,
    "itl": [0, 150, 350, 430, 450, 450], "itl_sum": 12.9,
    "e2e": [0, 10, 54, 100, 110], "e2e_sum": 78.0,
    "gen": (26000, 600), "prompt": (15000, 0), "stop": 98, "length": 11, "abort": 4, "preempt": 5,
    "queries": 15000, "hits": 8500}


# ----------------------------------------------------------------------------------------- parsing

def test_parser_reads_the_text_format() -> None:
    text = r"""# HELP m A metric with \\ and \n in its help.
# TYPE m gauge
# a plain comment

   
m{path="/a\"b\\c\nd",z="ü ✓"} 1.5 1700000000000
m2 +Inf
m3{} -Inf
m4{a="x",} NaN
m5{ a = "1" , b="2" } 3e-3
m6_total{trace="t"} 7 # {trace_id="abc"} 1.0 1700000000.0
{"my.dotted.metric", "label.x"="v"} 42
""" + "\tm7 8\r"  # noqa: W293 - the line of spaces is part of the input
    s = parse_prometheus(text)
    assert [x.name for x in s] == ["m", "m2", "m3", "m4", "m5", "m6_total", "my.dotted.metric", "m7"]
    assert s[0].labels == {"path": '/a"b\\c\nd', "z": "ü ✓"}
    assert s[0].value == 1.5 and s[0].timestamp == 1700000000000
    assert s[1].value == math.inf and s[2].value == -math.inf and s[2].labels == {}
    assert math.isnan(s[3].value) and s[3].labels == {"a": "x"}
    assert s[4].labels == {"a": "1", "b": "2"} and s[4].value == pytest.approx(0.003)
    assert s[5].value == 7 and s[5].timestamp is None  # the exemplar is not a timestamp
    assert s[6].labels == {"label.x": "v"} and s[6].value == 42
    assert s[7].value == 8


def test_parser_reads_a_vllm_body() -> None:
    s = parse_prometheus(vllm_text(**VLLM_LAST))
    by = {(x.name, tuple(sorted(x.labels.items()))): x.value for x in s}
    model = ("model_name", "meta-llama/Llama-3.1-8B-Instruct")
    assert by[("vllm:num_requests_running", (("engine", "0"), model))] == 7
    assert by[("vllm:time_to_first_token_seconds_bucket", (("engine", "0"), ("le", "+Inf"), model))] == 110
    assert by[("vllm:request_success_total", (("engine", "0"), ("finished_reason", "abort"), model))] == 4
    assert detect_source(x.name for x in s) == "vllm"


def test_hostile_input_never_crashes() -> None:
    garbage = "\n".join([
        "<!DOCTYPE html><html><body>Not Found</body></html>",
        '{"detail": "Not Found"}',
        "no_value_here",
        'm{unterminated="abc} 1',
        'm{a="1"',
        "m{=\"1\"} 1",
        "m 1 2 3 4",
        "m 1_000",
        "m not-a-number",
        "9starts_with_digit 1",
        'm{a="\\q\\"} 1',  # an unknown escape, then a closing quote that is escaped
        "m " + "9" * 5000,  # a huge value: +Inf when it fits nothing
        "m{" + ",".join(f'l{i}="{"x" * 50}"' for i in range(500)) + "} 1",
        "m{a=\"\u2028\u0085\x1c\"} 2",  # Unicode line separators inside a value are not line ends
        "\x00\x01\x02 3",
        "m 1e999",
        "m -0",
    ])
    s = parse_prometheus(garbage)
    assert [x.value for x in s] == [float("9" * 5000), 1.0, 2.0, math.inf, -0.0]
    assert s[1].labels["l499"] == "x" * 50 and s[2].labels == {"a": "\u2028\u0085\x1c"}
    rnd = random.Random(7)
    alphabet = 'vllm:_{}="\\,# \n\t+-.eE0123456789InfNa\u00fc\u2028'
    for _ in range(300):
        blob = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200)))
        parse_prometheus(blob)
        json.dumps(summarize_scrapes([blob, blob + "\n" + vllm_text(**VLLM_FIRST)]).to_dict(), allow_nan=False)


def test_hostile_values_in_vllm_series_are_ignored_not_summed() -> None:
    first = vllm_text(**VLLM_FIRST)
    last = vllm_text(**VLLM_LAST) + """vllm:generation_tokens_total{engine="9"} NaN
vllm:generation_tokens_total{engine="8"} +Inf
vllm:generation_tokens_total{engine="7"} -5
vllm:num_requests_running{engine="9"} NaN
vllm:time_to_first_token_seconds_bucket{le="banana",engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 99
"""
    m = summarize_scrapes([first, last])
    assert m.generation_tokens == 25600
    assert m.running.max == 10
    assert m.ttft_ms.p50 == pytest.approx(65.0)
    json.dumps(m.to_dict(), allow_nan=False)


# ------------------------------------------------------------------------------ histogram maths

def test_histogram_quantile_interpolates_like_prometheus() -> None:
    b = [(0.04, 10.0), (0.06, 40.0), (0.08, 80.0), (0.1, 95.0), (0.25, 100.0), (math.inf, 100.0)]
    # rank 50 falls in (0.06, 0.08] holding 40..80: 0.06 + 0.02 * (50 - 40) / 40
    assert histogram_quantile(0.5, b) == pytest.approx(0.065)
    # rank 95 is the top of (0.08, 0.1]
    assert histogram_quantile(0.95, b) == pytest.approx(0.1)
    # rank 5 falls in the first bucket, interpolated from 0: 0.04 * 5 / 10
    assert histogram_quantile(0.05, b) == pytest.approx(0.02)
    # the order of the buckets does not matter
    assert histogram_quantile(0.5, list(reversed(b))) == pytest.approx(0.065)


def test_histogram_quantile_edges() -> None:
    # past the last finite bucket: its bound is all that is known (Prometheus' answer too)
    assert histogram_quantile(0.5, [(0.1, 1.0), (1.0, 2.0), (math.inf, 10.0)]) == 1.0
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None  # no observations
    assert histogram_quantile(0.5, [(0.1, 3.0), (1.0, 5.0)]) is None  # no +Inf bucket: no total
    assert histogram_quantile(0.5, []) is None
    # a cumulative count that falls (hostile or float noise) is lifted, as Prometheus does
    # [10, 8, 20, 20] reads [10, 10, 20, 20]: rank 15 in (2, 3] holding 10..20 -> 2 + 1 * 5 / 10
    assert histogram_quantile(0.75, [(1.0, 10.0), (2.0, 8.0), (3.0, 20.0), (math.inf, 20.0)]) == 2.5
    with pytest.raises(ValueError):
        histogram_quantile(1.5, [(math.inf, 1.0)])


# ----------------------------------------------------------------------------------------- vLLM

def test_vllm_summary_uses_the_increase_between_first_and_last_scrape() -> None:
    mid = vllm_text(**{**VLLM_LAST, "running": (12, 4), "waiting": (5, 1), "kv": (0.9, 0.7)})
    m = summarize_scrapes([vllm_text(**VLLM_FIRST), mid, vllm_text(**VLLM_LAST)])
    assert m.exposed and m.source == "vllm" and m.scrapes == 3
    # gauges: counts add up over the engines, fractions average over them
    assert (m.running.mean, m.running.max) == pytest.approx(((0 + 16 + 10) / 3, 16))
    assert (m.waiting.mean, m.waiting.max) == pytest.approx(((0 + 6 + 2) / 3, 6))
    assert (m.kv_cache_usage.mean, m.kv_cache_usage.max) == pytest.approx(((0 + 0.8 + 0.4) / 3, 0.8))
    # counters: last minus first, over both engines
    assert m.generation_tokens == (26000 + 600) - 1000
    assert m.prompt_tokens == 10000
    assert m.requests_succeeded == (98 - 8) + (11 - 2)  # aborts are not successes
    assert m.preemptions == 2
    assert m.prefix_cache_hit_rate == pytest.approx((8500 - 1000) / (15000 - 5000))
    # TTFT from the bucket increases (see VLLM_LAST), not from the server's whole history
    assert m.ttft_ms.count == 100
    assert m.ttft_ms.p50 == pytest.approx(65.0)
    assert m.ttft_ms.p95 == pytest.approx(100.0)
    assert m.ttft_ms.mean == pytest.approx(60.0)  # (6.2 - 0.2) / 100 s
    assert m.ttft_ms.p50_bucket == pytest.approx((60.0, 80.0))
    # ITL: rank 200 in (0.025, 0.05] holding 100..300 -> 37.5 ms; rank 380 is the top of (0.05, 0.075]
    assert m.itl_ms.count == 400  # inter_token_latency only: its deprecated twin is not added
    assert m.itl_ms.p50 == pytest.approx(37.5)
    assert m.itl_ms.p95 == pytest.approx(75.0)
    assert m.itl_ms.mean == pytest.approx(30.0)  # 12.0 s / 400
    # e2e: rank 50 is the top of (0.5, 0.8]; rank 95 is past le=1.0 (90), in the +Inf bucket, so
    # the last finite bound is the answer
    assert m.e2e_ms.p50 == pytest.approx(800.0)
    assert m.e2e_ms.p95 == pytest.approx(1000.0)
    assert m.e2e_ms.mean == pytest.approx(700.0)
    d = m.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["ttft_ms"]["p50_bucket"] == [60.0, 80.0] and d["e2e_ms"]["p95"] == pytest.approx(1000.0)


def test_counter_reset_counts_from_zero() -> None:
    first = vllm_text(**VLLM_FIRST)
    restarted = vllm_text(**{**VLLM_FIRST, "gen": (40, 0)})  # the server restarted in between
    last = vllm_text(**{**VLLM_FIRST, "gen": (100, 0)})
    assert summarize_scrapes([first, restarted, last]).generation_tokens == 100


def test_older_vllm_names() -> None:
    """0.6-era V0: gpu_cache_usage_perc, the gpu_prefix_cache_hit_rate gauge, and per-token gaps in
    time_per_output_token_seconds; one engine, model_name only."""
    lab = 'model_name="m"'

    def body(run: float, kv: float, hit: float, itl: list[float], itl_sum: float, gen: float) -> str:
        return "\n".join([
            _gauge("vllm:num_requests_running", {lab: run}),
            _gauge("vllm:num_requests_waiting", {lab: 0}),
            _gauge("vllm:gpu_cache_usage_perc", {lab: kv}),
            _gauge("vllm:gpu_prefix_cache_hit_rate", {lab: hit}),
            _counter("vllm:generation_tokens_total", {lab: gen}),
            _hist("vllm:time_per_output_token_seconds", ITL_LE, itl, itl_sum, lab),
        ])

    m = summarize_scrapes([body(0, 0.0, 0.2, [0, 0, 0, 0, 0, 0], 0, 0),
                           body(4, 0.6, 0.4, [0, 10, 20, 20, 20, 20], 0.6, 20)])
    assert m.source == "vllm"
    assert m.kv_cache_usage.max == pytest.approx(0.6)
    assert m.prefix_cache_hit_rate == pytest.approx(0.3)  # the gauge's mean, no counters
    assert m.itl_ms.count == 20 and m.itl_ms.p50 == pytest.approx(25.0)
    assert m.generation_tokens == 20
    assert m.e2e_ms.p50 is None and m.requests_succeeded is None  # not exposed: unknown, not 0


# --------------------------------------------------------------------------------------- SGLang

SG = 'model_name="Qwen/Qwen2.5-7B-Instruct"'
SG_TTFT_LE = ["0.1", "0.2", "0.4", "0.6", "0.8", "1", "2", "+Inf"]
SG_ITL_LE = ["0.002", "0.004", "0.006", "0.008", "0.01", "0.015", "0.02", "+Inf"]


def sglang_text(*, running: float, queue: float, usage: float, hit_gauge: float, prompt: float,
                cached: float | None, gen: float, reqs: float, ttft: list[float], ttft_sum: float,
                itl: list[float], itl_sum: float) -> str:
    parts = [
        _gauge("sglang:num_running_reqs", {SG: running}),
        _gauge("sglang:num_queue_reqs", {SG: queue}),
        _gauge("sglang:token_usage", {SG: usage}),
        _gauge("sglang:cache_hit_rate", {SG: hit_gauge}),
        _counter("sglang:prompt_tokens_total", {SG: prompt}),
        _counter("sglang:generation_tokens_total", {SG: gen}),
        _counter("sglang:num_requests_total", {SG: reqs}),
        # prometheus_client writes HELP/TYPE even before the first labelled series exists
        _counter("sglang:cached_tokens_total", {} if cached is None else {SG: cached}),
        _hist("sglang:time_to_first_token_seconds", SG_TTFT_LE, ttft, ttft_sum, SG),
        _hist("sglang:inter_token_latency_seconds", SG_ITL_LE, itl, itl_sum, SG),
        # an older histogram beside it, with different data: the newer name wins
        _hist("sglang:time_per_output_token_seconds", ["0.1", "+Inf"], [999, 999], 99.0, SG),
    ]
    return "\n".join(parts) + "\n"


SG_FIRST: dict[str, Any] = {
    "running": 0, "queue": 0, "usage": 0.0, "hit_gauge": 0.9, "prompt": 0, "cached": None, "gen": 0, "reqs": 0,
    "ttft": [0] * 8, "ttft_sum": 0.0, "itl": [0] * 8, "itl_sum": 0.0}


def test_sglang_summary() -> None:
    last: dict[str, Any] = {
        "running": 30, "queue": 6, "usage": 0.42, "hit_gauge": 0.5, "prompt": 4000, "cached": 1000, "gen": 2000,
        "reqs": 40, "ttft": [4, 10, 20, 30, 36, 40, 40, 40], "ttft_sum": 12.0,
        "itl": [0, 0, 100, 900, 1800, 1960, 2000, 2000], "itl_sum": 16.0}
    m = summarize_scrapes([sglang_text(**SG_FIRST), sglang_text(**last)])
    assert m.source == "sglang"
    assert (m.running.mean, m.running.max) == (15, 30)
    assert m.waiting.max == 6 and m.kv_cache_usage.max == pytest.approx(0.42)
    assert m.prefix_cache_hit_rate == pytest.approx(0.25)  # cached/prompt tokens, not the gauge
    assert (m.generation_tokens, m.prompt_tokens, m.requests_succeeded) == (2000, 4000, 40)
    assert m.preemptions is None
    # TTFT rank 20 is the top of (0.2, 0.4]; rank 38 in (0.8, 1] holding 36..40 -> 0.8 + 0.2 * 2 / 4
    assert m.ttft_ms.p50 == pytest.approx(400.0) and m.ttft_ms.p95 == pytest.approx(900.0)
    assert m.ttft_ms.mean == pytest.approx(300.0)
    # ITL rank 1000 in (0.008, 0.01] holding 900..1800 -> 8 + 2 * 100 / 900 ms
    assert m.itl_ms.count == 2000 and m.itl_ms.p50 == pytest.approx(8 + 200 / 900)
    assert m.e2e_ms.count is None  # not in this body


def test_sglang_cached_tokens_declared_but_never_hit_is_a_zero_rate() -> None:
    last = {**SG_FIRST, "prompt": 500, "hit_gauge": 0.7}
    assert summarize_scrapes([sglang_text(**SG_FIRST), sglang_text(**last)]).prefix_cache_hit_rate == 0.0


def test_series_born_during_the_window_count_from_zero() -> None:
    """SGLang creates labelled series on the first request: absent at the first scrape, they
    started at zero."""
    bare = "# TYPE sglang:generation_tokens_total counter\n# TYPE sglang:time_to_first_token_seconds histogram\n"
    last = {**SG_FIRST, "gen": 300, "reqs": 3, "ttft": [1, 2, 3, 3, 3, 3, 3, 3], "ttft_sum": 0.5}
    m = summarize_scrapes([bare, sglang_text(**last)])
    assert m.source == "sglang" and m.generation_tokens == 300 and m.ttft_ms.count == 3


def test_missing_inf_bucket_falls_back_to_count() -> None:
    lab = 'model_name="m"'
    text = "\n".join([
        'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4',
        'vllm:time_to_first_token_seconds_bucket{le="0.2",model_name="m"} 8',
        f"vllm:time_to_first_token_seconds_count{{{lab}}} 10",
        f"vllm:time_to_first_token_seconds_sum{{{lab}}} 2.0",
    ])
    zero = text.replace("} 4", "} 0").replace("} 8", "} 0").replace("} 10", "} 0").replace("} 2.0", "} 0")
    m = summarize_scrapes([zero, text])
    assert m.ttft_ms.count == 10
    assert m.ttft_ms.p50 == pytest.approx(125.0)  # rank 5 in (0.1, 0.2] holding 4..8
    assert m.ttft_ms.p95 == pytest.approx(200.0)  # in the +Inf bucket: the last finite bound
    # no buckets at all, only _sum and _count: the mean is still exact
    m = summarize_scrapes([zero.split("\n", 2)[2], text.split("\n", 2)[2]])
    assert m.ttft_ms.p50 is None and m.ttft_ms.mean == pytest.approx(200.0) and m.ttft_ms.count == 10


def test_unknown_source_and_nothing_to_summarise() -> None:
    m = summarize_scrapes(["llamacpp:prompt_tokens_total 5\n", "llamacpp:prompt_tokens_total 9\n"])
    assert m.exposed and m.source == "unknown" and m.generation_tokens is None and m.running.mean is None
    assert summarize_scrapes(["<html></html>"]).exposed is False


# -------------------------------------------------------------------------------------- scraper

class MetricsServer:
    """A stdlib HTTP server on 127.0.0.1 whose /metrics body the test sets between scrapes."""

    def __init__(self, status: int = 200, content_type: str = "text/plain; version=0.0.4; charset=utf-8") -> None:
        self.body = ""
        self.status, self.content_type = status, content_type
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                found = self.path == "/metrics"
                data = server.body.encode() if found else b"{}"
                self.send_response(server.status if found else 404)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def srv() -> Iterator[MetricsServer]:
    server = MetricsServer()
    # a short poll: shutdown() waits for it
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def test_scraper_returns_the_exact_deltas(srv: MetricsServer) -> None:
    async def main() -> ServerMetrics:
        scraper = MetricsScraper(interval_s=3600)  # only the scrapes the test asks for
        srv.body = vllm_text(**VLLM_FIRST)
        assert await scraper.start(srv.url + "/v1")  # /metrics is at the root, beside /v1
        srv.body = vllm_text(**{**VLLM_LAST, "running": (12, 4), "waiting": (5, 1), "kv": (0.9, 0.7)})
        assert await scraper.scrape_now()
        srv.body = vllm_text(**VLLM_LAST)
        return await scraper.stop()

    m = run(main)
    assert m.exposed and m.reason is None and m.url == srv.url + "/metrics"
    assert m.scrapes == 3 and m.failed_scrapes == 0 and m.window_s is not None and m.window_s >= 0
    assert m.generation_tokens == 25600 and m.prompt_tokens == 10000
    assert m.requests_succeeded == 99 and m.preemptions == 2
    assert m.prefix_cache_hit_rate == pytest.approx(0.75)
    assert m.ttft_ms.p50 == pytest.approx(65.0) and m.ttft_ms.count == 100
    assert m.itl_ms.p50 == pytest.approx(37.5)
    assert m.running.max == 16 and m.kv_cache_usage.max == pytest.approx(0.8)
    json.dumps(m.to_dict(), allow_nan=False)


def test_scraper_scrapes_in_the_background_and_survives_a_failing_scrape(srv: MetricsServer) -> None:
    async def main() -> tuple[ServerMetrics, int]:
        srv.body = vllm_text(**VLLM_FIRST)
        scraper = MetricsScraper(interval_s=0.01)
        assert await scraper.start(srv.url)
        deadline = time.monotonic() + 3.0  # waits for a count of scrapes, not for a time
        while scraper.scrapes < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        seen = scraper.scrapes
        srv.status = 500  # the server stumbles: the scrape is counted as failed, nothing raises
        assert not await scraper.scrape_now()
        srv.status = 200
        srv.body = vllm_text(**VLLM_LAST)
        return await scraper.stop(), seen

    m, seen = run(main)
    assert seen >= 3
    assert m.failed_scrapes >= 1 and "HTTP 500" in (m.last_error or "")
    assert m.generation_tokens == 25600  # the deltas are whole whatever the scrapes in between


def test_scraper_accepts_an_httpx_client_and_leaves_it_open(srv: MetricsServer) -> None:
    async def main() -> tuple[ServerMetrics, bool]:
        srv.body = vllm_text(**VLLM_FIRST)
        async with httpx.AsyncClient(base_url=srv.url, trust_env=False) as client:
            scraper = MetricsScraper(interval_s=3600)
            assert await scraper.start(client)
            srv.body = vllm_text(**VLLM_LAST)
            m = await scraper.stop()
            return m, client.is_closed

    m, closed = run(main)
    assert not closed and m.generation_tokens == 25600


@pytest.mark.parametrize(("status", "content_type", "body", "needle"), [
    (404, "application/json", "{}", "HTTP 404"),
    (200, "text/html; charset=utf-8", "<html><body>hello</body></html>", "content-type text/html"),
    (200, "text/plain", "<!DOCTYPE html>\n<html>\n<p>Welcome</p>\n</html>\n", "not Prometheus text"),
])
def test_no_metrics_endpoint_is_not_exposed(srv: MetricsServer, status: int, content_type: str, body: str,
                                            needle: str) -> None:
    srv.status, srv.content_type, srv.body = status, content_type, body

    async def main() -> tuple[bool, ServerMetrics]:
        scraper = MetricsScraper(interval_s=0.01)
        started = await scraper.start(srv.url)
        await asyncio.sleep(0.05)  # no background task may be running to hit the server
        return started, await scraper.stop()

    started, m = run(main)
    assert not started and srv.hits == 1
    assert m.exposed is False and needle in (m.reason or "")
    d = m.to_dict()
    assert d["exposed"] is False and d["ttft_ms"]["p50"] is None and d["scrapes"] == 0
    json.dumps(d, allow_nan=False)


def test_unreachable_server_is_not_exposed() -> None:
    closed = MetricsServer()
    url = closed.url
    closed.httpd.server_close()  # nothing listens on that port any more

    async def main() -> ServerMetrics:
        scraper = MetricsScraper(timeout_s=2.0)
        assert not await scraper.start(url)
        return await scraper.stop()

    m = run(main)
    assert not m.exposed and "could not scrape" in (m.reason or "")
    assert not run(lambda: MetricsScraper().start("not a url"))


def test_metrics_url() -> None:
    assert metrics_url("http://h:8000") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/metrics") == "http://h:8000/metrics"


# ---------------------------------------------------------------------------------- cross-check

def _server() -> ServerMetrics:
    return summarize_scrapes([vllm_text(**VLLM_FIRST), vllm_text(**VLLM_LAST)])  # TTFT p50 65, ITL p50 37.5


def test_cross_check_notes_a_slow_client() -> None:
    c = cross_check(_server(), client_ttft_p50_ms=200.0, client_itl_p50_ms=40.0)
    assert c["ttft"]["ratio"] == pytest.approx(200 / 65) and c["ttft"]["client_slower"] is True
    assert c["itl"]["ratio"] == pytest.approx(40 / 37.5) and c["itl"]["client_slower"] is False
    note = c["note"]
    assert isinstance(note, str) and "\n" not in note
    assert "TTFT p50 200 ms vs 65.0 ms" in note and "60.0 ms-80.0 ms" in note and "ITL" not in note
    assert c["rel_tol"] == CLIENT_GAP_REL_TOL and c["abs_tol_ms"] == CLIENT_GAP_ABS_TOL_MS


def test_cross_check_within_tolerance_or_resolution_has_no_note() -> None:
    s = _server()
    # 78 ms: 20 % above the server's 65 ms, and inside its (60, 80] ms bucket
    assert cross_check(s, 78.0, 37.5)["note"] is None
    # 85 ms: 31 % above and past the bucket, but only 20 ms, not more than the absolute tolerance
    c = cross_check(s, 85.0, None)
    assert c["ttft"]["client_slower"] is False and c["note"] is None and c["itl"]["ratio"] is None
    # past both tolerances and the bucket: a note, also from the stored (JSON) form of the summary
    stored = json.loads(json.dumps(s.to_dict()))
    assert cross_check(stored, 86.0, 60.0)["note"] is not None
    assert "ITL p50 60.0 ms vs 37.5 ms" in cross_check(stored, 86.0, 60.0)["note"]


def test_cross_check_without_server_metrics() -> None:
    c = cross_check(ServerMetrics(exposed=False, reason="HTTP 404"), 300.0, 40.0)
    assert c["note"] is None and c["ttft"]["ratio"] is None and c["ttft"]["client_slower"] is None
    assert cross_check({}, 300.0, 40.0)["note"] is None


def test_scraper_waits_for_late_counts_only_where_the_server_counts_requests(srv: MetricsServer,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that exposes no finished-request counter is not waited on for one (the settle bound is
    set far beyond the test's own time limit: a wait would fail the test, not slow it); one that does is
    waited on until it has counted the requests the client saw finish."""
    monkeypatch.setattr(server_metrics, "SETTLE_MAX_S", 60.0)

    async def without_counter() -> ServerMetrics:
        srv.body = "vllm:num_requests_running 1\nvllm:generation_tokens_total 10\n"
        scraper = MetricsScraper(interval_s=3600)
        await scraper.count_before(srv.url)
        assert await scraper.start(srv.url, finished_since_count=2)
        srv.body = "vllm:num_requests_running 0\nvllm:generation_tokens_total 70\n"
        return await asyncio.wait_for(scraper.stop(expected_requests=5), timeout=10)

    m = run(without_counter)
    assert m.exposed and m.generation_tokens == 60 and m.requests_succeeded is None

    async def counted_late() -> ServerMetrics:
        srv.body = vllm_text(**VLLM_FIRST)
        scraper = MetricsScraper(interval_s=3600)
        assert await scraper.start(srv.url)
        asyncio.get_running_loop().call_later(0.3, lambda: setattr(srv, "body", vllm_text(**VLLM_LAST)))
        return await asyncio.wait_for(scraper.stop(expected_requests=99), timeout=10)

    m = run(counted_late)
    assert m.requests_succeeded == 99 and m.generation_tokens == 25600
