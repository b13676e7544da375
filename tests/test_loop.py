"""The measurement loop against a fake backend whose timings are known exactly."""
from __future__ import annotations

import sys

import pytest
from conftest import ConstantPowerSensor, FakeBackend, Timing

from effbench.measure import loop
from effbench.measure.energy import energy_section
from effbench.measure.host import Interference
from effbench.measure.loop import PREFILL_ENERGY_REPEATS, RepeatPolicy, Workload, run_loop
from effbench.measure.summary import stats_section, throughput_section
from effbench.sensors.base import NullSensor

B, P, N = 4, 16, 8


def _run(clock, policy=RepeatPolicy(fixed_repeats=3), sensor=None, backend=None, workload=Workload(B, P, N)):
    backend = backend or FakeBackend(spend=clock.advance)
    batch = backend.prepare(None, workload.batch_size, workload.prompt_tokens)
    return backend, run_loop(backend, batch, workload, sensor or NullSensor(), policy, clock=clock)


def test_ttft_tpot_and_throughputs_match_the_known_cost_model(clock):
    t = Timing()
    _, r = _run(clock)
    th = throughput_section(r)
    prefill, step = t.prefill_s(B, P), t.step_s(B)
    full = t.full_s(B, P, N)
    assert th.ttft_s == pytest.approx(prefill, rel=1e-9)
    assert th.tpot_s == pytest.approx(step, rel=1e-9)
    assert th.prefill_tokens_per_s == pytest.approx(B * P / prefill, rel=1e-9)
    assert th.decode_tokens_per_s == pytest.approx(B / step, rel=1e-9)
    assert th.e2e_tokens_per_s == pytest.approx(B * N / full, rel=1e-9)
    assert th.e2e_latency_s == pytest.approx(full, rel=1e-9)


def test_fixed_repeats_and_warmup_call_counts(clock):
    backend, r = _run(clock, RepeatPolicy(warmup=2, fixed_repeats=5))
    assert r.repeats == 5 and r.stop_reason == "fixed-repeats"
    # per-token times: one generation per warm-up and per repeat, no prefill-only call without a sensor
    assert backend.calls == {"prefill": 0, "generate": 2 + 5}


def test_prefill_window_only_for_the_energy_split(clock):
    sensor = ConstantPowerSensor(clock, watts=100.0)
    backend, r = _run(clock, RepeatPolicy(warmup=1, fixed_repeats=6), sensor=sensor)
    assert backend.calls == {"prefill": PREFILL_ENERGY_REPEATS, "generate": 1 + 6}
    assert len(r.prefill) == PREFILL_ENERGY_REPEATS and len(r.full) == 6


def test_engine_without_per_token_hook_times_prefill_every_repeat(clock):
    backend = FakeBackend(spend=clock.advance, per_token=False)
    _, r = _run(clock, RepeatPolicy(warmup=1, fixed_repeats=4), backend=backend)
    assert backend.calls == {"prefill": 1 + 4, "generate": 1 + 4}
    th = throughput_section(r)
    t = Timing()
    assert th.ttft_s == pytest.approx(t.prefill_s(B, P)) and th.tpot_s == pytest.approx(t.step_s(B))
    assert th.itl_ms is None


def test_ttft_decode_and_itl_come_from_one_call(clock):
    # each call is scaled by its own factor: decode and TTFT of one repeat move together, and the
    # headline is the median over repeats
    factors = [1.0, 1.0, 2.0, 1.1, 0.9]
    backend = FakeBackend(spend=clock.advance, jitter=[1.0] + factors)  # the first is the warm-up
    _, r = _run(clock, RepeatPolicy(fixed_repeats=5), backend=backend)
    t = Timing()
    assert r.ttft_samples() == pytest.approx([t.prefill_s(B, P) * f for f in factors])
    assert r.decode_tps_samples() == pytest.approx([B / (t.step_s(B) * f) for f in factors])
    th = throughput_section(r)
    assert th.decode_tokens_per_s == pytest.approx(B / t.step_s(B))  # the median: factor 1.0
    assert th.ttft_s == pytest.approx(t.prefill_s(B, P))
    itl = th.itl_ms
    assert itl.n == 5 * (N - 1)
    assert itl.p50 == pytest.approx(t.step_s(B) * 1000)
    assert itl.p99 == pytest.approx(t.step_s(B) * 2 * 1000, rel=0.05)  # the slow repeat's steps
    s = stats_section(r, warmup=1, interference=None)
    assert s.estimator == "median" and s.ci95_method == "bootstrap-percentile" and s.excluded_repeats == 0


