"""Real GPU check: NVML's energy counter against polled power, on a steady and a bursty load.

Runs a steady matmul load and a bursty one (bursts shorter than NVML's 100 ms update period, with
idle gaps) on one NVIDIA GPU. Each load runs inside three overlapping windows: the total-energy
counter, polling of the instantaneous power field, and polling of nvmlDeviceGetPowerUsage (a 1 s
average on Ampere+). On A100/H100 the power sensor observes ~25% of each period, so polling can
miss bursts; the counter is the reference. Writes JSON under benchmarks/results/<gpu>/.

    python benchmarks/gpu_energy_check.py [--seconds 20] [--device cuda:0]

Without an NVIDIA GPU (or torch with CUDA) it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"


def _gpu_or_exit(device: str) -> Any:
    try:
        import torch
    except ImportError:
        print("gpu_energy_check: torch is not installed: nothing to check here")
        sys.exit(0)
    if not torch.cuda.is_available():
        print("gpu_energy_check: no CUDA GPU visible to torch here: nothing to check")
        sys.exit(0)
    from effbench.sensors.nvml import NvmlSensor

    probe = NvmlSensor(device)
    info = probe.info()
    probe.close()
    if not info.available:
        print(f"gpu_energy_check: NVML unavailable ({info.reason}): nothing to check")
        sys.exit(0)
    return torch


def _steady(torch: Any, device: str, seconds: float) -> Callable[[], int]:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def run() -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(8):
                a @ a
            torch.cuda.synchronize(device)
            n += 8
        return n
    return run


def _bursty(torch: Any, device: str, seconds: float, burst_s: float = 0.03, gap_s: float = 0.12) -> Callable[[], int]:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def run() -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic() + burst_s
            while time.monotonic() < t:
                a @ a
                torch.cuda.synchronize(device)
                n += 1
            time.sleep(gap_s)
        return n
    return run


def _measure(load: Callable[[], int], device: str, torch: Any) -> dict[str, Any]:
    from effbench.sensors.nvml import NvmlSensor

    sensors = {
        "counter": NvmlSensor(device),
        "poll_instant_100ms": NvmlSensor(device, force_polling=True),
        "poll_instant_20ms": NvmlSensor(device, force_polling=True, poll_interval_s=0.02),
    }
    usage = NvmlSensor(device, force_polling=True)
    for g in usage._open().gpus:
        g.has_instant = False  # poll nvmlDeviceGetPowerUsage (1 s average on Ampere+)
    sensors["poll_power_usage_100ms"] = usage
    torch.cuda.synchronize(device)
    windows = {name: s.start_window() for name, s in sensors.items()}
    t0 = time.monotonic()
    calls = load()
    torch.cuda.synchronize(device)
    wall = time.monotonic() - t0
    readings = {name: w.stop() for name, w in windows.items()}
    env = sensors["counter"].environment()
    for s in sensors.values():
        s.close()
    ref = readings["counter"].joules
    out = {"wall_s": wall, "matmuls": calls, "environment": env, "readings": {}}
    for name, r in readings.items():
        d = r.to_dict()
        if ref and r.joules is not None:
            d["rel_diff_vs_counter"] = (r.joules - ref) / ref
        out["readings"][name] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch = _gpu_or_exit(args.device)
    torch.cuda.set_device(args.device)
    _steady(torch, args.device, 2.0)()  # warm-up: clocks and cuBLAS heuristics
    result = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "loads": {
            "steady": _measure(_steady(torch, args.device, args.seconds), args.device, torch),
            "bursty": _measure(_bursty(torch, args.device, args.seconds), args.device, torch),
        },
    }
    name = result["loads"]["steady"]["environment"]["gpus"][0]["name"]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    path = args.out or RESULTS / slug / "gpu_energy_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    for load, r in result["loads"].items():
        parts = [f"{k} {v['joules']:.1f} J ({v.get('rel_diff_vs_counter', 0):+.2%})" for k, v in r["readings"].items()
                 if v["joules"] is not None]
        print(f"{load}: {r['wall_s']:.1f} s; " + "; ".join(parts))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
