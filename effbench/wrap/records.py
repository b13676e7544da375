"""Records of a wrapped run: one per load point in the tool's results, each with the tool's own
figures as it computed them (``serving.tool``), the serving scenario's whole and steady figures from
the tool's per-request times, and the energy of the same window from the power timeline. A tool
whose results cannot be read gets one whole-run energy record, and a line saying what was missing."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from effbench.environment import now_iso
from effbench.measure.energy import apply_totals
from effbench.measure.timeline import Integral, integrate
from effbench.results.schema import (
    BackendInfo,
    Energy,
    HardwareInfo,
    ModelInfo,
    QuantizationInfo,
    Record,
    ServingInfo,
    ServingWindow,
    Stats,
    Throughput,
    WorkloadInfo,
)
from effbench.stats import combine_rel
from effbench.wrap.formats import ResultsError, ToolBenchmark, ToolResults, read_results

if TYPE_CHECKING:
    from effbench.wrap.runner import Measured, WrapOptions

ENDPOINT = "endpoint"  # as the serving scenario names a server effbench did not start
QUANT_NOTE = "as the server was started: effbench wrap does not see its weights (give --scheme)"


def energy_section(integral: Integral, idle_w: Optional[float], phase: str, windows: list[dict[str, Any]],
                   basis: str, tokens: Optional[float] = None, requests: Optional[float] = None,
                   edge_rel: Optional[float] = None, sampling_s: Optional[float] = None) -> Energy:
    """The ``energy`` section of one window, as the serving scenario fills it: total and dynamic
    joules (idle power x window taken off), per token and per request of that window."""
    e = Energy(status=integral.status if integral.joules is not None else "unavailable", sensor=None,
               sampling_interval_s=sampling_s, coverage=integral.coverage, idle_power_w=idle_w,
               window_s=integral.seconds, confidence=0.95, windows=windows,
               basis=f"{phase}: {basis}; {integral.basis}")
    j = integral.joules
    if j is None:
        return e
    e.joules_by_domain = dict(integral.joules_by_domain)
    e.mean_power_w = integral.mean_power_w
    apply_totals(e, j, integral.seconds, tokens or 0.0, None, idle_w,
                 combine_rel(integral.uncertainty_rel, edge_rel), integral.uncertainty_rel)
    if tokens:
        e.tokens_in_window = tokens
    if requests:
        e.joules_per_request = j / requests
    return e


def _window(phase: str, start: float, end: float, integral: Integral) -> dict[str, Any]:
    return {"phase": phase, "start": start, "end": end, "calls": 1, "joules": integral.joules}


def _sensor_fields(e: Energy, m: "Measured", segment_s: float) -> Energy:
    e.sensor = m.sensor_info.get("name")
    e.sampling_interval_s = segment_s
    return e


def _base(opts: "WrapOptions", run_id: str, config_id: str, hardware: dict[str, Any], model: Optional[str],
          workload: WorkloadInfo, **sections: Any) -> Record:
    return Record(run_id=run_id, config_id=config_id, created_at=now_iso(),
                  model=ModelInfo(id=opts.model or model or "unknown"),
                  backend=BackendInfo(name=ENDPOINT, device=opts.device),
                  quantization=QuantizationInfo(scheme=opts.scheme, note=QUANT_NOTE if opts.scheme == "unknown" else None),
                  workload=workload,
                  hardware=HardwareInfo(profile=hardware.get("profile"), detected_name=hardware.get("detected_name")),
                  **sections)


def command_failure(m: "Measured") -> Optional[str]:
    r = m.run
    if r.signal:
        import signal

        return f"the wrapped command was killed by {signal.Signals(r.signal).name} (exit {r.exit_code})"
    return f"the wrapped command exited with {r.exit_code}" if r.exit_code else None


def whole_run_record(opts: "WrapOptions", m: "Measured", run_id: str, idle_w: Optional[float],
                     hardware: dict[str, Any], tool: dict[str, Any], why: str) -> Record:
    """Energy of the whole command, when its per-request results cannot be read."""
    start, end = m.run.start_unix, m.run.end_unix
    integral = integrate(m.segments, start, end)
    energy = _sensor_fields(energy_section(integral, idle_w, "the whole command", [_window("command", start, end, integral)],
                                           f"no per-request results ({why})"), m, opts.segment_s)
    serving = ServingInfo(duration_s=end - start, steady_reason=f"no per-request results: {why}",
                          engine={"name": ENDPOINT}, token_count_source=None, tool=tool)  # tool: an extra key
    return _base(opts, run_id, "wrap-0", hardware, None,
                 WorkloadInfo(batch_size=1, prompt_tokens=0, new_tokens=0, prompt_set=f"wrap:{tool.get('name')}"),
                 energy=energy, serving=serving, stats=Stats(duration_s=end - start, stop_reason="wrapped-command"),
                 error=command_failure(m))


def tool_block(results: Optional[ToolResults], bench: Optional[ToolBenchmark], m: "Measured",
               extra: dict[str, Any]) -> dict[str, Any]:
    """``serving.tool``: who measured the latencies, and its own figures untouched."""
    name = results.tool if results else Path(m.run.command[0]).name
    out: dict[str, Any] = {"name": name, "version": results.version if results else None,
                           "format": results.format if results else None,
                           "results_file": str(results.path) if results else None,
                           "command": m.run.command, "exit_code": m.run.exit_code}
    if results and not results.version:
        out["version_note"] = "not stated in the tool's results file"
    if bench is not None:
        out.update(benchmark=bench.label, figures=bench.figures, definitions=bench.definitions, notes=bench.notes)
    out.update(extra)
    return out


def _benchmark_record(opts: "WrapOptions", m: "Measured", run_id: str, idle_w: Optional[float],
                      hardware: dict[str, Any], results: ToolResults, index: int, bench: ToolBenchmark) -> Record:
    from effbench.measure.attribution import attribute
    from effbench.measure.attribution import summary as attribution_summary
    from effbench.scenarios.serving.metrics import summarize_point
    from effbench.wrap.convert import max_in_flight, place, steady_bounds, to_results

    placement = place(bench, m.run.start_unix, m.run.end_unix, m.run.mono_to_unix)
    reqs, ttft_known = to_results(bench, placement)
    s0, s1, missed = steady_bounds(reqs)
    summary = summarize_point(reqs, (s0, s1), bench.rate, None, None, missed)
    # the serving scenario's own whole and steady figures (whole_figures, steady_figures), as they are
    whole, steady = summary.pop("whole"), summary.pop("steady")
    steady_reason = summary["steady_reason"]
    if not ttft_known:
        summary["ttft_ms"] = None
    if not bench.exact_chunks:
        summary["itl_ms"] = None  # gaps spread evenly by effbench are not measured gaps
    in_flight = max_in_flight(reqs)
    ok = [r for r in reqs if r.ok]
    first_send, last_answer = min(r.start for r in reqs), max(r.end for r in reqs)
    windows: list[dict[str, Any]] = []
    whole_int = integrate(m.segments, first_send, last_answer)
    windows.append(_window("whole", first_send, last_answer, whole_int))
    figures = steady or whole
    if steady is not None and s0 is not None and s1 is not None:
        integral = integrate(m.segments, s0, s1)
        windows.insert(0, _window("steady", s0, s1, integral))
        phase, basis = "steady", "the tool's steady window (first answer to last send)"
    else:
        integral = whole_int
        phase, basis = "whole", f"the whole point, first send to last answer (no steady state: {steady_reason})"
    tokens = figures["output_tokens"] if figures else None
    edge = 2 * max(1, in_flight) / tokens if tokens else None  # a chunk per request in flight either side
    energy = _sensor_fields(energy_section(integral, idle_w, phase, windows, basis, tokens,
                                           figures["requests"] if figures else None, edge), m, opts.segment_s)
    cached = {i: r.cached_tokens for i, r in enumerate(bench.requests) if r.cached_tokens}
    att = attribute(reqs, m.segments, idle_w, cached)
    prompt_known = all(r.prompt_tokens is not None for r in bench.requests if not r.error) and bool(ok)
    energy.attribution = attribution_summary(att, whole_int.uncertainty_rel, prompt_known)
    serving = ServingInfo(
        rate=bench.rate, concurrency=bench.concurrency, arrival=bench.arrival, requests=len(reqs),
        duration_s=whole["window_s"] if whole else 0.0,
        whole=ServingWindow(**whole) if whole else None, steady=ServingWindow(**steady) if steady else None,
        engine={"name": ENDPOINT, "url": bench.url, "model": bench.model},
        output_length=f"as {results.tool} asked", token_count=f"as counted by {results.tool}",
        max_in_flight=in_flight, **{k: v for k, v in summary.items() if k != "token_count_source"},
        token_count_source="tool", tool=tool_block(results, bench, m, {"clock": placement.how}))  # tool: an extra key
    throughput = Throughput(ttft_s=_mean_s(serving.ttft_ms), tpot_s=_mean_s(serving.tpot_ms),
                            e2e_latency_s=_mean_s(serving.e2e_ms), e2e_tokens_per_s=serving.output_tokens_per_s)
    stats = Stats(repeats=len(ok), duration_s=serving.duration_s, stop_reason="wrapped-command",
                  samples={"ttft_s": [r.ttft_s for r in ok if r.ttft_s is not None] if ttft_known else [],
                           "e2e_latency_s": [r.e2e_s for r in ok if r.e2e_s is not None]})
    mean_prompt = summary.get("mean_prompt_tokens") or 0.0
    return _base(opts, run_id, f"wrap-{index}", hardware, bench.model,
                 WorkloadInfo(batch_size=bench.concurrency or 1, prompt_tokens=round(mean_prompt),
                              new_tokens=round(summary.get("mean_output_tokens") or 0.0),
                              prompt_set=f"{results.tool}:{bench.label}"),
                 energy=energy, serving=serving, throughput=throughput, stats=stats, error=command_failure(m))


def _mean_s(latency: Any) -> Optional[float]:
    return latency.mean / 1000 if latency is not None and latency.mean is not None else None


def build_records(opts: "WrapOptions", m: "Measured", run_id: str, idle_w: Optional[float],
                  hardware: dict[str, Any]) -> tuple[list[Record], list[str]]:
    """(records, one-line problems). Never raises for the tool's output: what cannot be read
    becomes a whole-run energy record and a line."""
    from effbench.wrap.locate import find_results

    problems: list[str] = []
    path, how = (opts.results, "given with --results") if opts.results else find_results(
        m.run.command[1:], m.run.cwd, m.run.start_unix)
    results: Optional[ToolResults] = None
    why = how
    if path is not None:
        try:
            results = read_results(path, opts.fmt)
        except ResultsError as e:
            why = str(e)
    if results is None:
        problems.append(f"{why}; wrote a whole-run energy record")
        return [whole_run_record(opts, m, run_id, idle_w, hardware, tool_block(None, None, m, {"missing": why}), why)], problems
    records: list[Record] = []
    for i, bench in enumerate(results.benchmarks):
        try:
            records.append(_benchmark_record(opts, m, run_id, idle_w, hardware, results, i, bench))
        except ResultsError as e:
            problems.append(f"{results.path}: {e}; wrote a whole-run energy record")
            rec = whole_run_record(opts, m, run_id, idle_w, hardware, tool_block(results, bench, m, {"missing": str(e)}), str(e))
            records.append(rec.model_copy(update={"config_id": f"wrap-{i}"}))
        for note in bench.notes:
            problems.append(note)
    return records, problems



def describe(run_dir: Path) -> list[str]:
    """One line per record of a wrapped run, for the terminal."""
    from effbench.results.store import RunStore

    lines = []
    for d in RunStore(run_dir).record_dicts():
        s, e = d.get("serving") or {}, d.get("energy") or {}
        tool = s.get("tool") or {}
        who = (f"{tool.get('name')} {tool.get('version') or ''}".strip()
               + (f" {tool['benchmark']}" if tool.get("benchmark") else ""))
        att = (e.get("attribution") or {}).get("joules_per_request") or {}
        u = e.get("uncertainty_rel")
        parts = [f"{e.get('status')} {_fmt(e.get('joules_total'))} J over {_fmt(e.get('window_s'))} s"
                 + (f" (+-{u:.0%})" if u is not None else "")]
        if e.get("joules_per_token") is not None:
            parts.append(f"{_fmt(e['joules_per_token'], 4)} J/token, {_fmt(e.get('joules_per_request'))} J/request")
        if att.get("p50") is not None:
            parts.append(f"attributed J/request p50 {_fmt(att['p50'])} p95 {_fmt(att.get('p95'))}")
        window = "steady" if s.get("steady") else "whole point" if s.get("whole") else "whole command"
        lines.append(f"{who}: {window}: " + ", ".join(parts))
    lines.append(f"records: {run_dir / 'results.jsonl'}; power timeline: {run_dir / 'power_timeline.jsonl'}")
    return lines


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{digits}g}"
