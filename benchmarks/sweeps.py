"""Suites that are sweeps: (a) the default CPU sweep, (b) the GPU sweep, (e) time to result.

Sweeps write the standard run directory (run.json + results.jsonl) under
``results/<hardware>/<suite>-<timestamp>``; time to result adds a JSON summary beside it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import CONFIGS, results_dir, stamp, write_json


def run_sweep(config: str, suite: str, device: str = "cpu", **overrides: Any) -> Any:
    """One sweep through the public API, into this machine's results folder."""
    import effbench

    out = results_dir(device) / f"{suite}-{stamp()}"
    run = effbench.run(str(CONFIGS / config), out=str(out), **{k: v for k, v in overrides.items() if v is not None})
    print(f"wrote {run.path} ({len(run.records)} records)")
    return run


def cpu_sweep() -> Any:
    return run_sweep("cpu-default.yaml", "cpu-sweep")


def gpu_sweep(model: Optional[str]) -> Any:
    if not model:
        raise SystemExit("gpu-sweep: give the model with --model PATH (a 1B-8B model directory)")
    return run_sweep("gpu-h100.yaml", "gpu-sweep", device="cuda", model=model)


def time_to_result(from_dir: Optional[str] = None) -> dict[str, Any]:
    """How long each configuration needs before its CI95 is within the target; from a new sweep
    (configs/time-to-result.yaml) or an existing run directory."""
    import effbench

    t0 = time.perf_counter()
    if from_dir:
        records, path, wall = effbench.load_results(from_dir), Path(from_dir), None
        records = records.to_dict("records") if hasattr(records, "to_dict") else records
    else:
        run = run_sweep("time-to-result.yaml", "time-to-result")
        records, path, wall = [r.to_json_dict() for r in run.records], run.path, time.perf_counter() - t0
    rows = [_row(r if isinstance(r, dict) else r.to_json_dict()) for r in records]
    result = {"run_dir": str(path), "sweep_wall_s": wall, "configurations": rows}
    out = write_json(results_dir() / "time_to_result.json", result)
    for r in rows:
        print(f"{r['label']}: {r['stop_reason']} after {r['repeats']} repeats, {r['loop_s']:.0f} s, CI95 ±{r['ci95_rel']:.1%}")
    print(f"wrote {out}")
    return result


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    wl, stats = rec["workload"], rec["stats"]
    return {"label": f"{rec['quantization']['scheme']} bs={wl['batch_size']} p={wl['prompt_tokens']} n={wl['new_tokens']}",
            "stop_reason": stats.get("stop_reason"), "repeats": stats.get("repeats"),
            "loop_s": stats.get("duration_s"), "ci95_rel": stats.get("ci95_rel"),
            "reached_target": stats.get("stop_reason") == "ci-target", "interference": stats.get("interference"),
            "error": rec.get("error")}
