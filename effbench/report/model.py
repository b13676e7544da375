"""Records -> tidy rows, groups and derived statistics (Pareto front, roofline fraction).

No presentation here: plots, markdown, HTML and exports all read the same ``Row`` table, so a
number means the same thing in every output.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from effbench.results.hardware import missing_profile_message
from effbench.results.run import Run, load_run
from effbench.results.schema import Record
from effbench.results.store import RUN_FILE, run_dir_of
from effbench.stats import summarize


@dataclass(frozen=True)
class Row:
    """One configuration, flattened. Field order is the CSV column order."""

    source: str
    run_id: str
    config_id: str
    hardware: str  # results.hardware.hardware_id: the report's section key
    hardware_profile: Optional[str]
    detected_name: Optional[str]
    hostname: str
    device: Optional[str]
    model: str
    params: Optional[int]
    backend: str
    backend_version: Optional[str]
    threads: Optional[int]  # the backend's threads for this record (backend.threads), not the process default
    scheme: str
    weight_bits: Optional[float]
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prompt_set: str
    prefill_tokens_per_s: Optional[float] = None
    prefill_ci95_rel: Optional[float] = None  # of the per-repeat prefill tokens/s (from the TTFT samples)
    decode_tokens_per_s: Optional[float] = None
    e2e_tokens_per_s: Optional[float] = None
    ttft_s: Optional[float] = None
    tpot_s: Optional[float] = None
    power_limit_w: Optional[float] = None  # the GPU power limit in force (--power-limits), read back
    sm_clock_mhz: Optional[float] = None  # the locked SM clock in force (--gpu-clocks), read back
    energy_status: str = "unavailable"
    energy_sensor: Optional[str] = None
    energy_domains: str = ""  # the sensor domains of this record's energy ("cpu:package-0;dram:0")
    energy_basis: Optional[str] = None
    energy_flags: str = ""
    sampling_interval_s: Optional[float] = None
    energy_window_s: Optional[float] = None
    coverage: Optional[float] = None
    idle_power_w: Optional[float] = None
    joules_total: Optional[float] = None
    joules_dynamic: Optional[float] = None
    joules_per_token: Optional[float] = None
    decode_joules_per_token: Optional[float] = None
    tokens_per_joule: Optional[float] = None
    joules_per_kchar: Optional[float] = None
    energy_uncertainty_rel: Optional[float] = None
    peak_host_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    weights_bytes: Optional[int] = None
    perplexity: Optional[float] = None
    repeats: int = 0
    warmup: Optional[int] = None
    ci95_rel: Optional[float] = None
    spread_cv: Optional[float] = None  # stats.spread_cv: the kept repeats' coefficient of variation
    estimator: Optional[str] = None  # stats.estimator: "median"; None in records that predate it (the mean)
    excluded_repeats: int = 0  # repeats the loop left out for interference
    stop_reason: Optional[str] = None
    interference: bool = False
    perplexity_rise: Optional[float] = None  # over the unquantized baseline of the same run
    quality_flagged: bool = False
    random_weights: bool = False  # architecture-only model: speed/memory/energy only
    load_avg_before: Optional[float] = None
    load_avg_after: Optional[float] = None
    roofline_bound_tokens_per_s: Optional[float] = None
    roofline_fraction: Optional[float] = None
    # serving points (records with a serving section); latencies in ms
    scenario: str = "offline"
    offered_rate: Optional[str] = None  # requests/s, "inf" = all at once
    concurrency: Optional[int] = None
    arrival: Optional[str] = None
    requests: Optional[int] = None
    achieved_rate: Optional[float] = None
    output_tokens_per_s: Optional[float] = None
    ttft_p50_ms: Optional[float] = None
    ttft_p50_ci95_low_ms: Optional[float] = None
    ttft_p50_ci95_high_ms: Optional[float] = None
    ttft_p95_ms: Optional[float] = None
    tpot_p50_ms: Optional[float] = None
    tpot_p50_ci95_low_ms: Optional[float] = None
    tpot_p50_ci95_high_ms: Optional[float] = None
    tpot_p95_ms: Optional[float] = None
    goodput: Optional[float] = None
    slo_attainment: Optional[float] = None
    joules_per_request: Optional[float] = None
    saturated: bool = False
    saturation_reason: Optional[str] = None
    line: Optional[int] = None  # 1-based line of the record in its run's results.jsonl
    error: Optional[str] = None

    @property
    def estimated(self) -> bool:
        return self.energy_status == "estimated"

    @property
    def serving(self) -> bool:
        return self.scenario == "serving"

    @property
    def load(self) -> str:
        """A serving point's offered load in words: "2.0 req/s", "8 users"."""
        if self.concurrency is not None:
            return f"{self.concurrency} users"
        return "all at once" if self.offered_rate == "inf" else f"{self.offered_rate} req/s"

    @property
    def offered_rate_value(self) -> Optional[float]:
        try:
            return float(self.offered_rate) if self.offered_rate not in (None, "inf") else None
        except ValueError:
            return None

    @property
    def time_capped(self) -> bool:
        return self.stop_reason == "time-cap"

    @property
    def peak_memory_bytes(self) -> Optional[int]:
        """Device memory where the model ran on an accelerator, else host memory."""
        return self.peak_device_bytes if self.peak_device_bytes is not None else self.peak_host_bytes


