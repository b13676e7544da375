"""The methodology section: what was measured and how, generated from ``run.json`` and the records,
so a paper can cite it verbatim (sensors, sampling, coverage, idle baseline, repeats, CI widths,
warm-up, measured vs estimated energy, interference).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from effbench.report.document import Bullets, Facts, Note, Paragraph, Section, num, pct, size
from effbench.report.model import Row, RunSource, collapse_texts, value_range


@dataclass(frozen=True)
class RunMethod:
    """One run directory's method: label/value facts and a citable paragraph."""

    source: str
    facts: list[tuple[str, str]]
    statement: str
    estimated: bool


def _join(values: Iterable[Any]) -> str:
    seen: list[str] = []
    for v in values:
        if v is not None and str(v) not in seen:
            seen.append(str(v))
    return ", ".join(seen) if seen else "-"


def _span(rng: Optional[tuple[float, float]], fmt=num, unit: str = "") -> str:
    if rng is None:
        return "-"
    lo, hi = rng
    return f"{fmt(lo)}{unit}" if fmt(lo) == fmt(hi) else f"{fmt(lo)}{unit} to {fmt(hi)}{unit}"


def _mapping(d: Any) -> dict[str, Any]:
    return d if isinstance(d, dict) else {}


# -- facts ---------------------------------------------------------------------------------------

def _machine(env: dict, hw: dict, rows: Sequence[Row]) -> str:
    cpu = _mapping(env.get("cpu"))
    parts = [f"CPU {cpu.get('model', '?')} ({cpu.get('physical_cores', '?')} cores, "
             f"{cpu.get('logical_cpus', '?')} logical CPUs, {cpu.get('affinity', '?')} usable)"]
    if env.get("memory_bytes"):
        parts.append(f"{size(env['memory_bytes'])} RAM")
    for gpu in env.get("gpus") or []:
        g = _mapping(gpu)
        extra = ", ".join(f"{k} {v}" for k, v in g.items() if k != "name" and isinstance(v, (str, int, float)))
        parts.append(f"GPU {g.get('name', '?')}" + (f" ({extra})" if extra else ""))
    profile = hw.get("profile") or _join(r.hardware_profile for r in rows)
    recorded = profile if profile not in (None, "-") else "none recorded"
    parts.append(f"hardware profile {recorded} (detected {hw.get('detected_name') or '?'})")
    return "; ".join(parts)


def git_sha(env: dict) -> str:
    """The git sha exactly as the run stored it (a ``-dirty`` suffix says the tree had local changes)."""
    return str(env.get("git_sha") or "")


def threads_text(rows: Sequence[Row], env: dict) -> str:
    """The threads the configurations ran with, from each record's ``backend.threads`` (what the
    backend was set to), not the process default the environment block saw at start."""
    recorded = sorted({r.threads for r in rows if r.threads is not None})
    torch = _mapping(env.get("torch"))
    default = torch.get("threads") if torch else None
    if not recorded:
        return f"threads not recorded per configuration (torch default at start {default if default is not None else '?'})"
    text = f"{_join(recorded)} thread(s) per configuration (backend.threads)"
    if default is not None and {default} != set(recorded):
        text += f"; the process default at start was {default}"
    return text


def _software(env: dict, rows: Sequence[Row]) -> str:
    sha = git_sha(env)
    parts = [f"effbench {env.get('effbench_version', '?')}" + (f" (git {sha})" if sha else ""),
             f"Python {env.get('python', '?')}", str(env.get("platform", "?"))]
    backends = _join(r.backend_version for r in rows)
    if backends != "-":
        parts.append(f"backend {backends}")
    parts.append(threads_text(rows, env))
    torch = _mapping(env.get("torch"))
    if torch:
        parts.append(f"torch interop threads {torch.get('interop_threads', '?')}, CUDA {torch.get('cuda') or 'none'}")
    return "; ".join(parts)


