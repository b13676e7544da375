"""The serving scenario: arrivals, latency statistics, goodput and saturation against known truth;
the client against a loopback stub with known delays and injected faults; and a real engine
(`transformers serve` with continuous batching on the bundled model) driven through the CLI."""
from __future__ import annotations

import json
import math
import random
import sys
import time

import pytest
from conftest import assert_one_line_error, run_effbench

from effbench.registry import importable
from effbench.scenarios.serving.client import Client, Request, Result
from effbench.scenarios.serving.engines import free_port
from effbench.scenarios.serving.load import Load, arrival_offsets, run_point
from effbench.scenarios.serving.metrics import queue_grows, summarize_point
from effbench.scenarios.serving.stub import StubBehaviour, StubServer
from effbench.sensors.base import NullSensor
from effbench.stats import percentile, percentile_ci95

httpx = pytest.importorskip("httpx")


# -- arrivals and statistics --------------------------------------------------------------------
def test_poisson_arrivals_offer_the_rate_and_constant_ones_are_evenly_spaced():
    offsets = arrival_offsets(4.0, "poisson", 4001, seed=1)
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    assert 4000 / offsets[-1] == pytest.approx(4.0, rel=1e-9)  # rescaled: the sample offers the rate asked
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert cv == pytest.approx(1.0, abs=0.06)  # exponential gaps: standard deviation = mean
    assert arrival_offsets(4.0, "poisson", 50, seed=1) == arrival_offsets(4.0, "poisson", 50, seed=1)
    assert arrival_offsets(2.0, "constant", 4, seed=0) == [0.0, 0.5, 1.0, 1.5]
    assert arrival_offsets(math.inf, "poisson", 3, seed=0) == [0.0, 0.0, 0.0]


def test_percentiles_match_numpy_and_their_intervals_cover_the_true_quantile():
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    xs = [rng.expovariate(1.0) for _ in range(101)]
    for q in (0.5, 0.9, 0.95, 0.99):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q * 100)))
    true_p90 = -math.log(0.1)  # exponential(1)
    covered = 0
    for _ in range(400):
        sample = [rng.expovariate(1.0) for _ in range(200)]
        lo, hi = percentile_ci95(sample, 0.9)
        covered += lo <= true_p90 <= hi
    assert 0.92 <= covered / 400 <= 0.99
    assert percentile_ci95([1.0, 2.0, 3.0], 0.99) is None  # too few values to bound a p99


def _result(i: int, start: float, ttft: float, itl: float, tokens: int, error: str | None = None) -> Result:
    start += 100.0  # perf_counter() seconds are never 0 (0 marks a request never sent)
    r = Result(i, False, start, start=start, prompt_tokens=8, error=error)
    if error is None:
        r.chunk_times = [start + ttft + k * itl for k in range(tokens)]
        r.end = r.chunk_times[-1]
        r.output_tokens = tokens
        r.text = "x" * tokens
    else:
        r.end = start
    return r


def test_goodput_counts_only_requests_meeting_every_slo():
    results = [_result(0, 0.0, 0.050, 0.010, 11), _result(1, 1.0, 0.200, 0.010, 11),  # TTFT over 100 ms
               _result(2, 2.0, 0.050, 0.030, 11), _result(3, 3.0, 0.050, 0.010, 11),  # TPOT over 20 ms
               _result(4, 3.5, 0, 0, 0, error="HTTP 500: boom")]
    s = summarize_point(results, steady_window=(None, None), offered_rate=1.25, slo_ttft_ms=100, slo_tpot_ms=20)
    assert s["completed"] == 4 and s["failed"] == 1 and s["errors"] == {"HTTP 500: boom": 1}
    whole = 3.5  # first send (0.0) to the last answer (the failure at 3.5 s)
    assert s["goodput"] == pytest.approx(4 / whole * 2 / 4) and s["slo_attainment"] == pytest.approx(2 / 5)
    assert s["ttft_ms"]["p50"] == pytest.approx(50.0) and s["tpot_ms"]["p50"] == pytest.approx(10.0)
    assert s["itl_ms"]["n"] == 40 and s["e2e_ms"]["mean"] == pytest.approx((150 + 300 + 350 + 150) / 4)
    assert s["achieved_rate"] == pytest.approx(4 / whole) and s["output_tokens_per_s"] == pytest.approx(44 / whole)
    assert s["steady"] is None and s["steady_reason"] and not s["saturated"]
    no_slo = summarize_point(results, (None, None), 1.25, None, None)
    assert no_slo["goodput"] is None


