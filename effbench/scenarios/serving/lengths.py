"""Output-length distributions of real traffic, as published by the ML.ENERGY Leaderboard v3
(reference data, not effbench's measurement): one histogram per model and task, and one pooled per
task with every model weighted equally. A serving workload named after a task draws its output
lengths from them, so a measured point and a reference point describe the same traffic.

``python -m effbench.scenarios.serving.lengths SRC_DIR`` rebuilds ``data/output_lengths.json`` from
the published files (one JSON per model and task)."""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

SOURCE = ("ML.ENERGY Leaderboard v3 public data (github.com/ml-energy/leaderboard, public/data/, "
          "commit 0cd52dab897c5d91a45f4d413038f3b8b4251b0f, data last_updated 2026-02-16)")
CITATION = ('J.-W. Chung et al., "The ML.ENERGY Benchmark: Toward Automated Inference Energy Measurement and '
            'Optimization", NeurIPS Datasets and Benchmarks 2025 (arXiv 2505.06371)')
POOLED_BINS = 64  # pooled histogram: equal-width bins over the task's whole range
DATA_FILE = "output_lengths.json"


def _mass_in(edges: list[float], counts: list[float], lo: float, hi: float) -> float:
    """Share of a histogram's mass inside [lo, hi), each bin's mass spread evenly across it."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    mass = 0.0
    for (a, b), c in zip(zip(edges, edges[1:]), counts):
        if b > a:
            mass += c * max(0.0, min(b, hi) - max(a, lo)) / (b - a)
    return mass / total


def pool(histograms: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Histograms of different ranges on common equal-width bins, each model's weight equal."""
    lo = min(h["bins"][0] for h in histograms)
    hi = max(h["bins"][-1] for h in histograms)
    step = (hi - lo) / POOLED_BINS
    edges = [lo + i * step for i in range(POOLED_BINS + 1)]
    weights = [sum(_mass_in(h["bins"], h["counts"], a, b) for h in histograms) / len(histograms)
               for a, b in zip(edges, edges[1:])]
    return {"bins": [round(e, 2) for e in edges], "weights": [round(w, 6) for w in weights]}


def extract(src: str | Path) -> dict[str, Any]:
    """The shipped file's content from the published per-model files in ``src``."""
    per_model: dict[str, dict[str, Any]] = {}
    by_task: dict[str, list[dict[str, list[float]]]] = {}
    for f in sorted(Path(src).glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        hist = d.get("output_length_distribution") or {}
        if not hist.get("bins") or not hist.get("counts"):
            continue
        h = {"bins": [float(b) for b in hist["bins"]], "counts": [float(c) for c in hist["counts"]]}
        per_model[f"{d['task']}@{d['model_id']}"] = {"task": d["task"], "model": d["model_id"],
                                                    "mean": d.get("configurations", [{}])[0].get("avg_output_len"), **h}
        by_task.setdefault(d["task"], []).append(h)
    return {"source": SOURCE, "citation": CITATION, "basis": "reference",
            "tasks": {task: {"models": len(hs), **pool(hs)} for task, hs in sorted(by_task.items())},
            "models": per_model}


@lru_cache(maxsize=1)
def shipped() -> dict[str, Any]:
    text = (resources.files("effbench.scenarios.serving") / "data" / DATA_FILE).read_text(encoding="utf-8")
    return dict(json.loads(text))


def names() -> list[str]:
    data = shipped()
    return sorted(data["tasks"]) + sorted(data["models"])


def histogram(name: str) -> tuple[list[float], list[float]]:
    """(bin edges, weights) of the named distribution: a task (pooled) or ``task@model-id``."""
    data = shipped()
    if name in data["tasks"]:
        h = data["tasks"][name]
        return h["bins"], h["weights"]
    h = data["models"][name]
    return h["bins"], h["counts"]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m effbench.scenarios.serving.lengths SRC_DIR (the published per-model JSON files)")
    out = Path(__file__).with_name("data") / DATA_FILE
    out.write_text(json.dumps(extract(sys.argv[1]), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out}")
