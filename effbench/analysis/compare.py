"""Compare two runs: match configurations, compute deltas with their 95% intervals, test
significance, find regressions.

Matching has two parts. The *workload* (model, scheme, batch size, prompt/new tokens, prompt set and,
for serving records, the offered load: rate or concurrency and arrival) pairs a BASE record with a
NEW one. The *setup* (``MATCH_FIELDS``: hardware, backend, backend version, device, threads, sensor,
sensor domains) must then agree, or the pair is listed as not comparable with the fields that
differ, unless ``match_loose`` names them. Hardware ids are normalised: a record's profile id, else
the profile its run stored, else the id a profile of that detected name would have, so "AMD EPYC"
and ``cpu-amd-epyc`` are the same machine.

Significance, per metric:
- ``welch``: Welch's t-test on the per-repeat values in ``stats.samples`` (both sides need n >= 2);
  the delta's 95% interval is Welch-Satterthwaite's;
- ``ci-overlap``: without samples, the records' own 95% intervals (``stats.ci95_rel`` for decode
  tokens/s, ``serving.*_ms.ci95`` for latency percentiles, and for a serving point's achieved rate,
  output tokens/s and goodput the exact Poisson interval of the request count behind it) do not
  overlap; the delta's interval is the root-sum-square of the two half-widths;
- ``exact``: metrics that are deterministic for a configuration (perplexity, peak memory): any
  change is real, so only the threshold decides;
- ``none``: nothing to test with; never counted as a regression.
Energy metrics also carry each record's stated 95% energy uncertainty (``energy.uncertainty_rel``:
repeat spread and sensor accuracy, e.g. +-50% for an estimate): the two intervals v(1 +- u) propagated
to the difference (root-sum-square, relative to BASE) give the energy band; a change inside it is not
significant, whatever the test on the repeats says, and the delta's interval is at least that wide.
A regression is a significant change in the worse direction whose relative size exceeds the threshold.
A configuration that succeeded in BASE but failed (``error`` set) or is missing in NEW is also a
regression (``lost``), unless ``allow_missing`` is set.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

from effbench.errors import EffbenchError
from effbench.results.hardware import hardware_id as record_hardware_id
from effbench.results.run import Run, load_run
from effbench.results.schema import Latency, Record
from effbench.stats import poisson_rate_ci95, welch

Method = Literal["welch", "ci-overlap", "exact", "none"]
KeyT = tuple[Any, ...]
MIB = 1024 ** 2


# -- metrics -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # with its unit: the header of a table column
    higher_is_better: bool
    value: Callable[[Record], Optional[float]]
    samples: Callable[[Record], Optional[list[float]]] = lambda r: None
    exact: bool = False  # deterministic for a configuration
    interval: Callable[[Record], Optional[tuple[float, float]]] = lambda r: None  # the record's own 95% interval
    energy: bool = False  # carries the energy uncertainty; estimated values are marked ~
    scale: float = 1.0  # value x scale is what a table shows under ``label``
    digits: int = 2


def _sample(key: str) -> Callable[[Record], Optional[list[float]]]:
    return lambda r: r.stats.samples.get(key) or None


def _tokens_per_joule_samples(r: Record) -> Optional[list[float]]:
    # tokens per call are fixed, so tokens/J per repeat = (tokens/J x mean J) / J of that repeat.
    joules, tpj, mean_j = r.stats.samples.get("joules_total"), r.energy.tokens_per_joule, r.energy.joules_total
    if r.serving is not None or not joules or tpj is None or not mean_j or any(j <= 0 for j in joules):
        return None
    return [tpj * mean_j / j for j in joules]


def _prefill_samples(r: Record) -> Optional[list[float]]:
    # the sweep stores no prefill samples; prefill tokens/s = batch x prompt tokens / TTFT, per repeat.
    if s := r.stats.samples.get("prefill_tokens_per_s"):
        return s
    t = r.stats.samples.get("ttft_s")
    w = r.workload
    return [w.batch_size * w.prompt_tokens / x for x in t if x > 0] if t and r.serving is None else None


def _tpot_samples(r: Record) -> Optional[list[float]]:
    # tpot = batch / decode tokens/s (one decode step for the whole batch), per repeat.
    d = r.stats.samples.get("decode_tokens_per_s")
    return [r.workload.batch_size / x for x in d if x > 0] if d else None


def _peak_memory(r: Record) -> Optional[float]:
    m = r.memory.peak_device_bytes if r.memory.peak_device_bytes is not None else r.memory.peak_host_bytes
    return float(m) if m is not None else None


def _decode_interval(r: Record) -> Optional[tuple[float, float]]:
    v, rel = r.throughput.decode_tokens_per_s, r.stats.ci95_rel
    return None if v is None or rel is None else (v * (1 - rel), v * (1 + rel))


def _latency(name: str) -> Callable[[Record], Optional[Latency]]:
    return lambda r: getattr(r.serving, name, None) if r.serving is not None else None


def _percentile(name: str, q: str) -> Callable[[Record], Optional[float]]:
    return lambda r: getattr(lat, q) if (lat := _latency(name)(r)) is not None else None


def _percentile_interval(name: str, q: str) -> Callable[[Record], Optional[tuple[float, float]]]:
    def interval(r: Record) -> Optional[tuple[float, float]]:
        lat = _latency(name)(r)
        ci = lat.ci95.get(q) if lat is not None else None
        return (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None
    return interval


def _serving(attr: str) -> Callable[[Record], Optional[float]]:
    return lambda r: getattr(r.serving, attr, None) if r.serving is not None else None


def _span_s(r: Record) -> Optional[float]:
    """The window the headline rates were computed over: the steady (else whole-point) window; in
    records before those existed, completed requests / achieved rate."""
    s = r.serving
    if s is None:
        return None
    window = s.steady or s.whole
    if window is not None:
        return window.window_s
    if not s.completed or not s.achieved_rate:
        return None
    return s.completed / s.achieved_rate


WINDOW_KEYS = {"achieved_rate": "requests_per_s", "output_tokens_per_s": "output_tokens_per_s"}


def _count_interval(attr: str) -> Callable[[Record], Optional[tuple[float, float]]]:
    """A serving rate's 95% interval from the count of requests behind it (``stats.poisson_rate_ci95``):
    the record's own window interval for the achieved rate and output tokens/s (older records: from
    the completed requests), ``goodput`` from the requests meeting the SLO."""
    def interval(r: Record) -> Optional[tuple[float, float]]:
        span, s = _span_s(r), r.serving
        if span is None or s is None:
            return None
        window = s.steady or s.whole
        if window is not None and attr in WINDOW_KEYS:
            own = window.ci95.get(WINDOW_KEYS[attr])
            return (own[0], own[1]) if own else None
        if attr == "goodput":
            if s.goodput is None:
                return None
            return poisson_rate_ci95(round(s.goodput * span), span)
        ci = poisson_rate_ci95(s.completed or 0, span)
        if ci is None or attr == "achieved_rate":
            return ci
        v = getattr(s, attr, None)
        return None if v is None or not s.achieved_rate else (v * ci[0] / s.achieved_rate, v * ci[1] / s.achieved_rate)
    return interval


METRICS: tuple[Metric, ...] = (
    Metric("decode_tokens_per_s", "decode tok/s", True, lambda r: r.throughput.decode_tokens_per_s,
           _sample("decode_tokens_per_s"), interval=_decode_interval),
    Metric("prefill_tokens_per_s", "prefill tok/s", True, lambda r: r.throughput.prefill_tokens_per_s,
           _prefill_samples),
    Metric("ttft_s", "TTFT ms", False, lambda r: r.throughput.ttft_s if r.serving is None else None,
           _sample("ttft_s"), scale=1000.0, digits=1),
    Metric("tpot_s", "TPOT ms", False, lambda r: r.throughput.tpot_s if r.serving is None else None,
           _tpot_samples, scale=1000.0, digits=1),
    Metric("tokens_per_joule", "tok/J", True, lambda r: r.energy.tokens_per_joule, _tokens_per_joule_samples,
           energy=True, digits=3),
    Metric("peak_memory_bytes", "peak memory MiB", False, _peak_memory, exact=True, scale=1 / MIB, digits=1),
    Metric("perplexity", "perplexity", False, lambda r: r.quality.perplexity, exact=True),
    # serving points (records with a serving section)
    Metric("ttft_p50_ms", "TTFT p50 ms", False, _percentile("ttft_ms", "p50"),
           interval=_percentile_interval("ttft_ms", "p50"), digits=1),
    Metric("ttft_p95_ms", "TTFT p95 ms", False, _percentile("ttft_ms", "p95"),
           interval=_percentile_interval("ttft_ms", "p95"), digits=1),
    Metric("tpot_p50_ms", "TPOT p50 ms", False, _percentile("tpot_ms", "p50"),
           interval=_percentile_interval("tpot_ms", "p50"), digits=1),
    Metric("tpot_p95_ms", "TPOT p95 ms", False, _percentile("tpot_ms", "p95"),
           interval=_percentile_interval("tpot_ms", "p95"), digits=1),
    Metric("achieved_rate", "achieved req/s", True, _serving("achieved_rate"), interval=_count_interval("achieved_rate"),
           digits=3),
    Metric("output_tokens_per_s", "output tok/s", True, _serving("output_tokens_per_s"),
           interval=_count_interval("output_tokens_per_s")),
    Metric("goodput", "goodput req/s", True, _serving("goodput"), interval=_count_interval("goodput"), digits=3),
    Metric("joules_per_request", "J/request", False, lambda r: r.energy.joules_per_request, energy=True),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
METRIC_BY_NAME = {m.name: m for m in METRICS}


# -- loading -----------------------------------------------------------------------------------
def load_side(path: str | Path) -> list[Record]:
    """Records of a run directory or of a ``results.jsonl`` file."""
    return load_run(path).records


# -- matching ----------------------------------------------------------------------------------
def workload_key(r: Record) -> KeyT:
    """What was measured: the same key on both sides pairs two records."""
    w, s = r.workload, r.serving
    load: tuple[Any, ...] = ()
    if s is not None:
        load = (s.scenario, None if s.rate is None else str(s.rate), s.concurrency, s.arrival)
    return (r.model.id, r.quantization.scheme, w.batch_size, w.prompt_tokens, w.new_tokens, w.prompt_set, *load)


def key_label(k: KeyT) -> str:
    text = f"{k[0]} {k[1]} b{k[2]} p{k[3]} n{k[4]} {k[5]}"
    if len(k) > 6:
        scenario, rate, concurrency, arrival = k[6:10]
        load = f"{concurrency} users" if concurrency is not None else f"rate {rate}/s"
        text += f" {scenario} {load}" + (f" {arrival}" if arrival else "")
    return text


def record_label(r: Record, side: Optional[Run] = None) -> str:
    """``model backend scheme bB pP nN set [serving load] on hardware``: a configuration in messages."""
    k = workload_key(r)
    text = f"{k[0]} {r.backend.name} " + key_label(k).split(" ", 1)[1]
    return f"{text} on {hardware_id(r, side)}"


def hardware_id(r: Record, side: Optional[Run] = None) -> str:
    """``results.hardware.hardware_id``, with the profile the record's run stored."""
    return side.hardware_id(r) if side is not None else record_hardware_id(r)


