"""The GPU projection against published vLLM measurements it was never fitted on.

Projects every point of ``benchmarks/data/external_vllm_points.csv`` (published vLLM serving runs:
model, GPU, GPU count, weight format, input/output length and concurrency, each with its citation; see
``benchmarks/data/README.md``) with effbench's projection API, exactly as ``effbench project --json``
would, and compares the projected TPOT (ITL p50) and output tokens/s with the published ones: per
point the ratio projected / published and whether the published value lies inside the projection's
95% band; overall, per GPU, per scheme and per source the median and p90 of |projected / published - 1|
and the band coverage. Writes ``benchmarks/results/reference/projection_external.json``.

    python -m benchmarks.projection_external
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.common import HERE, RESULTS, write_json

DATA = HERE / "data" / "external_vllm_points.csv"
OUT = RESULTS / "reference" / "projection_external.json"
METRICS = {"tpot_ms": "itl_p50", "output_tok_s": "output_tokens_per_s"}  # published column -> its band factor


def load(path: Path = DATA) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(v: str) -> Optional[float]:
    return float(v) if v.strip() else None


def project(row: dict[str, str]) -> dict[str, Any]:
    """One published point against its projection."""
    from effbench.analysis.projection import project_point

    r = project_point(f"arch:{row['model']}", row["gpu"], gpus=int(row["gpus"]), concurrency=int(row["concurrency"]),
                      prompt_tokens=int(row["prompt_tokens"]), output_tokens=int(row["output_tokens"]), scheme=row["scheme"])
    projected = {"tpot_ms": r["tpot_ms"], "output_tok_s": r["output_tokens_per_s"]}
    out: dict[str, Any] = {"id": row["id"], "model": row["model"], "gpu": row["gpu"], "gpus": int(row["gpus"]),
                           "scheme": row["scheme"], "isl": int(row["isl"]), "osl": int(row["osl"]),
                           "concurrency": int(row["concurrency"]), "source": row["source_url"],
                           "band_basis": r["band"]["basis"], "effective_batch": round(r["effective_batch"], 1)}
    for m, band_key in METRICS.items():
        pub = _num(row[m])
        factor = r["band"]["factor"][band_key]
        ratio = projected[m] / pub if pub else None
        out[m] = {"published": pub, "projected": round(projected[m], 4), "ratio": None if ratio is None else round(ratio, 4),
                  "band_factor": round(factor, 3),
                  "inside_band": None if ratio is None else abs(math.log(ratio)) <= math.log(factor)}
    return out


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(points: list[dict[str, Any]]) -> dict[str, Any]:
    """median / p90 of |projected / published - 1| and band coverage per metric."""
    out: dict[str, Any] = {"points": len(points)}
    for m in METRICS:
        rs = [p[m] for p in points if p[m]["ratio"] is not None]
        err = [abs(p["ratio"] - 1) for p in rs]
        out[m] = {"points": len(rs), "median": round(_percentile(err, 0.5), 4) if err else None,
                  "p90": round(_percentile(err, 0.9), 4) if err else None,
                  "median_ratio": round(_percentile([p["ratio"] for p in rs], 0.5), 4) if rs else None,
                  "coverage": round(sum(p["inside_band"] for p in rs) / len(rs), 4) if rs else None}
    return out


def grouped(points: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(key(p), []).append(p)
    return {k: summary(v) for k, v in sorted(groups.items())}


def run(path: Path = DATA) -> dict[str, Any]:
    points = [project(r) for r in load(path)]
    return {"data": str(path.relative_to(HERE.parent)), "fitted_on_any": False,
            "note": "published vLLM measurements never used in the fit (benchmarks/data/README.md); ratio = projected / "
                    "published; inside_band: the published value lies in the projection's 95% band",
            "summary": {"all": summary(points), "by_gpu": grouped(points, lambda p: p["gpu"]),
                        "by_scheme": grouped(points, lambda p: p["scheme"]),
                        "by_source": grouped(points, lambda p: p["source"])},
            "points": points}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the JSON")
    args = ap.parse_args(argv)
    res = run()
    write_json(args.out, res)
    a = res["summary"]["all"]
    for m in METRICS:
        print(f"{m}: {a[m]['points']} points, median {a[m]['median']:.1%}, p90 {a[m]['p90']:.1%}, "
              f"median ratio {a[m]['median_ratio']:.2f}, band coverage {a[m]['coverage']:.0%}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
