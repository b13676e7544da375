"""GPU validation suite, one command: ``python -m benchmarks.gpu_validation [--out DIR] [--quick]``.

(a) energy: a steady and a bursty matmul load (the loads of ``benchmarks/gpu_energy_check.py``),
    each inside overlapping windows of the NVML energy counter, polled instantaneous power and
    polled ``nvmlDeviceGetPowerUsage``; the counter is the reference.
(b) the Llama-3.1-8B architecture (random weights) in bf16 on the transformers backend, batch 1 to
    64, prompt 512, 256 new tokens: decode tokens/s, J/token total and dynamic, peak device memory,
    achieved fraction of the memory-bandwidth roofline;
(c) the same with int8 and int4 weight-only schemes (torchao, where they run).

Writes standard run directories (one per scheme) and ``summary.md`` under ``--out``
(default ``benchmarks/results/<gpu>/gpu-validation``). Without an NVIDIA GPU it prints one line.
Everything but the loads and the sweeps takes its sensors and records as arguments, so the
CPU-only parts are tested with the NVML simulator (tests/test_arch.py).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODEL = "arch:llama-3.1-8b"
SCHEMES = ("bf16", "torchao-int8wo", "torchao-int4wo")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCH_SIZES = (1, 8, 64)
PROMPT_TOKENS, NEW_TOKENS = 512, 256
REFERENCE = "counter"
STEADY_TOLERANCE = 0.05  # polled power should agree with the counter within this on a steady load

# ML.ENERGY leaderboard figure the summary compares with (published, not measured here).
MLENERGY = {
    "joules_per_token": 0.12, "model": "Llama-3.1-8B", "gpu": "H100", "batch_size": 64, "engine": "vLLM",
    "source": "ML.ENERGY leaderboard (energy per output token)",
}
ENGINE_NOTE = (
    "Engines differ: ML.ENERGY measures vLLM (continuous batching, paged KV cache, CUDA graphs, fused "
    "kernels) serving requests; effbench here runs Hugging Face transformers eager `generate` on a static "
    "batch of equal-length prompts, which keeps the GPU less busy per token, so expect a higher J/token "
    "at the same batch size. The weights here are random (architecture only): speed and energy match the "
    "real model's, quality is not measured."
)


# -- (a) energy: counter vs polled power --------------------------------------------------------------

@dataclass
class LoadComparison:
    load: str
    wall_s: float
    calls: int
    readings: dict[str, dict[str, Any]]  # sensor name -> EnergyReading.to_dict() + rel_diff_vs_counter

    def rel_diff(self, name: str) -> Optional[float]:
        return self.readings.get(name, {}).get("rel_diff_vs_counter")


def nvml_sensors(device: str, nvml: Any = None, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = True, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """The NVML readings compared: counter, instantaneous power polled at 100 and 20 ms, and
    nvmlDeviceGetPowerUsage (a 1 s average on Ampere+) polled at 100 ms. ``nvml`` may be the simulator."""
    from effbench.sensors.nvml import NvmlSensor

    def make(**kw: Any) -> NvmlSensor:
        return NvmlSensor(device, nvml=nvml, clock=clock, threaded=threaded, env=env, **kw)

    sensors = {REFERENCE: make(), "poll_instant_100ms": make(force_polling=True),
               "poll_instant_20ms": make(force_polling=True, poll_interval_s=0.02)}
    usage = make(force_polling=True)
    for g in usage._open().gpus:
        g.has_instant = False  # read nvmlDeviceGetPowerUsage instead of the instantaneous field
    sensors["poll_power_usage_100ms"] = usage
    return sensors


def compare_windows(load_name: str, load: Callable[[], int], sensors: Mapping[str, Any],
                    sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic) -> LoadComparison:
    """Run ``load`` once inside one window per sensor (all overlapping) and compare with the counter."""
    sync()
    windows = {name: s.start_window() for name, s in sensors.items()}
    t0 = clock()
    calls = load()
    sync()
    wall = clock() - t0
    readings = {name: w.stop().to_dict() for name, w in windows.items()}
    ref = readings.get(REFERENCE, {}).get("joules")
    for r in readings.values():
        if ref and r.get("joules") is not None:
            r["rel_diff_vs_counter"] = (r["joules"] - ref) / ref
    return LoadComparison(load_name, wall, calls, readings)


def energy_verdicts(comparisons: Sequence[LoadComparison]) -> list[str]:
    """One line per finding: steady loads must agree; bursty ones show what polling misses."""
    lines = []
    for c in comparisons:
        for name, r in c.readings.items():
            diff = r.get("rel_diff_vs_counter")
            if name == REFERENCE or diff is None:
                continue
            if c.load == "steady":
                ok = abs(diff) <= STEADY_TOLERANCE
                lines.append(f"{'ok' if ok else 'CHECK'}: steady load, {name} within {diff:+.1%} of the counter "
                             f"(tolerance ±{STEADY_TOLERANCE:.0%})")
            else:
                lines.append(f"info: {c.load} load, {name} differs by {diff:+.1%} from the counter, "
                             f"coverage {r.get('coverage', 0):.0%} (polling sees only part of each update period)")
    return lines


def run_energy_check(torch: Any, device: str, seconds: float) -> list[LoadComparison]:
    from benchmarks.gpu_energy_check import _bursty, _steady  # the same loads, not a copy

    def sync() -> None:
        torch.cuda.synchronize(device)

    _steady(torch, device, 2.0)()  # warm-up: clocks and cuBLAS heuristics
    results = []
    for name, make in (("steady", _steady), ("bursty", _bursty)):
        sensors = nvml_sensors(device)
        try:
            results.append(compare_windows(name, make(torch, device, seconds), sensors, sync))
        finally:
            for s in sensors.values():
                s.close()
    return results


# -- (b), (c): the 8B architecture ----------------------------------------------------------------------

def sweep_config(out: Path, scheme: str, batch_sizes: Sequence[int], device: str, quick: bool) -> Any:
    from effbench.config import SweepConfig

    return SweepConfig(
        model=[MODEL], backend=["transformers"], device=device, quant=[scheme], batch_sizes=list(batch_sizes),
        prompt_tokens=[PROMPT_TOKENS], new_tokens=[NEW_TOKENS], sensor="nvml", out=str(out / f"run-{scheme}"),
        resume=(out / f"run-{scheme}" / "run.json").exists(),  # a rerun continues where it stopped
        **({"min_repeats": 2, "max_repeats": 3, "max_time_s": 30.0} if quick else {}),
    )


@dataclass
class Row:
    scheme: str
    batch_size: int
    decode_tokens_per_s: Optional[float] = None
    joules_per_token: Optional[float] = None
    joules_per_token_dynamic: Optional[float] = None
    decode_joules_per_token: Optional[float] = None
    peak_device_bytes: Optional[int] = None
    roofline_fraction: Optional[float] = None
    energy_status: Optional[str] = None
    error: Optional[str] = None


def _roofline(record: Any, profile: Any) -> Optional[float]:
    try:
        from effbench.analysis.roofline import achieved_fraction
    except ImportError:
        return None
    try:
        return achieved_fraction(record, profile)
    except Exception:  # noqa: BLE001 - an unknown profile leaves the column empty, not the summary
        return None


def rows_from_records(records: Sequence[Any], profile: Any = None) -> list[Row]:
    rows = []
    for r in records:
        e = r.energy
        dyn = 1 / e.tokens_per_joule_dynamic if e.tokens_per_joule_dynamic else None
        rows.append(Row(r.quantization.scheme, r.workload.batch_size, r.throughput.decode_tokens_per_s,
                        e.joules_per_token, dyn, e.decode_joules_per_token, r.memory.peak_device_bytes,
                        _roofline(r, profile), e.status, r.error))
    return sorted(rows, key=lambda x: (SCHEMES.index(x.scheme) if x.scheme in SCHEMES else 99, x.batch_size))


def scheme_notes(schemes: Sequence[str]) -> list[str]:
    """Caveats that change how a scheme's figures read, e.g. activations not in bf16."""
    from effbench.quant import get_scheme

    notes = []
    for name in schemes:
        dtype = get_scheme(name).compute_dtype
        if dtype != "bfloat16":
            notes.append(f"{name} runs with {dtype} activations (the scheme's compute dtype), not bf16")
    return notes


