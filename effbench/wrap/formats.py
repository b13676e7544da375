"""Reading a load generator's own per-request results: GuideLLM's benchmarks JSON (0.8), AIPerf's
profile export (0.13: ``profile_export.jsonl`` with ``profile_export_aiperf.json`` beside it),
``vllm bench serve --save-result --save-detailed`` JSON, and a plain CSV for anything else.

Each becomes a list of ``ToolBenchmark`` (one per load point the file holds) of ``ToolRequest``
with wall-clock times, plus the tool's own summary figures kept as the tool computed them."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from effbench.errors import EffbenchError

FORMATS = ("guidellm", "aiperf", "vllm", "csv")
# Most reconstructed chunks per request where a tool stores only the first and last token times:
# the token count is spread evenly over them (a finer grid changes no window figure).
MAX_CHUNKS = 256
# Rounding in the tools' own sums (ms to s, float sums of gaps): a request's last token may land
# this far after its recorded end without being out of order.
TIME_SLACK_S = 0.005
QUANTILE_KEYS = ("p50", "p90", "p95", "p99")


class ResultsError(EffbenchError):
    """The tool's results cannot be read: one line saying what is missing or wrong."""


@dataclass
class ToolRequest:
    """One request as the tool saw it. Times are seconds on ``ToolBenchmark.clock``."""

    start: float
    end: float
    ttft_s: Optional[float] = None
    itl_s: Optional[list[float]] = None  # gaps between streamed chunks, where the tool keeps them
    first_token: Optional[float] = None  # absolute, where the tool keeps it instead of gaps
    last_token: Optional[float] = None
    chunks: Optional[int] = None  # streamed chunks that carried tokens, where known
    output_tokens: Optional[int] = None
    prompt_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    error: Optional[str] = None


@dataclass
class ToolBenchmark:
    label: str
    requests: list[ToolRequest]
    clock: str = "unix"  # or "monotonic": time.perf_counter() of the machine the tool ran on
    figures: dict[str, Any] = field(default_factory=dict)  # the tool's own, as it computed them
    definitions: dict[str, str] = field(default_factory=dict)
    rate: Optional[float] = None
    concurrency: Optional[int] = None
    arrival: Optional[str] = None
    model: Optional[str] = None
    url: Optional[str] = None
    exact_chunks: bool = True  # per-chunk times as streamed (False: spread between first and last token)
    notes: list[str] = field(default_factory=list)


@dataclass
class ToolResults:
    tool: str
    version: Optional[str]
    format: str
    path: Path
    benchmarks: list[ToolBenchmark]


# -- small readers ---------------------------------------------------------------------------
def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _int(v: Any) -> Optional[int]:
    f = _num(v)
    return None if f is None or f < 0 else int(round(f))


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _dist(d: Any, unit: str) -> Optional[dict[str, Any]]:
    """A tool's distribution summary as {p50, p90, p95, p99, mean, unit}, values untouched."""
    if not isinstance(d, dict):
        return None
    pct: dict[str, Any] = d["percentiles"] if isinstance(d.get("percentiles"), dict) else d
    out: dict[str, Any] = {k: _num(pct.get(k)) for k in QUANTILE_KEYS if _num(pct.get(k)) is not None}
    mean = _num(d.get("mean", d.get("avg")))
    if mean is not None:
        out["mean"] = mean
    return {**out, "unit": unit} if out else None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None


# -- GuideLLM --------------------------------------------------------------------------------
GUIDELLM_DEFINITIONS = {
    "time_to_first_token_ms": "first token iteration - request start",
    "time_per_output_token_ms": "(last token - request start) / output tokens (includes the TTFT)",
    "inter_token_latency_ms": "per request (last token - first token) / (output tokens - 1)",
    "request_latency": "request end - request start (seconds)",
    "requests_per_second": "successful completions over the measured window (its mean)",
    "output_tokens_per_second": "output tokens over the measured window (its mean)",
}


