"""The pytest plugin: energy fields in pytest-benchmark's JSON, their arithmetic against a sensor of
known constant power, the sensor option, and extra_info kept through saved runs and --benchmark-compare.

Inner pytest runs are in-process (``pytester.runpytest``), so a fake ``effbench.sensors.create``
set with monkeypatch here is the one the plugin calls. Nothing is timed against a threshold.
"""
from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import pytest

import effbench.sensors
from effbench.pytest_plugin import energy_figures
from effbench.sensors import EnergyReading, EnergySensor, SensorInfo, Window

pytest_plugins = ["pytester"]

WATTS = 40.0  # the fake sensor's constant power
ACCURACY = 0.02  # its stated accuracy
# Fast inner benchmarks: a few short rounds, and a window floor that the extension loop must fill.
FAST = ["--benchmark-max-time=0.05", "--benchmark-min-rounds=3", "--effbench-min-window=0.2"]


class ConstantPowerSensor(EnergySensor):
    """Measures exactly ``WATTS`` over every window's real duration."""

    name = "fake"

    def __init__(self, device: str) -> None:
        self.device = device
        self.closed = False

    def info(self) -> SensorInfo:
        return SensorInfo(name="fake", kind="energy-counter", available=True, reason="test sensor",
                          domains=("gpu:0",), update_period_s=0.001, accuracy_rel=ACCURACY)

    def start_window(self) -> Window:
        sensor = self

        class _W(Window):
            t0 = time.perf_counter()

            def stop(self) -> EnergyReading:
                d = time.perf_counter() - self.t0
                return EnergyReading("measured", f"fake:{sensor.device}", d, {"gpu:0": WATTS * d},
                                     coverage=1.0, uncertainty_rel=ACCURACY)

        return _W()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replace sensor creation with the constant-power sensor; lists the (name, device) asked for."""
    calls: list[tuple[str, str]] = []

    def create(name: str = "auto", device: str = "cpu") -> EnergySensor:
        calls.append((name, device))
        return ConstantPowerSensor(device)

    monkeypatch.setattr(effbench.sensors, "create", create)
    return calls


def _plugin_args() -> list[str]:
    """``-p effbench.pytest_plugin`` unless the entry point already loads it (loading twice fails)."""
    eps = importlib.metadata.entry_points(group="pytest11")
    return [] if any(ep.value == "effbench.pytest_plugin" for ep in eps) else ["-p", "effbench.pytest_plugin"]


BENCH_FILE = """
import pytest

def work():
    return sum(range(2000))

def test_plain(energy_benchmark):
    energy_benchmark(work)

def test_tokens(energy_benchmark):
    energy_benchmark(work, tokens=128)

@pytest.mark.effbench(tokens=64)
def test_marker(energy_benchmark):
    energy_benchmark.pedantic(work, rounds=5, iterations=2)