def test_disturbed_repeats_are_left_out_and_counted(clock, monkeypatch):
    shares = iter([0.0, 0.9, 0.0, 0.0, 0.6, 0.0, 0.0])

    class Probe:
        def __init__(self, pids=()):
            pass

        def stop(self):
            return Interference(next(shares), None, None)

    monkeypatch.setattr(loop, "InterferenceProbe", Probe)
    backend = FakeBackend(spend=clock.advance, jitter=[1.0, 1.0, 5.0, 1.0, 1.0, 5.0, 1.0, 1.0])
    _, r = _run(clock, RepeatPolicy(fixed_repeats=5), backend=backend)
    assert r.repeats == 5 and len(r.excluded) == 2
    assert r.decode_tps_samples() == pytest.approx([B / Timing().step_s(B)] * 5)  # the slow ones are out
    s = stats_section(r, warmup=1, interference=None)
    assert s.excluded_repeats == 2 and s.samples["excluded_other_cpu_frac"] == [0.9, 0.6]
    assert not s.interference  # the kept repeats are clean


def test_too_few_clean_repeats_are_readmitted_and_flagged(clock, monkeypatch):
    class Busy:
        def __init__(self, pids=()):
            pass

        def stop(self):
            return Interference(0.8, None, None)

    monkeypatch.setattr(loop, "InterferenceProbe", Busy)
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=4, ci_target=0.01))
    assert r.repeats == 2 and len(r.excluded) == 6 and r.stop_reason == "max-repeats"
    s = stats_section(r, warmup=1, interference=None)
    assert s.interference and s.excluded_repeats == 6
    # --repeats N gives exactly N repeats: the least disturbed are readmitted
    _, r = _run(clock, RepeatPolicy(fixed_repeats=3))
    assert r.repeats == 3 and len(r.excluded) == 6 and r.stop_reason == "fixed-repeats"


def test_adaptive_stops_at_ci_target_when_timings_are_stable(clock):
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=20, ci_target=0.05))
    assert r.stop_reason == "ci-target"
    assert r.repeats == 3  # identical timings: interval width 0 after the minimum


def test_adaptive_hits_max_repeats_when_timings_are_noisy(clock):
    noisy = FakeBackend(spend=clock.advance, jitter=[1.0, 1.6, 0.7, 1.5] * 10)
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=6, ci_target=0.01, max_time_s=1e9), backend=noisy)
    assert r.stop_reason == "max-repeats" and r.repeats == 6
    s = stats_section(r, warmup=1, interference=None)
    assert s.ci95_rel is not None and s.ci95_rel > 0.01
    assert len(s.samples["decode_tokens_per_s"]) == 6


def test_time_cap_stops_after_two_repeats(clock):
    _, r = _run(clock, RepeatPolicy(min_repeats=5, max_repeats=50, ci_target=1e-9, max_time_s=0.01))
    assert r.stop_reason == "time-cap" and r.repeats == 2


def test_short_calls_are_repeated_until_the_window_spans_ten_sensor_periods(clock):
    sensor = ConstantPowerSensor(clock, watts=100.0, period=0.1)
    _, r = _run(clock, sensor=sensor)
    t = Timing()
    for w in r.prefill:
        assert w.calls * t.prefill_s(B, P) >= 1.0 > (w.calls - 1) * t.prefill_s(B, P)
        assert w.seconds_per_call == pytest.approx(t.prefill_s(B, P))
        assert not w.short


def test_energy_split_follows_the_brief(clock):
    watts = 250.0
    sensor = ConstantPowerSensor(clock, watts=watts)
    _, r = _run(clock, sensor=sensor)
    t = Timing()
    e = energy_section(r, idle_power_w=50.0)
    full, prefill = t.full_s(B, P, N), t.prefill_s(B, P)
    assert e.status == "measured"
    assert e.joules_total == pytest.approx(watts * full)
    assert e.joules_prefill == pytest.approx(watts * prefill)
    assert e.joules_decode == pytest.approx(watts * (full - prefill))
    assert e.tokens_per_joule == pytest.approx(B * N / (watts * full))
    assert e.joules_per_token == pytest.approx(watts * full / (B * N))
    # decode J/token = (E_full - E_prefill) / decoded tokens
    assert e.decode_joules_per_token == pytest.approx(watts * (full - prefill) / (B * (N - 1)))
    assert e.joules_dynamic == pytest.approx((watts - 50.0) * full)
    assert e.joules_per_kchar == pytest.approx(watts * full / (B * N * 4 / 1000))


def test_no_sensor_means_unavailable_energy_not_zero(clock):
    _, r = _run(clock)
    e = energy_section(r, idle_power_w=None)
    assert e.status == "unavailable"
    assert e.joules_total is None and e.tokens_per_joule is None


