"""``python -m benchmarks summary``: the latest figures of every machine as the markdown table in
benchmarks/README.md (``python -m benchmarks.tables`` writes it there between marker comments).

Every cell comes from a committed file under ``benchmarks/results/<hardware>/``; a missing figure
prints as ``n/a``, never as a zero."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

from benchmarks.common import RESULTS

SENSOR_TARGET = 0.01
RUNNER_TARGET = 0.03


def _load(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _verdict(value: float, target: float, noise: float) -> str:
    """Two-sided, against the target and against the run-to-run spread of the baseline itself: an
    overhead of either sign beyond the target is a difference, but on a shared machine a difference
    smaller than that spread is not a measured one."""
    if abs(value) <= target:
        return f"{value:+.1%} (within ±{target:.0%})"
    if abs(value) <= noise:
        return f"{value:+.1%} (outside ±{target:.0%}, inside the {noise:.1%} noise)"
    return f"{value:+.1%} (OUTSIDE ±{target:.0%} and the {noise:.1%} noise)"


def ci(rel: Optional[float]) -> str:
    """A CI95 half-width as ``±x.x%``; ``n/a`` where the record has none (fewer than 2 repeats)."""
    return "n/a" if rel is None else f"±{rel:.1%}"


def _rows(machine: Path) -> Iterator[tuple[str, str, str]]:
    ro = _load(machine / "runner_overhead.json")
    if ro and "interleaved" in ro:  # interleaved repeat by repeat: the ratio with its 95% interval
        for bs, c in ro["interleaved"]["batches"].items():
            lo, hi = c["ratio_ci95"]
            yield (f"runner overhead, batch {bs}", _verdict(1 - c["ratio_median"], RUNNER_TARGET, max(1 - lo, hi - 1)),
                   f"effbench / bare decode {c['ratio_median']:.3f} [{lo:.3f}, {hi:.3f}] over "
                   f"{len(c['samples']['bare'])} interleaved pairs; spread {c['effbench_spread_cv']:.1%} vs "
                   f"{c['bare_spread_cv']:.1%}; {ro['created_at'][:10]}")
    elif ro:
        for bs, c in ro["batches"].items():
            paired = (f"; per round {c['paired_overhead_rel']:+.1%} [{c['paired_overhead_min']:+.1%}, "
                      f"{c['paired_overhead_max']:+.1%}]" if "paired_overhead_rel" in c else "")
            diag = (f"; bare + min_new_tokens {c['bare_plus_min_new_tokens_overhead_rel']:+.1%}"
                    if "bare_plus_min_new_tokens_overhead_rel" in c else "")
            yield (f"runner overhead, batch {bs}", _verdict(c["overhead_rel"], RUNNER_TARGET, c["bare_spread_rel"]),
                   f"effbench {c['effbench_decode_tps_median']:.1f} vs bare {c['bare_decode_tps_median']:.1f} decode tok/s "
                   f"(medians of {len(c['samples']['bare'])}){paired}{diag}; bare spread {c['bare_spread_rel']:.1%}; "
                   f"{ro['created_at'][:10]}")
    so = _load(machine / "sensor_overhead.json")
    if so:
        for name, c in so["conditions"].items():
            if name != "none":
                yield (f"sensor overhead, {name}", _verdict(c["overhead_rel"], SENSOR_TARGET, so["baseline_spread_rel"]),
                       f"baseline spread {so['baseline_spread_rel']:.1%}; {so['created_at'][:10]}")
    ttr = _load(machine / "time_to_result.json")
    if ttr:
        for r in ttr["configurations"]:
            yield (f"time to result, {r['label']}", f"{r['loop_s']:.0f} s, {r['repeats']} repeats",
                   f"stop: {r['stop_reason']}, CI95 {ci(r['ci95_rel'])}; {ttr['created_at'][:10]}")
        if ttr.get("sweep_wall_s") is not None:
            loops = sum(r["loop_s"] or 0 for r in ttr["configurations"])
            yield ("time to result, whole sweep", f"{ttr['sweep_wall_s']:.1f} s",
                   f"{loops:.1f} s of it in the measurement loops; {Path(ttr['run_dir']).name}")
    for run in sorted(machine.glob("*-sweep-*"))[-1:]:
        for line in (run / "results.jsonl").read_text().splitlines():
            rec = json.loads(line)
            wl, th, en = rec["workload"], rec.get("throughput") or {}, rec.get("energy") or {}
            if rec.get("error"):
                yield (f"{run.name.rsplit('-', 2)[0]}, {rec['quantization']['scheme']} bs={wl['batch_size']}", "error",
                       rec["error"][:80])
                continue
            tpj = en.get("tokens_per_joule")
            yield (f"{run.name.rsplit('-', 2)[0]}, {rec['quantization']['scheme']} bs={wl['batch_size']}",
                   _decode(th.get("decode_tokens_per_s")),
                   f"{tpj:.2f} tok/J ({en.get('status')}), CI95 {ci(rec['stats'].get('ci95_rel'))}, {run.name}"
                   if tpj else f"energy {en.get('status')}, {run.name}")


def _decode(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f} decode tok/s"


def markdown() -> str:
    out = []
    for machine in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        rows = list(_rows(machine))
        if not rows:
            continue
        out += [f"### `{machine.name}`", "", "| figure | value | detail |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
