"""Serving figures against known truth: servers whose timing is set exactly (the loopback stub),
the field's throughput definitions, a steady window shared with energy, schedules that offer the
rate asked, the server's own token counts, both OpenAI APIs, a capacity search against a server of
known capacity, and the server's /metrics read back."""
from __future__ import annotations

import math
import time

import pytest
from conftest import ConstantPowerSensor, assert_one_line_error, run_effbench

from effbench.scenarios.serving.capacity import Trial, search
from effbench.scenarios.serving.client import Client, Request
from effbench.scenarios.serving.load import Load, arrival_offsets, run_point
from effbench.scenarios.serving.metrics import summarize_point
from effbench.scenarios.serving.stub import StubBehaviour, StubServer
from effbench.sensors.base import NullSensor

pytest.importorskip("httpx")


def _point(url: str, load: Load, max_tokens: int, api: str = "completions", usage: bool = True):
    run = run_point(lambda: Client(url, "stub", 30, api=api, usage=usage), load,  # type: ignore[arg-type]
                    lambda i, w: Request(i, "hello", 4, max_tokens, w), NullSensor().start_window, budget_s=120)
    measured = [r for r in run.results if not r.warmup]
    return run, measured, summarize_point(measured, (run.steady.start, run.steady.end), load.rate, None, None,
                                          run.steady_missed)


# -- the field's definitions, against servers of known timing ---------------------------------------
def test_closed_loop_throughput_is_the_servers_known_rate_and_never_above_it():
    # Each request takes exactly 0.1 + 3 x 0.1 = 0.4 s on the stub: 4 users complete 10 req/s, 40 tok/s.
    with StubServer(StubBehaviour(ttft_s=0.1, itl_s=0.1, tokens=4)) as srv:
        run, measured, s = _point(srv.url, Load(concurrency=4, requests=24, warmup_requests=0), 4)
    truth_rps, truth_tps = 4 / 0.4, 4 * 4 / 0.4
    # The server's sleeps bound it: no figure may read faster. (Slower only by the client's and the
    # machine's delays: the lower bound is loose so a busy machine does not fail it.)
    for figures in (s["whole"], s["steady"]):
        assert 0.6 * truth_rps <= figures["requests_per_s"] <= 1.01 * truth_rps, figures
        assert 0.6 * truth_tps <= figures["output_tokens_per_s"] <= 1.01 * truth_tps, figures
        lo, hi = figures["ci95"]["requests_per_s"]
        assert lo <= figures["requests_per_s"] <= hi
    assert s["whole"]["requests"] == 24 and s["whole"]["output_tokens"] == 96
    # the steady window: first answer to the last send, inside the whole point
    assert s["steady"]["window_s"] < s["whole"]["window_s"] and s["steady"]["output_tokens"] < 96
    assert s["achieved_rate"] == s["steady"]["requests_per_s"]  # the headline is the steady figure


def test_a_short_poisson_point_reads_what_the_server_returned_and_says_it_had_no_steady_state():
    # The case: 8 requests at 4 req/s, each ~1 s long. Every request is sent before the first
    # answer: no steady state; the whole-point figures cannot exceed tokens received / time elapsed.
    with StubServer(StubBehaviour(ttft_s=0.2, itl_s=0.025, tokens=32)) as srv:
        run, measured, s = _point(srv.url, Load(rate=4.0, requests=8, warmup_requests=0, seed=3), 32)
    assert s["steady"] is None and ("completed inside the steady window" in s["steady_reason"]
                                    or "before the first answer" in s["steady_reason"])
    elapsed = max(r.end for r in measured) - min(r.start for r in measured)
    received = sum(r.tokens for r in measured if r.ok)
    assert received == 256 and s["output_tokens"] == 256
    assert s["output_tokens_per_s"] <= received / elapsed * 1.0001
    assert s["achieved_rate"] <= 8 / elapsed * 1.0001
    assert s["output_tokens_per_s"] < 8 * 32 / 0.975  # below what 8 in flight could ever stream
    assert s["realised_rate"] == pytest.approx(4.0, rel=0.1)  # the schedule offered the rate asked
    assert not s["saturated"]


