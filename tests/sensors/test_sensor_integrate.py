import numpy as np
import pytest

from effbench.sensors.integrate import counter_delta, coverage, integrate


def test_constant_power_is_exact_and_fully_covered():
    t = np.arange(0, 10.01, 0.1)
    r = integrate(t, np.full_like(t, 50.0), 2.0, 7.0)
    assert r.joules == pytest.approx(250.0)
    assert r.coverage == 1.0 and r.sampling_interval_s == pytest.approx(0.1)


def test_linear_power_is_exact_with_edges_interpolated_between_samples():
    t = np.arange(0, 10.01, 1.0)
    w = 10 + 5 * t
    # window edges fall between samples: interpolation keeps the trapezoid exact for a line
    r = integrate(t, w, 1.25, 8.5)
    exact = 10 * (8.5 - 1.25) + 2.5 * (8.5**2 - 1.25**2)
    assert r.joules == pytest.approx(exact)


def test_a_gap_longer_than_three_intervals_is_uncovered():
    t = np.concatenate([np.arange(0, 4.0, 0.1), np.arange(6.0, 10.01, 0.1)])
    r = integrate(t, np.full_like(t, 100.0), 0.0, 10.0, interval_s=0.1)
    # each side of the 2 s gap reaches 0.15 s into it
    assert r.coverage == pytest.approx((10 - (6.0 - 3.9) + 0.3) / 10, abs=1e-6)
    assert r.joules == pytest.approx(1000.0)  # interpolated across, but reported as not observed


def test_window_beyond_the_samples_holds_the_edge_value_and_says_so():
    t = np.arange(0, 1.01, 0.1)
    r = integrate(t, np.full_like(t, 10.0), 0.5, 3.0, interval_s=0.1)
    assert r.joules == pytest.approx(25.0)
    assert r.coverage == pytest.approx((1.0 + 0.15 - 0.5) / 2.5)


def test_no_samples_gives_none():
    assert integrate([], [], 0.0, 1.0) is None
    assert coverage(np.array([]), 0.0, 1.0, 0.1) == 0.0


@pytest.mark.parametrize("before,after,wrap,delta", [(10, 30, 100, 20), (90, 5, 100, 15), (5, 5, 100, 0), (90, 5, None, None)])
def test_counter_delta_undoes_one_wrap_and_refuses_an_unknown_one(before, after, wrap, delta):
    assert counter_delta(before, after, wrap) == delta