def test_saturation_is_a_rate_the_engine_falls_behind_or_a_growing_queue():
    steady = [_result(i, i * 0.5, 0.05, 0.01, 5) for i in range(40)]
    window = (steady[0].end, steady[-1].start)  # first answer to last send
    kept_up = summarize_point(steady, window, 2.0, None, None)
    assert not kept_up["saturated"] and kept_up["steady"]["requests_per_s"] == pytest.approx(2.0, rel=0.05)
    behind = summarize_point(steady, window, 4.0, None, None)  # 2 served of 4 offered per second
    assert behind["saturated"] and "below 90%" in behind["saturation_reason"]
    few = summarize_point(steady[:6], (steady[0].end, steady[5].start), 2.5, None, None)
    assert not few["saturated"]  # 4 answers cannot tell 2/s from 2.5/s: not judged saturated on them
    queue = [_result(i, i * 0.5, 0.05 + 0.3 * i, 0.01, 5) for i in range(12)]
    assert queue_grows(queue) and "queue" in summarize_point(queue, (None, None), math.inf, None, None)["saturation_reason"]


# -- the client, against a stub with known timing -------------------------------------------------
def _run(url: str, load: Load, max_tokens: int = 6, force: bool = False):
    return run_point(lambda: Client(url, "stub", 10, force_length=force), load,
                     lambda i, w: Request(i, "hello", 4, max_tokens, w), NullSensor().start_window, budget_s=60)


def test_client_timestamps_match_the_servers_known_delays():
    with StubServer(StubBehaviour(ttft_s=0.05, itl_s=0.02, tokens=6)) as srv:
        run = _run(srv.url, Load(concurrency=2, requests=6, warmup_requests=1))
    measured = [r for r in run.results if not r.warmup]
    assert len(measured) == 6 and all(r.ok for r in measured)
    for r in measured:
        assert 0.05 <= r.ttft_s < 0.05 + 0.04  # the client adds little
        assert r.tokens == 6 and r.usage_completion_tokens == 6
        # Each gap jitters with scheduling (a late read shortens the next gap); their mean cannot.
        assert 0.02 <= sum(r.itl_s) / len(r.itl_s) < 0.02 + 0.01 and max(r.itl_s) < 0.08
        assert r.tpot_s == pytest.approx(0.02, abs=0.01)
    assert run.max_in_flight == 2


def test_a_server_that_refuses_forced_lengths_gets_422_and_errors_mid_run_are_counted():
    with StubServer(StubBehaviour(tokens=4, fail_every=3)) as srv:
        forced = _run(srv.url, Load(rate=50.0, requests=1), force=True)
        assert forced.results[0].error.startswith("HTTP 422")
        run = _run(srv.url, Load(rate=100.0, arrival="constant", requests=9))
    failed = [r for r in run.results if not r.ok]
    assert len(run.results) == 9 and len(failed) == 3
    assert all(r.error.startswith("HTTP 500") for r in failed)


# -- through the CLI, against the stub ------------------------------------------------------------
SWEEP = ["run", "--scenario", "serving", "--requests", "6", "--new-tokens", "4", "--prompt-tokens", "16",
         "--sensor", "none", "--idle-s", "0", "--quiet"]


def test_a_sweep_against_an_endpoint_records_failures_and_resumes(tmp_path):
    out = tmp_path / "run"
    with StubServer(StubBehaviour(ttft_s=0.01, itl_s=0.005, tokens=4, fail_every=4)) as srv:
        p = run_effbench(*SWEEP, "--endpoint", srv.url, "--rates", "20,40", "--slo-ttft-ms", "500", "--out", str(out))
        assert p.returncode == 0, p.stderr
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [r["serving"]["rate"] for r in records] == [20.0, 40.0]
        for r in records:
            s = r["serving"]
            assert r["error"] is None and r["backend"]["name"] == "endpoint"
            assert s["requests"] == 6 and s["failed"] >= 1 and s["completed"] + s["failed"] == 6
            assert s["engine"]["managed"] is False and s["engine"]["model"] == "stub"
            assert s["output_length"].startswith("not forced")
            assert set(s["ttft_ms"]) >= {"p50", "p90", "p95", "p99", "mean"} and s["goodput"] is not None
        again = run_effbench(*SWEEP, "--endpoint", srv.url, "--rates", "20,40", "--out", str(out), "--resume")
        assert again.returncode == 0 and len((out / "results.jsonl").read_text().splitlines()) == 2


