"""``python -m benchmarks.gpu_validation --budget SECONDS``: the parts that fit, most valuable first,
and a progress file written after each part (the CPU-only logic; the loads need a GPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import nvml_sensor

from benchmarks.gpu_validation.suite import BUDGET_PARTS, Progress, measure_idle_power, plan_budget
from effbench.sensors.simulated import Constant, FakeGpu, SimClock

ROOT = Path(__file__).resolve().parents[2]


def test_a_360_second_budget_runs_every_part_in_order_of_value():
    plan = plan_budget(360.0)
    assert plan.planned == ["idle", "energy", "bf16", "power-limits"] and plan.skipped == {}
    assert sum(cost for _, cost in BUDGET_PARTS) + 20.0 <= 360.0


def test_a_small_budget_keeps_the_most_valuable_parts_and_says_why_others_were_skipped():
    plan = plan_budget(120.0)
    assert plan.planned == ["idle", "energy"]
    assert plan.skipped["bf16"].startswith("does not fit the budget (150 s needed")
    assert plan_budget(10.0).planned == []


def test_progress_is_written_after_every_part(tmp_path):
    clock = SimClock(0.0)
    progress = Progress(tmp_path, 360.0, clock)
    clock.advance(30.0)
    progress.record("idle", {"joules": 1.0})
    data = json.loads((tmp_path / "budget.json").read_text())
    assert data["parts"]["idle"] == {"finished_at_s": 30.0, "result": {"joules": 1.0}}
    assert progress.left_s() == 330.0


def test_idle_power_on_the_simulator():
    clock = SimClock(10.0)
    sensor = nvml_sensor([FakeGpu.of("NVIDIA H100 80GB HBM3", Constant(70.0))], clock, polling=False)
    r = measure_idle_power(sensor, 20.0, sleep=clock.advance)
    assert r["status"] == "measured" and abs(r["mean_power_w"] - 70.0) < 1.0


def test_budget_without_a_gpu_skips_in_one_line_and_a_bad_budget_is_refused():
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_validation", "--budget", "360"], capture_output=True,
                       text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.startswith("gpu_validation: skipped,")
    bad = subprocess.run([sys.executable, "-m", "benchmarks.gpu_validation", "--budget", "-5"], capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "--budget -5: give a positive number of seconds" in bad.stderr