def test_single_new_token_has_no_decode_phase(clock):
    _, r = _run(clock, workload=Workload(2, 8, 1))
    th = throughput_section(r)
    assert th.decode_tokens_per_s is None and th.tpot_s is None
    assert th.ttft_s == pytest.approx(Timing().prefill_s(2, 8))


def test_a_repeat_with_another_process_on_the_gpu_is_left_out(clock):
    class SharedGpu(ConstantPowerSensor):
        def __init__(self, clock):
            super().__init__(clock, watts=100.0)
            self.busy = iter([False, True, False, False, False, False])

        def interference(self):
            return {"flagged": next(self.busy, False)}

    _, r = _run(clock, RepeatPolicy(fixed_repeats=5), sensor=SharedGpu(clock))
    assert r.repeats == 5 and [e.reason for e in r.excluded] == ["gpu"]
    s = stats_section(r, warmup=1, interference=None)
    assert s.excluded_repeats == 1 and s.samples["excluded_for_gpu_process"] == [1.0]


def test_spread_and_target_are_recorded_when_the_repeats_end_short_of_it(clock):
    factors = [1.0, 1.6, 0.7, 1.5] * 10
    noisy = FakeBackend(spend=clock.advance, jitter=[1.0] + factors)  # the first call is the warm-up
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=6, ci_target=0.01, max_time_s=1e9), backend=noisy)
    s = stats_section(r, warmup=1, interference=None)
    decode = [B / (Timing().step_s(B) * f) for f in factors[:6]]
    mean = sum(decode) / 6
    sd = (sum((x - mean) ** 2 for x in decode) / 5) ** 0.5
    assert s.ci_target == 0.01 and s.spread_cv == pytest.approx(sd / mean)
    assert s.short_of_target
    # stable timings reach the target: nothing to say
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=20, ci_target=0.05))
    s = stats_section(r, warmup=1, interference=None)
    assert s.ci_target == 0.05 and s.spread_cv == 0.0 and not s.short_of_target
    # --repeats N has no target
    _, r = _run(clock, RepeatPolicy(fixed_repeats=3))
    s = stats_section(r, warmup=1, interference=None)
    assert s.ci_target is None and not s.short_of_target


def test_repeats_for_target_scales_as_one_over_root_n():
    from effbench.stats import repeats_for_target, spread_cv

    assert repeats_for_target(10, 0.10, 0.05) == 40  # half the width: four times the repeats
    assert repeats_for_target(17, 0.1145, 0.05) == 90
    assert repeats_for_target(12, 0.04, 0.05) == 12  # already there
    assert spread_cv([1.0]) is None and spread_cv([2.0, 2.0]) == 0.0
    assert spread_cv([9.0, 11.0]) == pytest.approx(2 ** 0.5 / 10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS per process is read from Linux's /proc")
def test_peak_memory_counts_the_engines_own_processes(clock, tmp_path):
    """An engine whose weights live in its own processes (vLLM's engine core and workers): the
    record's peak RSS is ours plus theirs, found down the process tree."""
    import subprocess
    import time as _time

    import psutil

    from effbench.measure.host import engine_tree, peak_rss_bytes

    mib = 256
    ready = tmp_path / "ready"
    hold = (f"import pathlib, time; b = bytearray(b'x') * ({mib} << 20); pathlib.Path({str(ready)!r}).write_text('1'); "
            "time.sleep(60)")
    # a shell that starts the process holding the memory: the engine's pid is its parent (the code goes
    # in as an argument, so no path needs quoting)
    sh = subprocess.Popen(["/bin/sh", "-c", '"$0" -c "$1" & wait', sys.executable, hold])
    try:
        deadline = _time.monotonic() + 30
        while not ready.exists() and _time.monotonic() < deadline:
            _time.sleep(0.05)
        assert ready.exists()

        class Engine(FakeBackend):
            def worker_pids(self):
                return [sh.pid]

        tree = engine_tree([sh.pid])
        assert sh.pid in tree and len(tree) == 2  # the shell and the python it started
        backend = Engine(spend=clock.advance)
        _, r = _run(clock, RepeatPolicy(fixed_repeats=2), backend=backend)
        own = peak_rss_bytes()
        assert r.peak_host_bytes >= own + 0.95 * (mib << 20)
        assert r.peak_host_bytes <= own + (mib + 200) * (1 << 20)  # interpreter and shell overhead, not double counting
    finally:
        children = psutil.Process(sh.pid).children(recursive=True)
        for proc in [*children, sh]:
            proc.kill()
        psutil.wait_procs(children, timeout=10)
        sh.wait()
    assert engine_tree([sh.pid]) == []  # ended processes are left out
