"""The TDP x utilisation estimate (CPU and GPU) and CO2e from grid intensity."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

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


def test_estimate_on_cuda_without_nvml_is_unavailable_rather_than_the_cpus():
    s = EstimateSensor(device="cuda", nvml=FakeNvml([], SimClock(), init_error=12))
    info = s.info()
    assert not info.available  # docs/method.md: CPU TDP x utilisation is not a GPU's energy
    assert info.reason.startswith("cannot estimate the GPU (no NVIDIA driver") and "not the CPU's" in info.reason


def test_estimate_on_cuda_names_the_devices_it_covers():
    clock = SimClock(10.0)
    s = EstimateSensor(cpu_tdp_w=100.0, device="cuda", nvml=FakeNvml([FakeGpu(Constant(1.0))], clock),
                       clock=clock, threaded=False)
    w = s.start_window()
    for _ in range(20):
        clock.advance(0.2)
        s._gpu_poller.sample()
    r = w.stop()
    s.close()
    assert r.status == "estimated" and set(r.joules_by_domain) == {"cpu:estimate", "gpu:0"}
    assert "covers cpu:estimate, gpu:0" in r.basis


def test_codecarbon_cpu_table_exact_model_match():
    pytest.importorskip("codecarbon")
    assert codecarbon_cpu_tdp("AMD EPYC 4124P 4-Core Processor") == 65.0
    assert codecarbon_cpu_tdp("AMD EPYC") is None


@pytest.fixture
def fresh_carbon_data():
    """Clear the data caches around a test that points ``carbon`` at other data files."""
    carbon._json.cache_clear()
    carbon._cloud_rows.cache_clear()
    yield
    carbon._json.cache_clear()
    carbon._cloud_rows.cache_clear()


@pytest.fixture
def fake_carbon_data(tmp_path, monkeypatch, fresh_carbon_data) -> Path:
    """A codecarbon data directory, a tzdata zone table and pycountry with known figures, so the
    look-ups are checked against known truth whatever codecarbon version or tzdata this machine has."""
    d = tmp_path / "codecarbon-data"
    files = {
        "private_infra/carbon_intensity_per_source.json": {"world_average": 500, "world_average_source": "test IEA"},
        "private_infra/global_energy_mix.json": {
            "FRA": {"country_name": "France", "carbon_intensity": 51.5, "year": 2023},
            "USA": {"country_name": "United States", "carbon_intensity": 380.0, "year": 2023},
        },
        "private_infra/nordic_emissions.json": {"data": {"SE3": {"emission_factor": 26.5, "description": "Sweden zone 3",
                                                                 "year": 2025}}},
        "private_infra/2023/usa_emissions.json": {"_source": {"name": "test eGRID"}, "california": {"emissions": 400.0,
                                                                                                    "regionCode": "CA"}},
    }
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(json.dumps(data))
    (d / "cloud").mkdir()
    (d / "cloud" / "impact.csv").write_text("provider,providerName,region,impact,source\ngcp,Google Cloud "
                                            "Platform,europe-west1,123,test\n")
    tab = tmp_path / "zone1970.tab"
    tab.write_text("# comment\nFR,MC\t+4852+00220\tEurope/Paris\nXX\t+0000+00000\tAtlantis/Capital\n")
    monkeypatch.setattr(carbon, "_data_dir", lambda: d)
    monkeypatch.setattr(carbon, "ZONE_TABS", (str(tab),))
    alpha3 = {"FR": "FRA", "US": "USA"}
    fake_pycountry = SimpleNamespace(countries=SimpleNamespace(
        get=lambda alpha_2: SimpleNamespace(alpha_3=alpha3[alpha_2]) if alpha_2 in alpha3 else None))
    monkeypatch.setitem(sys.modules, "pycountry", fake_pycountry)
    monkeypatch.delenv("EFFBENCH_REGION", raising=False)
    return d


def test_grid_intensity_by_region_and_default(fake_carbon_data, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    assert carbon.grid_intensity(None) == (500.0, "world average 500 gCO2e/kWh (codecarbon data: test IEA); "
                                                  "no region given and this machine's country is unknown")
    assert carbon.resolve(None).region == "world"
    fr, src = carbon.grid_intensity("FR")
    assert fr == 51.5 and src == "France grid mix 2023 (codecarbon global_energy_mix)"
    assert carbon.grid_intensity("FRA")[0] == carbon.grid_intensity("France")[0] == 51.5
    assert carbon.grid_intensity("SE3") == (26.5, "Sweden zone 3 (2025 codecarbon Nordic data)")
    assert carbon.grid_intensity("USA/california")[0] == pytest.approx(400.0 * 0.45359237)
    assert carbon.grid_intensity("gcp:europe-west1") == (123.0, "Google Cloud Platform europe-west1 (test)")
    assert carbon.grid_intensity("world")[0] == 500.0


def test_region_from_the_time_zone_then_from_the_environment(fake_carbon_data, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    i = carbon.resolve(None)
    assert (i.region, i.g_per_kwh) == ("FR", 51.5) and "country FR inferred from this machine's time zone" in i.source
    monkeypatch.setenv("TZ", "Atlantis/Capital")  # a zone whose country has no data: the world average
    assert (carbon.resolve(None).region, carbon.resolve(None).g_per_kwh) == ("world", 500.0)
    monkeypatch.setenv("EFFBENCH_REGION", "SE3")
    i = carbon.resolve(None)
    assert (i.region, i.g_per_kwh) == ("SE3", 26.5) and i.source.endswith("; region from EFFBENCH_REGION")


def test_the_installed_codecarbon_data_is_read_as_its_files_say(fresh_carbon_data, monkeypatch):
    """Whatever codecarbon version is installed, the figures are the ones in its own files."""
    pytest.importorskip("codecarbon")
    d = carbon._data_dir()
    assert d is not None
    read = lambda rel: json.loads((d / "private_infra" / rel).read_text(encoding="utf-8"))  # noqa: E731
    assert carbon.grid_intensity("world")[0] == read("carbon_intensity_per_source.json")["world_average"]
    assert carbon.grid_intensity("FRA")[0] == read("global_energy_mix.json")["FRA"]["carbon_intensity"]
    assert carbon.grid_intensity("FR")[0] == carbon.grid_intensity("FRA")[0]  # alpha-2 via pycountry
    assert carbon.grid_intensity("SE3")[0] == read("nordic_emissions.json")["data"]["SE3"]["emission_factor"]
    assert carbon.grid_intensity("USA/california")[0] == pytest.approx(
        read("2023/usa_emissions.json")["california"]["emissions"] * 0.45359237)


def test_unknown_region_is_one_line_error(fake_carbon_data, monkeypatch):
    from effbench.errors import EffbenchError

    with pytest.raises(EffbenchError, match="unknown region 'mars'"):
        carbon.grid_intensity("mars")
    monkeypatch.setattr(carbon, "_data_dir", lambda: None)
    carbon._json.cache_clear()
    with pytest.raises(EffbenchError, match="region 'mars' needs codecarbon's data"):
        carbon.grid_intensity("mars")


def test_without_codecarbon_the_world_average_is_stated(monkeypatch, fresh_carbon_data):
    monkeypatch.setattr(carbon, "_data_dir", lambda: None)
    monkeypatch.delenv("EFFBENCH_REGION", raising=False)
    monkeypatch.setenv("TZ", "Europe/Paris")  # a known country, but no data to look it up in
    g, source = carbon.grid_intensity(None)
    assert g == carbon.WORLD_AVERAGE_G_PER_KWH and "IEA" in source


def test_carbon_per_call_and_per_million_tokens():
    e = Energy(status="measured", joules_total=360.0)
    c = carbon.carbon_section(e, tokens_per_call=100, intensity=carbon.Intensity(500.0, "test", "XX"))
    assert c.g_per_call == pytest.approx(360.0 / 3.6e6 * 500.0)
    assert c.g_per_million_tokens == pytest.approx(3.6 * 1e6 / 3.6e6 * 500.0)
    assert c.energy_status == "measured"
    assert carbon.carbon_section(Energy(), 100, carbon.Intensity(500.0, "t", "XX")).g_per_call is None
