"""The record's energy section from windows, and attaching a trace to a finished run."""
import json

import pytest

from effbench.backends.base import OutputSize
from effbench.measure.attach import BACKUP_FILE, attach_trace
from effbench.measure.energy import energy_section
from effbench.measure.loop import LoopResult, WindowResult, Workload
from effbench.results.schema import BackendInfo, Energy, ModelInfo, QuantizationInfo, Record, WorkloadInfo
from effbench.results.store import RunStore
from effbench.sensors.base import EnergyReading
from effbench.sensors.simulated import Constant, Pulses, nvidia_smi_csv
from effbench.sensors.trace import load_trace
from effbench.stats import t95

B, N = 2, 8
T0 = 1_800_000_000.0


def _win(start, seconds, calls, watts, **kw):
    reading = EnergyReading("measured", "nvml", seconds, {"gpu:0": watts * seconds}, 0.1, kw.pop("coverage", 1.0),
                            kw.pop("unc", 0.05), error=kw.pop("error", None))
    return WindowResult(seconds / calls, calls, reading, kw.pop("short", False), start, start + seconds)


def _loop(windows_prefill, windows_full):
    r = LoopResult(Workload(B, 16, N), prefill=windows_prefill, full=windows_full)
    r.output = OutputSize(tokens=B * N, chars=B * N * 5)
    return r


def test_windows_are_recorded_and_the_split_follows_the_brief():
    pre = [_win(T0 + 10 * i, 1.0, 10, 200.0) for i in range(3)]  # prefill 0.1 s/call at 200 W
    full = [_win(T0 + 10 * i + 2, 1.2, 2, 250.0) for i in range(3)]  # full 0.6 s/call at 250 W
    e = energy_section(_loop(pre, full), idle_power_w=50.0)
    assert e.joules_total == pytest.approx(150.0) and e.joules_prefill == pytest.approx(20.0)
    assert e.joules_decode == pytest.approx(130.0)
    assert e.decode_joules_per_token == pytest.approx(130.0 / (B * (N - 1)))
    assert e.tokens_per_joule == pytest.approx(B * N / 150.0)
    assert e.joules_dynamic == pytest.approx(150.0 - 50.0 * 0.6)
    assert e.tokens_per_joule_dynamic == pytest.approx(B * N / 120.0)
    assert e.joules_per_kchar == pytest.approx(150.0 / (B * N * 5 / 1000))
    assert e.joules_by_domain == pytest.approx({"gpu:0": 150.0})
    assert e.uncertainty_rel == pytest.approx(0.05)  # no spread across repeats: the sensor's own
    assert [w["phase"] for w in e.windows] == ["prefill"] * 3 + ["full"] * 3
    assert e.windows[3] == {"phase": "full", "start": T0 + 2, "end": T0 + 3.2, "calls": 2, "joules": pytest.approx(300.0)}
    assert e.flags == []


def test_repeat_spread_and_sensor_uncertainty_combine():
    full = [_win(T0 + i, 1.0, 1, w) for i, w in enumerate((90.0, 100.0, 110.0))]
    e = energy_section(_loop([], full), None)
    ci = t95(2) * 10.0 / 3**0.5 / 100.0
    assert e.uncertainty_rel == pytest.approx((ci**2 + 0.05**2) ** 0.5)


def test_flags_short_windows_low_coverage_and_failed_sensors():
    full = [_win(T0, 0.5, 1, 100.0, short=True, coverage=0.8, error="NVMLError: GPU is lost (1 failed reads)")]
    e = energy_section(_loop([], full), None)
    # one repeat: its spread is unknown, which is flagged too
    assert e.flags == ["low-coverage", "sensor-failed", "short-window", "single-repeat"]
    assert e.status == "measured"


def test_an_unavailable_window_makes_the_record_unavailable_with_the_reason():
    bad = WindowResult(1.0, 1, EnergyReading("unavailable", "nvml", 1.0, error="NVML energy counter failed mid-window"), False,
                       T0, T0 + 1)
    e = energy_section(_loop([], [_win(T0, 1.0, 1, 100.0), bad]), None)
    assert e.status == "unavailable" and e.joules_total is None and "failed mid-window" in e.basis


def _run_dir(tmp_path, energy: Energy):
    store = RunStore(tmp_path / "run")
    store.write_run({"schema_version": 1, "run_id": "r1", "idle_baseline": {"start_unix": T0, "end_unix": T0 + 5}})
    rec = Record(run_id="r1", config_id="c1", model=ModelInfo(id="m"), backend=BackendInfo(name="fake"),
                 quantization=QuantizationInfo(scheme="fp32"),
                 workload=WorkloadInfo(batch_size=B, prompt_tokens=16, new_tokens=N, prompt_set="en"), energy=energy)
    failed = Record(run_id="r1", config_id="c2", model=ModelInfo(id="m"), backend=BackendInfo(name="fake"),
                    quantization=QuantizationInfo(scheme="fp32"),
                    workload=WorkloadInfo(batch_size=4, prompt_tokens=16, new_tokens=N, prompt_set="en"), error="out of memory")
    store.append(rec)
    store.append(failed)
    return store


