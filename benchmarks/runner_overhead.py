"""(d) Runner overhead and the statistics targets of the measurement loop.

Part 1, interleaved: decode tokens/s as effbench's loop measures one repeat (``run_loop`` with its
warm-up and one repeat: the per-token hook, the interference probe, the window) against a bare ``model.generate``
loop a user would write (decode = batch x (n - 1) / (t(generate n) - t(generate 1))), alternating
repeat by repeat in one process on one loaded model, so a drifting machine cannot bias the ratio.
Reported: the median of the per-pair ratios effbench / bare with its bootstrap 95% interval, and
each side's per-repeat spread (coefficient of variation) with their ratio.

Part 2, time to the target: ``effbench.run`` (three independent runs) on the default workload at
batch 1 and 4 with the default stopping rule (5% on the median's 95% interval); per configuration, the seconds its loop
took (warm-up included), repeats kept and left out, the interval reached and why it stopped. Each
run sits between two probes of the machine's own noise (the bare loop's per-repeat spread at batch 1,
``machine_spread``); the target is stated for a quiet machine, so a run counts as quiet when both
probes are within ``QUIET_SPREAD_CV``, and ``--wait-quiet S`` waits up to S seconds for a quiet probe
before each run. Every run is kept in the results, quiet or not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from benchmarks.common import results_dir, write_json
from effbench.stats import spread_cv

MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Setup:
    batch_sizes: tuple[int, ...] = (1, 4)
    prompt_tokens: int = 64  # the default workload (effbench.config.SweepConfig)
    new_tokens: int = 32
    pairs: int = 16  # interleaved repeats per side and batch size, after one warm-up each
    threads: int = 2


# The machine counts as quiet when the bare loop's per-repeat spread is at most this (the quiet
# VM: about 5%); probed with this many repeats, and retried after this many seconds when waiting for it.
QUIET_SPREAD_CV = 0.05
QUIET_PROBE_REPEATS = 8
QUIET_RETRY_S = 20.0

def _load(setup: Setup) -> Any:
    from effbench.backends.transformers import TransformersBackend
    from effbench.models import resolve_model
    from effbench.quant import get_scheme

    backend = TransformersBackend()
    backend.load(resolve_model(MODEL), get_scheme("fp32"), "cpu", setup.threads, seed=0)
    return backend


def _prompts() -> Any:
    from effbench.models import load_prompt_set

    return load_prompt_set("en")


def bare_decode_tps(backend: Any, batch: Any, b: int, n: int) -> float:
    """The loop a user would write: decode = batch x (n - 1) / (t(generate n) - t(generate 1))."""
    model, tok = backend.model, backend.tokenizer

    def seconds(k: int) -> float:
        t0 = time.perf_counter()
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=k,
                             do_sample=False, pad_token_id=tok.pad_token_id)
        if out.shape[1] - batch.input_ids.shape[1] != k:  # an early EOS would be less work
            raise RuntimeError("bare generate stopped early")
        return time.perf_counter() - t0
    pre = seconds(1)
    return b * (n - 1) / (seconds(n) - pre)


def machine_spread(backend: Any, batch: Any, setup: Setup) -> float:
    """How quiet the machine is now: the per-repeat spread (coefficient of variation) of the bare loop's
    decode tokens/s at batch 1 over ``QUIET_PROBE_REPEATS`` repeats (about 15 s here)."""
    bare_decode_tps(backend, batch, 1, setup.new_tokens)  # warm-up
    return spread_cv([bare_decode_tps(backend, batch, 1, setup.new_tokens) for _ in range(QUIET_PROBE_REPEATS)])


def interleaved(setup: Setup) -> dict[str, Any]:
    import torch

    from effbench.measure.loop import RepeatPolicy, Workload, run_loop
    from effbench.sensors.base import NullSensor
    from effbench.stats import median_ci95

    backend = _load(setup)
    prompts = _prompts()
    n = setup.new_tokens
    # One repeat after the loop's own warm-up: run_loop returns freed heap to the OS first (once per
    # configuration in a real run), and without the warm-up the measured call would pay those page faults.
    # Every pair is kept (no interference exclusion): the ratio is paired.
    one = RepeatPolicy(warmup=1, fixed_repeats=1, interference_cpu_frac=None)

    def effbench_once(batch: Any, b: int) -> float:
        r = run_loop(backend, batch, Workload(b, setup.prompt_tokens, n), NullSensor(), one)
        return r.decode_tps_samples()[0]

    out: dict[str, Any] = {}
    for b in setup.batch_sizes:
        batch = backend.prepare(prompts, b, setup.prompt_tokens, n)
        bare_decode_tps(backend, batch, b, n), effbench_once(batch, b)  # warm-up of each path
        eff, bare = [], []
        for i in range(setup.pairs):
            order = (("bare", "eff") if i % 2 else ("eff", "bare"))
            for side in order:
                (bare if side == "bare" else eff).append(
                    bare_decode_tps(backend, batch, b, n) if side == "bare" else effbench_once(batch, b))
        ratios = [e / x for e, x in zip(eff, bare)]
        med, ci = median_ci95(ratios)
        out[str(b)] = {
            "effbench_decode_tps_median": statistics.median(eff), "bare_decode_tps_median": statistics.median(bare),
            "ratio_median": med, "ratio_ci95": list(ci) if ci else None,
            "effbench_spread_cv": spread_cv(eff), "bare_spread_cv": spread_cv(bare),
            "spread_ratio": spread_cv(eff) / spread_cv(bare),
            "samples": {"effbench": eff, "bare": bare},
        }
    backend.unload()
    return {"torch_threads": torch.get_num_threads(), "batches": out}


def _wait_for_quiet(backend: Any, batch: Any, setup: Setup, wait_s: float) -> tuple[float, float]:
    """Probe the machine until it is quiet or ``wait_s`` has passed: (the last probe's spread, seconds waited)."""
    t0 = time.monotonic()
    while True:
        spread = machine_spread(backend, batch, setup)
        waited = time.monotonic() - t0
        if spread <= QUIET_SPREAD_CV or waited >= wait_s:
            return spread, waited
        time.sleep(QUIET_RETRY_S)


def time_to_target(setup: Setup, trials: int, wait_quiet_s: float = 0.0) -> dict[str, list[dict[str, Any]]]:
    """``trials`` independent runs (a VM's neighbours come and go: one run says little), each between
    two probes of the machine's own spread; a run counts as on a quiet machine when both probes are
    within ``QUIET_SPREAD_CV``. With ``wait_quiet_s`` each run first waits up to that long for a quiet probe."""
    backend = _load(setup)
    batch = backend.prepare(_prompts(), 1, setup.prompt_tokens, setup.new_tokens)
    out: dict[str, list[dict[str, Any]]] = {}
    for _ in range(trials):
        before, waited = _wait_for_quiet(backend, batch, setup, wait_quiet_s)
        rows = _one_run(setup)
        after = machine_spread(backend, batch, setup)
        taken_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for bs, row in rows.items():
            row.update(taken_at=taken_at, machine_spread_before=before, machine_spread_after=after, waited_s=waited,
                       quiet=before <= QUIET_SPREAD_CV and after <= QUIET_SPREAD_CV)
            out.setdefault(bs, []).append(row)
    backend.unload()
    return out


def _one_run(setup: Setup) -> dict[str, dict[str, Any]]:
    import effbench

    with tempfile.TemporaryDirectory() as tmp:
        run = effbench.run(dict(model=MODEL, quant="fp32", device="cpu", batch_sizes=list(setup.batch_sizes),
                                prompt_tokens=setup.prompt_tokens, new_tokens=setup.new_tokens, threads=setup.threads,
                                sensor="auto", idle_s=0, perplexity=False, out=tmp))
    rows = {}
    for r in run.records:
        if r.error:
            rows[str(r.workload.batch_size)] = {"error": r.error}
            continue
        s = r.stats
        rows[str(r.workload.batch_size)] = {
            "loop_s": s.duration_s, "repeats": s.repeats, "excluded_repeats": s.excluded_repeats,
            "ci95_rel": s.ci95_rel, "stop_reason": s.stop_reason, "decode_tokens_per_s": r.throughput.decode_tokens_per_s,
            "decode_spread_cv": s.spread_cv,
            "itl_ms_p50": r.throughput.itl_ms.p50 if r.throughput.itl_ms else None,
            "itl_ms_p99": r.throughput.itl_ms.p99 if r.throughput.itl_ms else None,
            "energy_status": r.energy.status, "sensor": r.energy.sensor,
        }
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks run runner-overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=Setup.pairs)
    ap.add_argument("--trials", type=int, default=3, help="independent runs for the time to the target (0: skip)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each run, wait up to this long for a quiet machine (bare-loop spread <= QUIET_SPREAD_CV)")
    ap.add_argument("--skip-interleaved", action="store_true",
                    help="keep the committed interleaved part; run the time to the target only")
    ap.add_argument("--append", action="store_true",
                    help="add the runs to the committed time-to-target runs (implies --skip-interleaved)")
    args = ap.parse_args(argv)
    setup = Setup(pairs=args.pairs)
    path = results_dir() / "runner_overhead.json"
    old = json.loads(path.read_text()) if path.exists() and (args.skip_interleaved or args.append) else {}
    if args.skip_interleaved or args.append:
        result = {k: v for k, v in old.items() if k in ("method", "setup", "interleaved")}
        result["interleaved_taken"] = old.get("interleaved_taken") or {k: old.get(k) for k in ("created_at", "git_sha")}
        if result.get("setup") != json.loads(json.dumps(asdict(setup))):
            raise SystemExit(f"the committed interleaved part has setup {result.get('setup')}, not {asdict(setup)}")
    else:
        result = {"method": "interleaved", "setup": asdict(setup), "interleaved": interleaved(setup)}
    if args.trials:
        result["quiet_spread_cv"] = QUIET_SPREAD_CV
        new = time_to_target(setup, args.trials, args.wait_quiet)
        kept = old.get("time_to_target", {}) if args.append else {}
        result["time_to_target"] = {bs: kept.get(bs, []) + new.get(bs, []) for bs in dict.fromkeys([*kept, *new])}
    path = write_json(path, result)
    for bs, c in result["interleaved"]["batches"].items():
        ci = c["ratio_ci95"]
        print(f"batch {bs}: effbench/bare decode {c['ratio_median']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
              f"({c['effbench_decode_tps_median']:.1f} vs {c['bare_decode_tps_median']:.1f} tok/s); "
              f"spread {c['effbench_spread_cv']:.1%} vs {c['bare_spread_cv']:.1%} (x{c['spread_ratio']:.2f})")
    for bs, trials in result.get("time_to_target", {}).items():
        for t in trials:
            print(f"batch {bs}: {t}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