def _guidellm_request(r: dict[str, Any], errored: bool) -> ToolRequest:
    t = _get(r, "info", "timings") or {}
    start = _num(t.get("request_start")) or _num(r.get("request_start_time")) or _num(_get(r, "info", "started_at"))
    end = (_num(t.get("request_end")) or _num(r.get("request_end_time")) or _num(_get(r, "info", "completed_at"))
           or _num(t.get("resolve_end")))
    if start is None or end is None:
        raise ResultsError("a GuideLLM request has no request_start/request_end timings")
    err = _get(r, "info", "error") or ("errored" if errored else None)
    return ToolRequest(
        start=start, end=end,
        ttft_s=(_num(r.get("time_to_first_token_ms")) or 0.0) / 1000 if r.get("time_to_first_token_ms") is not None else None,
        first_token=_num(t.get("first_token_iteration")), last_token=_num(t.get("last_token_iteration")),
        chunks=_int(t.get("token_iterations")), output_tokens=_int(r.get("output_tokens")),
        prompt_tokens=_int(r.get("prompt_tokens")), cached_tokens=_int(r.get("cached_tokens")),
        error=str(err).splitlines()[0][:200] if err else None)


def _guidellm_strategy(b: dict[str, Any]) -> tuple[Optional[float], Optional[int], Optional[str], str]:
    s = _get(b, "config", "strategy") or {}
    kind = str(s.get("type_") or s.get("kind") or "unknown")
    rate = _num(s.get("rate"))
    streams = _int(s.get("streams") or s.get("max_concurrency"))
    if kind == "synchronous":
        return None, 1, "closed-loop", "synchronous"
    if kind == "concurrent":
        return None, streams, "closed-loop", f"concurrent@{streams}"
    if kind in ("poisson", "constant", "async") and rate is not None:
        return rate, None, "poisson" if kind == "poisson" else "constant", f"{kind}@{rate:g}"
    return rate, None, None, kind


def read_guidellm(path: Path, doc: dict[str, Any]) -> ToolResults:
    version = _get(doc, "metadata", "guidellm_version")
    model = _get(doc, "config", "spec", "backend", "model")
    url = _get(doc, "config", "spec", "backend", "target")
    out = []
    for i, b in enumerate(doc.get("benchmarks") or []):
        if not isinstance(b, dict):
            continue
        reqs = b.get("requests") or {}
        requests = [_guidellm_request(r, False) for r in reqs.get("successful") or [] if isinstance(r, dict)]
        requests += [_guidellm_request(r, True) for r in reqs.get("errored") or [] if isinstance(r, dict)]
        m = b.get("metrics") or {}
        figures: dict[str, Any] = {}
        for name, unit in (("time_to_first_token_ms", "ms"), ("time_per_output_token_ms", "ms"),
                           ("inter_token_latency_ms", "ms"), ("request_latency", "s")):
            d = _dist(_get(m, name, "successful"), unit)
            if d:
                figures[name] = d
        for name in ("requests_per_second", "output_tokens_per_second"):
            v = _num(_get(m, name, "successful", "mean"))
            if v is not None:
                figures[name] = v
        totals = m.get("request_totals") or {}
        figures["request_totals"] = {k: totals.get(k) for k in ("successful", "errored", "incomplete", "total")}
        rate, conc, arrival, label = _guidellm_strategy(b)
        bench = ToolBenchmark(label or f"benchmark {i}", requests, "unix", figures, dict(GUIDELLM_DEFINITIONS),
                              rate, conc, arrival, model if isinstance(model, str) else None,
                              url if isinstance(url, str) else None, exact_chunks=False)
        kept = len(reqs.get("successful") or [])
        total_ok = _int(totals.get("successful"))
        if total_ok is not None and kept < total_ok:
            bench.notes.append(f"GuideLLM kept {kept} of {total_ok} successful requests (sample_size): "
                               "per-request figures come from that sample")
        out.append(bench)
    if not out:
        raise ResultsError(f"{path}: GuideLLM results with no benchmark")
    return ToolResults("guidellm", str(version) if version else None, "guidellm", path, out)


# -- AIPerf ----------------------------------------------------------------------------------
AIPERF_DEFINITIONS = {
    "time_to_first_token": "first response chunk - request start (ms)",
    "inter_token_latency": "per request (latency - ttft) / (output tokens - 1) (ms)",
    "inter_chunk_latency": "every gap between streamed chunks, pooled (ms)",
    "request_latency": "request end - request start (ms)",
    "request_throughput": "valid requests / benchmark_duration (first request sent to last response)",
    "output_token_throughput": "output tokens / benchmark_duration",
}


