"""A results directory is self-contained: plan and report describe a run's hardware only from what
the run stored, never from the machine they run on (docs/method.md)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import psutil
import pytest

import effbench.hardware as hw_pkg
import effbench.hardware.cpu as cpu_mod
import effbench.hardware.detection as detection_mod
from effbench.cli import main

DATA = Path(__file__).parent / "data"
RUN = DATA / "r1_cpu_fp32"
REPORT_RUN = DATA / "report_run"
PLAN = ["plan", "--target-tokens-per-s", "500", "--hardware", "cpu-amd-epyc,l4,h100-sxm", "--project-from-cpu", "--json"]


def _fake_host(monkeypatch: pytest.MonkeyPatch, name: str, cores: int) -> None:
    """This process now runs on another CPU with another core count, and may not measure anything."""
    for mod in (cpu_mod, detection_mod, hw_pkg):
        monkeypatch.setattr(mod, "cpu_name", lambda: name)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: cores)

    def no_measuring(*a: object, **k: object) -> None:
        raise AssertionError("a stored run was described by measuring this machine")

    monkeypatch.setattr(cpu_mod, "measure_bandwidth_gbps", no_measuring)
    monkeypatch.setattr(cpu_mod, "local_cpu_profile", no_measuring)
    monkeypatch.setattr(detection_mod, "local_cpu_profile", no_measuring)


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]):
    """``effbench ARGS`` in this process (so the faked host applies), as the console script runs it:
    (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def _report_text(out: Path) -> str:
    md = (out / "report.md").read_text()
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:+]+", "<time>", md)  # the generation time differs


@pytest.mark.parametrize("host", [("AMD EPYC", 2), ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", 7)])
def test_plan_and_report_do_not_depend_on_the_host(invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   host: tuple[str, int]) -> None:
    _fake_host(monkeypatch, *host)
    code, out, err = invoke(*PLAN, "--results", str(RUN))
    assert code == 0, err
    plan = json.loads(out)
    hw = {o["hardware"]: o for o in plan["options"]}
    assert hw["cpu-amd-epyc"]["basis"] == "measured" and hw["cpu-amd-epyc"]["memory_gb"] == 25.28  # the stored profile
    assert {o["projected_from"] for o in plan["options"] if o["basis"] == "projected"} == {"cpu-amd-epyc"}
    code, _, err = invoke("report", str(REPORT_RUN), "--out", str(tmp_path / "rep"))
    assert code == 0 and "warning" not in err, err
    md = _report_text(tmp_path / "rep")
    assert "memory bandwidth 31.0 GB/s" in md and "Xeon" not in md and "Xeon" not in out
    # the same answer on both fake hosts: the first parametrisation stores it, the second compares
    ref = tmp_path.parent / "self-contained-ref.json"
    snapshot = {"plan": plan, "report": md}
    if ref.is_file():
        assert json.loads(ref.read_text()) == snapshot
    else:
        ref.write_text(json.dumps(snapshot))


def _legacy_run(tmp_path: Path, source: Path = RUN) -> Path:
    run = tmp_path / "legacy"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("report"))
    meta = json.loads((run / "run.json").read_text())
    del meta["hardware"]["resolved"]
    (run / "run.json").write_text(json.dumps(meta))
    return run


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_plan_of_a_run_without_a_stored_profile_is_one_line(invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_host(monkeypatch, "AMD EPYC", 2)  # even on the very machine it ran on, no guess
    run = _legacy_run(tmp_path)
    code, _, err = invoke(*PLAN, "--results", str(run))
    line = _one_error_line(err)
    assert code == 2 and f"run {run} stores no hardware profile" in line and "--run-hardware ID" in line and ">= 0.2.0" in line
    # the user says what it ran on: a profile YAML, which is then used (and only for that run)
    profile = tmp_path / "epyc.yaml"
    profile.write_text("id: my-epyc\nname: My EPYC\nvendor: amd\nkind: cpu\nmemory_gb: 16\nmemory_bandwidth_gbps: 20\ntdp_w: "
                       "30\n")
    code, out, err = invoke("plan", "--target-tokens-per-s", "500", "--json", "--no-projections", "--results", str(run),
                             "--run-hardware", str(profile))
    assert code == 0, err
    assert {(o["hardware"], o["memory_gb"]) for o in json.loads(out)["options"]} == {("my-epyc", 16)}


def test_report_of_a_run_without_a_stored_profile_warns_and_draws_no_roofline(invoke, tmp_path: Path) -> None:
    run = _legacy_run(tmp_path, REPORT_RUN)
    code, _, err = invoke("report", str(run), "--out", str(tmp_path / "rep"))
    assert code == 0
    assert "stores no hardware profile: pass --hardware ID" in _one_error_line(err)
    assert not list((tmp_path / "rep" / "plots").glob("roofline-*"))
    code, _, err = invoke("report", str(run), "--out", str(tmp_path / "rep2"), "--hardware", "h100-sxm")
    assert code == 0 and not err.strip(), err
    assert "Profile h100-sxm" in (tmp_path / "rep2" / "report.md").read_text()


def test_report_without_run_json_says_unknown(invoke, tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    shutil.copy(REPORT_RUN / "results.jsonl", run / "results.jsonl")
    code, _, err = invoke("report", str(run / "results.jsonl"), "--out", str(tmp_path / "rep"))  # the file is accepted
    assert code == 0, err
    assert "has no run.json" in err and "stores no hardware profile" in err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "effbench ?" not in md and "unnamed CPU" not in md and "--idle-s 0" not in md
    assert "unknown (the run has no run.json)" in md


def test_plan_input_errors(invoke, tmp_path: Path) -> None:
    code, _, err = invoke(*PLAN, "--results", str(RUN), "--price", "h100=2")
    assert code == 2 and "--price names unknown hardware profile 'h100'" in _one_error_line(err)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    code, _, err = invoke(*PLAN, "--results", str(empty))
    line = _one_error_line(err)
    assert code == 2 and "holds no records" in line and "None" not in line
    code, _, err = invoke("plan", "--target-tokens-per-s", "500", "--max-tpot-ms", "0.001", "--results", str(RUN))
    assert code == 1 and "no option meets the limits" in err.splitlines()[-1] and "TPOT" in err.splitlines()[-1]


def test_plan_reads_several_directories_after_one_option_and_results_files(invoke, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(RUN, other)
    code, out, err = invoke("plan", "--target-tokens-per-s", "500", "--json", "--no-projections",
                             "--results", str(RUN), str(other / "results.jsonl"))
    assert code == 0, err
    assert len(json.loads(out)["options"]) == 6  # 3 configurations from each of the two runs