def _repeats_rule(cfg: dict) -> str:
    warm = cfg.get("warmup")
    warm_s = f"{warm} warm-up generation(s), then " if warm is not None else ""
    if cfg.get("repeats"):
        return f"{warm_s}exactly {cfg['repeats']} timed repeats per configuration"
    return (f"{warm_s}repeats until the 95% interval of decode tokens/s is within ±{pct(cfg.get('ci_target'), 0)} "
            f"(at least {cfg.get('min_repeats', '?')}, at most {cfg.get('max_repeats', '?')} repeats, "
            f"time cap {num(cfg.get('max_time_s'))} s per configuration)")


def _headline(rows: Sequence[Row]) -> str:
    """What the per-repeat headline is, from the records: the median (stats.estimator), or the mean in
    records written before effbench recorded it."""
    kinds = {"the median" if r.estimator == "median" else "the mean" for r in rows}
    return " or ".join(sorted(kinds))


def _excluded(rows: Sequence[Row]) -> str:
    left = sum(r.excluded_repeats for r in rows)
    return f"; {left} repeat(s) disturbed by other processes were left out" if left else ""


def _energy_statement(rows: Sequence[Row], sensor: dict, sampling: str = "") -> str:
    """Energy: estimated (its basis) and/or measured (the sensor), each with its relative 95% uncertainty."""
    statuses = {r.energy_status for r in rows}
    text = ""
    if "estimated" in statuses:
        text += ("Energy was ESTIMATED, not measured "
                 f"({'; '.join(collapse_texts(r.energy_basis for r in rows if r.estimated))}), "
                 "with a relative 95% uncertainty of "
                 f"{_span(value_range(r.energy_uncertainty_rel for r in rows if r.estimated), pct)}. ")
    if "measured" in statuses:
        text += (f"Energy was measured with {sensor.get('name', '?')} ({sensor.get('kind', '?')}{sampling}), with a relative 95% "
                 "uncertainty of "
                 f"{_span(value_range(r.energy_uncertainty_rel for r in rows if r.energy_status == 'measured'), pct)} "
                 "combining repeat spread and sensor accuracy. ")
    return text


def _repeats_achieved(rows: Sequence[Row], cfg: dict) -> str:
    if not rows:
        return "-"
    n = value_range(r.repeats for r in rows)
    ci = value_range(r.ci95_rel for r in rows)
    stops = Counter(r.stop_reason or "unknown" for r in rows)
    text = f"n = {_span(n, lambda v: f'{v:.0f}')}, CI95 half-width {_span(ci, pct)} of {_headline(rows)}"
    text += "; stopped by " + ", ".join(f"{k} ({v})" for k, v in sorted(stops.items()))
    target = cfg.get("ci_target")
    wide = [r for r in rows if target and r.ci95_rel is not None and r.ci95_rel > target]
    if wide:
        text += f"; {len(wide)} configuration(s) wider than the ±{pct(target, 0)} target"
    return text


def _time_capped(rows: Sequence[Row], cfg: dict) -> str:
    capped = [r for r in rows if r.time_capped]
    if not capped:
        return "none"
    target = cfg.get("ci_target")
    text = (f"{len(capped)} of {len(rows)} configuration(s) (marked 'time cap' in the tables): their CI95 may be "
            f"wider than the ±{pct(target, 0)} target" if target else f"{len(capped)} of {len(rows)} configuration(s)")
    spread = value_range(r.spread_cv for r in capped)
    if spread:
        text += (f"; their repeats spread {_span(spread, pct)} (standard deviation / mean of the per-repeat values): "
                 "on a busy or shared machine each repeat's speed varies, and more repeats or a quieter machine narrow it")
    return text


def _sensor(sensor: dict) -> str:
    if not sensor:
        return "not recorded"
    text = f"{sensor.get('name', '?')} ({sensor.get('kind', '?')}); domains {_join(sensor.get('domains') or [])}"
    if sensor.get("update_period_s") is not None:
        text += f"; update period {num(sensor['update_period_s'])} s"
    if sensor.get("accuracy_rel") is not None:
        text += f"; stated accuracy ±{pct(sensor['accuracy_rel'], 0)}"
    if sensor.get("reason"):
        text += f"; {sensor['reason']}"
    return text