def test_bad_serving_inputs_fail_in_seconds_with_one_line(tmp_path):
    t0 = time.monotonic()
    port = free_port()  # nothing listens there
    assert_one_line_error(run_effbench(*SWEEP, "--endpoint", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "a")),
                          "does not answer")
    with StubServer(StubBehaviour(openai=False)) as srv:
        assert_one_line_error(run_effbench(*SWEEP, "--endpoint", srv.url, "--out", str(tmp_path / "b")),
                              "not an OpenAI-compatible server")
    assert_one_line_error(run_effbench(*SWEEP, "--rates", "-2", "--out", str(tmp_path / "c")), "must be > 0")
    assert_one_line_error(run_effbench(*SWEEP, "--rates", "fast", "--out", str(tmp_path / "d")), "not a number")
    assert_one_line_error(run_effbench(*SWEEP, "--rates", "inf", "--out", str(tmp_path / "e"), "--requests", "0"))
    assert_one_line_error(run_effbench(*SWEEP, "--out", str(tmp_path / "f"), "--slo-ttft-ms"), "--slo-ttft-ms")
    assert_one_line_error(run_effbench(*SWEEP, "--engine", "vlm", "--out", str(tmp_path / "g")), "did you mean 'vllm'")
    assert_one_line_error(run_effbench(*SWEEP, "--endpoint", "localhost:8000", "--out", str(tmp_path / "h")), "http(s) URL")
    assert time.monotonic() - t0 < 90
    assert not any((tmp_path / d / "results.jsonl").exists() for d in "abcdefgh")


# -- a real engine: transformers serve with continuous batching -----------------------------------
def _engine_processes() -> list:
    import psutil

    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "serve" in " ".join(p.cmdline())]


@pytest.mark.skipif(not importable("fastapi"), reason="transformers[serving] not installed")
def test_transformers_serve_two_rate_sweep_on_the_bundled_model(tmp_path):
    out = tmp_path / "run"
    p = run_effbench("run", "--scenario", "serving", "--engine", "transformers", "--rates", "1,2", "--requests", "6",
                     "--new-tokens", "8", "--prompt-tokens", "32", "--threads", "1", "--sensor", "estimate",
                     "--idle-s", "0", "--slo-ttft-ms", "2000", "--out", str(out), "--quiet", timeout=600)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["serving"]["rate"] for r in records] == [1.0, 2.0]
    for r in records:
        s, e = r["serving"], r["energy"]
        assert r["error"] is None, r["error"]
        assert s["engine"]["managed"] and s["engine"]["name"] == "transformers"
        assert "--continuous-batching" in s["engine"]["args"] and "127.0.0.1" in s["engine"]["args"]
        assert r["backend"]["version"].startswith("transformers ")
        assert s["completed"] == 6 and s["failed"] == 0
        assert s["mean_prompt_tokens"] == 32  # the server's usage agrees with the prompt we built
        assert 1 <= s["mean_output_tokens"] <= 8 and s["token_count_source"] == "usage"  # the server's own count
        assert s["whole"]["requests"] == 6 and s["whole"]["output_tokens"] == s["output_tokens"]
        assert 0 < s["ttft_ms"]["p50"] <= s["ttft_ms"]["p95"] <= s["ttft_ms"]["p99"]
        assert s["tpot_ms"]["mean"] > 0 and s["achieved_rate"] > 0
        assert e["status"] == "estimated" and e["joules_per_request"] > 0 and e["confidence"] == 0.95
        assert "engine's CPU utilisation" in e["basis"]  # the server's CPU time is counted
        assert r["stats"]["interference"] is False  # the engine is not interference
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["scenario"] == "serving"
    assert _engine_processes() == []  # stopped


