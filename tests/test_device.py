"""The NVIDIA device layer (effbench/device/) on the NVML simulator: the one NVML session owner
(reference counted), CUDA_VISIBLE_DEVICES and MIG resolution, counters and power, typed errors
mapped from NVML return codes, setters that read back, and restore after a setter; and that nothing
outside the layer talks to pynvml."""
from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

import effbench
from effbench.device import (
    DeviceError,
    GpuLost,
    GpuNotVisible,
    InvalidArgument,
    NotPermitted,
    NotSupported,
    NvidiaGPUs,
    Nvml,
    NvmlUnavailable,
    gpu_names,
    plugged,
)
from effbench.device.nvidia import INSTALL_HINT
from effbench.errors import UnsupportedError
from effbench.sensors.simulated import Constant, FakeGpu, FakeMig, FakeNvml, SimClock

H100 = "NVIDIA H100 80GB HBM3"
MIG_UUID = "MIG-11111111-2222-3333-4444-555555555555"
ROOT = Path(effbench.__file__).resolve().parent


def _three(**kw) -> FakeNvml:
    gpus = [FakeGpu.of(H100, Constant(100.0 * (i + 1)), uuid=f"GPU-{i}aaa-bbbb", **kw) for i in range(3)]
    return FakeNvml(gpus, SimClock(10.0))


def _mig() -> FakeNvml:
    return FakeNvml([FakeGpu.of(H100, Constant(200.0), uuid="GPU-aaaaaaaa"),
                     FakeGpu.of(H100, Constant(300.0), uuid="GPU-bbbbbbbb", mig_mode=True, migs=[FakeMig(MIG_UUID)])],
                    SimClock(10.0))


# -- selection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("visible, device, expected", [
    (None, "cuda", [(0, 0), (1, 1), (2, 2)]),
    ("2,GPU-0aaa", "cuda", [(0, 2), (1, 0)]),  # CUDA order, an index and a UUID
    ("2,1aaa", "cuda:1", [(1, 1)]),  # a UUID prefix without "GPU-"; cuda:N counts visible GPUs
    ("0,7,1", "cuda", [(0, 0)]),  # like CUDA, parsing stops at the first entry naming no GPU
])
def test_cuda_visible_devices_selects_gpus_in_cuda_order(visible, device, expected):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    with NvidiaGPUs.open(device, _three(), env) as gpus:
        assert [(g.cuda_index, g.nvml_index) for g in gpus.gpus] == expected
        assert [g.domain for g in gpus.gpus] == [f"gpu:{c}" for c, _ in expected]
        assert all(g.name == H100 and g.mig_mode is None and g.mig_slice is None for g in gpus.gpus)


def test_a_mig_uuid_resolves_to_its_parent_gpu_and_names_the_slice():
    with NvidiaGPUs.open("cuda", _mig(), {"CUDA_VISIBLE_DEVICES": MIG_UUID}) as gpus:
        (g,) = gpus.gpus
        assert (g.uuid, g.nvml_index, g.cuda_index, g.mig_mode, g.mig_slice) == ("GPU-bbbbbbbb", 1, 0, True, MIG_UUID)
    with NvidiaGPUs.open("cuda", _mig(), {"CUDA_VISIBLE_DEVICES": f"0,{MIG_UUID}"}) as gpus:
        assert [(g.nvml_index, g.mig_slice) for g in gpus.gpus] == [(0, None), (1, MIG_UUID)]


