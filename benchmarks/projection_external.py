"""The GPU projection against published vLLM measurements it was never fitted on.

Two hold-outs, each projected with effbench's projection API exactly as ``effbench project --json``
would (see ``benchmarks/data/README.md``):
- ``benchmarks/data/external_vllm_points.csv``: published vLLM serving runs of other sources (model,
  GPU, GPU count, weight format, input/output length and concurrency, each with its citation): TPOT
  (ITL p50) and output tokens/s; where the source logged GPU power over the run, power and J/token
  (power / output tokens/s); where it published TTFT, TTFT (against the projection's unqueued estimate);
- ``benchmarks/data/mlenergy_v3_unshipped.json``: the ML.ENERGY Leaderboard v3 files of models effbench
  does not ship (measured like the fitted data, by other models), projected with ``--workload TASK``
  as a planner would: output tokens/s, ITL p50, p90 and p95, J/token and the running batch.
Per point the ratio projected / published and whether the published value lies inside the projection's
95% band; per group the median and p90 of |projected / published - 1| and the band coverage. Writes
``benchmarks/results/reference/projection_external.json``.

    python -m benchmarks.projection_external
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from benchmarks.common import HERE, RESULTS, write_json

DATA = HERE / "data" / "external_vllm_points.csv"
UNSHIPPED = HERE / "data" / "mlenergy_v3_unshipped.json"
OUT = RESULTS / "reference" / "projection_external.json"
# published figure -> (the `project --json` field that projects it, its band factor; None: no band)
METRICS: dict[str, tuple[str, Optional[str]]] = {"tpot_ms": ("tpot_ms", "itl_p50"),
                                               "output_tok_s": ("output_tokens_per_s", "output_tokens_per_s"),
                                               "power_w": ("power_w", "power_w"),
                                               "joules_per_token": ("joules_per_token", "joules_per_token"),
                                               "ttft_ms": ("ttft_ms", None)}
LEADERBOARD_METRICS: dict[str, tuple[str, Optional[str]]] = {
    "output_tokens_per_s": ("output_tokens_per_s", "output_tokens_per_s"), "itl_p50_ms": ("tpot_ms", "itl_p50"),
    "itl_p90_ms": ("itl_ms.p90", "itl_p90"), "itl_p95_ms": ("tpot_p95_ms", "itl_p95"),
    "joules_per_token": ("joules_per_token", "joules_per_token"), "effective_batch": ("effective_batch", None)}


def load(path: Path = DATA) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(v: str) -> Optional[float]:
    return float(v) if v.strip() else None


def _field(projection: dict[str, Any], name: str) -> Any:
    """A field of the `project --json` output; ``a.b`` reads key b of object a."""
    head, _, rest = name.partition(".")
    return projection[head][rest] if rest else projection[head]


def _compared(projection: dict[str, Any], published: dict[str, Optional[float]],
              metrics: dict[str, tuple[str, Optional[str]]]) -> dict[str, Any]:
    """Per metric: published, projected, their ratio, the band factor and whether the published value is inside."""
    out: dict[str, Any] = {}
    for m, (field, band_key) in metrics.items():
        pub, proj = published.get(m), float(_field(projection, field))
        factor = projection["band"]["factor"][band_key] if band_key else None
        ratio = proj / pub if pub else None
        out[m] = {"published": pub, "projected": round(proj, 4), "ratio": None if ratio is None else round(ratio, 4),
                  "band_factor": None if factor is None else round(factor, 3),
                  "inside_band": None if ratio is None or factor is None else abs(math.log(ratio)) <= math.log(factor)}
    return out


def project(row: dict[str, str]) -> dict[str, Any]:
    """One published point of the CSV against its projection."""
    from effbench.analysis.projection import project_point

    r = project_point(f"arch:{row['model']}", row["gpu"], gpus=int(row["gpus"]), concurrency=int(row["concurrency"]),
                      prompt_tokens=int(row["prompt_tokens"]), output_tokens=int(row["output_tokens"]), scheme=row["scheme"])
    out: dict[str, Any] = {"id": row["id"], "model": row["model"], "gpu": row["gpu"], "gpus": int(row["gpus"]),
                           "scheme": row["scheme"], "isl": int(row["isl"]), "osl": int(row["osl"]),
                           "concurrency": int(row["concurrency"]), "source": row["source_url"],
                           "band_basis": r["band"]["basis"], "effective_batch": round(r["effective_batch"], 1)}
    published = {m: _num(row[m]) for m in METRICS if m in row}
    power, tok_s = published.get("power_w"), published.get("output_tok_s")
    published["joules_per_token"] = power / tok_s if power and tok_s else None  # the source's window, both figures
    return {**out, **_compared(r, published, METRICS)}


def project_leaderboard(p: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard point of a model effbench does not ship, projected as `effbench project --workload TASK`
    projects it (the running batch predicted from max_num_seqs, the output length the task's)."""
    from effbench.analysis.projection import project_point
    from effbench.reference.mlenergy import SCHEME_OF

    r = project_point(f"arch:{p['arch']}", p["profile"], gpus=p["num_gpus"], concurrency=p["max_num_seqs"],
                      workload=p["task"], scheme=SCHEME_OF.get(p["weight_precision"], p["weight_precision"]))
    published = {"output_tokens_per_s": p["output_tokens_per_s"], "itl_p50_ms": p["itl_ms"]["p50"],
                 "itl_p90_ms": p["itl_ms"]["p90"], "itl_p95_ms": p["itl_ms"]["p95"], "joules_per_token": p["joules_per_token"],
                 "effective_batch": p["avg_batch_size"]}
    out = {"model_id": p["model_id"], "model": p["arch"], "task": p["task"], "gpu": p["profile"], "gpus": p["num_gpus"],
           "concurrency": p["max_num_seqs"], "band_basis": r["band"]["basis"]}
    return {**out, **_compared(r, published, LEADERBOARD_METRICS)}


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(points: list[dict[str, Any]], metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """median / p90 / mean of |projected / published - 1| and band coverage per metric."""
    out: dict[str, Any] = {"points": len(points)}
    for m in metrics:
        rs = [p[m] for p in points if p[m]["ratio"] is not None]
        err = [abs(p["ratio"] - 1) for p in rs]
        banded = [p["inside_band"] for p in rs if p["inside_band"] is not None]
        out[m] = {"points": len(rs), "median": round(_percentile(err, 0.5), 4) if err else None,
                  "p90": round(_percentile(err, 0.9), 4) if err else None,
                  "mean": round(sum(err) / len(err), 4) if err else None,
                  "median_ratio": round(_percentile([p["ratio"] for p in rs], 0.5), 4) if rs else None,
                  "coverage": round(sum(banded) / len(banded), 4) if banded else None}
    return out


def grouped(points: list[dict[str, Any]], key: Callable[[dict[str, Any]], str],
            metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(key(p), []).append(p)
    return {k: summary(v, metrics) for k, v in sorted(groups.items())}


def write_unshipped(folder: Path, out: Path = UNSHIPPED) -> int:
    """The leaderboard files in ``folder`` that effbench does not ship -> ``out`` (the importer's extract, one
    point per line); returns the number of points."""
    from effbench.reference import points as shipped_points
    from effbench.reference.mlenergy import extract

    shipped = {(p.model_id, p.task) for p in shipped_points()}
    data = extract(folder)
    new = [p for p in data["points"] if (p["model_id"], p["task"]) not in shipped]
    head = {k: v for k, v in data.items() if k != "points"}
    head["files"] = sorted({f"{p['model_id'].replace('/', '__')}__{p['task']}.json" for p in new})
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',"points":[\n'
    out.write_text(text + ",\n".join(json.dumps(p, separators=(",", ":")) for p in new) + "\n]}\n", encoding="utf-8")
    return len(new)


def run_leaderboard(path: Path = UNSHIPPED) -> dict[str, Any]:
    """The hold-out of leaderboard models effbench does not ship."""
    data = json.loads(path.read_text(encoding="utf-8"))
    points = [project_leaderboard(p) for p in data["points"]]
    return {"data": str(path.relative_to(HERE.parent)), "source": data["source"], "citation": data["citation"],
            "files": data["files"], "fitted_on_any": False,
            "summary": {"all": summary(points, LEADERBOARD_METRICS),
                        "by_model": grouped(points, lambda p: p["model_id"], LEADERBOARD_METRICS),
                        "by_gpu": grouped(points, lambda p: p["gpu"], LEADERBOARD_METRICS)},
            "points": points}


def run(path: Path = DATA, leaderboard: Path = UNSHIPPED) -> dict[str, Any]:
    points = [project(r) for r in load(path)]
    return {"data": str(path.relative_to(HERE.parent)), "fitted_on_any": False,
            "note": "published vLLM measurements never used in the fit (benchmarks/data/README.md); ratio = projected / "
                    "published; inside_band: the published value lies in the projection's 95% band",
            "summary": {"all": summary(points), "by_gpu": grouped(points, lambda p: p["gpu"]),
                        "by_scheme": grouped(points, lambda p: p["scheme"]),
                        "by_source": grouped(points, lambda p: p["source"])},
            "points": points, "unshipped_leaderboard_models": run_leaderboard(leaderboard)}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the JSON")
    ap.add_argument("--unshipped-from", type=Path, metavar="FOLDER",
                    help="first rewrite the leaderboard hold-out from this copy of the leaderboard's public/data")
    args = ap.parse_args(argv)
    if args.unshipped_from:
        print(f"{write_unshipped(args.unshipped_from)} unshipped leaderboard points -> {UNSHIPPED}")
    res = run()
    write_json(args.out, res)
    a = res["summary"]["all"]
    for m in METRICS:
        cover = f", band coverage {a[m]['coverage']:.0%}" if a[m]["coverage"] is not None else ""
        print(f"{m}: {a[m]['points']} points, median {a[m]['median']:.1%}, p90 {a[m]['p90']:.1%}, "
              f"median ratio {a[m]['median_ratio']:.2f}{cover}")
    b = res["unshipped_leaderboard_models"]["summary"]["all"]
    print(f"leaderboard models not shipped, {b['points']} points:")
    for m in LEADERBOARD_METRICS:
        cover = f", band coverage {b[m]['coverage']:.0%}" if b[m]["coverage"] is not None else ""
        print(f"  {m}: median {b[m]['median']:.1%}, p90 {b[m]['p90']:.1%}, median ratio {b[m]['median_ratio']:.2f}{cover}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