def _ms(metrics: dict[str, Any], name: str) -> Any:
    m = metrics.get(name)
    return m.get("value") if isinstance(m, dict) else None


def _aiperf_request(line: dict[str, Any]) -> Optional[ToolRequest]:
    meta = line.get("metadata") or {}
    if meta.get("benchmark_phase", "profiling") != "profiling":
        return None  # warm-up requests are not part of the tool's figures
    start, end = _num(meta.get("request_start_ns")), _num(meta.get("request_end_ns"))
    if start is None or end is None:
        raise ResultsError("an AIPerf record has no request_start_ns/request_end_ns")
    m = line.get("metrics") or {}
    ttft = _num(_ms(m, "time_to_first_token"))
    gaps = _ms(m, "inter_chunk_latency")
    if isinstance(gaps, (int, float)):
        gaps = [gaps]
    err = line.get("error")
    out = None
    for name in ("usage_completion_tokens", "output_token_count", "output_sequence_length"):
        out = _int(_ms(m, name))
        if out is not None:
            break
    prompt = _int(_ms(m, "usage_prompt_tokens"))
    if prompt is None:
        prompt = _int(_ms(m, "input_sequence_length"))
    return ToolRequest(
        start=start / 1e9, end=end / 1e9, ttft_s=None if ttft is None else ttft / 1000,
        itl_s=[g / 1000 for g in gaps if _num(g) is not None] if isinstance(gaps, list) else None,
        output_tokens=out, prompt_tokens=prompt,
        error=(str(err.get("message") or err.get("type") or "error")[:200] if isinstance(err, dict) else
               (str(err)[:200] if err else ("cancelled" if meta.get("was_cancelled") else None))))


def _aiperf_siblings(path: Path) -> tuple[Optional[Path], Optional[Path]]:
    """(records .jsonl, summary .json) of one AIPerf export, given either."""
    if path.suffix == ".jsonl":
        stem = path.name[: -len(".jsonl")]
        return path, next((p for p in (path.with_name(f"{stem}_aiperf.json"), path.with_name(f"{stem}.json")) if p.is_file()),
                          None)
    stem = path.name[: -len(".json")].removesuffix("_aiperf")
    records = path.with_name(f"{stem}.jsonl")
    return (records if records.is_file() else None), path