def _sampling(rows: Sequence[Row], sensor: dict) -> str:
    interval = value_range(r.sampling_interval_s for r in rows)
    coverage = value_range(r.coverage for r in rows)
    if interval is None and coverage is None:
        if sensor.get("kind") == "energy-counter":
            return "energy counter read at window start and end (no polling)"
        if sensor.get("kind") == "estimate":
            return "none (estimate from utilisation, no power samples)"
        return "not recorded"
    return f"interval {_span(interval, num, ' s')}; coverage of each window {_span(coverage, pct)}"


UNKNOWN_NO_RUN = "unknown (the run has no run.json)"


def _idle(run: dict, sensor: dict, cfg: dict) -> tuple[str, Optional[float]]:
    if not run:
        return UNKNOWN_NO_RUN, None
    idle = _mapping(run.get("idle_baseline"))
    if idle.get("power_w") is not None:
        text = (f"{num(idle['power_w'])} W over {num(idle.get('duration_s'))} s "
                f"({idle.get('sensor', '?')}, {idle.get('status', '?')})")
        return text, float(idle["power_w"])
    if idle.get("error"):
        return f"failed ({idle['error']}); no idle power subtracted", None
    if sensor.get("kind") in ("estimate", "none"):
        return "not measured (an estimate or no sensor cannot observe idle power); dynamic energy not reported", None
    if not cfg.get("idle_s"):
        return "not measured (--idle-s 0); dynamic energy not reported", None
    return "not recorded", None


def _energy_status(rows: Sequence[Row]) -> str:
    counts = Counter(r.energy_status for r in rows)
    text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    bases = "; ".join(collapse_texts(r.energy_basis for r in rows if r.estimated))
    if bases:
        text += f". ESTIMATED basis: {bases}"
    return text


def _uncertainty(rows: Sequence[Row]) -> str:
    rng = value_range(r.energy_uncertainty_rel for r in rows)
    if rng is None:
        return "-"
    return f"±{_span(rng, pct)} relative (root-sum-square of the repeat spread and the sensor's stated accuracy)"


def _interference(rows: Sequence[Row]) -> str:
    if not rows:
        return "-"
    flagged = [r for r in rows if r.interference]
    loads = value_range([v for r in rows for v in (r.load_avg_before, r.load_avg_after)])
    load_text = f"; 1-min load average {_span(loads)} around the configurations" if loads else ""
    if not flagged:
        return f"none of {len(rows)} configuration(s) flagged (no competing work detected){load_text}"
    return (f"{len(flagged)} of {len(rows)} configuration(s) FLAGGED: other work competed for the machine; "
            f"treat their figures as lower bounds{load_text}")


def _flags(rows: Sequence[Row]) -> str:
    counts = Counter(f for r in rows for f in r.energy_flags.split(";") if f)
    return ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())) or "none"


SERVING_ENERGY = ("tokens/J = output tokens of one window per point / the window's total energy (idle power "
                  "included), the window the throughput comes from (the steady state, else the whole point); "
                  "J/request = the window's energy / its requests")


