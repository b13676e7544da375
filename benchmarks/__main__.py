"""``python -m benchmarks run SUITE [options]``: effbench's own benchmark suites.

Suites: cpu-sweep (a), gpu-sweep --model PATH (b), sensor-overhead (c), runner-overhead (d),
time-to-result [--from RUN_DIR] (e), launcher-overhead (f), serving-load, serving-peers, energy-calibration
(simulated GPU sensors), projection-speed. Results go under benchmarks/results/<hardware>/. On a shared machine run each
CPU-heavy suite alone (e.g. under ``flock /tmp/effbench-cpu.lock``).
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from typing import Callable

from benchmarks.common import HERE


def _module_suite(module: str) -> Callable[[argparse.Namespace], None]:
    """A suite that is its own module with ``main(argv)``: the options after the suite name go to it."""
    def run(args: argparse.Namespace) -> None:
        importlib.import_module(f"benchmarks.{module}").main(args.rest)
    return run


def _sensor_overhead(args: argparse.Namespace) -> None:
    # Owned by the sensors work; called as it is, not duplicated.
    cmd = [sys.executable, str(HERE / "sensor_overhead.py"), *args.rest]
    raise SystemExit(subprocess.call(cmd))


def _cpu_sweep(args: argparse.Namespace) -> None:
    from benchmarks.sweeps import cpu_sweep

    cpu_sweep()


def _gpu_sweep(args: argparse.Namespace) -> None:
    from benchmarks.sweeps import gpu_sweep

    gpu_sweep(args.model)


def _time_to_result(args: argparse.Namespace) -> None:
    from benchmarks.sweeps import time_to_result

    time_to_result(args.from_dir)


SUITES: dict[str, Callable[[argparse.Namespace], None]] = {
    "cpu-sweep": _cpu_sweep,
    "gpu-sweep": _gpu_sweep,
    "sensor-overhead": _sensor_overhead,
    "time-to-result": _time_to_result,
    **{name.replace("_", "-"): _module_suite(name) for name in
       ("runner_overhead", "launcher_overhead", "serving_load", "serving_peers", "energy_calibration",
        "projection_speed")},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the suites")
    sub.add_parser("summary", help="the latest figures per machine, as markdown (for README.md)")
    run = sub.add_parser("run", help="run one suite")
    run.add_argument("suite", choices=sorted(SUITES))
    run.add_argument("--model", help="gpu-sweep: path of the model to sweep")
    run.add_argument("--from", dest="from_dir", help="time-to-result: summarise this run directory instead of sweeping")
    run.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the suite's own script")
    args = ap.parse_args(argv)
    if args.command == "list":
        print("\n".join(sorted(SUITES)))
        return
    if args.command == "summary":
        from benchmarks.summary import markdown

        print(markdown())
        return
    SUITES[args.suite](args)


if __name__ == "__main__":
    main()