@pytest.mark.parametrize("n, seed", [(2, 0), (3, 1), (8, 7), (64, 0), (500, 11)])
def test_a_poisson_schedule_offers_exactly_the_rate_asked(n, seed):
    offsets = arrival_offsets(2.0, "poisson", n, seed)
    assert len(offsets) == n and offsets == sorted(offsets) and offsets[0] == 0.0
    assert (n - 1) / offsets[-1] == pytest.approx(2.0, rel=1e-9)
    assert offsets == arrival_offsets(2.0, "poisson", n, seed)  # seeded


# -- token counts and APIs ---------------------------------------------------------------------------
def test_token_counts_are_the_servers_usage_not_the_chunks():
    # 9 tokens in 3 chunks: the usage block says 9; without usage, all the client can count is chunks.
    with StubServer(StubBehaviour(tokens=9, tokens_per_chunk=3)) as srv:
        _, measured, s = _point(srv.url, Load(concurrency=1, requests=3), 9)
        assert all(r.tokens == 9 and len(r.chunk_times) == 3 for r in measured)
        assert s["token_count_source"] == "usage" and s["output_tokens"] == 27
        _, measured, s = _point(srv.url, Load(concurrency=1, requests=3), 9, usage=False)
    assert s["token_count_source"] == "chunks" and all(r.usage_completion_tokens is None for r in measured)


def test_chat_and_completions_give_the_same_latencies():
    with StubServer(StubBehaviour(ttft_s=0.05, itl_s=0.02, tokens=6)) as srv:
        _, m_text, text = _point(srv.url, Load(concurrency=1, requests=5), 6)
        _, m_chat, chat = _point(srv.url, Load(concurrency=1, requests=5), 6, api="chat")
    assert all(r.ok and r.tokens == 6 and r.text == " w0 w1 w2 w3 w4 w5" for r in m_chat)
    assert chat["ttft_ms"]["p50"] >= 50  # the role-only first chunk is not a token
    assert chat["ttft_ms"]["p50"] == pytest.approx(text["ttft_ms"]["p50"], abs=15)
    assert chat["tpot_ms"]["p50"] == pytest.approx(text["tpot_ms"]["p50"], abs=5)


def test_a_server_without_the_chat_api_is_one_line(tmp_path):
    with StubServer(StubBehaviour(chat=False)) as srv:
        p = run_effbench("run", "--scenario", "serving", "--endpoint", srv.url, "--api", "chat", "--requests", "2",
                         "--sensor", "none", "--idle-s", "0", "--quiet", "--out", str(tmp_path / "r"))
    assert_one_line_error(p, "/v1/chat/completions", "--api")


def test_mistyped_serving_options_are_one_line(tmp_path):
    assert_one_line_error(run_effbench("run", "--scenario", "serving", "--api", "grpc", "--endpoint", "http://127.0.0.1:9"),
                          "api")
    assert_one_line_error(run_effbench("run", "--scenario", "serving", "--find-capacity", "--endpoint", "http://127.0.0.1:9"),
                          "--slo-ttft-ms")


# -- one window for throughput and energy ------------------------------------------------------------
class _Watts50(ConstantPowerSensor):
    name = "watts50"

    def __init__(self) -> None:
        super().__init__(time.perf_counter, watts=50.0)


