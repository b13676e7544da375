"""How fast the GPU projection answers on this machine: one ``effbench project ... --json`` call (a fresh
process each time, as a planner's script calls it), a full ``effbench plan`` for Llama 3.1 70B, and a
grid through the Python API (``project_grid``) in one call. Targets: under 1 s per project call and
under 10 s for the plan. ``python -m benchmarks run projection-speed``; results go to
benchmarks/results/<hardware>/projection_speed.json."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import results_dir, write_json

PROJECT = ["project", "-m", "arch:llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "4", "--concurrency", "64",
           "--workload", "lm-arena-chat", "--json"]
PLAN = ["plan", "--model", "arch:llama-3.1-70b", "--target-tokens-per-s", "5000", "--max-tpot-ms", "50",
        "--hardware", "h100-sxm,h200,b200,a100-80gb", "--top", "8"]
GRID = {"models": ["arch:llama-3.1-8b", "arch:llama-3.1-70b", "arch:qwen3-30b-a3b", "arch:qwen3-235b-a22b"],
        "profiles": ["h100-sxm", "h200", "b200"], "gpus": [1, 2, 4, 8], "concurrencies": [1, 8, 32, 128, 512]}
TARGETS = {"project_call_s": 1.0, "plan_call_s": 10.0}


# the installed entry point, as a user's script calls it (else the same code through this interpreter)
_ENTRY = shutil.which("effbench")
_EFFBENCH = [_ENTRY] if _ENTRY else [sys.executable, "-c", "from effbench.cli import main; main()"]


def _timed(args: list[str], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        p = subprocess.run([*_EFFBENCH, *args], capture_output=True, text=True, check=False)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"effbench {' '.join(args)} failed: {p.stderr.strip()[-300:]}")
    return out


def _summary(xs: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "runs": len(xs)}


def main(argv: list[str] | None = None) -> Path:
    from effbench.analysis.projection import project_grid

    _timed(PROJECT, 1)  # a first call warms the file cache: not what a planner's loop sees
    project = _summary(_timed(PROJECT, 7))
    plan = _summary(_timed(PLAN, 3))
    t0 = time.perf_counter()
    points = project_grid(GRID["models"], GRID["profiles"], GRID["gpus"], GRID["concurrencies"], workload="lm-arena-chat")
    grid_s = time.perf_counter() - t0
    data = {"suite": "projection_speed", "project_call": {"command": "effbench " + " ".join(PROJECT), **project},
            "plan_call": {"command": "effbench " + " ".join(PLAN), **plan},
            "grid": {**GRID, "points": len(points), "errors": sum(1 for p in points if p.error), "seconds": grid_s},
            "targets": {k: {"target_s": v, "met": (project if k == "project_call_s" else plan)["median_s"] < v}
                        for k, v in TARGETS.items()}}
    path = write_json(results_dir() / "projection_speed.json", data)
    print(f"{path}: project {project['median_s']:.2f} s (median of 7), plan {plan['median_s']:.2f} s, "
          f"grid of {len(points)} points in {grid_s:.2f} s")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
