"""The measurement loop against a fake backend whose timings are known exactly."""
from __future__ import annotations

import pytest

from effbench.measure.loop import RepeatPolicy, Workload, run_loop
from effbench.measure.energy import energy_section
from effbench.measure.summary import stats_section, throughput_section
from effbench.sensors.base import NullSensor

from conftest import ConstantPowerSensor, FakeBackend, Timing

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
    # warm-up runs one prefill and one generate each; then one of each per repeat (no sensor period)
    assert backend.calls == {"prefill": 2 + 5, "generate": 2 + 5}


def test_adaptive_stops_at_ci_target_when_timings_are_stable(clock):
    _, r = _run(clock, RepeatPolicy(min_repeats=3, max_repeats=20, ci_target=0.05))
    assert r.stop_reason == "ci-target"
    assert r.repeats == 3  # identical timings: CI width 0 after the minimum


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
    # rule 5: decode J/token = (E_full - E_prefill) / decoded tokens
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