def test_energy_comes_from_the_same_window_as_the_throughput(tmp_path, monkeypatch):
    import effbench
    from effbench.sensors import SENSORS

    monkeypatch.setitem(SENSORS.entries, "watts50", _Watts50)
    with StubServer(StubBehaviour(ttft_s=0.05, itl_s=0.02, tokens=8)) as srv:
        run = effbench.run(dict(scenario="serving", endpoint=srv.url, concurrency=[4, 8], requests=24, warmup_requests=0,
                                new_tokens=8, prompt_tokens=8, sensor="watts50", idle_s=0, out=str(tmp_path / "r")))
        short = effbench.run(dict(scenario="serving", endpoint=srv.url, concurrency=[8], requests=8, warmup_requests=0,
                                  new_tokens=8, prompt_tokens=8, sensor="watts50", idle_s=0, out=str(tmp_path / "s")))
    for r in run.records:
        s, e = r.serving, r.energy
        assert r.error is None and s.steady is not None
        assert e.tokens_in_window == pytest.approx(s.steady.output_tokens)
        assert e.window_s == pytest.approx(s.steady.window_s, abs=0.01)
        assert e.joules_total == pytest.approx(50.0 * s.steady.window_s, rel=0.02)
        assert e.joules_per_token == pytest.approx(e.joules_total / s.steady.output_tokens)
        assert e.joules_per_request == pytest.approx(e.joules_total / s.steady.requests)
        assert {w["phase"] for w in e.windows} == {"steady", "whole"}
    s, e = short.records[0].serving, short.records[0].energy
    assert s.steady is None and s.steady_reason and e.basis.startswith("whole point")
    assert e.tokens_in_window == pytest.approx(s.whole.output_tokens) and s.achieved_rate == s.whole.requests_per_s


# -- capacity at an SLO --------------------------------------------------------------------------------
def _synthetic(threshold: float):
    def measure(rate: float) -> Trial:
        return Trial(rate, rate <= threshold, "met" if rate <= threshold else "p95 TTFT over the SLO")
    return measure


@pytest.mark.parametrize("start", [0.3, 1.0, 3.7, 20.0])
def test_capacity_search_brackets_a_known_threshold(start):
    result = search(_synthetic(3.7), start, resolution=0.1, max_points=20)
    assert result.best is not None and result.failed is not None
    assert result.best.rate <= 3.7 < result.failed.rate
    assert result.failed.rate / result.best.rate - 1 <= 0.1 and "within 10%" in result.reason
    assert len(result.trials) <= 20


def test_capacity_search_says_when_it_found_no_bracket():
    never = search(_synthetic(0.0), 1.0, 0.1, 20)
    assert never.best is None and "missed the SLO at every rate" in never.reason
    always = search(_synthetic(math.inf), 1.0, 0.1, 5)
    assert always.failed is None and "no rate that misses it" in always.reason and len(always.trials) == 5
    budget = search(_synthetic(3.7), 1.0, 0.001, 6)
    assert budget.best is not None and "after 6 points" in budget.reason


def test_find_capacity_never_reports_more_than_a_server_of_known_capacity_serves(tmp_path):
    import effbench

    # 2 slots of 0.05 + 5 x 0.01 = 0.1 s each: the server completes at most 20 req/s; past that it queues.
    with StubServer(StubBehaviour(ttft_s=0.05, itl_s=0.01, tokens=6, max_concurrent=2)) as srv:
        run = effbench.run(dict(scenario="serving", endpoint=srv.url, rates=[2], find_capacity=True, slo_ttft_ms=150,
                                capacity_point_s=1.5, capacity_resolution=0.25, warmup_requests=1, new_tokens=6,
                                prompt_tokens=8, sensor="none", idle_s=0, out=str(tmp_path / "r")))
    (record,) = run.records
    s = record.serving
    c = s.capacity
    assert record.error is None and c is not None, record.error
    assert c.rate is not None and 2 <= c.rate < 20  # meets the SLO at 2/s; cannot beyond the server's 20/s
    assert c.ci95 == [c.rate, c.failed_rate] and c.failed_rate / c.rate - 1 <= 0.25 + 1e-9
    assert s.rate == c.rate and s.ttft_ms.p95 <= 150 and c.goodput == s.goodput
    assert [t["met"] for t in c.tried][0] is True and any(not t["met"] for t in c.tried)
    assert c.slo == {"ttft_ms": 150, "tpot_ms": None}
    # plan sizes replicas from the measured capacity, before any projection
    p = run_effbench("plan", "--results", str(tmp_path / "r"), "--target-requests-per-s", "100", "--prompt-tokens", "8",
                     "--output-tokens", "6", "--max-ttft-ms", "150", "--json")
    assert p.returncode == 0, p.stderr
    import json

    options = json.loads(p.stdout)["options"]
    measured = [o for o in options if o["basis"] == "measured"]
    assert measured and options[0]["basis"] == "measured"
    assert any("measured capacity at the SLO" in n for n in measured[0]["notes"])
    assert measured[0]["replicas"] >= math.ceil(100 / c.rate)  # never fewer replicas than the capacity allows