def describe_run(src: RunSource, rows: Sequence[Row]) -> RunMethod:
    run, env, cfg = src.run, _mapping(src.run.get("environment")), _mapping(src.run.get("config"))
    sensor, hw = _mapping(run.get("sensor")), _mapping(run.get("hardware"))
    ok = [r for r in rows if not r.error]
    serving = bool(ok) and all(r.serving for r in ok)
    idle_text, _ = _idle(run, sensor, cfg)
    sessions = run.get("sessions") or []
    facts = [
        ("run", f"{run.get('run_id', '?')} in '{src.label}', started {run.get('created_at', '?')}, "
                f"{len(sessions)} session(s), last {(_mapping(sessions[-1]).get('status') if sessions else None) or 'unknown'}"),
        ("machine", f"host {env.get('hostname', '?')}; " + _machine(env, hw, rows) if run else UNKNOWN_NO_RUN),
        ("software", _software(env, rows) if run else UNKNOWN_NO_RUN),
        ("workload", f"models {_join(r.model for r in rows)}; schemes {_join(r.scheme for r in rows)}; "
                     f"batch sizes {_join(sorted({r.batch_size for r in rows}))}; prompt tokens "
                     f"{_join(sorted({r.prompt_tokens for r in rows}))}; generated tokens "
                     f"{_join(sorted({r.new_tokens for r in rows}))}"
                     f"{'' if serving else ' (forced, greedy)'}; prompt sets "
                     f"{_join(r.prompt_set for r in rows)}; seed {cfg.get('seed', env.get('seed', '?'))}"),
        *(_serving_facts(src, ok) if serving else [
            ("timing", _repeats_rule(cfg)),
            ("repeats achieved", _repeats_achieved(ok, cfg)),
            ("stopped at the time cap", _time_capped(ok, cfg))]),
        ("energy sensor", _sensor(sensor)),
        ("sampling", _sampling(ok, sensor)),
        ("energy windows", f"length {_span(value_range(r.energy_window_s for r in ok), num, ' s')}; flags: {_flags(ok)}"),
        ("idle baseline", idle_text),
        ("energy figures", SERVING_ENERGY if serving else
                           "tokens/J = generated tokens / total energy of one generate call (prefill + decode, whole "
                           "batch, idle power included: what the bill sees); decode J/token = decode energy / decoded tokens"),
        ("measured vs estimated", _energy_status(ok)),
        ("energy uncertainty", _uncertainty(ok)),
        ("quality", _quality(ok)),
        ("interference", _interference(ok)),
        ("failed configurations", str(len(rows) - len(ok))),
    ]
    return RunMethod(src.label, facts, _statement(src, ok, cfg, sensor, idle_text), any(r.estimated for r in ok))


def _serving_facts(src: RunSource, rows: Sequence[Row]) -> list[tuple[str, str]]:
    """A serving run's method, from its records' serving sections (not the offline repeat rule)."""
    sv = [r.serving for r in src.records if r.serving is not None and not r.error]
    slo = {k: v for s in sv for k, v in s.slo.items() if v is not None}
    return [
        ("serving load", f"offered {_join(r.load for r in rows)}; arrival {_join(s.arrival for s in sv)}; "
                         f"{_join(s.requests for s in sv)} measured request(s) per point after "
                         f"{_join(s.warmup_requests for s in sv)} warm-up request(s); engine "
                         f"{_join((s.engine or {}).get('version') or (s.engine or {}).get('name') for s in sv)}"),
        ("serving figures", "TTFT, TPOT, ITL and end-to-end latency percentiles per point (p50 with its distribution-free "
                            "95% interval); achieved rate and output tokens/s over the steady window (first answer to "
                            "last send) where the point had one, else over the whole point (first send to last answer, "
                            f"as vLLM's bench, GuideLLM and AIPerf): {_windows(sv)}; "
                            "goodput = requests/s meeting every SLO"
                            + (f" ({', '.join(f'{k} {num(v)}' for k, v in sorted(slo.items()))})" if slo else "")
                            + "; energy over the same window as the throughput"),
        ("output length", _join(s.output_length for s in sv)),
        ("saturated points", f"{sum(r.saturated for r in rows)} of {len(rows)}: "
                             + (_join(s.saturation_reason for s in sv if s.saturated) if any(r.saturated for r in rows)
                                else "none")),
    ]


def _windows(sv: Sequence[Any]) -> str:
    steady = sum(1 for s in sv if s.steady is not None)
    return f"{steady} of {len(sv)} point(s) had a steady state"


def _quality(rows: Sequence[Row]) -> str:
    ppl = [r for r in rows if r.perplexity is not None]
    if not ppl:
        return "perplexity not measured"
    return f"perplexity on the shipped quality text, {len(ppl)} of {len(rows)} configuration(s)"