# -- load shapes and a managed engine's life cycle, against the stub -----------------------------
def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_concurrency_duration_and_length_spread_through_the_cli(tmp_path):
    with StubServer(StubBehaviour(ttft_s=0.01, itl_s=0.002, tokens=64)) as srv:
        base = [a for a in SWEEP if a not in ("--requests", "6")]
        out = tmp_path / "c"
        p = run_effbench(*base, "--endpoint", srv.url, "--concurrency", "1,3", "--requests", "9", "--out", str(out))
        assert p.returncode == 0, p.stderr
        recs = _records(out)
        assert [(r["serving"]["concurrency"], r["serving"]["arrival"]) for r in recs] == [(1, "closed-loop"), (3, "closed-loop")]
        assert [r["serving"]["max_in_flight"] for r in recs] == [1, 3]  # closed loop: never more users than asked
        assert all(r["serving"]["requests"] == 9 and r["serving"]["rate"] is None for r in recs)

        out = tmp_path / "d"  # --duration alone: as many requests as the rate offers in that time
        p = run_effbench(*base, "--endpoint", srv.url, "--rates", "20", "--arrival", "constant", "--duration", "1",
                         "--out", str(out))
        assert p.returncode == 0, p.stderr
        (r,) = _records(out)
        assert r["serving"]["requests"] == pytest.approx(20, abs=2) and r["serving"]["arrival"] == "constant"

        out = tmp_path / "s"  # length_spread: output lengths drawn per request in new_tokens x (1 +- spread)
        srv.max_tokens_asked.clear()
        p = run_effbench(*base, "--endpoint", srv.url, "--rates", "50", "--requests", "12", "--new-tokens", "20",
                         "--length-spread", "0.5", "--out", str(out))
        assert p.returncode == 0, p.stderr
        asked = srv.max_tokens_asked[-14:]  # 2 warm-up + 12 measured
        assert all(10 <= n <= 30 for n in asked) and len(set(asked)) >= 5


def _stub_engine_class(*stub_args: str):
    """A managed engine whose server is the stub in its own process, started with ``stub_args``."""
    import sys

    from effbench.scenarios.serving.engines import ManagedEngine

    class StubEngine(ManagedEngine):
        name = "stub"
        module = "http.server"
        extra = "serving"

        def command(self, port: int) -> list[str]:
            return [sys.executable, "-m", "effbench.scenarios.serving.stub", "--port", str(port), "--tokens", "4",
                    *stub_args]

        def version(self) -> str:
            return "stub 1"

    return StubEngine


def test_a_managed_engine_that_dies_mid_point_is_restarted_for_the_next(tmp_path, monkeypatch):
    import effbench
    from effbench.scenarios.serving.engines import ENGINES

    monkeypatch.setitem(ENGINES.entries, "stub", _stub_engine_class("--exit-after", "10"))  # dies at its 10th completion
    run = effbench.run(dict(scenario="serving", engine="stub", rates=[20, 30, 40], requests=6, warmup_requests=2,
                            new_tokens=4, prompt_tokens=16, sensor="none", idle_s=0, out=str(tmp_path / "run")))
    recs = run.records
    assert [r.serving.rate for r in recs] == [20.0, 30.0, 40.0]
    # the probe: 1 completion; point 1: 8; point 2: the server exits at its 10th; point 3: a fresh server
    assert recs[0].error is None and recs[0].serving.completed == 6
    assert recs[1].error is not None and "died" in recs[1].error
    assert recs[2].error is None and recs[2].serving.completed == 6
    pids = [r.serving.engine.get("url") for r in (recs[0], recs[2])]
    assert pids[0] != pids[1]  # restarted on a new free port
    assert _engine_processes() == []


def test_answers_batched_into_a_burst_do_not_read_faster_than_they_were_sent():
    # 10 requests sent 0.25 s apart (4/s); the engine answers all of them within 0.1 s at the end
    rs = []
    for i in range(10):
        r = _result(i, 1.0 + i * 0.25, ttft=0.0, itl=0.0, tokens=1)
        r.end = r.chunk_times[-1] = 104.0 + i * 0.01
        rs.append(r)
    s = summarize_point(rs, (None, None), 4.0, None, None)  # every answer came after the last send
    assert s["steady"] is None and "steady" not in (s["saturation_reason"] or "")
    assert s["achieved_rate"] == pytest.approx(10 / 3.09)  # first send to last answer, not 9 / 0.09 s
    assert s["output_tokens_per_s"] == pytest.approx(10 / 3.09)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS per process is read from Linux's /proc")
def test_a_managed_engines_peak_memory_is_in_each_point(tmp_path, monkeypatch):
    """The engine's own processes hold the model: each serving point records their peak RSS (here a
    stub holding 128 MiB); our client's memory is not in it."""
    import effbench
    from effbench.scenarios.serving.engines import ENGINES

    monkeypatch.setitem(ENGINES.entries, "stub", _stub_engine_class("--hold-mib", "128"))
    run = effbench.run(dict(scenario="serving", engine="stub", rates=[20, 40], requests=6, warmup_requests=2,
                            new_tokens=4, prompt_tokens=16, sensor="none", idle_s=0, out=str(tmp_path / "run")))
    for r in run.records:
        assert r.error is None
        peak = r.memory.peak_host_bytes
        assert 128 << 20 <= peak <= (128 + 120) << 20  # the held memory plus a small interpreter
    assert _engine_processes() == []
