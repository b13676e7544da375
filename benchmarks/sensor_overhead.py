"""Does sampling disturb the workload? Throughput of a CPU workload with and without each sensor.

Conditions: no sensor; every sensor available here (a window open around the work); and the
NVML polling thread itself, driven by the simulated NVML on real time at 100 ms and 10 ms, so the
thread's cost is measured even on a machine without a GPU (real NVML reads cost more per call
than the simulator's, tens of microseconds, which at 100 ms is still far below 0.1%). Conditions
are interleaved over several rounds; the median of each is compared with no sensor.

    flock /tmp/effbench-cpu.lock python benchmarks/sensor_overhead.py [--seconds 2] [--rounds 5]

Writes JSON under benchmarks/results/<cpu>/sensor_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from effbench.hardware.cpu import cpu_name
from effbench.sensors import available, create
from effbench.sensors.base import EnergySensor
from effbench.sensors.nvml import NvmlSensor
from effbench.sensors.simulated import Constant, FakeGpu, FakeNvml

RESULTS = Path(__file__).resolve().parent / "results"


def _work_rate(seconds: float, sensor: Optional[EnergySensor]) -> float:
    """Small matmuls per second (single thread: numpy's BLAS threads would hide contention)."""
    a = np.random.default_rng(0).standard_normal((96, 96))
    window = sensor.start_window() if sensor else None
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            a @ a
        n += 50
    rate = n / (time.perf_counter() - t0)
    if window:
        window.stop()
    return rate


def _simulated_nvml(interval_s: float) -> EnergySensor:
    nv = FakeNvml([FakeGpu(Constant(100.0), sense_s=0.1, average_s=0.1)], time.monotonic)
    return NvmlSensor(nvml=nv, clock=time.monotonic, force_polling=True, poll_interval_s=interval_s, env={})


def _conditions() -> dict[str, Callable[[], Optional[EnergySensor]]]:
    out: dict[str, Callable[[], Optional[EnergySensor]]] = {"none": lambda: None}
    for info in available("cpu"):
        if info.available and info.name != "none":
            out[info.name] = lambda name=info.name: create(name, "cpu")
    out["nvml-poll-100ms (simulated device)"] = lambda: _simulated_nvml(0.1)
    out["nvml-poll-10ms (simulated device)"] = lambda: _simulated_nvml(0.01)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    conditions = _conditions()
    rates: dict[str, list[float]] = {k: [] for k in conditions}
    for _ in range(args.rounds):
        for name, make in conditions.items():
            sensor = make()
            rates[name].append(_work_rate(args.seconds, sensor))
            if sensor:
                sensor.close()
    base = statistics.median(rates["none"])
    spread = (max(rates["none"]) - min(rates["none"])) / base
    result = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": args.seconds, "rounds": args.rounds,
        "baseline_spread_rel": spread,
        "conditions": {k: {"median_rate": statistics.median(v), "rates": v,
                           "overhead_rel": 1 - statistics.median(v) / base} for k, v in rates.items()},
        "note": "overhead below the baseline's own spread is not distinguishable from noise on a shared machine",
    }
    cpu = result["cpu"] = cpu_name()
    path = RESULTS / re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") / "sensor_overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"baseline {base:,.0f} matmul/s (spread across rounds {spread:.1%})")
    for k, v in result["conditions"].items():
        print(f"{k:38s} {v['median_rate']:>10,.0f}/s  overhead {v['overhead_rel']:+.2%}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