def row_flags(r: Row) -> list[str]:
    """Every caveat of one row, in words: the per-row marks of every table and export."""
    flags = []
    if r.time_capped:
        flags.append("time cap")
    if r.interference:
        flags.append("interference")
    if r.quality_flagged:
        flags.append(f"quality: perplexity +{r.perplexity_rise:.0%}" if r.perplexity_rise is not None else "quality flagged")
    if r.saturated:
        flags.append("saturated")
    flags += [f for f in r.energy_flags.split(";") if f]
    if r.random_weights:
        flags.append("random weights")
    return flags


def row_fields() -> list[str]:
    return [f.name for f in fields(Row)]


# -- loading -----------------------------------------------------------------------------------

def load_sources(dirs: Sequence[str | Path], hardware: Optional[str] = None) -> list[Run]:
    """Read every run directory, or its results.jsonl (errors are one-line ``EffbenchError``s from the
    store), each named by its label: the directory name, made unique. ``hardware``: the profile of runs
    that store none."""
    sources: list[Run] = []
    seen: set[Path] = set()
    labels: set[str] = set()
    for d in dirs:
        path = run_dir_of(d).resolve()
        if path in seen:  # the same directory twice would double every record
            continue
        seen.add(path)
        label = _unique(path.name or str(path), labels)
        labels.add(label)
        sources.append(load_run(path, label, hardware))
    return sources


def run_warnings(src: Run) -> list[str]:
    """What a report must say about a run before its figures: no run.json, no hardware profile."""
    warnings: list[str] = []
    if not (src.path / RUN_FILE).is_file():
        warnings.append(f"{src.path} has no {RUN_FILE}: its environment, sensor, idle baseline and hardware are unknown")
    if src.missing_profile:
        warnings.append(f"{missing_profile_message(str(src.path))}; the roofline is not drawn")
    return warnings


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    return candidate


# -- roofline (optional: provided by effbench.analysis.roofline and effbench.hardware) ---------

RooflineFn = Callable[[Record], tuple[Optional[float], Optional[float]]]


def _no_roofline(record: Record) -> tuple[Optional[float], Optional[float]]:
    return None, None


def profile_lookup(sources: Iterable[Run] = ()) -> Callable[[Optional[str], Optional[str]], Any]:
    """(profile id, detected name) -> the hardware profile the runs stored for records with that key, or
    None. Only what the runs stored (or ``--hardware`` said): a report never describes a run's
    hardware from the machine it is written on."""
    by_key: dict[tuple[Optional[str], Optional[str]], Any] = {}
    for src in sources:
        for r in src.records:
            p = src.profile_of(r)
            if p is not None:
                by_key.setdefault((r.hardware.profile, r.hardware.detected_name), p)
    return lambda pid, name: by_key.get((pid, name))