# -- summary --------------------------------------------------------------------------------------------

def _f(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def mlenergy_line(rows: Sequence[Row]) -> str:
    ref = MLENERGY
    ours = next((r for r in rows if r.scheme == "bf16" and r.batch_size == ref["batch_size"] and not r.error), None)
    head = (f"ML.ENERGY publishes {ref['joules_per_token']} J/token for {ref['model']} on {ref['gpu']} at batch "
            f"{ref['batch_size']} with {ref['engine']} ({ref['source']}).")
    if ours is None or ours.joules_per_token is None:
        return head + " This run has no bf16 batch-64 energy figure to put beside it."
    ratio = ours.joules_per_token / ref["joules_per_token"]
    return (head + f" Here, bf16 at batch {ref['batch_size']}: {ours.joules_per_token:.3f} J/token total "
            f"({_f(ours.joules_per_token_dynamic, '.3f')} dynamic, {_f(ours.decode_joules_per_token, '.3f')} "
            f"decode only), {ratio:.1f}x theirs.")


def summary_markdown(gpu: str, comparisons: Sequence[LoadComparison], rows: Sequence[Row],
                     run_dirs: Sequence[str], notes: Sequence[str] = ()) -> str:
    out = [f"# GPU validation: {gpu}", "", f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}", ""]
    out += ["## (a) NVML energy counter vs polled power", "",
            "| load | wall s | reading | joules | vs counter | coverage |", "|---|---:|---|---:|---:|---:|"]
    for c in comparisons:
        for name, r in c.readings.items():
            out.append(f"| {c.load} | {c.wall_s:.1f} | {name} | {_f(r.get('joules'), '.1f')} | "
                       f"{_f(r.get('rel_diff_vs_counter'), '+.2%')} | {_f(r.get('coverage'), '.0%')} |")
    out += ["", *[f"- {v}" for v in energy_verdicts(comparisons)], ""]
    out += [f"## (b, c) {MODEL} (random weights), transformers, prompt {PROMPT_TOKENS}, {NEW_TOKENS} new tokens", "",
            "| scheme | batch | decode tok/s | J/token total | J/token dynamic | decode J/token | peak device GiB | roofline | "
            "energy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.error:
            out.append(f"| {r.scheme} | {r.batch_size} | {r.error} ||||||")
            continue
        gib = r.peak_device_bytes / 2**30 if r.peak_device_bytes else None
        out.append(f"| {r.scheme} | {r.batch_size} | {_f(r.decode_tokens_per_s, ',.1f')} | {_f(r.joules_per_token, '.3f')} | "
                   f"{_f(r.joules_per_token_dynamic, '.3f')} | {_f(r.decode_joules_per_token, '.3f')} | {_f(gib, '.1f')} | "
                   f"{_f(r.roofline_fraction, '.0%')} | {r.energy_status or '-'} |")
    out += ["", "## Beside ML.ENERGY", "", mlenergy_line(rows), "", ENGINE_NOTE, ""]
    out += ["## Files", "", *[f"- `{d}`" for d in run_dirs], "- `energy_check.json`", *[f"- note: {n}" for n in notes], ""]
    return "\n".join(out)


# -- budget mode: the most valuable parts first, inside a fixed time ------------------------------------

# Parts in the order of their value, each with a conservative cost in seconds on an H100 (model
# load of the 8B architecture with random weights included), so a lent 15-minute slot finishes.
BUDGET_PARTS: tuple[tuple[str, float], ...] = (
    ("idle", 25.0),  # idle power over a 20 s counter window
    ("energy", 60.0),  # counter vs polling, steady and bursty loads (~20 s each)
    ("bf16", 150.0),  # arch:llama-3.1-8b bf16 at batch 1, 8, 32, short repeats
    ("power-limits", 100.0),  # bf16 batch 8 at two power limits, 15 s each (needs root)
)
BUDGET_BATCH_SIZES = (1, 8, 32)
BUDGET_POWER_LIMIT_FRACTIONS = (1.0, 0.6)  # of the GPU's maximum limit


@dataclass
class BudgetPlan:
    """Which parts fit: ``planned`` in order, ``skipped`` with the reason."""

    planned: list[str]
    skipped: dict[str, str]


def plan_budget(budget_s: float, parts: Sequence[tuple[str, float]] = BUDGET_PARTS, startup_s: float = 20.0) -> BudgetPlan:
    """The parts that fit in ``budget_s`` (after ``startup_s`` for imports and CUDA), most valuable
    first; a part that does not fit is skipped, later cheaper ones may still run."""
    left = budget_s - startup_s
    planned, skipped = [], {}
    for name, cost in parts:
        if cost <= left:
            planned.append(name)
            left -= cost
        else:
            skipped[name] = f"does not fit the budget ({cost:.0f} s needed, {max(left, 0):.0f} s left)"
    return BudgetPlan(planned, skipped)


class Progress:
    """What a budget run finished, written after every part so a cut-off run keeps it."""

    def __init__(self, out: Path, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.budget_s, self.clock = out, budget_s, clock
        self.t0 = clock()
        self.parts: dict[str, Any] = {}

    def left_s(self) -> float:
        return self.budget_s - (self.clock() - self.t0)

    def record(self, name: str, result: Any) -> None:
        self.parts[name] = {"finished_at_s": round(self.clock() - self.t0, 1), "result": result}
        self.write()

    def write(self) -> None:
        data = {"budget_s": self.budget_s, "elapsed_s": round(self.clock() - self.t0, 1), "parts": self.parts}
        tmp = self.out / ".budget.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(self.out / "budget.json")


def measure_idle_power(sensor: Any, seconds: float, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    window = sensor.start_window()
    sleep(seconds)
    return window.stop().to_dict()


def run_budget(args: Any, torch: Any, gpu: str, out: Path) -> int:
    import effbench
    from effbench.errors import EffbenchError
    from effbench.sensors.nvml import NvmlSensor

    plan = plan_budget(args.budget)
    progress = Progress(out, args.budget)
    progress.parts.update({name: {"skipped": why} for name, why in plan.skipped.items()})
    progress.write()
    comparisons: list[LoadComparison] = []
    rows: list[Row] = []
    run_dirs: list[str] = []
    notes: list[str] = [f"budget mode: {args.budget:.0f} s; parts run: {', '.join(plan.planned) or 'none'}"]
    for part in plan.planned:
        if progress.left_s() < dict(BUDGET_PARTS)[part] * 0.5:
            progress.parts[part] = {"skipped": f"out of time ({progress.left_s():.0f} s left)"}
            progress.write()
            continue
        print(f"gpu_validation: budget part {part} ({progress.left_s():.0f} s left)", flush=True)
        try:
            if part == "idle":
                sensor = NvmlSensor(args.device)
                try:
                    progress.record(part, measure_idle_power(sensor, 20.0))
                finally:
                    sensor.close()
            elif part == "energy":
                comparisons = run_energy_check(torch, args.device, min(args.energy_seconds, 20.0))
                progress.record(part, [asdict(c) for c in comparisons])
            elif part == "bf16":
                cfg = sweep_config(out, "bf16", BUDGET_BATCH_SIZES, args.device, quick=True)
                run = effbench.run(cfg)
                run_dirs.append(str(run.path))
                rows += rows_from_records(run.records)
                progress.record(part, [asdict(r) for r in rows_from_records(run.records)])
            elif part == "power-limits":
                progress.record(part, power_limit_sweep(out, args.device))
        except EffbenchError as e:  # no root for the limits, a GPU that cannot: one line, keep the rest
            progress.record(part, {"error": str(e)})
        (out / "summary.md").write_text(summary_markdown(gpu, comparisons, rows, run_dirs, notes))
    print(f"gpu_validation: wrote {out / 'summary.md'} and {out / 'budget.json'}")
    return 0


def power_limit_sweep(out: Path, device: str) -> list[dict[str, Any]]:
    """bf16 batch 8 at the GPU's maximum power limit and 60% of it: tokens/J against TPOT."""
    import effbench
    from effbench.sensors.nvml import open_gpu_control

    control = open_gpu_control(device)
    try:
        (lo, hi), = list(control.limits_range_w().values())[:1] or [(None, None)]
    finally:
        control.close()
    if hi is None:
        return [{"error": "the GPU reports no power-limit range"}]
    limits = sorted({max(lo, round(hi * f)) for f in BUDGET_POWER_LIMIT_FRACTIONS}, reverse=True)
    cfg = sweep_config(out, "bf16", (8,), device, quick=True).model_copy(
        update={"power_limits": limits, "out": str(out / "run-bf16-power-limits"), "max_time_s": 15.0})
    cfg = cfg.model_copy(update={"resume": (out / "run-bf16-power-limits" / "run.json").exists()})
    run = effbench.run(cfg)
    return [{"power_limit_w": (r.gpu.power_limit_w if r.gpu else None), "tokens_per_joule": r.energy.tokens_per_joule,
             "tpot_s": r.throughput.tpot_s, "uncertainty_rel": r.energy.uncertainty_rel, "error": r.error}
            for r in run.records]


# -- command --------------------------------------------------------------------------------------------

def no_gpu_reason(device: str) -> Optional[str]:
    """Why this machine cannot run the suite, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__}"
    from effbench.sensors.nvml import NvmlSensor

    probe = NvmlSensor(device)
    info = probe.info()
    probe.close()
    return None if info.available else f"NVML unavailable ({info.reason})"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_validation", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<gpu>/gpu-validation)")
    ap.add_argument("--quick", action="store_true", help=f"batch sizes {QUICK_BATCH_SIZES}, fewer repeats")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated schemes (default: %(default)s)")
    ap.add_argument("--energy-seconds", type=float, default=20.0, help="length of each matmul load in (a)")
    ap.add_argument("--skip-energy", action="store_true", help="skip (a)")
    ap.add_argument("--skip-models", action="store_true", help="skip (b) and (c)")
    ap.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="finish inside this many seconds (e.g. 360): idle power, counter vs polling, bf16 at a few "
                         "batch sizes, a short power-limit sweep, in that order; what finished is kept (budget.json)")
    args = ap.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        ap.error(f"--budget {args.budget:g}: give a positive number of seconds, e.g. 360")
    reason = no_gpu_reason(args.device)
    if reason:
        print(f"gpu_validation: skipped, {reason}: this suite needs an NVIDIA GPU")
        return 0
    import torch

    import effbench
    from effbench.sensors.nvml import NvmlSensor

    torch.cuda.set_device(args.device)
    gpu = torch.cuda.get_device_name(args.device)
    out = args.out or RESULTS / _slug(gpu) / "gpu-validation"
    out.mkdir(parents=True, exist_ok=True)
    if args.budget is not None:
        return run_budget(args, torch, gpu, out)
    comparisons = [] if args.skip_energy else run_energy_check(torch, args.device, args.energy_seconds)
    env = NvmlSensor(args.device).environment()
    (out / "energy_check.json").write_text(json.dumps(
        {"environment": env, "loads": [asdict(c) for c in comparisons]}, indent=2, default=str) + "\n")
    rows, run_dirs, notes = [], [], []
    batch_sizes = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    for scheme in ([] if args.skip_models else [s for s in args.schemes.split(",") if s]):
        cfg = sweep_config(out, scheme, batch_sizes, args.device, args.quick)
        print(f"gpu_validation: {MODEL} {scheme} batch {','.join(map(str, batch_sizes))} -> {cfg.out}", flush=True)
        run = effbench.run(cfg)
        run_dirs.append(str(run.path))
        rows += rows_from_records(run.records)
        notes += scheme_notes([scheme])
    (out / "summary.md").write_text(summary_markdown(gpu, comparisons, rows, run_dirs, notes))
    print(f"gpu_validation: wrote {out / 'summary.md'}")
    return 0