def test_attach_recomputes_each_record_from_the_trace_over_its_windows(tmp_path):
    # idle 40 W for the first 10 s, then 300 W while the workload ran
    wave = Pulses(low=300.0, high=40.0, period_s=1e6, on_s=10.0)
    pre = [_win(T0 + 10 + 4 * i, 1.0, 10, 1.0) for i in range(3)]
    full = [_win(T0 + 12 + 4 * i, 1.5, 3, 1.0) for i in range(3)]
    e = energy_section(_loop(pre, full), idle_power_w=None)
    store = _run_dir(tmp_path, e)
    trace_path = tmp_path / "trace.csv"
    trace_path.write_text(nvidia_smi_csv([wave], T0, 30.0, 0.05))
    report = attach_trace(store.path, load_trace(trace_path))
    assert report.updated == 1 and report.skipped and report.idle_power_w == pytest.approx(40.0, rel=0.01)
    new = [json.loads(line) for line in store.results_file.read_text().splitlines()]
    en = new[0]["energy"]
    assert en["sensor"] == "trace" and en["status"] == "measured"
    assert en["joules_total"] == pytest.approx(300.0 * 0.5, rel=1e-3)
    assert en["joules_prefill"] == pytest.approx(300.0 * 0.1, rel=1e-3)
    assert en["joules_dynamic"] == pytest.approx((300.0 - 40.0) * 0.5, rel=0.01)
    assert en["replaced"]["joules_total"] == pytest.approx(0.5)
    assert new[1]["error"] == "out of memory"
    assert (store.path / BACKUP_FILE).is_file()
    assert json.loads(store.run_file.read_text())["attached_trace"]["kind"] == "nvidia-smi"


def _attach_setup(tmp_path, trace_t0=T0, trace_s=30.0):
    full = [_win(T0 + 12 + 4 * i, 1.5, 3, 1.0) for i in range(3)]
    store = _run_dir(tmp_path, energy_section(_loop([], full), idle_power_w=None))
    trace_path = tmp_path / "trace.csv"
    trace_path.write_text(nvidia_smi_csv([Constant(100.0)], trace_t0, trace_s, 0.05))
    return store, load_trace(trace_path)


def test_attach_refuses_a_trace_that_misses_every_window(tmp_path):
    store, trace = _attach_setup(tmp_path, trace_t0=T0 + 3600)  # an hour off: a time-zone mistake
    before = store.results_file.read_bytes()
    with pytest.raises(Exception, match=r"the trace spans .* but the run's windows are .*wrong clock or time zone") as e:
        attach_trace(store.path, trace)
    assert type(e.value).__name__ == "EffbenchError" and "\n" not in str(e.value)
    assert store.results_file.read_bytes() == before and not (store.path / BACKUP_FILE).exists()


def test_attach_counts_records_that_become_unavailable(tmp_path):
    store, trace = _attach_setup(tmp_path, trace_s=14.0)  # ends during the first window; later ones have no samples
    report = attach_trace(store.path, trace)
    assert report.updated == 1 and report.unavailable == 1
    import subprocess
    import sys

    store, trace = _attach_setup(tmp_path / "cli", trace_s=14.0)
    r = subprocess.run([sys.executable, "-m", "effbench", "sensors", "attach", str(store.path), trace.path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "warning: 1 of 1 record(s) now have unavailable energy" in r.stderr, r.stderr


def test_attach_keeps_records_appended_meanwhile_and_refuses_other_changes(tmp_path, monkeypatch):
    import effbench.measure.attach as attach

    store, trace = _attach_setup(tmp_path)
    extra = store.results_file.read_text().splitlines()[1] + "\n"
    real = attach.reattributed

    def appending(*a, **kw):  # another process appends a record while the trace is attached
        with store.results_file.open("a") as f:
            f.write(extra)
        return real(*a, **kw)

    monkeypatch.setattr(attach, "reattributed", appending)
    attach_trace(store.path, trace)
    lines = store.results_file.read_text().splitlines()
    assert len(lines) == 3 and lines[2] == extra.strip() and json.loads(lines[0])["energy"]["sensor"] == "trace"

    store, trace = _attach_setup(tmp_path / "b")
    before = store.results_file.read_bytes()

    def truncating(*a, **kw):
        store.results_file.write_text("")
        return real(*a, **kw)

    monkeypatch.setattr(attach, "reattributed", truncating)
    with pytest.raises(Exception, match="changed while the trace was attached"):
        attach_trace(store.path, trace)
    assert store.results_file.read_bytes() == b"" and not (store.path / BACKUP_FILE).exists() and before