"""


def _run_json(pytester: pytest.Pytester, *args: str) -> dict[str, dict]:
    pytester.makepyfile(test_bench=BENCH_FILE)
    out = pytester.path / "out.json"
    result = pytester.runpytest(*_plugin_args(), *FAST, f"--benchmark-json={out}", *args)
    result.assert_outcomes(passed=3)
    return {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}


def test_energy_fields_in_benchmark_json(pytester: pytest.Pytester, created: list) -> None:
    benches = _run_json(pytester)
    for b in benches.values():
        info = b["extra_info"]
        assert info["energy_status"] == "measured"
        assert info["energy_sensor"] == "fake:cpu"
        for key in ("joules_per_call", "mean_power_w", "energy_uncertainty_rel", "energy_window_s"):
            assert info[key] > 0
        # The window reaches the floor, lengthened by extra calls when the benchmark was shorter.
        assert info["energy_window_s"] >= 0.2
    assert "tokens_per_s" not in benches["test_plain"]["extra_info"]
    assert created == [("auto", "cpu")]  # one sensor for the session


def test_tokens_arithmetic_against_known_power(pytester: pytest.Pytester, created: list) -> None:
    benches = _run_json(pytester)
    for name, tokens in (("test_tokens", 128), ("test_marker", 64)):
        info, mean = benches[name]["extra_info"], benches[name]["stats"]["mean"]
        assert info["mean_power_w"] == pytest.approx(WATTS)
        assert info["seconds_per_call"] == pytest.approx(mean)
        assert info["joules_per_call"] == pytest.approx(WATTS * mean)
        assert info["tokens_per_call"] == tokens
        assert info["tokens_per_s"] == pytest.approx(tokens / mean)
        assert info["tokens_per_joule"] == pytest.approx(tokens / (WATTS * mean))
        assert info["joules_per_token"] == pytest.approx(WATTS * mean / tokens)
        # The sensor's accuracy combined with the spread of the timed mean, never less.
        assert info["energy_uncertainty_rel"] >= ACCURACY


def test_energy_figures_by_hand() -> None:
    reading = EnergyReading("measured", "fake", 2.0, {"gpu:0": 100.0, "cpu:0": 20.0}, uncertainty_rel=0.03)
    f = energy_figures(reading, seconds_per_call=0.5, time_rel=0.04, tokens=30)
    assert f.mean_power_w == pytest.approx(60.0)
    assert f.joules_per_call == pytest.approx(30.0)
    assert f.tokens_per_s == pytest.approx(60.0)
    assert f.tokens_per_joule == pytest.approx(1.0)
    assert f.energy_uncertainty_rel == pytest.approx(0.05)


def test_unavailable_energy_keeps_tokens_per_s() -> None:
    reading = EnergyReading("unavailable", "none", 1.0, basis="disabled")
    info = energy_figures(reading, seconds_per_call=0.25, tokens=10).to_extra_info()
    assert info["energy_status"] == "unavailable" and info["tokens_per_s"] == pytest.approx(40.0)
    assert not {"joules_per_call", "tokens_per_joule", "mean_power_w"} & info.keys()


def test_sensor_and_device_options(pytester: pytest.Pytester, created: list) -> None:
    _run_json(pytester, "--effbench-sensor=rapl", "--effbench-device=cpu")
    assert created == [("rapl", "cpu")]


def test_sensor_none_is_real(pytester: pytest.Pytester) -> None:
    """Without the fake: --effbench-sensor none gives 'unavailable' records, and tokens/s still."""
    benches = _run_json(pytester, "--effbench-sensor=none")
    info = benches["test_tokens"]["extra_info"]
    assert info["energy_status"] == "unavailable" and info["energy_sensor"] == "none"
    assert info["tokens_per_s"] > 0 and "tokens_per_joule" not in info


def test_unknown_sensor_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench=BENCH_FILE)
    result = pytester.runpytest(*_plugin_args(), "--effbench-sensor=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--effbench-sensor*invalid choice*bogus*"])


def test_extra_info_survives_save_and_compare(pytester: pytest.Pytester, created: list) -> None:
    pytester.makepyfile(test_bench=BENCH_FILE)
    storage = f"--benchmark-storage=file://{pytester.path / 'store'}"
    first = pytester.runpytest(*_plugin_args(), *FAST, storage, "--benchmark-autosave")
    first.assert_outcomes(passed=3)
    saved = list((pytester.path / "store").rglob("*.json"))
    assert len(saved) == 1
    for b in json.loads(saved[0].read_text())["benchmarks"]:
        assert b["extra_info"]["energy_status"] == "measured"

    out = pytester.path / "compared.json"
    second = pytester.runpytest(*_plugin_args(), *FAST, storage, "--benchmark-compare", f"--benchmark-json={out}")
    second.assert_outcomes(passed=3)
    second.stderr.fnmatch_lines(["*Comparing against benchmarks from*"])
    for b in json.loads(out.read_text())["benchmarks"]:
        assert b["extra_info"]["joules_per_call"] > 0


def test_terminal_summary_lists_energy(pytester: pytest.Pytester, created: list) -> None:
    pytester.makepyfile(test_bench=BENCH_FILE)
    result = pytester.runpytest(*_plugin_args(), *FAST)
    result.stdout.fnmatch_lines(["*effbench energy*", "*test_tokens*measured*fake:cpu*"])


def test_benchmark_disable_runs_once_without_energy(pytester: pytest.Pytester, created: list) -> None:
    pytester.makepyfile(test_bench=BENCH_FILE)
    result = pytester.runpytest(*_plugin_args(), "--benchmark-disable")
    result.assert_outcomes(passed=3)
    assert "effbench energy" not in result.stdout.str()


def test_effbench_model_copies_record_figures(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model helper hands the marker's options (plus the sensor option) to effbench.run and
    copies the record's figures into extra_info; effbench.run is faked, the real one is tested elsewhere."""
    from types import SimpleNamespace

    import effbench
    from effbench.results.schema import BackendInfo, Energy, ModelInfo, QuantizationInfo, Record, Throughput, WorkloadInfo

    seen: list[dict] = []

    def fake_run(config: dict) -> SimpleNamespace:
        seen.append(config)
        record = Record(run_id="r", config_id="c", model=ModelInfo(id="m"), backend=BackendInfo(name="transformers"),
                        quantization=QuantizationInfo(scheme=config["quant"]),
                        workload=WorkloadInfo(batch_size=config["batch_sizes"], prompt_tokens=8, new_tokens=4, prompt_set="en"),
                        throughput=Throughput(decode_tokens_per_s=123.0),
                        energy=Energy(status="estimated", sensor="estimate", tokens_per_joule=4.5))
        return SimpleNamespace(path=Path(config["out"]), records=[record])

    monkeypatch.setattr(effbench, "run", fake_run)
    pytester.makepyfile(test_model="""
        import pytest

        @pytest.mark.effbench(quant="fp32", batch_sizes=1)
        def test_one(effbench_model):
            assert effbench_model().throughput.decode_tokens_per_s == 123.0

        @pytest.mark.effbench(quant="fp32", batch_sizes=[1, 4])
        def test_several(effbench_model):
            effbench_model()
    """)
    out = pytester.path / "out.json"
    result = pytester.runpytest(*_plugin_args(), "--effbench-sensor=none", f"--benchmark-json={out}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*effbench_model runs one configuration; give one value for: batch_sizes*"])
    assert seen[0]["sensor"] == "none" and seen[0]["quant"] == "fp32" and seen[0]["batch_sizes"] == 1
    info = json.loads(out.read_text())["benchmarks"][0]["extra_info"]
    assert info["decode_tokens_per_s"] == 123.0 and info["tokens_per_joule"] == 4.5
    assert info["energy_status"] == "estimated" and info["run_dir"]


def test_plugin_imports_cheaply(pytester: pytest.Pytester) -> None:
    """Every pytest run loads the plugin: importing it must not pull in torch, numpy or sensors."""
    result = pytester.run(
        "python", "-c",
        "import sys, effbench.pytest_plugin; "
        "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'pytest_benchmark', 'effbench.sensors') if m in "
        "sys.modules))",
    )
    assert result.ret == 0
    assert result.stdout.lines[-1] == "[]"
