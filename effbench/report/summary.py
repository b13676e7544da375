"""``summary.json``: every figure the report quotes, with its 95% interval, its basis and the record
it comes from (run directory, results.jsonl line, config id), so a paper's numbers can be traced and
checked by a program. The "best" figures of the overview point into the same list."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from effbench.report.methodology import git_sha
from effbench.report.model import METRICS, Metric, Row, best, group_rows, ok_rows, row_flags, run_warnings
from effbench.results.run import Run
from effbench.stats import CONFIDENCE

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class Quoted:
    """A row attribute the report quotes: its name in summary.json, unit and how its interval is known."""

    name: str
    unit: str
    metric: Optional[Metric] = None  # gives value and interval
    attr: Optional[str] = None  # a plain attribute without an interval
    scale: float = 1.0
    interval_kind: str = ""


_OFFLINE = (
    Quoted("prefill_tokens_per_s", "tokens/s", METRICS["prefill"],
           interval_kind="Student-t CI95 of the mean of the per-repeat prefill tokens/s (from the TTFT samples)"),
    Quoted("decode_tokens_per_s", "tokens/s", METRICS["decode"], interval_kind="Student-t CI95 of the mean over repeats"),
    Quoted("ttft_ms", "ms", attr="ttft_s", scale=1000.0),
    Quoted("tpot_ms", "ms", attr="tpot_s", scale=1000.0),
    Quoted("peak_memory_bytes", "bytes", attr="peak_memory_bytes"),
    Quoted("perplexity", "", attr="perplexity"),
    Quoted("roofline_fraction", "fraction", attr="roofline_fraction"),
)
_ENERGY = (
    Quoted("tokens_per_joule", "tokens/J", METRICS["tokens_per_joule"],
           interval_kind="stated 95% energy uncertainty (repeat spread and sensor accuracy)"),
    Quoted("joules_per_kchar", "J per 1,000 output characters", METRICS["joules_per_kchar"],
           interval_kind="stated 95% energy uncertainty (repeat spread and sensor accuracy)"),
)
_SERVING = (
    Quoted("achieved_rate", "requests/s", attr="achieved_rate"),
    Quoted("output_tokens_per_s", "tokens/s", attr="output_tokens_per_s"),
    Quoted("ttft_p50_ms", "ms", METRICS["ttft_p50"], interval_kind="distribution-free 95% interval of the median"),
    Quoted("ttft_p95_ms", "ms", attr="ttft_p95_ms"),
    Quoted("tpot_p50_ms", "ms", METRICS["tpot_p50"], interval_kind="distribution-free 95% interval of the median"),
    Quoted("tpot_p95_ms", "ms", attr="tpot_p95_ms"),
    Quoted("goodput", "requests/s", attr="goodput"),
    Quoted("slo_attainment", "fraction", attr="slo_attainment"),
    Quoted("joules_per_request", "J", METRICS["joules_per_request"],
           interval_kind="stated 95% energy uncertainty (repeat spread and sensor accuracy)"),
)


def figure_id(r: Row, name: str) -> str:
    return f"{r.source}:{r.line or r.config_id}:{name}"


def _figure(r: Row, q: Quoted, energy: bool) -> Optional[dict[str, Any]]:
    if q.metric is not None:
        value, interval = q.metric.value(r), q.metric.interval(r)
    else:
        raw = getattr(r, q.attr or q.name)
        value, interval = (None if raw is None else float(raw) * q.scale), None
    if value is None:
        return None
    out: dict[str, Any] = {
        "id": figure_id(r, q.name), "quantity": q.name, "value": value, "unit": q.unit,
        "ci95": list(interval) if interval else None,
        "interval": q.interval_kind if interval else "none stated",
        # docs/method.md "Bases": this tool's own numbers are measured; an energy estimate says so beside it
        "basis": "measured",
    }
    if energy:
        out.update(energy_status=r.energy_status, estimated=r.estimated, sensor=r.energy_sensor,
                   domains=[d for d in r.energy_domains.split(";") if d])
        if r.estimated:
            out["energy_basis"] = r.energy_basis
    return out


def _source(r: Row, sources: dict[str, Run]) -> dict[str, Any]:
    src = sources.get(r.source)
    return {"run": r.source, "path": str(src.path) if src else None, "run_id": r.run_id, "config_id": r.config_id,
            "results_line": r.line}


def _configuration(r: Row, sources: dict[str, Run]) -> dict[str, Any]:
    setup = {"hardware": r.hardware, "model": r.model, "backend": r.backend, "backend_version": r.backend_version,
             "device": r.device, "threads": r.threads, "scheme": r.scheme, "batch_size": r.batch_size,
             "prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens, "prompt_set": r.prompt_set,
             "scenario": r.scenario}
    if r.serving:
        setup.update(offered_rate=r.offered_rate, concurrency=r.concurrency, arrival=r.arrival, requests=r.requests,
                     saturated=r.saturated, saturation_reason=r.saturation_reason)
    quoted = (_SERVING if r.serving else _OFFLINE) + (() if r.serving else _ENERGY)
    figures = [f for q in quoted if (f := _figure(r, q, q.metric is not None and q.metric.energy))]
    return {"source": _source(r, sources), "setup": setup, "repeats": r.repeats, "stop_reason": r.stop_reason,
            "flags": row_flags(r), "quality_flagged": r.quality_flagged, "interference": r.interference,
            "figures": figures}


def _best(rows: Sequence[Row], key: str, metric: Metric) -> Optional[dict[str, Any]]:
    b = best(rows, metric)
    if b is None:
        return None
    return {"figure": figure_id(b, key), "value": metric.value(b), "ci95": list(i) if (i := metric.interval(b)) else None,
            "estimated": b.estimated if metric.energy else False,
            "excluded_quality_flagged": sum(r.quality_flagged for r in rows)}


def build_summary(sources: Sequence[Run], rows: Sequence[Row], version: str, generated: str) -> dict[str, Any]:
    by_label = {s.name: s for s in sources}
    ok = ok_rows(rows)
    runs = []
    for s in sources:
        env = s.meta.environment
        runs.append({"label": s.name, "path": str(s.path), "run_id": s.meta.run_id,
                     "effbench_version": env.effbench_version, "git_sha": git_sha(env) or None,
                     "sensor": s.meta.sensor.name if s.meta.sensor else None, "warnings": run_warnings(s)})
    best_rows = []
    for g in group_rows(r for r in ok if not r.serving):
        best_rows.append({"hardware": g.hardware, "model": g.model,
                          "best_decode_tokens_per_s": _best(g.rows, "decode_tokens_per_s", METRICS["decode"]),
                          "best_tokens_per_joule": _best(g.rows, "tokens_per_joule", METRICS["tokens_per_joule"])})
    return {
        "summary_version": SUMMARY_VERSION, "generator": f"effbench {version}", "generated": generated,
        "confidence": CONFIDENCE,
        "note": "every interval is a 95% interval; basis 'measured' is this tool's own measurement, with energy_status "
                "saying whether its energy was measured by a sensor or ESTIMATED",
        "runs": runs,
        "best": best_rows,
        "configurations": [_configuration(r, by_label) for r in ok],
        "failed": [{"source": _source(r, by_label), "error": r.error} for r in rows if r.error],
    }


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number becomes null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(_finite(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
