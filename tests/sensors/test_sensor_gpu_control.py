"""Power-limit and locked-clock sweep axes (hardware/gpu_control.py) on the NVML simulator: set, read
back, restored at the end, on SIGTERM, and by the next run after a SIGKILL; one clear line
without root or without a GPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from effbench.config import SweepConfig
from effbench.errors import EffbenchError
from effbench.hardware.gpu_control import RESTORE_FILE, restore_pending, restoring_on_signals
from effbench.models import resolve_model
from effbench.sensors.nvml import open_gpu_control
from effbench.sensors.simulated import Constant, FakeGpu, FakeNvml, SimClock
from effbench.sweep.plan import expand

ROOT = Path(__file__).resolve().parents[2]


def _nvml(root: bool = True, **kw) -> tuple[FakeNvml, FakeGpu]:
    gpu = FakeGpu.of("NVIDIA H100 80GB HBM3", Constant(300.0), power_limit_w=700.0, **kw)
    return FakeNvml([gpu], SimClock(), root=root), gpu


def test_apply_reads_back_what_is_in_force_and_restore_puts_the_originals_back(tmp_path):
    nv, gpu = _nvml(supported_sm_clocks=(1200, 1410, 1755, 1980))
    control = open_gpu_control("cuda", tmp_path, nvml=nv, env={})
    applied = control.apply(300.0, 1500)
    (only,) = applied.values()
    assert only.power_limit_w == 300.0
    assert only.sm_clock_mhz == 1410  # the driver rounded 1500 to a supported clock: the record says so
    saved = json.loads((tmp_path / RESTORE_FILE).read_text())
    assert saved["gpus"][gpu.uuid] == {"name": gpu.name, "power_limit_w": 700.0, "clocks_locked": True}
    control.apply(500.0, None)  # a second change keeps the first originals
    assert json.loads((tmp_path / RESTORE_FILE).read_text())["gpus"][gpu.uuid]["power_limit_w"] == 700.0
    assert control.restore() == []
    assert gpu.power_limit_w == 700.0 and gpu.locked_sm_clocks is None
    assert not (tmp_path / RESTORE_FILE).exists()


def test_without_root_one_clear_line(tmp_path):
    nv, _ = _nvml(root=False)
    control = open_gpu_control("cuda", tmp_path, nvml=nv, env={})
    with pytest.raises(EffbenchError) as e:
        control.apply(300.0, None)
    assert str(e.value) == ("setting the power limit to 300 W needs root (NVML: Insufficient Permissions): "
                            "run effbench as root, or leave the option out")


def test_without_a_gpu_or_on_cpu_one_clear_line(tmp_path):
    with pytest.raises(EffbenchError, match="need an NVIDIA GPU through NVML: no NVIDIA driver"):
        open_gpu_control("cuda", tmp_path, nvml=FakeNvml([], SimClock(), init_error=12), env={})
    with pytest.raises(EffbenchError, match="but the run is on cpu"):
        open_gpu_control("cpu", tmp_path)


def test_values_outside_the_gpus_range_are_refused_before_anything_runs(tmp_path):
    nv, _ = _nvml()
    control = open_gpu_control("cuda", tmp_path, nvml=nv, env={})
    with pytest.raises(EffbenchError, match=r"--power-limits 100,900: outside this GPU's range 200-700 W"):
        control.check([100.0, 300.0, 900.0], [])
    with pytest.raises(EffbenchError, match="--gpu-clocks 2500: above this GPU's maximum SM clock 1980 MHz"):
        control.check([], [1200, 2500])


def test_sigterm_inside_the_sweep_restores(tmp_path):
    nv, gpu = _nvml()
    control = open_gpu_control("cuda", tmp_path, nvml=nv, env={})
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with restoring_on_signals(control.restore):
            control.apply(250.0, 1200)
            os.kill(os.getpid(), signal.SIGTERM)
    assert gpu.power_limit_w == 700.0 and gpu.locked_sm_clocks is None
    assert not (tmp_path / RESTORE_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_the_next_run_restores_what_a_killed_run_left(tmp_path):
    nv, gpu = _nvml()
    control = open_gpu_control("cuda", tmp_path, nvml=nv, env={})
    control.apply(250.0, 1200)  # ... and the process is SIGKILLed: nothing restored, the file stays
    assert (tmp_path / RESTORE_FILE).exists() and gpu.power_limit_w == 250.0
    note = restore_pending(tmp_path, nv)
    assert note.startswith("restored the GPU settings an interrupted run left in")
    assert gpu.power_limit_w == 700.0 and gpu.locked_sm_clocks is None
    assert restore_pending(tmp_path, nv) is None


def test_restore_command_without_nvml_is_one_line(tmp_path):
    (tmp_path / RESTORE_FILE).write_text(json.dumps({"gpus": {"GPU-x": {"power_limit_w": 700.0}}}))
    code = ("import sys; sys.modules['pynvml'] = None; from effbench.hardware.gpu_control import main; "
            f"sys.exit(main([{str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "holds GPU settings an earlier run changed, but NVML is unavailable here" in r.stderr


def test_the_sweep_axes_multiply_the_points_and_keep_old_config_ids():
    spec = resolve_model("smollm2-135m")
    base = expand(SweepConfig(batch_sizes=[1, 4]), {"smollm2-135m": spec}, {"transformers": "cuda"})
    swept = expand(SweepConfig(batch_sizes=[1, 4], power_limits="300,500", gpu_clocks="1200,1980"),
                   {"smollm2-135m": spec}, {"transformers": "cuda"})
    points = swept[0].points
    assert len(points) == 2 * 2 * 2
    assert {(p.power_limit_w, p.gpu_clock_mhz) for p in points} == {(300.0, 1200), (300.0, 1980), (500.0, 1200), (500.0, 1980)}
    assert len({p.config_id for p in points}) == 8
    assert {p.config_id for p in base[0].points} == {p.config_id for p in expand(
        SweepConfig(batch_sizes=[1, 4]), {"smollm2-135m": spec}, {"transformers": "cuda"})[0].points}
    assert "300W 1200MHz" in points[0].label()


@pytest.mark.parametrize("value, words", [("abc", "valid number"), ("-5", "not a power limit in watts"),
                                          ("0", "not a power limit in watts")])
def test_bad_power_limits_are_one_line(value, words):
    r = subprocess.run([sys.executable, "-m", "effbench", "run", "--power-limits", value, "--quiet"],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr


def test_power_limits_on_a_cpu_run_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "effbench", "run", "--power-limits", "300", "--device", "cpu",
                        "--quiet", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "set NVIDIA GPU settings, but the run is on cpu" in r.stderr


def test_worker_records_the_settings_in_force_and_other_processes():
    from effbench.results.schema import BackendInfo, ModelInfo, QuantizationInfo, Record, WorkloadInfo
    from effbench.sensors.nvml import NvmlSensor
    from effbench.sensors.simulated import FakeProcess
    from effbench.sweep.worker import GroupWorker

    nv, gpu = _nvml(processes=[FakeProcess(99999, 1 << 30)])
    spec = resolve_model("smollm2-135m")
    cfg = SweepConfig(batch_sizes=[1], power_limits="300")
    group = expand(cfg, {"smollm2-135m": spec}, {"transformers": "cuda"})[0]
    events = []
    worker = GroupWorker(group, events.append)
    worker.device = "cuda"
    worker.gpu_control = open_gpu_control("cuda", None, nvml=nv, env={})
    sensor = NvmlSensor("cuda", nvml=nv, clock=nv.clock, threaded=False, env={})
    p = group.points[0]
    info = worker._gpu_before(p, sensor)
    assert info.power_limit_w == 300.0 and info.requested_power_limit_w == 300.0 and gpu.power_limit_w == 300.0
    assert info.other_processes == [{"gpu": "gpu:0", "pid": 99999, "used_memory_bytes": 1 << 30}]
    rec = Record(run_id="r", config_id=p.config_id, model=ModelInfo(id="m"), backend=BackendInfo(name="b"),
                 quantization=QuantizationInfo(scheme="bf16"), workload=WorkloadInfo(batch_size=1, prompt_tokens=1, new_tokens=1,
                                                                                     prompt_set="en"))
    worker.finish(p, rec, info)
    out = events[-1][1]
    assert out["gpu"]["power_limit_w"] == 300.0 and out["stats"]["interference"] is True
