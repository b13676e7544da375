"""Recorded power traces: nvidia-smi CSV and plain timestamp,watts."""
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from effbench.errors import EffbenchError
from effbench.sensors.simulated import Constant, Ramp, nvidia_smi_csv, spiky, square
from effbench.sensors.trace import integrate_trace, load_trace, parse_time

T0 = 1_800_000_000.0  # epoch seconds of the first sample
WAVEFORMS = {
    "square": square(100.0, 300.0, 2.0),
    "ramp": Ramp(60.0, 350.0, 30.0),
    "spiky": spiky(80.0, 400.0, 1.0, 0.2, phase_s=0.013),
}


def _write(tmp_path, text, name="trace.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(WAVEFORMS))
def test_nvidia_smi_trace_of_a_known_waveform_within_half_a_percent(tmp_path, name):
    wf = WAVEFORMS[name]
    p = _write(tmp_path, nvidia_smi_csv([wf], T0, 60.0, 0.05))  # -lms 50
    t = load_trace(p)
    assert t.kind == "nvidia-smi" and list(t.series) == ["gpu:0"]
    start, end = T0 + 3.3, T0 + 47.9
    te = integrate_trace(t, start, end)
    truth = wf.energy(3.3, 47.9)
    assert abs(te.joules - truth) / truth < 0.005
    assert te.coverage == 1.0 and te.sampling_interval_s == pytest.approx(0.05, rel=1e-3)
    assert te.mean_power_w == pytest.approx(te.joules / 44.6)


def test_multi_gpu_trace_sums_or_selects(tmp_path):
    p = _write(tmp_path, nvidia_smi_csv([Constant(100.0), Constant(250.0)], T0, 10.0, 0.1))
    t = load_trace(p)
    assert integrate_trace(t).joules == pytest.approx(3500.0)
    assert integrate_trace(t, gpu=1).joules == pytest.approx(2500.0)
    with pytest.raises(EffbenchError, match="no GPU 3"):
        integrate_trace(t, gpu=3)


def test_noheader_nounits_and_not_available_values(tmp_path):
    text = nvidia_smi_csv([Constant(50.0)], T0, 10.0, 0.1, header=False).replace(" W\n", "\n")
    lines = text.splitlines()
    for i in range(30, 60):  # 3 s of [N/A] from the driver
        lines[i] = lines[i].rsplit(",", 1)[0] + ", [N/A]"
    t = load_trace(_write(tmp_path, "\n".join(lines) + "\n"))
    te = integrate_trace(t)
    assert te.joules == pytest.approx(500.0)
    assert 0.7 < te.coverage < 0.8


@pytest.mark.parametrize("stamp", [lambda t: f"{t:.3f}", lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()])
def test_plain_timestamp_watts_csv(tmp_path, stamp):
    rows = ["timestamp,watts"] + [f"{stamp(T0 + k * 0.5)},{200 + k}" for k in range(21)]
    t = load_trace(_write(tmp_path, "\n".join(rows) + "\n"))
    assert t.kind == "plain" and list(t.series) == ["meter"]
    assert integrate_trace(t).joules == pytest.approx(10 * 210.0)  # a line: mean 210 W over 10 s


@pytest.mark.parametrize("text,where", [
    ("timestamp,watts\n1800000000,100\n1800000001,abc\n", ":3:"),
    ("timestamp,watts\n1800000000,100\nnoon,100\n", ":3: 'noon' is not a time"),
    ("timestamp, index, power.draw [W]\n2026/11/23 21:05:01.123, 0\n", ":2: expected 3 columns"),
    ("a,b,c,d\n1,2,3,4\n", ":1: expected a header"),
    ("", "is empty"),
    ("timestamp,watts\n1800000000,-5\n", ":2:"),
])
def test_malformed_traces_name_the_line(tmp_path, text, where):
    with pytest.raises(EffbenchError, match=None) as e:
        load_trace(_write(tmp_path, text))
    assert where in str(e.value) and "\n" not in str(e.value)


def test_parse_time_forms():
    assert parse_time("1800000000.5") == 1800000000.5
    assert parse_time("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=timezone.utc).timestamp()
    assert parse_time("2027/01/15 08:00:00.250") == pytest.approx(datetime(2027, 1, 15, 8, 0, 0, 250000).timestamp())


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from effbench.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_integrate_prints_joules_mean_watts_duration_coverage(tmp_path):
    wf = WAVEFORMS["ramp"]
    p = _write(tmp_path, nvidia_smi_csv([wf], T0, 40.0, 0.05))
    start = datetime.fromtimestamp(T0 + 5, timezone.utc).isoformat()
    r = _cli("sensors", "integrate", str(p), "--start", start, "--end", str(T0 + 35), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["joules"] == pytest.approx(wf.energy(5, 35), rel=0.005)
    assert out["duration_s"] == pytest.approx(30.0) and out["coverage"] == 1.0
    assert out["mean_power_w"] == pytest.approx(out["joules"] / 30.0)
    table = _cli("sensors", "integrate", str(p), "--gpu", "0")
    assert table.returncode == 0 and "joules" in table.stdout and "coverage 100.0%" in table.stdout


def test_cli_integrate_errors_are_one_line(tmp_path):
    p = _write(tmp_path, "timestamp,watts\n1800000000,100\nxx,1\n")
    r = _cli("sensors", "integrate", str(p))
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and ":3:" in r.stderr and "Traceback" not in r.stderr


def test_cli_integrate_no_or_low_coverage_and_out_of_range_times(tmp_path):
    p = _write(tmp_path, nvidia_smi_csv([Constant(100.0)], T0, 10.0, 0.05))
    r = _cli("sensors", "integrate", str(p), "--start", str(T0 + 3600), "--end", str(T0 + 3700))
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "no samples in the window" in r.stderr, r.stderr
    assert "covers" in r.stderr and "Traceback" not in r.stderr
    r = _cli("sensors", "integrate", str(p), "--start", str(T0 + 5), "--end", str(T0 + 30), "--json")
    assert r.returncode == 0 and "warning" in r.stderr and "covers only" in r.stderr, r.stderr
    assert json.loads(r.stdout)["coverage"] < 0.5
    for bad in ("1e12", "-1e12"):
        r = _cli("sensors", "integrate", str(p), "--start", bad)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and "--start" in r.stderr and "out of range" in r.stderr, r.stderr