def _has_energy(r: Record) -> bool:
    return r.energy.status in ("measured", "estimated")


def _domains(r: Record, side: Optional[Run]) -> Optional[str]:
    if not _has_energy(r):
        return None
    names = sorted(r.energy.joules_by_domain)
    if not names and side is not None and side.meta.sensor is not None:
        names = sorted(side.meta.sensor.domains)
    return ",".join(names) or None


# The setup two paired records must share, in the order differences are named. Sensor and domains
# only count where both records have energy (a run without a sensor still compares on speed); a
# field one record does not state (older records, a bare results.jsonl without run.json) is no difference.
MATCH_FIELDS: dict[str, Callable[[Record, Optional[Run]], Any]] = {
    "hardware": hardware_id,
    "backend": lambda r, s: r.backend.name,
    "backend_version": lambda r, s: r.backend.version,
    "device": lambda r, s: r.backend.device,
    "threads": lambda r, s: r.backend.threads,
    "sensor": lambda r, s: r.energy.sensor if _has_energy(r) else None,
    "domains": _domains,
}
_ENERGY_FIELDS = ("sensor", "domains")


def parse_match_loose(values: Optional[Sequence[str]]) -> frozenset[str]:
    """``--match-loose threads,backend-version``: the setup fields to ignore when matching."""
    names = {v.strip().lower().replace("-", "_") for item in values or [] for v in str(item).split(",") if v.strip()}
    if "all" in names:
        return frozenset(MATCH_FIELDS)
    unknown = sorted(names - set(MATCH_FIELDS))
    if unknown:
        raise EffbenchError(f"--match-loose: unknown field(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(MATCH_FIELDS)} (or all)")
    return frozenset(names)