# -- what the server saw -----------------------------------------------------------------------------
def test_server_metrics_are_scraped_and_cross_check_the_client(tmp_path):
    import effbench

    with StubServer(StubBehaviour(ttft_s=0.05, itl_s=0.01, tokens=6, metrics=True)) as srv:
        run = effbench.run(dict(scenario="serving", endpoint=srv.url, concurrency=[2], requests=10, warmup_requests=2,
                                new_tokens=6, prompt_tokens=8, sensor="none", idle_s=0, out=str(tmp_path / "r")))
    with StubServer(StubBehaviour(tokens=6)) as plain:
        bare = effbench.run(dict(scenario="serving", endpoint=plain.url, concurrency=[2], requests=4, new_tokens=6,
                                 prompt_tokens=8, sensor="none", idle_s=0, out=str(tmp_path / "b")))
    s = run.records[0].serving
    m = s.server_metrics
    assert m["exposed"] and m["source"] == "vllm" and m["scrapes"] >= 2
    assert m["generation_tokens"] == s.output_tokens == 60  # the measured requests only, not the warm-up
    assert m["requests_succeeded"] == 10
    assert m["ttft_ms"]["count"] == 10 and 40 <= m["ttft_ms"]["p50"] <= 100
    assert m["cross_check"]["ttft"]["client_slower"] is False and m["cross_check"]["note"] is None
    nm = bare.records[0].serving.server_metrics
    assert nm["exposed"] is False and nm["reason"]


@pytest.mark.parametrize("lag_s, slow_s", [(0.3, 0.0), (0.0, 0.3), (0.15, 0.15)])
def test_server_metrics_window_holds_exactly_the_measured_requests(tmp_path, lag_s, slow_s):
    """A server that counts a finished request late (lag_s after its last byte) and answers /metrics
    slowly (slow_s, a busy machine): the window still holds the 10 measured requests and their 60 tokens,
    neither a warm-up request nor a lost measured one."""
    import effbench

    with StubServer(StubBehaviour(ttft_s=0.02, itl_s=0.005, tokens=6, metrics=True, metrics_lag_s=lag_s,
                                  metrics_slow_s=slow_s)) as srv:
        run = effbench.run(dict(scenario="serving", endpoint=srv.url, concurrency=[2], requests=10, warmup_requests=2,
                                new_tokens=6, prompt_tokens=8, sensor="none", idle_s=0, out=str(tmp_path / "r")))
    m = run.records[0].serving.server_metrics
    assert m["exposed"] and m["requests_succeeded"] == 10 and m["generation_tokens"] == 60, m


def test_energy_per_request_follows_the_work_of_each_request(tmp_path, monkeypatch):
    import effbench
    from effbench.sensors import SENSORS

    # Two lengths interleaved (4 and 12 tokens at the same pace): under constant power, the long
    # requests carry about 3x the energy of the short ones, and the parts add up to the energy spent.
    monkeypatch.setitem(SENSORS.entries, "watts50", _Watts50)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("prompt_tokens,output_tokens\n4,4\n4,12\n")
    with StubServer(StubBehaviour(ttft_s=0.02, itl_s=0.03, tokens=12)) as srv:
        run = effbench.run(dict(scenario="serving", endpoint=srv.url, concurrency=[2], requests=12, warmup_requests=0,
                                workload=str(pairs), prompt_tokens=4, sensor="watts50", idle_s=0, out=str(tmp_path / "r")))
    (r,) = run.records
    a = r.energy.attribution
    assert a is not None and a["joules_per_request"]["n"] == 12
    per = a["joules_per_request"]
    assert per["p95"] / per["p50"] > 1.5  # the long half costs more
    whole = r.serving.whole.window_s * 50.0
    assert a["joules_attributed"] + a["joules_unattributed"] == pytest.approx(whole, rel=0.15)
    assert a["joules_per_output_token"] > 0 and a["confidence"] == 0.95