def read_aiperf(path: Path) -> ToolResults:
    records_path, summary_path = _aiperf_siblings(path)
    summary = _load_json(summary_path) if summary_path else {}
    if not isinstance(summary, dict):
        summary = {}
    if records_path is None:
        raise ResultsError(f"no AIPerf per-request records beside {path} (profile_export.jsonl): "
                           "run AIPerf with --export-level records (its default)")
    requests: list[ToolRequest] = []
    for n, raw in enumerate(records_path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            raise ResultsError(f"{records_path}: line {n} is not JSON") from None
        if not isinstance(line, dict):
            raise ResultsError(f"{records_path}: line {n} is not an AIPerf record")
        r = _aiperf_request(line)
        if r is not None:
            requests.append(r)
    figures: dict[str, Any] = {}
    for name in ("time_to_first_token", "inter_token_latency", "inter_chunk_latency", "request_latency"):
        d = _dist(summary.get(name), str(_get(summary, name, "unit") or "ms"))
        if d:
            figures[name] = d
    for name in ("request_throughput", "output_token_throughput", "benchmark_duration"):
        v = _num(_get(summary, name, "avg"))
        if v is not None:
            figures[name] = v
    phase = next((p for p in _get(summary, "input_config", "phases") or [] if isinstance(p, dict)
                  and p.get("kind", "profiling") == "profiling"), {})
    conc = _int(phase.get("concurrency"))
    rate = _num(phase.get("request_rate") or phase.get("rate"))
    models = _get(summary, "input_config", "models", "items") or []
    urls = _get(summary, "input_config", "endpoint", "urls") or []
    bench = ToolBenchmark(f"concurrency@{conc}" if conc else (f"rate@{rate:g}" if rate else "profiling"), requests,
                          "unix", figures, dict(AIPERF_DEFINITIONS), rate if not conc else None, conc,
                          "closed-loop" if conc and not rate else ("poisson" if rate else None),
                          models[0].get("name") if models and isinstance(models[0], dict) else None,
                          urls[0] if urls and isinstance(urls[0], str) else None)
    version = summary.get("aiperf_version")
    if not version:
        bench.notes.append("AIPerf's version is stated only in profile_export_aiperf.json, which is not beside the records")
    return ToolResults("aiperf", str(version) if version else None, "aiperf", records_path, [bench])


# -- vllm bench serve ------------------------------------------------------------------------
VLLM_DEFINITIONS = {
    "ttft_ms": "first streamed token - send",
    "tpot_ms": "per request (latency - ttft) / (output tokens - 1)",
    "itl_ms": "every gap between streamed chunks, pooled",
    "e2el_ms": "answer - send",
    "request_throughput": "completed / duration (first send to last answer)",
    "output_throughput": "output tokens / duration",
}


def read_vllm(path: Path, doc: dict[str, Any]) -> ToolResults:
    starts, ttfts, itls, lats = (doc.get(k) for k in ("start_times", "ttfts", "itls", "latencies"))
    if not all(isinstance(x, list) for x in (starts, ttfts, itls, lats)):
        raise ResultsError(f"{path}: vllm bench serve saved no per-request results (start_times, ttfts, itls, "
                           "latencies): rerun it with --save-result --save-detailed")
    assert isinstance(starts, list) and isinstance(ttfts, list) and isinstance(itls, list) and isinstance(lats, list)
    n = len(starts)
    outs = doc.get("output_lens") or [None] * n
    ins = doc.get("input_lens") or [None] * n
    errors = doc.get("errors") or [""] * n
    if not (len(ttfts) == len(itls) == len(lats) == len(outs) == len(ins) == n):
        raise ResultsError(f"{path}: vllm bench serve's per-request lists have different lengths")
    requests = []
    for i in range(n):
        start, lat = _num(starts[i]), _num(lats[i])
        if start is None or lat is None:
            raise ResultsError(f"{path}: request {i} has no start time or latency")
        err = errors[i] if i < len(errors) else ""
        gaps = [float(g) for g in itls[i] if _num(g) is not None] if isinstance(itls[i], list) else None
        requests.append(ToolRequest(start, start + lat, _num(ttfts[i]), gaps, output_tokens=_int(outs[i]),
                                    prompt_tokens=_int(ins[i]), error=str(err)[:200] if err else None))
    figures: dict[str, Any] = {}
    for name in ("ttft", "tpot", "itl", "e2el"):
        d = {k: _num(doc.get(f"{k}_{name}_ms")) for k in QUANTILE_KEYS}
        d = {k: v for k, v in d.items() if v is not None}
        if _num(doc.get(f"mean_{name}_ms")) is not None:
            d["mean"] = _num(doc.get(f"mean_{name}_ms"))
        if d:
            figures[f"{name}_ms"] = {**d, "unit": "ms"}
    for name in ("request_throughput", "output_throughput", "duration", "completed", "failed"):
        v = _num(doc.get(name))
        if v is not None:
            figures[name] = v
    rate = doc.get("request_rate")
    rate_f = None if rate in (None, "inf") else _num(rate)
    conc = _int(doc.get("max_concurrency"))
    label = f"{'rate ' + str(rate) if rate is not None else ''}{' max-concurrency ' + str(conc) if conc else ''}".strip()
    bench = ToolBenchmark(label or "vllm bench serve", requests, "monotonic", figures, dict(VLLM_DEFINITIONS),
                          rate_f, conc, "closed-loop" if conc and rate_f is None else ("poisson" if rate_f else None),
                          doc.get("model_id") if isinstance(doc.get("model_id"), str) else None)
    version = doc.get("vllm_version") or _get(doc, "metadata", "version")
    return ToolResults("vllm-bench-serve", str(version) if version else None, "vllm", path, [bench])


# -- CSV -------------------------------------------------------------------------------------
CSV_COLUMNS = {
    "start": ("start", "start_time", "request_start", "send_time"),
    "end": ("end", "end_time", "request_end", "finish_time"),
    "output_tokens": ("output_tokens", "completion_tokens", "output_len"),
    "prompt_tokens": ("prompt_tokens", "input_tokens", "input_len"),
    "cached_tokens": ("cached_tokens", "cached_prompt_tokens"),
    "ttft_s": ("ttft_s", "ttft"),
    "ttft_ms": ("ttft_ms",),
    "error": ("error",),
}


def read_csv(path: Path) -> ToolResults:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    rows = list(csv.DictReader(text.splitlines()))
    header = {h.strip().lower(): h for h in (rows[0].keys() if rows else []) if h}
    col = {k: next((header[a] for a in names if a in header), None) for k, names in CSV_COLUMNS.items()}
    missing = [k for k in ("start", "end", "output_tokens") if col[k] is None]
    if missing:
        raise ResultsError(f"{path}: a results CSV needs the columns start, end and output_tokens "
                           f"(optional: prompt_tokens, cached_tokens, ttft_s or ttft_ms, error); missing {', '.join(missing)}")
    requests = []
    for n, row in enumerate(rows, 2):
        def val(key: str, row: dict[str, str] = row, n: int = n) -> Optional[float]:  # bound to this row
            c = col[key]
            raw = (row.get(c) or "").strip() if c else ""
            if not raw:
                return None
            try:
                return float(raw)
            except ValueError:
                raise ResultsError(f"{path}: line {n}: {c} is not a number ({raw[:40]!r})") from None

        start, end, tokens = val("start"), val("end"), val("output_tokens")
        if start is None or end is None or tokens is None:
            raise ResultsError(f"{path}: line {n}: start, end and output_tokens are required")
        ttft = val("ttft_s")
        if ttft is None and val("ttft_ms") is not None:
            ttft = (val("ttft_ms") or 0.0) / 1000
        err = (row.get(col["error"]) or "").strip() if col["error"] else ""
        prompt, cached = val("prompt_tokens"), val("cached_tokens")
        requests.append(ToolRequest(start, end, ttft, output_tokens=int(tokens),
                                    prompt_tokens=None if prompt is None else int(prompt),
                                    cached_tokens=None if cached is None else int(cached), error=err or None))
    if not requests:
        raise ResultsError(f"{path}: the CSV holds no requests")
    clock = "unix" if min(r.start for r in requests) > 1e9 else "monotonic"
    return ToolResults("csv", None, "csv", path, [ToolBenchmark("csv", requests, clock, exact_chunks=False)])


# -- detection -------------------------------------------------------------------------------
def detect(path: Path) -> str:
    """The format of a results file, from its content: one of FORMATS."""
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".jsonl":
        try:
            with path.open(encoding="utf-8") as f:
                first = json.loads(f.readline() or "null")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ResultsError(f"{path} is not JSON lines") from None
        if isinstance(first, dict) and "request_start_ns" in (first.get("metadata") or {}):
            return "aiperf"
        raise ResultsError(f"{path}: JSON lines of an unknown kind (not AIPerf's profile export)")
    doc = _load_json(path)
    kind = _json_kind(doc)
    if kind is None:
        raise ResultsError(f"{path}: not results of GuideLLM, AIPerf or vllm bench serve "
                           "(give --format, or a CSV with start, end, output_tokens)")
    return kind


def _json_kind(doc: Any) -> Optional[str]:
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("benchmarks"), list) and (_get(doc, "metadata", "guidellm_version") or any(
            isinstance(b, dict) and "requests" in b for b in doc["benchmarks"])):
        return "guidellm"
    if "aiperf_version" in doc or ("request_throughput" in doc and "input_config" in doc):
        return "aiperf"
    if "ttfts" in doc or ("request_throughput" in doc and "backend" in doc):
        return "vllm"
    return None


def read_results(path: Path, fmt: str = "auto") -> ToolResults:
    """The tool's results in ``path`` (``fmt`` auto-detected from the content)."""
    kind = detect(path) if fmt == "auto" else fmt
    if kind not in FORMATS:
        raise ResultsError(f"unknown results format '{fmt}': choose auto, {', '.join(FORMATS)}")
    if kind == "csv":
        return read_csv(path)
    if kind == "aiperf":
        return read_aiperf(path)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise ResultsError(f"{path} is not a {kind} results file (not a JSON object)")
    return read_guidellm(path, doc) if kind == "guidellm" else read_vllm(path, doc)
