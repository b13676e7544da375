"""The TDP x utilisation estimate (CPU and GPU) and CO2e from grid intensity."""
import pytest

from effbench.analysis import carbon
from effbench.results.schema import Energy
from effbench.sensors.estimate import EstimateSensor, codecarbon_cpu_tdp
from effbench.sensors.simulated import Constant, FakeGpu, FakeNvml, SimClock


def test_gpu_estimate_is_power_limit_times_utilisation_and_says_estimated():
    clock = SimClock(5.0)
    nv = FakeNvml([FakeGpu(Constant(1.0), power_limit_w=300.0, utilization=40.0)], clock)
    sensor = EstimateSensor(device="cuda", nvml=nv, clock=clock, threaded=False, cpu=False)
    assert sensor.info().domains == ("gpu:0",) and "NVML utilisation" in sensor.info().reason
    poller = sensor._gpu_poller
    w = sensor.start_window()
    for _ in range(50):
        clock.advance(0.2)
        poller.sample()
    r = w.stop()
    assert r.status == "estimated" and r.uncertainty_rel == 0.5
    assert r.joules_by_domain["gpu:0"] == pytest.approx(300.0 * 0.4 * 10.0)
    assert "power limit x NVML utilisation" in r.basis


def test_cpu_estimate_states_its_basis():
    s = EstimateSensor(cpu_tdp_w=65.0, tdp_source="profile x")
    r = s.start_window().stop()
    assert r.status == "estimated" and "CPU TDP 65 W (profile x)" in r.basis
    assert s.info().kind == "estimate" and not s.info().reason.startswith("measured")


def test_estimate_on_cuda_without_nvml_says_gpu_not_estimated():
    s = EstimateSensor(device="cuda", nvml=FakeNvml([], SimClock(), init_error=12))
    assert "GPU not estimated" in s.info().reason


def test_codecarbon_cpu_table_exact_model_match():
    pytest.importorskip("codecarbon")
    assert codecarbon_cpu_tdp("AMD EPYC 4124P 4-Core Processor") == 65.0
    assert codecarbon_cpu_tdp("AMD EPYC") is None


def test_grid_intensity_by_region_and_default(monkeypatch):
    pytest.importorskip("codecarbon")
    monkeypatch.delenv("EFFBENCH_REGION", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    g, source = carbon.grid_intensity(None)
    assert g == 475 and "world average" in source and "unknown" in source
    fr, src = carbon.grid_intensity("FR")
    assert 10 < fr < 200 and "France" in src
    assert carbon.grid_intensity("FRA")[0] == fr == carbon.grid_intensity("France")[0]
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert carbon.resolve(None).region == "FR" and "time zone" in carbon.resolve(None).source
    assert carbon.grid_intensity("SE3")[0] < 100
    assert carbon.grid_intensity("USA/california")[0] > 0


def test_unknown_region_is_one_line_error():
    from effbench.errors import EffbenchError

    # with codecarbon's data the region is unknown; without it, the message says what to install
    expected = "unknown region 'mars'" if carbon._data_dir() is not None else "region 'mars' needs codecarbon's data"
    with pytest.raises(EffbenchError, match=expected):
        carbon.grid_intensity("mars")


def test_without_codecarbon_the_world_average_is_stated(monkeypatch):
    monkeypatch.setattr(carbon, "_data_dir", lambda: None)
    carbon._json.cache_clear()
    try:
        monkeypatch.delenv("EFFBENCH_REGION", raising=False)
        g, source = carbon.grid_intensity(None)
        assert g == carbon.WORLD_AVERAGE_G_PER_KWH and "IEA" in source
    finally:
        carbon._json.cache_clear()


def test_carbon_per_call_and_per_million_tokens():
    e = Energy(status="measured", joules_total=360.0)
    c = carbon.carbon_section(e, tokens_per_call=100, intensity=carbon.Intensity(500.0, "test", "XX"))
    assert c.g_per_call == pytest.approx(360.0 / 3.6e6 * 500.0)
    assert c.g_per_million_tokens == pytest.approx(3.6 * 1e6 / 3.6e6 * 500.0)
    assert c.energy_status == "measured"
    assert carbon.carbon_section(Energy(), 100, carbon.Intensity(500.0, "t", "XX")).g_per_call is None