def _statement(src: RunSource, rows: Sequence[Row], cfg: dict, sensor: dict, idle_text: str) -> str:
    """One paragraph for a paper's method section."""
    env = _mapping(src.run.get("environment"))
    cpu = _mapping(env.get("cpu"))
    gpus = _join(_mapping(g).get("name") for g in env.get("gpus") or [])
    if not src.run:
        where = "unknown hardware (the run has no run.json)"
    elif gpus != "-":
        where = f"{gpus} GPU(s)"
    else:
        where = f"{cpu.get('model', 'an unnamed CPU')} ({cpu.get('logical_cpus', '?')} logical CPUs)"
    sha = git_sha(env)
    ci = value_range(r.ci95_rel for r in rows)
    n = value_range(r.repeats for r in rows)
    if rows and all(r.serving for r in rows):
        return _serving_statement(src, rows, where, sha, sensor, idle_text, env)
    text = (
        f"We measured {_join(r.model for r in rows)} ({_join(r.scheme for r in rows)}; batch sizes "
        f"{_join(sorted({r.batch_size for r in rows}))}; {_join(sorted({r.prompt_tokens for r in rows}))} prompt tokens, "
        f"{_join(sorted({r.new_tokens for r in rows}))} generated tokens) with effbench "
        f"{env.get('effbench_version', 'of unknown version')}"
        f"{f' (git {sha})' if sha else ''} on {where}, backend {_join(r.backend_version or r.backend for r in rows)}, "
        f"{threads_text(rows, env)}. "
        f"Timing used {_repeats_rule(cfg)}; the configurations took {_span(n, lambda v: f'{v:.0f}')} repeats, with CI95 "
        f"half-widths of {_span(ci, pct)} of {_headline(rows)}{_excluded(rows)}. "
    )
    text += _energy_statement(rows, sensor, f"; {_sampling([r for r in rows if r.energy_status == 'measured'], sensor)}")
    statuses = {r.energy_status for r in rows}
    if statuses <= {"unavailable"}:
        text += "No energy was measured. "
    text += f"Idle baseline: {idle_text}. Tokens per joule use total energy, idle included. "
    flagged = sum(r.interference for r in rows)
    text += (f"{flagged} configuration(s) were flagged for interference from other processes."
             if flagged else "No configuration was flagged for interference from other processes.")
    return text


def _serving_statement(src: RunSource, rows: Sequence[Row], where: str, sha: str, sensor: dict, idle_text: str,
                       env: dict) -> str:
    facts = dict(_serving_facts(src, rows))
    text = (f"We loaded {_join(r.model for r in rows)} ({_join(r.scheme for r in rows)}) served by "
            f"{_join(r.backend_version or r.backend for r in rows)} on {where}, {threads_text(rows, env)}, with effbench "
            f"{env.get('effbench_version', 'of unknown version')}{f' (git {sha})' if sha else ''}: {facts['serving load']}. "
            f"Figures: {facts['serving figures']}. Saturated points: {facts['saturated points']}. ")
    text += _energy_statement(rows, sensor)
    text += f"Idle baseline: {idle_text}. "
    flagged = sum(r.interference for r in rows)
    text += (f"{flagged} point(s) were flagged for interference from other processes."
             if flagged else "No point was flagged for interference from other processes.")
    return text


# -- the section -------------------------------------------------------------------------------

def methodology_section(sources: Sequence[RunSource], rows: Sequence[Row]) -> Section:
    section = Section("Methodology", "methodology")
    section.add(Paragraph(
        "How these figures were taken, generated from each run's run.json and records. The paragraph under "
        "each run can be quoted in a paper's method section; cite effbench with its version and git sha."))
    section.add(Bullets([
        "Throughput: prefill tokens/s = prompt tokens x batch / time to first token; decode tokens/s = "
        "generated tokens after the first x batch / decode time; the device is synchronised before every timestamp.",
        "Each figure is the mean over timed repeats after warm-up; ± is the half-width of the Student-t 95% "
        "confidence interval of that mean (decode tokens/s is the stopping metric).",
        "Energy windows cover whole generate calls; short calls are repeated inside one window until it is at "
        "least 10x the sensor's update period.",
        "Estimated energy (TDP x utilisation) is marked ESTIMATED or with ~ wherever it appears; it is not comparable "
        "with measured energy.",
    ]))
    for src in sources:
        method = describe_run(src, [r for r in rows if r.source == src.label])
        sub = Section(f"Run {src.label}", f"method-{src.label}")
        for warning in src.warnings:
            sub.add(Note(warning, "warning"))
        if method.estimated:
            sub.add(Note("Energy in this run is ESTIMATED, not measured: treat tokens/J as an order of magnitude.", "estimated"))
        sub.add(Facts(method.facts), Paragraph("Citable summary: " + method.statement))
        section.add(sub)
    return section
