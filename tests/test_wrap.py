"""``effbench wrap``: a stand-in load generator (tests/wrap_tool.py) writes each supported results
format, built on real GuideLLM 0.8.1, AIPerf 0.13.0 and vLLM 0.32 (bench serve) outputs in
tests/data/wrap/, with known request timings; a test sensor draws 40 W during the idle baseline
and 100 W after it, so every window's energy is known exactly."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

import effbench.sensors
from effbench.cli import main
from effbench.measure.attribution import attribute
from effbench.measure.timeline import Segment, integrate, read_timeline
from effbench.results.store import read_run_dir
from effbench.scenarios.serving.client import Result
from effbench.sensors.base import EnergyReading, EnergySensor, SensorInfo, Window
from effbench.wrap.formats import ResultsError, detect, read_results
from tests.conftest import assert_one_line_error
from tests.wrap_tool import GAP, LIFE, OUTPUT, TTFT

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "wrap"
TOOL = str(ROOT / "tests" / "wrap_tool.py")
IDLE_W, LOAD_W = 40.0, 100.0
N = 20
STEADY_S = GAP * (N - 1) - LIFE  # first answer (send 0 + LIFE) to last send (GAP x (N - 1))
# Energy is exact but for the microseconds between a sensor call and the clock reads beside it: the
# recorder places each segment edge between two clock reads, which a busy machine can stretch. Over a
# steady window of many segments that is well under 0.1%; a command that kills itself leaves a short last
# segment, where a few hundred microseconds are up to 1%.
EDGE_REL = 1e-3
SHORT_EDGE_REL = 1e-2


class _StepWindow(Window):
    def __init__(self, watts: float) -> None:
        self.watts, self.t0 = watts, time.time()

    def stop(self) -> EnergyReading:
        d = time.time() - self.t0
        return EnergyReading(status="measured", sensor="step", duration_s=d, joules_by_domain={"gpu:0": self.watts * d},
                             coverage=1.0, uncertainty_rel=0.02)


class StepSensor(EnergySensor):
    """A perfect sensor: its first window (the idle baseline) draws IDLE_W, every later one LOAD_W."""

    name = "step"

    def __init__(self) -> None:
        self.opened = 0

    def info(self) -> SensorInfo:
        return SensorInfo("step", "energy-counter", True, "test sensor", ("gpu:0",), None, 0.02, "test")

    def start_window(self) -> Window:
        self.opened += 1
        return _StepWindow(IDLE_W if self.opened == 1 else LOAD_W)


@pytest.fixture(autouse=True)
def step_sensor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(effbench.sensors.SENSORS.entries, "step", StepSensor)


def wrap(capsys: pytest.CaptureFixture[str], out: Path, *command: str, options: tuple[str, ...] = ()) -> tuple[int, str]:
    """``effbench wrap`` in this process: (exit code, stderr)."""
    args = ["wrap", "--out", str(out), "--sensor", "step", "--device", "cpu", "--idle-s", "0.2", "--segment-s", "0.1",
            *options, "--", *command]
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def record(out: Path) -> dict:
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert len(lines) == 1
    return lines[0]


# -- end to end, every format ----------------------------------------------------------------
@pytest.mark.parametrize("fmt,target", [("csv", "r.csv"), ("vllm", "r.json"), ("guidellm", "b.json"), ("aiperf", "art")])
def test_energy_over_the_tools_steady_window_is_known_exactly(tmp_path, capsys, fmt, target):
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, fmt, str(tmp_path / target))
    assert code == 0, err
    assert "Traceback" not in err
    rec = record(tmp_path / "run")
    s, e = rec["serving"], rec["energy"]
    assert s["tool"]["format"] == fmt and s["completed"] == N
    # the steady window is the serving scenario's: first answer to last send
    assert s["steady"]["window_s"] == pytest.approx(STEADY_S, abs=2e-3)
    assert e["window_s"] == pytest.approx(STEADY_S, abs=2e-3)
    tol = EDGE_REL * LOAD_W * e["window_s"]
    assert e["joules_total"] == pytest.approx(LOAD_W * e["window_s"], abs=tol)
    assert e["idle_power_w"] == pytest.approx(IDLE_W, rel=1e-6)
    assert e["joules_dynamic"] == pytest.approx((LOAD_W - IDLE_W) * e["window_s"], abs=tol)
    assert e["joules_per_token"] == pytest.approx(e["joules_total"] / s["steady"]["output_tokens"])
    assert e["joules_per_request"] == pytest.approx(e["joules_total"] / s["steady"]["requests"])
    assert e["status"] == "measured" and e["coverage"] == pytest.approx(1.0, abs=0.02)
    assert e["uncertainty_rel"] >= 0.02 and [w["phase"] for w in e["windows"]] == ["steady", "whole"]
    # whole point: N requests over first send to last answer, as the tools define it
    whole_s = GAP * (N - 1) + LIFE
    assert s["whole"]["window_s"] == pytest.approx(whole_s, abs=2e-3)
    assert s["whole"]["requests_per_s"] == pytest.approx(N / whole_s, rel=1e-2)
    assert s["whole"]["output_tokens_per_s"] == pytest.approx(N * OUTPUT / whole_s, rel=1e-2)
    assert s["e2e_ms"]["p50"] == pytest.approx(LIFE * 1000, abs=2)
    assert s["ttft_ms"]["p50"] == pytest.approx(TTFT * 1000, abs=2)
    # every joule of the load (constant power, requests back to back) goes to some request
    att = e["attribution"]
    assert att["joules_attributed"] == pytest.approx(LOAD_W * whole_s, rel=0.02)
    assert att["idle_share"] == pytest.approx(IDLE_W / LOAD_W, rel=0.02)
    assert att["joules_per_request"]["n"] == N
    j = att["joules_per_request"]
    assert j["ci95"]["p50"][0] <= j["p50"] <= j["ci95"]["p50"][1]
    # the timeline covers the command and is on disk
    segs = read_timeline(tmp_path / "run" / "power_timeline.jsonl")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert segs and min(x.start_unix for x in segs) <= run["wrap"]["start_unix"] + 0.05
    assert max(x.end_unix for x in segs) >= run["wrap"]["end_unix"] - 0.05
    _, records = read_run_dir(tmp_path / "run")  # what report, compare and plan read
    assert records[0].serving is not None and records[0].serving.steady is not None


def test_tool_figures_are_kept_as_the_tool_computed_them(tmp_path, capsys):
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, "vllm", str(tmp_path / "r.json"))
    assert code == 0, err
    tool = record(tmp_path / "run")["serving"]["tool"]
    saved = json.loads((DATA / "vllm-0.32.0-bench-serve.json").read_text())
    assert tool["name"] == "vllm-bench-serve" and tool["figures"]["ttft_ms"]["p50"] == saved["p50_ttft_ms"]
    assert tool["figures"]["request_throughput"] == saved["request_throughput"]
    assert "monotonic" in tool["clock"]  # vllm's perf_counter times placed on the wall clock


# -- the real tools' files -------------------------------------------------------------------
@pytest.mark.parametrize("path,tool,version,rps_key,tol", [
    ("guidellm-0.8.1-benchmarks.json", "guidellm", "0.8.1", "requests_per_second", 1e-9),
    ("aiperf-0.13.0/profile_export.jsonl", "aiperf", "0.13.0", "request_throughput", 0.03),
    ("aiperf-0.13.0/profile_export_aiperf.json", "aiperf", "0.13.0", "request_throughput", 0.03),
    ("vllm-0.32.0-bench-serve.json", "vllm-bench-serve", None, "request_throughput", 0.01),
])
def test_real_tool_outputs_read_and_agree_with_the_tools(path, tool, version, rps_key, tol):
    from effbench.scenarios.serving.metrics import whole_figures
    from effbench.wrap.convert import Placement, to_results

    res = read_results(DATA / path)
    assert (res.tool, res.version) == (tool, version)
    bench = res.benchmarks[0]
    assert len(bench.requests) == 16 and bench.concurrency == 4
    results, _ = to_results(bench, Placement(0.0, "as stored"))
    whole = whole_figures(results)
    assert whole is not None
    # the whole-point request rate is the tools' own definition (AIPerf counts from its first credit)
    assert whole["requests_per_s"] == pytest.approx(bench.figures[rps_key], rel=tol)


def test_results_from_another_run_are_not_placed(tmp_path, capsys):
    """A real file's requests lie outside this command's run: a whole-run record and one line."""
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, "none", str(tmp_path / "x"),
                     options=("--results", str(DATA / "vllm-0.32.0-bench-serve.json")))
    assert code == 0
    assert "do not lie inside the wrapped command's run" in err
    rec = record(tmp_path / "run")
    assert rec["serving"]["steady"] is None and rec["energy"]["joules_total"] > 0


# -- exit codes, signals, bad input ----------------------------------------------------------
@pytest.mark.parametrize("extra,expected", [((), 0), (("--exit", "3"), 3), (("--kill-self",), 128 + signal.SIGTERM)])
def test_exit_code_passes_through_and_the_timeline_is_kept(tmp_path, capsys, extra, expected):
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, "none", str(tmp_path / "x"), *extra)
    assert code == expected
    assert "Traceback" not in err
    assert read_timeline(tmp_path / "run" / "power_timeline.jsonl")
    rec = record(tmp_path / "run")  # a whole-run energy record even so
    assert rec["energy"]["joules_total"] == pytest.approx(LOAD_W * rec["energy"]["window_s"], rel=SHORT_EDGE_REL)
    lines = [x for x in err.splitlines() if x.startswith("effbench: error:")]
    if expected:
        assert len(lines) == 1 and ("SIGTERM" in lines[0] if expected > 128 else "exited with 3" in lines[0])
        assert rec["error"]
    else:
        assert not lines and "wrote a whole-run energy record" in err


def test_a_command_that_does_not_exist(tmp_path):
    from tests.conftest import run_effbench

    p = run_effbench("wrap", "--out", str(tmp_path / "run"), "--sensor", "none", "--", "no-such-command-effbench")
    assert p.returncode == 127
    assert_one_line_error(p, "command not found: no-such-command-effbench")


def test_garbage_results_file(tmp_path, capsys):
    bad = tmp_path / "garbage.json"
    bad.write_text("{ this is not json")
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, "none", str(tmp_path / "x"),
                     options=("--results", str(bad)))
    assert code == 0 and "Traceback" not in err
    assert "is not JSON" in err and "whole-run energy record" in err
    assert record(tmp_path / "run")["serving"]["tool"]["missing"]


def test_out_of_order_timestamps(tmp_path, capsys):
    code, err = wrap(capsys, tmp_path / "run", sys.executable, TOOL, "csv", str(tmp_path / "r.csv"), "--reversed")
    assert code == 0
    assert "timestamps out of order" in err and "Traceback" not in err
    assert record(tmp_path / "run")["energy"]["joules_total"] > 0


def test_unknown_format_is_one_line(tmp_path):
    with pytest.raises(ResultsError, match="not results of GuideLLM"):
        (tmp_path / "x.json").write_text('{"hello": 1}')
        detect(tmp_path / "x.json")


def test_sigterm_to_effbench_reaches_the_command(tmp_path):
    """effbench forwards SIGTERM to the command (in its own process group) and exits with its code."""
    out = tmp_path / "run"
    marker = tmp_path / "got"
    p = subprocess.Popen([sys.executable, "-m", "effbench", "wrap", "--out", str(out), "--sensor", "none", "--idle-s", "0",
                          "--", sys.executable, TOOL, "wait", str(marker)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 7, err
    assert marker.read_text() == "SIGTERM"
    assert (out / "power_timeline.jsonl").is_file() and "Traceback" not in err


# -- the pieces ------------------------------------------------------------------------------
def test_integrate_is_pro_rata_and_fills_gaps_honestly():
    segs = [Segment(0.0, 1.0, 10.0, "measured", 0.01), Segment(1.0, 2.0, 10.0, "measured", 0.01),
            Segment(2.5, 3.0, 5.0, "measured", 0.01)]
    whole = integrate(segs, 0.5, 1.5)
    assert whole.joules == pytest.approx(10.0) and whole.coverage == 1.0
    assert whole.uncertainty_rel == pytest.approx(0.01)  # steady power: no edge error
    gap = integrate(segs, 1.5, 3.0)  # 0.5 s of it unobserved: filled at the mean, counted as uncertain
    assert gap.coverage == pytest.approx(2 / 3)
    assert gap.joules == pytest.approx(10.0 * 1.5)
    assert gap.uncertainty_rel > 0.3
    assert integrate(segs, 5.0, 6.0).status == "unavailable"


def test_attribution_splits_by_tokens_in_flight():
    """Two requests decoding at once share each second by their tokens; a lone one takes it all."""
    def res(i: int, start: float, chunks: list[float], prompt: Optional[int] = None) -> Result:
        r = Result(i, False, start, start=start, end=chunks[-1], chunk_times=chunks,
                   usage_completion_tokens=len(chunks), usage_prompt_tokens=prompt)
        return r

    a = res(0, 0.0, [1.0, 2.0, 3.0, 4.0])  # one token a second
    b = res(1, 2.0, [2.5, 3.0, 3.5, 4.0])  # two a second, from t=2
    segs = [Segment(float(t), float(t + 1), 100.0, "measured", 0.0) for t in range(4)]
    att = attribute([a, b], segs, idle_power_w=40.0)
    # 0-2 s: a alone (200 J); 2-4 s: a 1 token/s, b 2 tokens/s -> a 1/3, b 2/3 of 200 J
    assert att.per_request[0] == pytest.approx(200 + 200 / 3)
    assert att.per_request[1] == pytest.approx(400 / 3)
    assert att.idle == pytest.approx(160)
    assert att.unattributed == 0
