"""The process launcher's extra cost per group (child start-up + imports + model load) against the
inline launcher, and whether both give the same figures: the same one-group sweep of the bundled
model, alternating inline and process runs. ``python -m benchmarks run launcher-overhead``."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import results_dir, write_json

ROUNDS = 3
SWEEP = dict(batch_sizes=[1], prompt_tokens=[16], new_tokens=[8], repeats=5, warmup=1, sensor="none", idle_s=0,
             perplexity=False, threads=1)


def _one(launcher: str, out: Path) -> dict[str, Any]:
    from effbench.config import load_config
    from effbench.sweep import Sweep

    t0 = time.perf_counter()
    run = Sweep(load_config({**SWEEP, "out": str(out), "launcher": launcher})).run()
    wall = time.perf_counter() - t0
    (r,) = run.records
    return {"launcher": launcher, "wall_s": wall, "decode_tokens_per_s": r.throughput.decode_tokens_per_s,
            "ci95_rel": r.stats.ci95_rel, "repeats": r.stats.repeats, "error": r.error}


def _mean_ci(xs: list[float]) -> tuple[float, float]:
    from effbench.stats import summarize

    s = summarize(xs)
    return s.mean, s.ci95_half


def main(argv: list[str] | None = None) -> Path:
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        _one("inline", Path(tmp) / "warm")  # the first load converts the GGUF once: not a launcher cost
        for i in range(ROUNDS):
            for launcher in ("inline", "process"):
                samples.append(_one(launcher, Path(tmp) / f"{launcher}-{i}"))
    by = {k: [s for s in samples if s["launcher"] == k] for k in ("inline", "process")}
    inline_wall, inline_ci = _mean_ci([s["wall_s"] for s in by["inline"]])
    process_wall, process_ci = _mean_ci([s["wall_s"] for s in by["process"]])
    inline_tps, inline_tps_ci = _mean_ci([s["decode_tokens_per_s"] for s in by["inline"]])
    process_tps, process_tps_ci = _mean_ci([s["decode_tokens_per_s"] for s in by["process"]])
    summary = {
        "process_extra_s_per_group": process_wall - inline_wall,
        "process_extra_s_ci95": math.hypot(inline_ci, process_ci),
        "inline_wall_s": inline_wall, "process_wall_s": process_wall,
        "inline_decode_tokens_per_s": inline_tps, "inline_decode_ci95": inline_tps_ci,
        "process_decode_tokens_per_s": process_tps, "process_decode_ci95": process_tps_ci,
        "decode_agree_within_ci": abs(process_tps - inline_tps) <= math.hypot(inline_tps_ci, process_tps_ci),
    }
    path = write_json(results_dir() / "launcher_overhead.json",
                      {"suite": "launcher-overhead", "sweep": SWEEP, "rounds": ROUNDS, "summary": summary, "samples": samples})
    print(path)
    for k, v in summary.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return path


if __name__ == "__main__":
    main()
