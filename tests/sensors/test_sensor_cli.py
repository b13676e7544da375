"""`effbench sensors` and `effbench run --sensor ...`, on a machine with no sensor (no nvidia-ml-py, no
powercap tree) and on one with a simulated GPU and RAPL tree, so each situation is checked whatever
this machine has."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import effbench.sensors.rapl as rapl_mod
from effbench.cli import main
from effbench.errors import UnsupportedError
from effbench.sensors import create
from effbench.sensors.simulated import Constant, FakeGpu, FakeNvml, FakePowercap, FakeZone

NO_PYNVML = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rapl_root(monkeypatch, root: Path) -> None:
    """Every RaplSensor reads ``root`` instead of /sys/class/powercap."""
    discover = rapl_mod.discover
    monkeypatch.setattr(rapl_mod, "discover", lambda _root: discover(root))


@pytest.fixture
def bare_machine(monkeypatch, tmp_path) -> Path:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    missing = tmp_path / "no-powercap"
    _rapl_root(monkeypatch, missing)
    return missing


@pytest.fixture
def sensor_machine(monkeypatch, tmp_path) -> Path:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(Constant(250.0))], time.monotonic))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cap = FakePowercap(tmp_path / "powercap", [FakeZone("intel-rapl:0", "package-0", Constant(65.0)),
                                               FakeZone("intel-rapl:0:1", "dram", Constant(5.0))]).write(0.0)
    _rapl_root(monkeypatch, cap.root)
    return cap.root


def test_sensors_on_a_machine_without_sensors_say_why(bare_machine, capsys):
    code, stdout, _ = _cli(capsys, "sensors", "--json")
    assert code == 0
    infos = {i["name"]: i for i in json.loads(stdout)}
    assert list(infos) == ["nvml", "rapl", "estimate", "none"]
    assert (infos["nvml"]["available"], infos["nvml"]["reason"]) == (False, NO_PYNVML)
    assert infos["rapl"]["available"] is False
    assert infos["rapl"]["reason"].startswith(f"no RAPL here ({bare_machine} does not exist")
    assert infos["estimate"]["available"] and infos["estimate"]["kind"] == "estimate"
    assert infos["none"]["available"] and infos["none"]["kind"] == "none"
    code, table, _ = _cli(capsys, "sensors")
    assert code == 0 and "nvml" in table and "estimate" in table


def test_sensors_on_a_machine_with_a_gpu_and_rapl_list_their_domains(sensor_machine, capsys):
    code, stdout, _ = _cli(capsys, "sensors", "--json")
    assert code == 0
    infos = {i["name"]: i for i in json.loads(stdout)}
    nvml, rapl = infos["nvml"], infos["rapl"]
    assert nvml["available"] and nvml["kind"] == "energy-counter" and nvml["domains"] == ["gpu:0"]
    assert nvml["reason"].startswith("NVML total energy counter on gpu:0 NVIDIA H100 80GB HBM3; hopper")
    assert rapl["available"] and rapl["kind"] == "energy-counter" and rapl["domains"] == ["cpu:package-0", "dram:0"]


@pytest.mark.parametrize("name, reason", [("nvml", NO_PYNVML), ("rapl", "does not exist")])
def test_run_with_an_unavailable_sensor_fails_with_one_line(bare_machine, capsys, tmp_path, name, reason):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "run"
    code, _, stderr = _cli(capsys, "run", "--sensor", name, "--model", str(model), "--device", "cpu",
                           "--out", str(out), "--quiet")
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith(f"effbench: error: sensor '{name}' is unavailable here: ")
    assert reason in stderr and stderr.rstrip().endswith("use --sensor auto, estimate or none")
    assert not (out / "results.jsonl").exists()


@pytest.mark.parametrize("machine, device, expected", [
    ("bare_machine", "cpu", "estimate"), ("bare_machine", "cuda", "none"),
    ("sensor_machine", "cpu", "rapl"), ("sensor_machine", "cuda", "nvml"),
])
def test_auto_picks_the_best_available_sensor(request, machine, device, expected):
    request.getfixturevalue(machine)
    s = create("auto", device)
    try:
        assert s.name == expected and s.info().available
        if expected == "none":  # a GPU run without a GPU sensor: unavailable with the reason, never the CPU's
            assert s.info().reason.startswith("GPU energy unavailable: no GPU sensor can measure cuda here")
    finally:
        s.close()


def test_unknown_sensor_is_refused():
    with pytest.raises(UnsupportedError, match="unknown sensor 'wattmeter'"):
        create("wattmeter")


def test_auto_chooses_by_what_sensors_declare_not_by_name(bare_machine, monkeypatch):
    """A sensor registered at run time (a plugin: a wall-socket meter, say) that declares it measures
    CPU runs at a better rank than RAPL/estimate is what ``auto`` picks for a CPU run, and only there."""
    from effbench import sensors
    from effbench.sensors.base import NullSensor

    class Wallmeter(NullSensor):
        name = "wallmeter"
        auto_for = ("cpu",)
        auto_rank = -1

        def __init__(self) -> None:
            super().__init__("a plugin meter")

    monkeypatch.setitem(sensors.SENSORS.entries, "wallmeter", Wallmeter)
    assert create("auto", "cpu").name == "wallmeter"
    assert create("auto", "cuda").name == "none"  # GPU energy only from a GPU sensor
    assert create("Wallmeter", "cuda").name == "wallmeter"  # by name, anywhere
    with pytest.raises(UnsupportedError, match="did you mean 'wallmeter'"):
        create("walmeter")
