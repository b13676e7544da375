"""The methodology section: what was measured and how, generated from ``run.json`` and the records,
so a paper can cite it verbatim (sensors, sampling, coverage, idle baseline, repeats, CI widths,
warm-up, measured vs estimated energy, interference).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from effbench.report.document import Bullets, Facts, Note, Paragraph, Section, num, pct, size
from effbench.report.model import Row, collapse_texts, run_warnings, value_range
from effbench.results.run import Environment, Hardware, IdleBaseline, Run, RunConfig, SensorInfo


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


def _known(v: Any) -> str:
    return "?" if v is None else str(v)


# -- facts ---------------------------------------------------------------------------------------

def _machine(env: Environment, hw: Optional[Hardware], rows: Sequence[Row]) -> str:
    cpu = env.cpu
    parts = [f"CPU {_known(cpu.model)} ({_known(cpu.physical_cores)} cores, "
             f"{_known(cpu.logical_cpus)} logical CPUs, {_known(cpu.affinity)} usable)"]
    if env.memory_bytes:
        parts.append(f"{size(env.memory_bytes)} RAM")
    for g in env.gpus:
        extra = ", ".join(f"{k} {v}" for k, v in g.items() if k != "name" and isinstance(v, (str, int, float)))
        parts.append(f"GPU {g.get('name', '?')}" + (f" ({extra})" if extra else ""))
    profile = (hw.profile if hw else None) or _join(r.hardware_profile for r in rows)
    recorded = profile if profile not in (None, "-") else "none recorded"
    parts.append(f"hardware profile {recorded} (detected {(hw.detected_name if hw else None) or '?'})")
    return "; ".join(parts)


def git_sha(env: Environment) -> str:
    """The git sha exactly as the run stored it (a ``-dirty`` suffix says the tree had local changes)."""
    return env.git_sha or ""


def threads_text(rows: Sequence[Row], env: Environment) -> str:
    """The threads the configurations ran with, from each record's ``backend.threads`` (what the
    backend was set to), not the process default the environment block saw at start."""
    recorded = sorted({r.threads for r in rows if r.threads is not None})
    default = env.torch.threads if env.torch else None
    if not recorded:
        return f"threads not recorded per configuration (torch default at start {default if default is not None else '?'})"
    text = f"{_join(recorded)} thread(s) per configuration (backend.threads)"
    if default is not None and {default} != set(recorded):
        text += f"; the process default at start was {default}"
    return text


def _software(env: Environment, rows: Sequence[Row]) -> str:
    sha = git_sha(env)
    parts = [f"effbench {_known(env.effbench_version)}" + (f" (git {sha})" if sha else ""),
             f"Python {_known(env.python)}", _known(env.platform)]
    backends = _join(r.backend_version for r in rows)
    if backends != "-":
        parts.append(f"backend {backends}")
    parts.append(threads_text(rows, env))
    if env.torch:
        parts.append(f"torch interop threads {_known(env.torch.interop_threads)}, CUDA {env.torch.cuda or 'none'}")
    return "; ".join(parts)


def _repeats_rule(cfg: RunConfig) -> str:
    warm = cfg.warmup
    warm_s = f"{warm} warm-up generation(s), then " if warm is not None else ""
    if cfg.repeats:
        return f"{warm_s}exactly {cfg.repeats} timed repeats per configuration"
    return (f"{warm_s}repeats until the 95% interval of decode tokens/s is within ±{pct(cfg.ci_target, 0)} "
            f"(at least {_known(cfg.min_repeats)}, at most {_known(cfg.max_repeats)} repeats, "
            f"time cap {num(cfg.max_time_s)} s per configuration)")


def _headline(rows: Sequence[Row]) -> str:
    """What the per-repeat headline is, from the records: the median (stats.estimator), or the mean in
    records written before effbench recorded it."""
    kinds = {"the median" if r.estimator == "median" else "the mean" for r in rows}
    return " or ".join(sorted(kinds))


def _excluded(rows: Sequence[Row]) -> str:
    left = sum(r.excluded_repeats for r in rows)
    return f"; {left} repeat(s) disturbed by other processes were left out" if left else ""


def _energy_statement(rows: Sequence[Row], sensor: SensorInfo, sampling: str = "") -> str:
    """Energy: estimated (its basis) and/or measured (the sensor), each with its relative 95% uncertainty."""
    statuses = {r.energy_status for r in rows}
    text = ""
    if "estimated" in statuses:
        text += ("Energy was ESTIMATED, not measured "
                 f"({'; '.join(collapse_texts(r.energy_basis for r in rows if r.estimated))}), "
                 "with a relative 95% uncertainty of "
                 f"{_span(value_range(r.energy_uncertainty_rel for r in rows if r.estimated), pct)}. ")
    if "measured" in statuses:
        text += (f"Energy was measured with {_known(sensor.name)} ({_known(sensor.kind)}{sampling}), with a relative 95% "
                 "uncertainty of "
                 f"{_span(value_range(r.energy_uncertainty_rel for r in rows if r.energy_status == 'measured'), pct)} "
                 "combining repeat spread and sensor accuracy. ")
    return text


def _repeats_achieved(rows: Sequence[Row], cfg: RunConfig) -> str:
    if not rows:
        return "-"
    n = value_range(r.repeats for r in rows)
    ci = value_range(r.ci95_rel for r in rows)
    stops = Counter(r.stop_reason or "unknown" for r in rows)
    text = f"n = {_span(n, lambda v: f'{v:.0f}')}, CI95 half-width {_span(ci, pct)} of {_headline(rows)}"
    text += "; stopped by " + ", ".join(f"{k} ({v})" for k, v in sorted(stops.items()))
    target = cfg.ci_target
    wide = [r for r in rows if target and r.ci95_rel is not None and r.ci95_rel > target]
    if wide:
        text += f"; {len(wide)} configuration(s) wider than the ±{pct(target, 0)} target"
    return text


def _time_capped(rows: Sequence[Row], cfg: RunConfig) -> str:
    capped = [r for r in rows if r.time_capped]
    if not capped:
        return "none"
    target = cfg.ci_target
    text = (f"{len(capped)} of {len(rows)} configuration(s) (marked 'time cap' in the tables): their CI95 may be "
            f"wider than the ±{pct(target, 0)} target" if target else f"{len(capped)} of {len(rows)} configuration(s)")
    spread = value_range(r.spread_cv for r in capped)
    if spread:
        text += (f"; their repeats spread {_span(spread, pct)} (standard deviation / mean of the per-repeat values): "
                 "on a busy or shared machine each repeat's speed varies, and more repeats or a quieter machine narrow it")
    return text


def _sensor(sensor: Optional[SensorInfo]) -> str:
    if sensor is None:
        return "not recorded"
    text = f"{_known(sensor.name)} ({_known(sensor.kind)}); domains {_join(sensor.domains)}"
    if sensor.update_period_s is not None:
        text += f"; update period {num(sensor.update_period_s)} s"
    if sensor.accuracy_rel is not None:
        text += f"; stated accuracy ±{pct(sensor.accuracy_rel, 0)}"
    if sensor.reason:
        text += f"; {sensor.reason}"
    return text


def _sampling(rows: Sequence[Row], sensor: SensorInfo) -> str:
    interval = value_range(r.sampling_interval_s for r in rows)
    coverage = value_range(r.coverage for r in rows)
    if interval is None and coverage is None:
        if sensor.kind == "energy-counter":
            return "energy counter read at window start and end (no polling)"
        if sensor.kind == "estimate":
            return "none (estimate from utilisation, no power samples)"
        return "not recorded"
    return f"interval {_span(interval, num, ' s')}; coverage of each window {_span(coverage, pct)}"


UNKNOWN_NO_RUN = "unknown (the run has no run.json)"


def _idle(src: Run, sensor: SensorInfo) -> tuple[str, Optional[float]]:
    if not src.described:
        return UNKNOWN_NO_RUN, None
    idle = src.meta.idle_baseline or IdleBaseline()
    if idle.power_w is not None:
        text = (f"{num(idle.power_w)} W over {num(idle.duration_s)} s "
                f"({_known(idle.sensor)}, {_known(idle.status)})")
        return text, idle.power_w
    if idle.error:
        return f"failed ({idle.error}); no idle power subtracted", None
    if sensor.kind in ("estimate", "none"):
        return "not measured (an estimate or no sensor cannot observe idle power); dynamic energy not reported", None
    if not src.meta.config.idle_s:
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


def describe_run(src: Run, rows: Sequence[Row]) -> RunMethod:
    meta = src.meta
    env, cfg, sensor = meta.environment, meta.config, meta.sensor or SensorInfo()
    ok = [r for r in rows if not r.error]
    serving = bool(ok) and all(r.serving for r in ok)
    idle_text, _ = _idle(src, sensor)
    sessions = meta.sessions
    facts = [
        ("run", f"{_known(meta.run_id)} in '{src.name}', started {_known(meta.created_at)}, "
                f"{len(sessions)} session(s), last {(sessions[-1].status if sessions else None) or 'unknown'}"),
        ("machine", f"host {_known(env.hostname)}; " + _machine(env, meta.hardware, rows) if src.described
         else UNKNOWN_NO_RUN),
        ("software", _software(env, rows) if src.described else UNKNOWN_NO_RUN),
        ("workload", f"models {_join(r.model for r in rows)}; schemes {_join(r.scheme for r in rows)}; "
                     f"batch sizes {_join(sorted({r.batch_size for r in rows}))}; prompt tokens "
                     f"{_join(sorted({r.prompt_tokens for r in rows}))}; generated tokens "
                     f"{_join(sorted({r.new_tokens for r in rows}))}"
                     f"{'' if serving else ' (forced, greedy)'}; prompt sets "
                     f"{_join(r.prompt_set for r in rows)}; seed {_known(cfg.seed if cfg.seed is not None else env.seed)}"),
        *(_serving_facts(src, ok) if serving else [
            ("timing", _repeats_rule(cfg)),
            ("repeats achieved", _repeats_achieved(ok, cfg)),
            ("stopped at the time cap", _time_capped(ok, cfg))]),
        ("energy sensor", _sensor(meta.sensor)),
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
    return RunMethod(src.name, facts, _statement(src, ok, sensor, idle_text), any(r.estimated for r in ok))


def _serving_facts(src: Run, rows: Sequence[Row]) -> list[tuple[str, str]]:
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


def _statement(src: Run, rows: Sequence[Row], sensor: SensorInfo, idle_text: str) -> str:
    """One paragraph for a paper's method section."""
    env = src.meta.environment
    gpus = _join(g.get("name") for g in env.gpus)
    if not src.described:
        where = "unknown hardware (the run has no run.json)"
    elif gpus != "-":
        where = f"{gpus} GPU(s)"
    else:
        where = f"{env.cpu.model or 'an unnamed CPU'} ({_known(env.cpu.logical_cpus)} logical CPUs)"
    sha = git_sha(env)
    ci = value_range(r.ci95_rel for r in rows)
    n = value_range(r.repeats for r in rows)
    if rows and all(r.serving for r in rows):
        return _serving_statement(src, rows, where, sha, sensor, idle_text, env)
    text = (
        f"We measured {_join(r.model for r in rows)} ({_join(r.scheme for r in rows)}; batch sizes "
        f"{_join(sorted({r.batch_size for r in rows}))}; {_join(sorted({r.prompt_tokens for r in rows}))} prompt tokens, "
        f"{_join(sorted({r.new_tokens for r in rows}))} generated tokens) with effbench "
        f"{env.effbench_version or 'of unknown version'}"
        f"{f' (git {sha})' if sha else ''} on {where}, backend {_join(r.backend_version or r.backend for r in rows)}, "
        f"{threads_text(rows, env)}. "
        f"Timing used {_repeats_rule(src.meta.config)}; the configurations took {_span(n, lambda v: f'{v:.0f}')} "
        "repeats, with CI95 "
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


def _serving_statement(src: Run, rows: Sequence[Row], where: str, sha: str, sensor: SensorInfo, idle_text: str,
                       env: Environment) -> str:
    facts = dict(_serving_facts(src, rows))
    text = (f"We loaded {_join(r.model for r in rows)} ({_join(r.scheme for r in rows)}) served by "
            f"{_join(r.backend_version or r.backend for r in rows)} on {where}, {threads_text(rows, env)}, with effbench "
            f"{env.effbench_version or 'of unknown version'}{f' (git {sha})' if sha else ''}: {facts['serving load']}. "
            f"Figures: {facts['serving figures']}. Saturated points: {facts['saturated points']}. ")
    text += _energy_statement(rows, sensor)
    text += f"Idle baseline: {idle_text}. "
    flagged = sum(r.interference for r in rows)
    text += (f"{flagged} point(s) were flagged for interference from other processes."
             if flagged else "No point was flagged for interference from other processes.")
    return text


# -- the section -------------------------------------------------------------------------------

def methodology_section(sources: Sequence[Run], rows: Sequence[Row]) -> Section:
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
        method = describe_run(src, [r for r in rows if r.source == src.name])
        sub = Section(f"Run {src.name}", f"method-{src.name}")
        for warning in run_warnings(src):
            sub.add(Note(warning, "warning"))
        if method.estimated:
            sub.add(Note("Energy in this run is ESTIMATED, not measured: treat tokens/J as an order of magnitude.", "estimated"))
        sub.add(Facts(method.facts), Paragraph("Citable summary: " + method.statement))
        section.add(sub)
    return section