@dataclass
class Difference:
    field: str
    base: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field} {self.base} vs {self.new}"


def setup_differences(b: Record, n: Record, bs: Optional[Run] = None, ns: Optional[Run] = None,
                      loose: frozenset[str] = frozenset()) -> list[Difference]:
    out = []
    energy_both = _has_energy(b) and _has_energy(n)
    for name, get in MATCH_FIELDS.items():
        if name in loose or (name in _ENERGY_FIELDS and not energy_both):
            continue
        vb, vn = get(b, bs), get(n, ns)
        if vb is not None and vn is not None and vb != vn:  # unrecorded on one side: nothing to tell apart
            out.append(Difference(name, vb, vn))
    return out


# -- the comparison ----------------------------------------------------------------------------
@dataclass
class MetricDelta:
    metric: str
    base: Optional[float]
    new: Optional[float]
    delta_rel: Optional[float]  # (new - base) / base
    p_value: Optional[float]
    method: Method
    significant: bool
    worse: bool
    regression: bool
    note: str = ""
    ci95_rel: Optional[tuple[float, float]] = None  # 95% interval of delta_rel
    energy_uncertainty_rel: Optional[float] = None  # root-sum-square of both records' stated 95% energy uncertainty
    base_estimated: bool = False
    new_estimated: bool = False
    unit: str = ""