@pytest.mark.parametrize("visible, device, message", [
    ("", "cuda", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    ("MIG-00000000-unknown,0", "cuda", "CUDA_VISIBLE_DEVICES='MIG-00000000-unknown,0' hides every GPU"),
    ("1", "cuda:1", "cuda:1 is not a visible GPU (1 visible)"),
])
def test_a_selection_of_no_gpu_is_one_line_and_releases_nvml(visible, device, message):
    nv = _three()
    with pytest.raises(GpuNotVisible) as e:
        NvidiaGPUs.open(device, nv, {"CUDA_VISIBLE_DEVICES": visible})
    assert str(e.value) == message and isinstance(e.value, UnsupportedError)
    assert nv.calls["nvmlInit"] == nv.calls["nvmlShutdown"] == 1 and Nvml.references(nv) == 0


# -- the session ----------------------------------------------------------------------------------

def test_one_init_and_one_shutdown_however_many_hold_nvml():
    nv = _three()
    a = NvidiaGPUs.open("cuda", nv, {})
    b = NvidiaGPUs.open("cuda:0", nv, {})
    with Nvml(nv) as lib:
        assert lib.names() == [H100] * 3 and Nvml.references(nv) == 3
    a.close()
    a.close()  # closing twice releases once
    assert nv.calls["nvmlInit"] == 1 and "nvmlShutdown" not in nv.calls
    assert b.gpus[0].energy_mj() > 0  # still initialised for the other holder
    b.close()
    assert nv.calls["nvmlShutdown"] == 1 and Nvml.references(nv) == 0
    with NvidiaGPUs.open("cuda", nv, {}):
        pass
    assert nv.calls["nvmlInit"] == nv.calls["nvmlShutdown"] == 2


@pytest.mark.parametrize("code, message", [
    (12, "no NVIDIA driver on this machine (NVML library libnvidia-ml.so not found)"),
    (9, "the NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded)"),
    (999, "NVML failed to start (FakeNVMLError: NVML error 999)"),
])
def test_nvml_that_does_not_start_is_unavailable_with_the_reason(code, message):
    nv = FakeNvml([], SimClock(), init_error=code)
    with pytest.raises(NvmlUnavailable) as e:
        NvidiaGPUs.open("cuda", nv, {})
    assert str(e.value) == message and e.value.cause.value == code
    assert Nvml.references(nv) == 0 and "nvmlShutdown" not in nv.calls
    assert gpu_names(nv) == []


def test_no_gpu_and_no_pynvml_are_unavailable(monkeypatch):
    nv = FakeNvml([], SimClock())
    with pytest.raises(NvmlUnavailable, match="^NVML sees no NVIDIA GPU$"):
        NvidiaGPUs.open("cuda", nv, {})
    assert nv.calls["nvmlInit"] == nv.calls["nvmlShutdown"] == 1
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(NvmlUnavailable) as e:
        Nvml()
    assert str(e.value) == INSTALL_HINT and isinstance(e.value.cause, ImportError)
    assert gpu_names() == []


def test_a_plugged_in_simulator_serves_code_that_takes_no_nvml_argument(monkeypatch):
    from effbench.hardware.detection import detect

    monkeypatch.setitem(sys.modules, "pynvml", None)  # the real library is never reached
    nv = _three()
    with plugged(nv):
        assert gpu_names() == [H100] * 3
        found = detect("auto")
        assert (found.name, found.kind) == (H100, "gpu")
        with NvidiaGPUs.open("cuda:2", env={}) as gpus:
            assert gpus.nv is nv and gpus.gpus[0].uuid == "GPU-2aaa-bbbb"
    assert gpu_names() == []


# -- counters and power ---------------------------------------------------------------------------

def test_the_probe_finds_the_counter_and_the_instantaneous_field():
    clock = SimClock(100.0)
    old_gpu = FakeGpu.of(H100, Constant(250.0), has_counter=False, has_instant=False)
    nv = FakeNvml([FakeGpu.of(H100, Constant(250.0)), old_gpu], clock)
    with NvidiaGPUs.open("cuda", nv, {}) as gpus:
        full, old = gpus.gpus
        assert (full.has_counter, full.has_instant, old.has_counter, old.has_instant) == (True, True, False, False)
        e0 = full.energy_mj()
        clock.advance(10.0)
        assert full.energy_mj() - e0 == pytest.approx(2_500_000, rel=1e-6)
        assert full.power_w() == pytest.approx(250.0) and old.power_w() == pytest.approx(250.0)
        assert nv.calls["nvmlDeviceGetPowerUsage"] == 1  # only the GPU without the field used it
        with pytest.raises(NotSupported) as e:
            old.energy_mj()
        assert e.value.value == 3 and str(e.value) == "Not Supported"
        assert full.utilization() == pytest.approx(0.5)
        assert (full.power_limit_w(), full.default_power_limit_w(), full.power_limit_range_w()) == (700.0, 700.0, (200.0, 700.0))
        assert (full.clock_mhz("sm"), full.max_clock_mhz("sm")) == (1755, 1980)
        assert (full.temperature_c(), full.persistence_mode()) == (41, True)
        assert gpus.driver_version() == "580.65.06"


def test_a_lost_gpu_raises_gpu_lost_keeping_the_nvml_name_and_text():
    nv = FakeNvml([FakeGpu.of(H100, Constant(1.0), fail_at=5.0)], SimClock(10.0))
    with NvidiaGPUs.open("cuda", nv, {}) as gpus:
        g = gpus.gpus[0]
        assert g.has_counter is False  # already lost when probed
        with pytest.raises(GpuLost) as e:
            g.power_w()
        assert isinstance(e.value, DeviceError) and e.value.value == 15
        assert f"{type(e.value).__name__}: {e.value}" == "FakeNVMLError: GPU is lost"  # as records quoted it before
        assert g.power_limit_w() is None and g.processes() is None  # facts: simply unknown
        again = pickle.loads(pickle.dumps(e.value))
        assert isinstance(again, GpuLost)
        assert (type(again).__name__, str(again), again.value) == ("FakeNVMLError", "GPU is lost", 15)


def test_a_function_the_binding_lacks_is_not_supported():
    nv = FakeNvml([FakeGpu.of(H100, Constant(1.0))], SimClock(1.0))
    with Nvml(nv) as lib:
        with pytest.raises(NotSupported, match="this NVML binding has no nvmlDeviceGetNothing"):
            lib.call("nvmlDeviceGetNothing", 0)


# -- settings and restore -------------------------------------------------------------------------

def test_setters_read_back_what_is_in_force_and_restore_puts_it_back():
    nv = FakeNvml([FakeGpu.of(H100, Constant(1.0), supported_sm_clocks=(1200, 1410, 1755, 1980))], SimClock(1.0))
    with NvidiaGPUs.open("cuda", nv, {}) as gpus:
        g = gpus.gpus[0]
        assert g.set_power_limit_w(300.4) == 300.4
        assert g.lock_sm_clock(1500) == 1410  # the driver rounded to a supported clock: read back, not assumed
        assert g.restore(700.0, clocks_locked=True) == []
        assert (g.power_limit_w(), nv.gpus[0].locked_sm_clocks) == (700.0, None)


def test_setter_errors_are_typed():
    nv = FakeNvml([FakeGpu.of(H100, Constant(1.0))], SimClock(1.0), root=False)
    with NvidiaGPUs.open("cuda", nv, {}) as gpus:
        g = gpus.gpus[0]
        with pytest.raises(NotPermitted) as e:
            g.set_power_limit_w(300.0)
        assert e.value.value == 4 and str(e.value) == "Insufficient Permissions"
        assert g.restore(700.0, clocks_locked=True) == [
            "power limit back to 700 W failed (Insufficient Permissions)", "clock lock reset failed (Insufficient Permissions)"]
        nv.root = True
        with pytest.raises(InvalidArgument):
            g.set_power_limit_w(900.0)
        with pytest.raises(InvalidArgument):
            g.lock_sm_clock(5000)


def test_restore_after_a_setter_through_the_plugged_in_simulator(tmp_path):
    from effbench.hardware.gpu_control import RESTORE_FILE, open_gpu_control, restore_pending

    nv = FakeNvml([FakeGpu.of(H100, Constant(1.0), uuid="GPU-aaaa"), FakeGpu.of(H100, Constant(1.0), uuid="GPU-bbbb")],
                  SimClock(1.0))
    control = open_gpu_control("cuda:1", tmp_path, nvml=nv, env={"CUDA_VISIBLE_DEVICES": "1,0"})
    assert [g.uuid for g in control.devices.gpus] == ["GPU-aaaa"]
    assert {u: (a.power_limit_w, a.sm_clock_mhz) for u, a in control.apply(250.0, 1200).items()} == {"GPU-aaaa": (250.0, 1200)}
    saved = json.loads((tmp_path / RESTORE_FILE).read_text())["gpus"]
    assert saved == {"GPU-aaaa": {"name": H100, "power_limit_w": 700.0, "clocks_locked": True}}
    control.close()  # ... the run is killed: nothing restored, NVML released
    assert Nvml.references(nv) == 0 and nv.gpus[0].power_limit_w == 250.0
    with plugged(nv):  # the next run finds the file; the GPU is found by UUID, whatever CUDA shows
        note = restore_pending(tmp_path)
    assert note and note.startswith("restored the GPU settings")
    assert (nv.gpus[0].power_limit_w, nv.gpus[0].locked_sm_clocks, nv.gpus[1].power_limit_w) == (700.0, None, 700.0)
    assert not (tmp_path / RESTORE_FILE).exists() and Nvml.references(nv) == 0


def test_restore_names_a_gpu_this_machine_does_not_have(tmp_path):
    from effbench.errors import EffbenchError
    from effbench.hardware.gpu_control import RESTORE_FILE, restore_pending

    (tmp_path / RESTORE_FILE).write_text(json.dumps({"gpus": {"GPU-gone": {"power_limit_w": 700.0}}}))
    with pytest.raises(EffbenchError, match=r"failed: GPU-gone: not found \(NVML error 6\)"):
        restore_pending(tmp_path, FakeNvml([FakeGpu.of(H100, Constant(1.0))], SimClock(1.0)))
    assert (tmp_path / RESTORE_FILE).exists()


# -- the boundary ---------------------------------------------------------------------------------

def test_only_the_device_layer_imports_pynvml():
    pattern = re.compile(r"^\s*(import pynvml|from pynvml\b)", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "device" not in p.relative_to(ROOT).parts[:1] and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_cli_starts_without_pynvml():
    code = ("import sys\nfrom effbench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "import effbench.device, effbench.sensors.nvml, effbench.hardware.gpu_control\n"
            "sys.stderr.write('PYNVML:%s\\n' % ('pynvml' in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert "PYNVML:False" in p.stderr, p.stderr[-2000:]