def roofline_function(sources: Iterable[Run] = ()) -> RooflineFn:
    """(bound tokens/s, achieved fraction) per record, or (None, None) while the roofline module or
    the record's hardware profile is missing: the report then skips the roofline plot with a note.
    The profile is the one the record's own run stored in run.json (``sources``)."""
    try:
        from effbench.analysis import roofline
    except ImportError:
        return _no_roofline
    sources = list(sources)

    def compute(record: Record) -> tuple[Optional[float], Optional[float]]:
        profile = next((p for src in sources if (p := src.profile_of(record)) is not None), None)
        if profile is None:
            return None, None
        try:
            bound = roofline.decode_bound_tokens_per_s(record, profile)
            frac = roofline.achieved_fraction(record, profile)
        except Exception:  # noqa: BLE001 - a profile lacking bandwidth must not sink the report
            return None, None
        return _finite(bound), _finite(frac)

    return compute


def _finite(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- tidy rows ---------------------------------------------------------------------------------

def _serving_fields(r: Record) -> dict[str, Any]:
    sv = r.serving
    if sv is None:
        return {}

    def pct(name: str, q: str) -> Optional[float]:
        lat = getattr(sv, name)
        return getattr(lat, q) if lat is not None else None

    def ci(name: str, i: int) -> Optional[float]:
        lat = getattr(sv, name)
        bounds = lat.ci95.get("p50") if lat is not None else None
        return float(bounds[i]) if bounds and len(bounds) == 2 else None

    return dict(
        scenario="serving", offered_rate=None if sv.rate is None else str(sv.rate), concurrency=sv.concurrency,
        arrival=sv.arrival, requests=sv.requests, achieved_rate=sv.achieved_rate, output_tokens_per_s=sv.output_tokens_per_s,
        ttft_p50_ms=pct("ttft_ms", "p50"), ttft_p50_ci95_low_ms=ci("ttft_ms", 0), ttft_p50_ci95_high_ms=ci("ttft_ms", 1),
        ttft_p95_ms=pct("ttft_ms", "p95"),
        tpot_p50_ms=pct("tpot_ms", "p50"), tpot_p50_ci95_low_ms=ci("tpot_ms", 0), tpot_p50_ci95_high_ms=ci("tpot_ms", 1),
        tpot_p95_ms=pct("tpot_ms", "p95"), goodput=sv.goodput, slo_attainment=sv.slo_attainment,
        saturated=sv.saturated, saturation_reason=sv.saturation_reason,
    )


def _prefill_ci95_rel(r: Record) -> Optional[float]:
    """The CI95 of prefill tokens/s over the repeats: batch x prompt tokens / TTFT, per repeat."""
    ttft = [t for t in r.stats.samples.get("ttft_s") or [] if t > 0]
    if r.serving is not None or len(ttft) < 2:
        return None
    tokens = r.workload.batch_size * r.workload.prompt_tokens
    return summarize([tokens / t for t in ttft]).ci95_rel


def to_row(source: Run, r: Record, roofline: RooflineFn = _no_roofline, line: Optional[int] = None) -> Row:
    t, e, m, s = r.throughput, r.energy, r.memory, r.stats
    bound, frac = roofline(r) if not r.error else (None, None)
    return Row(
        source=source.name, run_id=r.run_id, config_id=r.config_id,
        hardware=source.hardware_id(r),
        hardware_profile=r.hardware.profile, detected_name=r.hardware.detected_name, hostname=source.hostname,
        device=r.backend.device, model=r.model.id, params=r.model.params, backend=r.backend.name,
        backend_version=r.backend.version, threads=r.backend.threads, scheme=r.quantization.scheme,
        weight_bits=r.quantization.weight_bits,
        batch_size=r.workload.batch_size, prompt_tokens=r.workload.prompt_tokens, new_tokens=r.workload.new_tokens,
        prompt_set=r.workload.prompt_set,
        prefill_tokens_per_s=t.prefill_tokens_per_s, prefill_ci95_rel=_prefill_ci95_rel(r),
        decode_tokens_per_s=t.decode_tokens_per_s,
        e2e_tokens_per_s=t.e2e_tokens_per_s, ttft_s=t.ttft_s, tpot_s=t.tpot_s,
        power_limit_w=r.gpu.power_limit_w if r.gpu else None, sm_clock_mhz=r.gpu.sm_clock_mhz if r.gpu else None,
        energy_status=e.status, energy_sensor=e.sensor, energy_domains=";".join(sorted(e.joules_by_domain)),
        energy_basis=e.basis, energy_flags=";".join(e.flags),
        sampling_interval_s=e.sampling_interval_s, energy_window_s=e.window_s, coverage=e.coverage,
        idle_power_w=e.idle_power_w,
        joules_total=e.joules_total, joules_dynamic=e.joules_dynamic, joules_per_token=e.joules_per_token,
        decode_joules_per_token=e.decode_joules_per_token, tokens_per_joule=e.tokens_per_joule,
        joules_per_kchar=e.joules_per_kchar, energy_uncertainty_rel=e.uncertainty_rel,
        peak_host_bytes=m.peak_host_bytes, peak_device_bytes=m.peak_device_bytes,
        weights_bytes=m.weights_bytes or r.model.weights_bytes, perplexity=r.quality.perplexity,
        repeats=s.repeats, warmup=s.warmup, ci95_rel=s.ci95_rel, spread_cv=s.spread_cv, estimator=s.estimator,
        excluded_repeats=s.excluded_repeats, stop_reason=s.stop_reason,
        interference=s.interference, load_avg_before=s.load_avg_before, load_avg_after=s.load_avg_after,
        perplexity_rise=r.quality.perplexity_rise, quality_flagged=r.quality.flagged,
        random_weights=r.model.weights == "random",
        roofline_bound_tokens_per_s=bound, roofline_fraction=frac, joules_per_request=e.joules_per_request,
        line=line, error=r.error, **_serving_fields(r),
    )


def tidy(sources: Iterable[Run], roofline: Optional[RooflineFn] = None) -> list[Row]:
    """One row per record. A record lacking its perplexity comparison is compared with its own run's
    baseline first (``Run.quality_compared``: the sweep's rule and ``ppl_threshold``)."""
    sources = list(sources)
    fn = roofline or roofline_function(sources)
    rows = [to_row(src, r, fn, i) for src in sources for i, r in enumerate(src.quality_compared(), 1)]
    return sorted(rows, key=_sort_key)


def _sort_key(r: Row) -> tuple:
    # a run's batch sizes (or serving loads) stay together, so rows of two runs never interleave
    return (r.hardware, r.model, r.scenario, r.scheme, r.backend, r.prompt_set, r.prompt_tokens, r.new_tokens,
            r.source, r.threads or 0, r.batch_size, r.concurrency or 0, r.offered_rate_value or math.inf)


# -- grouping ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """The rows of one hardware x model section."""

    hardware: str
    model: str
    rows: list[Row] = field(default_factory=list)


def ok_rows(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if not r.error]


def error_rows(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.error]


def hardware_names(rows: Iterable[Row]) -> list[str]:
    return sorted({r.hardware for r in rows})


def group_rows(rows: Iterable[Row]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for r in rows:
        groups.setdefault((r.hardware, r.model), Group(r.hardware, r.model)).rows.append(r)
    return [groups[k] for k in sorted(groups)]


# Dimensions that split a plot's series when they vary within the plotted rows. A scheme is always
# part of the label; the others only when needed, so a plain sweep reads "fp32", not "fp32/en/64/32".
def gpu_setting_label(r: Row) -> str:
    """'300 W, 1500 MHz' for a point of a power-limit / clock sweep; '' where none was set."""
    parts = [f"{r.power_limit_w:g} W" if r.power_limit_w is not None else "",
             f"{r.sm_clock_mhz:g} MHz" if r.sm_clock_mhz is not None else ""]
    return ", ".join(p for p in parts if p)


_SERIES_DIMENSIONS: list[tuple[str, Callable[[Row], str]]] = [
    ("hardware", lambda r: r.hardware),
    ("scheme", lambda r: r.scheme),
    ("backend", lambda r: r.backend),
    ("prompt_set", lambda r: r.prompt_set),
    ("prompt_tokens", lambda r: f"p{r.prompt_tokens}"),
    ("new_tokens", lambda r: f"n{r.new_tokens}"),
    ("threads", lambda r: f"{r.threads} thread{'' if r.threads == 1 else 's'}" if r.threads is not None else "? threads"),
    ("power_limit", lambda r: gpu_setting_label(r)),
    ("source", lambda r: r.source),
]


def series(rows: Sequence[Row], always: Sequence[str] = ("scheme",)) -> dict[str, list[Row]]:
    """Rows split into lines (label -> rows sorted by batch size). Besides ``always``, a dimension
    joins the label only where it separates rows that agree on every other dimension."""
    def needed(name: str, fn: Callable[[Row], str]) -> bool:
        # the run is not one of the "others": two runs that differ in threads read "2 threads", not their names
        others = [f for n, f in _SERIES_DIMENSIONS if n not in (name, "source")]
        seen: dict[tuple[str, ...], set[str]] = {}
        for r in rows:
            seen.setdefault(tuple(f(r) for f in others), set()).add(fn(r))
        return any(len(v) > 1 for v in seen.values())

    used = [(name, fn) for name, fn in _SERIES_DIMENSIONS if name != "source" and (name in always or needed(name, fn))]
    # the run joins the label only where two runs would otherwise share a line (same label, same x)
    points: dict[tuple[str, ...], set[str]] = {}
    for r in rows:
        points.setdefault((*(fn(r) for _, fn in used), str(r.batch_size), r.load if r.serving else ""), set()).add(r.source)
    if "source" in always or any(len(v) > 1 for v in points.values()):
        used.append(_SERIES_DIMENSIONS[-1])
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(" / ".join(fn(r) for _, fn in used), []).append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in sorted(out.items())}


# -- metrics -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A plotted/tabulated quantity: which row attribute, its label and its relative error."""

    key: str
    label: str
    energy: bool = False  # estimated energy must be marked wherever an energy metric appears
    err_key: Optional[str] = None  # row attribute holding the relative uncertainty
    scale: float = 1.0
    missing: str = ""  # what to do when no record has it (shown where a plot is skipped)
    bounds: Optional[tuple[str, str]] = None  # row attributes of an asymmetric 95% interval (low, high)
    unit: str = ""

    def value(self, r: Row) -> Optional[float]:
        v = getattr(r, self.key)
        return None if v is None else float(v) * self.scale

    def error(self, r: Row) -> Optional[float]:
        v, rel = self.value(r), getattr(r, self.err_key) if self.err_key else None
        return None if v is None or rel is None else abs(v) * float(rel)

    def interval(self, r: Row) -> Optional[tuple[float, float]]:
        """The 95% interval of the value: the recorded bounds, else value +- error; None when unknown."""
        v = self.value(r)
        if v is None:
            return None
        if self.bounds:
            lo, hi = getattr(r, self.bounds[0]), getattr(r, self.bounds[1])
            return None if lo is None or hi is None else (float(lo) * self.scale, float(hi) * self.scale)
        e = self.error(r)
        return None if e is None else (max(v - e, 0.0), v + e)


GIB = 1024 ** 3
_NO_ENERGY = "the run had no energy sensor; rerun with --sensor auto, nvml, rapl or estimate"
METRICS = {
    "prefill": Metric("prefill_tokens_per_s", "prefill tokens/s", err_key="prefill_ci95_rel"),
    "decode": Metric("decode_tokens_per_s", "decode tokens/s", err_key="ci95_rel"),
    # TPOT = batch / decode tokens/s: the same relative interval
    "tpot": Metric("tpot_s", "TPOT (ms, lower is better)", err_key="ci95_rel", scale=1000.0, unit="ms"),
    "tokens_per_joule": Metric("tokens_per_joule", "tokens/J", energy=True, err_key="energy_uncertainty_rel",
                               missing=_NO_ENERGY),
    "joules_per_kchar": Metric("joules_per_kchar", "J per 1,000 output chars", energy=True,
                               err_key="energy_uncertainty_rel", missing=_NO_ENERGY),
    "host_memory": Metric("peak_host_bytes", "peak host memory (GiB)", scale=1 / GIB),
    "device_memory": Metric("peak_device_bytes", "peak device memory (GiB)", scale=1 / GIB),
    "perplexity": Metric("perplexity", "perplexity (lower is better)", missing="run with --perplexity"),
    "roofline": Metric("roofline_fraction", "% of the decode roofline bound", scale=100.0, err_key="ci95_rel",
                       missing="needs a hardware profile with memory bandwidth: run with --hardware ID"),
    # serving points
    "achieved_rate": Metric("achieved_rate", "achieved requests/s", unit="req/s"),
    "output_tokens_per_s": Metric("output_tokens_per_s", "output tokens/s", unit="tok/s"),
    "ttft_p50": Metric("ttft_p50_ms", "TTFT p50 (ms)", bounds=("ttft_p50_ci95_low_ms", "ttft_p50_ci95_high_ms"), unit="ms"),
    "ttft_p95": Metric("ttft_p95_ms", "TTFT p95 (ms)", unit="ms"),
    "tpot_p50": Metric("tpot_p50_ms", "TPOT p50 (ms)", bounds=("tpot_p50_ci95_low_ms", "tpot_p50_ci95_high_ms"), unit="ms"),
    "tpot_p95": Metric("tpot_p95_ms", "TPOT p95 (ms)", unit="ms"),
    "goodput": Metric("goodput", "goodput (requests/s meeting the SLO)", unit="req/s"),
    "joules_per_request": Metric("joules_per_request", "J per request", energy=True, err_key="energy_uncertainty_rel",
                                 missing=_NO_ENERGY, unit="J"),
}


def has_data(rows: Iterable[Row], metric: Metric) -> bool:
    return any(metric.value(r) is not None for r in rows)


# -- Pareto front ------------------------------------------------------------------------------

def pareto_front(rows: Sequence[Row], x: Metric, y: Metric, x_lower_is_better: bool = False) -> list[Row]:
    """Rows not dominated on (x, y), both to maximise (x minimised with ``x_lower_is_better``); sorted by
    x. A row is dominated when another is at least as good on both and strictly better on one."""
    sign = -1.0 if x_lower_is_better else 1.0
    pts = [(r, sign * a, b) for r in rows if (a := x.value(r)) is not None and (b := y.value(r)) is not None]
    front = [
        (r, a, b) for r, a, b in pts
        if not any(a2 >= a and b2 >= b and (a2 > a or b2 > b) for _, a2, b2 in pts)
    ]
    return [r for r, _, _ in sorted(front, key=lambda p: (sign * p[1], p[2]))]


# -- summaries used by several sections --------------------------------------------------------

def value_range(values: Iterable[Optional[float]]) -> Optional[tuple[float, float]]:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return (min(xs), max(xs)) if xs else None


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


def collapse_texts(texts: Iterable[Optional[str]]) -> list[str]:
    """Distinct texts, with texts that differ only in their numbers merged into one whose varying
    numbers become ranges ("utilisation 97% ..." and "... 100% ..." -> "utilisation 97-100% ...")."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for t in texts:
        if t:
            parts = _NUMBER.split(t)
            groups.setdefault(tuple(parts[0::2]), []).append(parts[1::2])
    out = []
    for words, numbers in groups.items():
        merged = []
        for column in zip(*numbers):
            lo, hi = min(column, key=float), max(column, key=float)
            merged.append(lo if float(lo) == float(hi) else f"{lo}-{hi}")
        out.append("".join(w + (merged[i] if i < len(merged) else "") for i, w in enumerate(words)))
    return out


def best(rows: Iterable[Row], metric: Metric, include_flagged: bool = False) -> Optional[Row]:
    """The row with the highest value of ``metric``; rows whose quality is flagged (perplexity rise
    above the sweep's threshold) are no candidate unless ``include_flagged``."""
    candidates = [r for r in rows if include_flagged or not r.quality_flagged]
    scored = [(v, r) for r in candidates if (v := metric.value(r)) is not None]
    return max(scored, key=lambda p: p[0])[1] if scored else None