@dataclass
class ConfigComparison:
    key: KeyT
    label: str
    deltas: list[MetricDelta]
    hardware: str = ""
    serving: bool = False
    loosened: list[Difference] = field(default_factory=list)  # differences --match-loose let through

    @property
    def regression(self) -> bool:
        return any(d.regression for d in self.deltas)


@dataclass
class NotComparable:
    label: str
    differences: list[Difference]

    def __str__(self) -> str:
        return f"{self.label}: {'; '.join(str(d) for d in self.differences)}"


@dataclass
class Comparison:
    base: str
    new: str
    threshold: float
    alpha: float
    configs: list[ConfigComparison]
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    mixed_energy: bool = False
    # fine in BASE, failed or vanished in NEW: "<label>: failed in NEW: <error>" / "<label>: missing in NEW"
    lost: list[str] = field(default_factory=list)
    allow_missing: bool = False
    not_comparable: list[NotComparable] = field(default_factory=list)
    match_loose: list[str] = field(default_factory=list)
    confidence: float = 0.95

    @property
    def regressions(self) -> list[tuple[str, MetricDelta]]:
        return [(c.label, d) for c in self.configs for d in c.deltas if d.regression]

    @property
    def lost_regressions(self) -> list[str]:
        """Configurations lost in NEW that count as regressions (none with ``allow_missing``)."""
        return [] if self.allow_missing else list(self.lost)

    @property
    def regression(self) -> bool:
        return bool(self.regressions or self.lost_regressions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["regression"] = self.regression
        d["not_comparable"] = [{"configuration": nc.label, "differences": [asdict(x) for x in nc.differences]}
                               for nc in self.not_comparable]
        return d


def _intervals_apart(ib: tuple[float, float], i_n: tuple[float, float]) -> bool:
    return ib[1] < i_n[0] or i_n[1] < ib[0]


def compare_metric(m: Metric, base: Record, new: Record, threshold: float, alpha: float, comparable: bool = True,
                   incomparable_note: str = "measured vs estimated energy: not a regression") -> MetricDelta:
    vb, vn = m.value(base), m.value(new)
    est_b, est_n = m.energy and base.energy.status == "estimated", m.energy and new.energy.status == "estimated"
    unit = m.label.rsplit(" ", 1)[-1] if " " in m.label else m.label
    if vb is None or vn is None:
        return MetricDelta(m.name, vb, vn, None, None, "none", False, False, False, "missing on one side",
                           base_estimated=est_b, new_estimated=est_n, unit=unit)
    rel = (vn - vb) / vb if vb else None
    worse = (vn < vb) if m.higher_is_better else (vn > vb)
    sb, sn = m.samples(base), m.samples(new)
    ib, i_n = m.interval(base), m.interval(new)
    p: Optional[float] = None
    half: Optional[float] = None  # of the relative delta
    notes: list[str] = []
    if m.exact:
        method: Method = "exact"
        significant = vn != vb
        half = 0.0
    elif sb and sn and len(sb) >= 2 and len(sn) >= 2:
        d = welch(sb, sn)
        method, p = "welch", d.p
        significant = p < alpha
        base_mean = sum(sb) / len(sb)
        if base_mean and math.isfinite(d.ci95[1] - d.ci95[0]):
            half = (d.ci95[1] - d.ci95[0]) / 2 / abs(base_mean)
    elif ib is not None and i_n is not None:
        method, significant = "ci-overlap", _intervals_apart(ib, i_n)
        if vb:
            half = math.hypot(ib[1] - ib[0], i_n[1] - i_n[0]) / 2 / abs(vb)
    else:
        method, significant = "none", False
    band: Optional[float] = None
    ub, un = base.energy.uncertainty_rel, new.energy.uncertainty_rel
    if m.energy and ub is not None and un is not None and vb:
        # each value's stated 95% interval v(1 +- u), propagated to the difference, relative to base
        band = math.hypot(vb * ub, vn * un) / abs(vb)
        if band is not None:
            half = band if half is None else max(half, band)
            if significant and rel is not None and abs(rel) <= band:
                significant = False
                notes.append(f"inside the ±{band:.0%} energy uncertainty: not significant")
    if not comparable:
        notes.append(incomparable_note)
    # every metric is non-negative: no interval reaches below -100%
    ci = (max(rel - half, -1.0), rel + half) if rel is not None and half is not None else None
    regression = significant and worse and rel is not None and abs(rel) > threshold and comparable
    return MetricDelta(m.name, vb, vn, rel, p, method, significant, worse, regression, "; ".join(notes),
                       ci, band, est_b, est_n, unit)


def _energy_kind(r: Record) -> Optional[str]:
    return r.energy.status if r.energy.status in ("measured", "estimated") else None


def _side(x: Union[Run, Sequence[Record]], name: str) -> Run:
    return x if isinstance(x, Run) else Run.of(name, list(x))


def _energy_metric(m: Metric) -> bool:
    return m.energy


def compare_records(base: Union[Run, Sequence[Record]], new: Union[Run, Sequence[Record]], *,
                    threshold: float = 0.05, alpha: float = 0.05,
                    allow_mixed_energy: bool = False, allow_missing: bool = False,
                    match_loose: Optional[Sequence[str]] = None,
                    base_name: str = "BASE", new_name: str = "NEW") -> Comparison:
    if not 0 <= threshold < 1:
        raise EffbenchError(f"--threshold must be a relative change in [0, 1), e.g. 0.05 for 5% (got {threshold})")
    if not 0 < alpha < 1:
        raise EffbenchError(f"--alpha must be in (0, 1), e.g. 0.05 (got {alpha})")
    loose = parse_match_loose(match_loose)
    bs, ns = _side(base, base_name), _side(new, new_name)
    base_name, new_name = bs.name, ns.name
    failed = [f"{s.name}: {record_label(r, s)}: {r.error}" for s in (bs, ns) for r in s.records if r.error]
    b = {workload_key(r): r for r in bs.records if not r.error}  # the last record of a key wins (a --resume rerun)
    n = {workload_key(r): r for r in ns.records if not r.error}
    new_errors = {workload_key(r): r.error for r in ns.records if r.error}
    paired = [k for k in b if k in n]
    if not paired:
        raise EffbenchError(f"no configuration of {base_name} matches one of {new_name} (matched on model, scheme, "
                            "batch size, prompt/new tokens, prompt set and, for serving, the offered load); "
                            "compare runs of the same sweep")
    mixed = [k for k in paired
             if None not in (_energy_kind(b[k]), _energy_kind(n[k])) and _energy_kind(b[k]) != _energy_kind(n[k])]
    if mixed and not allow_mixed_energy:
        k = mixed[0]
        raise EffbenchError(f"{base_name} has {_energy_kind(b[k])} energy and {new_name} {_energy_kind(n[k])} energy "
                            f"(e.g. {record_label(b[k], bs)}); estimates are not measurements: pass --allow-mixed-energy to "
                            "compare them anyway")
    # measured vs estimated, once allowed, necessarily differs in sensor: its energy is never a regression anyway
    implied = frozenset(_ENERGY_FIELDS) if mixed else frozenset()
    configs: list[ConfigComparison] = []
    not_comparable: list[NotComparable] = []
    for k in paired:
        diffs = setup_differences(b[k], n[k], bs, ns, loose | implied)
        if diffs:
            not_comparable.append(NotComparable(record_label(b[k], bs), diffs))
            continue
        loosened = setup_differences(b[k], n[k], bs, ns, frozenset())
        other_sensor = [d for d in loosened if d.field in _ENERGY_FIELDS]
        energy_ok = k not in mixed and not other_sensor
        why = ("measured vs estimated energy: not a regression" if k in mixed else
               f"different {' and '.join(d.field for d in other_sensor)} (--match-loose): not a regression")
        deltas = [compare_metric(m, b[k], n[k], threshold, alpha, energy_ok or not _energy_metric(m), why)
                  for m in METRICS]
        configs.append(ConfigComparison(k, record_label(b[k], bs), deltas, hardware_id(b[k], bs), b[k].serving is not None,
                                        loosened))
    if not configs:
        fields_differing = _summarise_differences(not_comparable)
        to_loosen = ",".join(sorted({d.field for nc in not_comparable for d in nc.differences}, key=list(MATCH_FIELDS).index))
        raise EffbenchError(f"no configuration of {base_name} is comparable with {new_name}: the {len(not_comparable)} "
                            f"configuration(s) matched on workload differ in {fields_differing}; pass --match-loose "
                            f"{to_loosen} "
                            "to compare them anyway (the difference then explains part of every delta)")
    return Comparison(base_name, new_name, threshold, alpha, configs,
                      only_in_base=[record_label(r, bs) for k, r in b.items() if k not in n],
                      only_in_new=[record_label(r, ns) for k, r in n.items() if k not in b],
                      failed=failed, mixed_energy=bool(mixed), allow_missing=allow_missing,
                      lost=[f"{record_label(r, bs)}: failed in {new_name}: {new_errors[k]}" if k in new_errors
                            else f"{record_label(r, bs)}: missing in {new_name}" for k, r in b.items() if k not in n],
                      not_comparable=not_comparable, match_loose=sorted(loose, key=list(MATCH_FIELDS).index))


def _summarise_differences(items: Sequence[NotComparable]) -> str:
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for nc in items:
        for d in nc.differences:
            vb, vn = seen.setdefault(d.field, (set(), set()))
            vb.add(str(d.base))
            vn.add(str(d.new))
    return ", ".join(f"{f} ({'/'.join(sorted(vb))} vs {'/'.join(sorted(vn))})" for f, (vb, vn) in seen.items())


def compare_paths(base: str | Path, new: str | Path, **kwargs) -> Comparison:
    return compare_records(load_run(base), load_run(new), **kwargs)
