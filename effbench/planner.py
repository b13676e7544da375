"""Sizing: measured (or projected) records -> a ranked list of hardware x scheme x batch options
with replicas, cost, energy and CO2e for a target load.

The arithmetic, per option (every figure in the output can be recomputed by hand from these):
- demand D (output tokens/s): the target tokens/s, or R requests/s x O output tokens;
- capacity C of one replica (output tokens/s):
  tokens form: the measured ``e2e_tokens_per_s`` (generated tokens / full call time, prefill included;
  decode tokens/s if e2e is missing); requests form: O / (P / prefill_tokens_per_s + O / decode_tokens_per_s)
  (a batch of B requests spends B x P / prefill on prefill and B x O / decode on decode);
- replicas N = ceil(D / C); utilisation = D / (N x C);
- $/hour = N x price per hour; $/month = $/hour x hours per month; $ per 1M tokens = $/hour / (D x 3600) x 1e6;
- power per replica W = joules_total / e2e_latency_s of the measured call (basis: measured or estimated),
  else the profile's TDP (basis: tdp); kWh/month = N x W x hours / 1000 (every replica at full load: an
  upper bound); kg CO2e/month = kWh/month x grid g/kWh / 1000;
- memory headroom = profile memory - peak memory (device, or host on a CPU).
Latency limits: TTFT is the measured ``ttft_s`` (requests form: B x P / prefill tokens/s), TPOT the
measured ``tpot_s``.

Headroom and spares: replicas N = ceil(D / (C x u)) + k, where u is ``--max-utilisation`` (default 0.8,
queueing headroom; 1 for a measured serving record, whose capacity already meets a p95 SLO under load)
and k the spares of ``--redundancy N+k``. $/1M tokens is given twice: at the target load
($/hour / (D x 3600) x 1e6) and at full capacity (price of one replica / (C x 3600) x 1e6).

Projection to a profile with no measurement, from a measured run of the same kind of device (a CPU run
is projected to a GPU only with ``project_from_cpu``, with a wide band): decode tokens/s = achieved
roofline fraction of the nearest measured device (closest memory bandwidth) x the roofline bound on the
target; prefill scales with peak TFLOPs of the scheme's dtype (bandwidth when unknown); power is the
target's TDP; memory is weights + KV cache only. Only schemes the target can run (quantization registry).

A model effbench ships the architecture of (``arch:NAME``) is also sized on GPUs nobody measured it on:
from the published reference data where it has that exact configuration (basis ``reference``), else
from the GPU projection model fitted to it (effbench.analysis.projection, basis ``projected`` with its
95% band), for 1, 2, 4 and 8 GPUs per replica and the concurrency that serves most within the limits.
Such options are always labelled with their basis.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from effbench.analysis.carbon import WORLD_AVERAGE_G_PER_KWH as WORLD_GRID_G_PER_KWH
from effbench.analysis.carbon import WORLD_AVERAGE_SOURCE as WORLD_GRID_SOURCE
from effbench.analysis.carbon import grid_intensity as grid_by_region
from effbench.analysis.roofline import achieved_fraction, decode_bound_tokens_per_s, weights_bytes
from effbench.errors import EffbenchError
from effbench.models.arch import RANDOM_WEIGHTS_NOTE  # one wording wherever it appears (records, plans)

if TYPE_CHECKING:  # pragma: no cover - the catalog, schema and run store load when a plan is computed
    from effbench.hardware import HardwareProfile, PriceOverride
    from effbench.results.hardware import StoredRun
    from effbench.results.schema import Record

# plan's own option for the profile of a run that stores none (its --hardware filters candidates).
RUN_HARDWARE_OPTION = "--run-hardware ID"

HOURS_PER_MONTH = 730.0
PRICE_STALE_DAYS = 180  # a rental price older than this is flagged: GPU prices move by 2x in a year
DEFAULT_MAX_UTILISATION = 0.8
DEFAULT_MAX_PPL_RISE = 0.10  # 10%
CONCURRENCY_CANDIDATES = (1, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_WORKLOAD = "lm-arena-chat"  # the request shape of a tokens/s target on reference/projected options
# A CPU run projected to a GPU: the roofline fraction of a CPU says little about GPU kernels (eager
# transformers on a GPU is bound by launches, not bandwidth): the truth may be up to 30x lower.
CPU_TO_GPU_BAND = {"output_tokens_per_s": 29.0, "joules_per_token": 29.0, "confidence": 0.95,
                   "method": "CPU-to-GPU roofline scaling: no fit; the truth may be up to 30x lower in tokens/s and 30x higher in J/token (judgement, not a fit)"}

# The dtype whose peak TFLOPs governs prefill for a scheme (weight-only schemes compute in 16 bit).
SCHEME_DTYPE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8-dynamic": "int8", "torchao-int8da8w": "int8"}


# -- request ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Demand:
    tokens_per_s: Optional[float] = None
    requests_per_s: Optional[float] = None
    prompt_tokens: Optional[int] = None
    output_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.tokens_per_s is None) == (self.requests_per_s is None):
            raise EffbenchError("give exactly one target: --target-tokens-per-s N, or --target-requests-per-s R with --prompt-tokens P --output-tokens O")
        for flag, v in (("--target-tokens-per-s", self.tokens_per_s), ("--target-requests-per-s", self.requests_per_s),
                        ("--prompt-tokens", self.prompt_tokens), ("--output-tokens", self.output_tokens)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise EffbenchError(f"{flag} must be a positive number (got {v})")
        if self.requests_per_s is not None and (self.prompt_tokens is None or self.output_tokens is None):
            raise EffbenchError("--target-requests-per-s needs --prompt-tokens P and --output-tokens O (the request's lengths)")

    @property
    def output_tokens_per_s(self) -> float:
        return self.tokens_per_s if self.tokens_per_s is not None else self.requests_per_s * self.output_tokens  # type: ignore[operator]

    def label(self) -> str:
        if self.tokens_per_s is not None:
            return f"{self.tokens_per_s:,g} output tokens/s"
        return (f"{self.requests_per_s:,g} requests/s x {self.output_tokens} output tokens "
                f"({self.output_tokens_per_s:,g} tokens/s), prompts of {self.prompt_tokens} tokens")


@dataclass
class PlanRequest:
    demand: Demand
    max_ttft_ms: Optional[float] = None
    max_tpot_ms: Optional[float] = None
    hardware: Optional[list[str]] = None  # profile ids to consider; None = all
    prices: dict[str, PriceOverride] = field(default_factory=dict)
    hours_per_month: float = HOURS_PER_MONTH
    grid_g_per_kwh: float = WORLD_GRID_G_PER_KWH
    grid_source: str = WORLD_GRID_SOURCE
    model: Optional[str] = None
    projections: bool = True
    project_from_cpu: bool = False
    max_ppl_rise: Optional[float] = DEFAULT_MAX_PPL_RISE  # relative; None = no quality filter
    show_flagged: bool = False  # keep quality-flagged schemes, marked, instead of excluding them
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    redundancy: int = 0  # k spare replicas (N+k)
    workload: Optional[str] = None  # a reference task for reference/projected options (tokens form)
    today: Optional[date] = None  # for price staleness (tests pin it)

    def __post_init__(self) -> None:
        if not (0 < self.max_utilisation <= 1):
            raise EffbenchError(f"--max-utilisation must be in (0, 1] (got {self.max_utilisation:g}); 0.8 leaves 20% queueing headroom")
        if self.redundancy < 0:
            raise EffbenchError(f"--redundancy must be N+k with k >= 0 (got {self.redundancy})")
        if self.max_ppl_rise is not None and not (self.max_ppl_rise >= 0 and math.isfinite(self.max_ppl_rise)):
            raise EffbenchError(f"--max-ppl-rise must be a percentage >= 0 (got {self.max_ppl_rise * 100:g})")
        for flag, v in (("--max-ttft-ms", self.max_ttft_ms), ("--max-tpot-ms", self.max_tpot_ms),
                        ("--hours-per-month", self.hours_per_month)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise EffbenchError(f"{flag} must be a positive number (got {v})")
        if self.hours_per_month > 744:
            raise EffbenchError(f"--hours-per-month is at most 744 (31 days x 24 h); got {self.hours_per_month:g}")
        if not (self.grid_g_per_kwh >= 0 and math.isfinite(self.grid_g_per_kwh)):
            raise EffbenchError(f"--grid-intensity must be >= 0 gCO2/kWh (got {self.grid_g_per_kwh})")


def parse_redundancy(text: Optional[str]) -> int:
    """``N+k`` (k spare replicas beyond what the load needs), or ``N``; an error names the form."""
    if text is None:
        return 0
    m = re.fullmatch(r"\s*[Nn]\s*(?:\+\s*(\d+))?\s*", text)
    if not m:
        raise EffbenchError(f"--redundancy '{text}' is not N+k (e.g. N+1: one spare replica)")
    return int(m.group(1) or 0)


def price_age_days(price_date: Optional[str], today: Optional[date] = None) -> Optional[int]:
    if not price_date:
        return None
    parts = [int(x) for x in price_date.split("-")] + [1]
    return ((today or date.today()) - date(parts[0], parts[1], parts[2])).days


def grid_intensity(region: Optional[str], explicit: Optional[float]) -> tuple[float, str]:
    """(g CO2e per kWh, source): an explicit figure, else the region's, else the world average (where
    the deployment runs is not where the benchmark ran, so this machine's country is not assumed).
    The figures are effbench.analysis.carbon's, so every effbench output cites the same ones."""
    if explicit is not None:
        return explicit, "command line (--grid-intensity)"
    g, source = grid_by_region(region or "world")
    return float(g), source


# -- result -------------------------------------------------------------------------------------


@dataclass
class PlanOption:
    hardware: str
    hardware_name: str
    basis: str  # "measured" or "projected"
    model: str
    backend: str
    scheme: str
    batch_size: int
    capacity_tokens_per_s: float  # one replica, output tokens/s
    replicas: int
    utilisation: float
    ttft_ms: Optional[float]
    tpot_ms: Optional[float]
    price_per_hour_usd: Optional[float]  # one replica
    usd_per_hour: Optional[float]
    usd_per_month: Optional[float]
    usd_per_million_tokens: Optional[float]
    power_w: Optional[float]  # one replica at full load
    power_basis: str  # measured / estimated / tdp / unknown
    kwh_per_month: Optional[float]
    kg_co2e_per_month: Optional[float]
    memory_gb: Optional[float]
    peak_memory_gb: Optional[float]
    memory_headroom_gb: Optional[float]
    price_source: Optional[str] = None
    projected_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    random_weights: bool = False  # an architecture-only model: its speed, memory and energy only mean something
    serving_load: Optional[str] = None  # a serving record's offered load ("rate 2/s", "8 users")
    gpus_per_replica: int = 1
    active_replicas: int = 0  # replicas the load needs; replicas - active_replicas are spares (--redundancy)
    usd_per_million_tokens_at_capacity: Optional[float] = None  # every replica fully used
    spot_price_per_hour_usd: Optional[float] = None  # one replica
    spot_usd_per_month: Optional[float] = None
    price_date: Optional[str] = None
    price_stale: bool = False  # price_date older than PRICE_STALE_DAYS
    joules_per_token: Optional[float] = None
    band: Optional[dict] = None  # projected: relative 95% half-widths for tokens/s and J/token, and how
    source: Optional[str] = None  # reference: the citation; projected: what it was fitted on
    quality_flag: Optional[str] = None  # a perplexity rise above --max-ppl-rise (shown with --show-flagged)
    rank: int = 0


@dataclass
class Plan:
    demand: str
    demand_tokens_per_s: float
    hours_per_month: float
    grid_g_per_kwh: float
    grid_source: str
    options: list[PlanOption]
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    redundancy: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# -- arithmetic ---------------------------------------------------------------------------------
def capacity_tokens_per_s(record: Record, demand: Demand) -> Optional[float]:
    s = record.serving
    if s is not None:  # a replica under load: what it served, as requests of the demand's length or as tokens
        if demand.requests_per_s is not None:
            return s.achieved_rate * demand.output_tokens if s.achieved_rate else None  # type: ignore[operator]
        return s.output_tokens_per_s
    t = record.throughput
    if demand.requests_per_s is None:
        return t.e2e_tokens_per_s or t.decode_tokens_per_s
    if not t.prefill_tokens_per_s or not t.decode_tokens_per_s:
        return None
    p, o = demand.prompt_tokens, demand.output_tokens
    return o / (p / t.prefill_tokens_per_s + o / t.decode_tokens_per_s)  # type: ignore[operator]


def ttft_ms(record: Record, demand: Demand) -> Optional[float]:
    if record.serving is not None:  # an SLO is a tail: the p95 of the requests served
        return record.serving.ttft_ms.p95 if record.serving.ttft_ms else None
    t = record.throughput
    if demand.requests_per_s is None:
        return t.ttft_s * 1000 if t.ttft_s is not None else None
    if not t.prefill_tokens_per_s:
        return None
    return record.workload.batch_size * demand.prompt_tokens / t.prefill_tokens_per_s * 1000  # type: ignore[operator]


def tpot_ms(record: Record) -> Optional[float]:
    if record.serving is not None:
        return record.serving.tpot_ms.p95 if record.serving.tpot_ms else None
    return record.throughput.tpot_s * 1000 if record.throughput.tpot_s is not None else None


def serving_load(record: Record) -> Optional[str]:
    return record.serving.load_label if record.serving is not None else None


def power_w(record: Record, profile: Optional[HardwareProfile]) -> tuple[Optional[float], str]:
    e, t = record.energy, record.throughput
    if record.serving is not None and e.status in ("measured", "estimated", "reference") and e.mean_power_w:
        return e.mean_power_w, e.status
    if e.status in ("measured", "estimated") and e.joules_total and t.e2e_latency_s:
        return e.joules_total / t.e2e_latency_s, e.status
    if profile is not None and profile.tdp_w:
        return profile.tdp_w, "tdp"
    return None, "unknown"


def peak_memory_bytes(record: Record) -> Optional[float]:
    m = record.memory
    v = m.peak_device_bytes if m.peak_device_bytes is not None else m.peak_host_bytes
    return float(v) if v is not None else None


def scheme_rises(records: Sequence[Record]) -> dict[tuple[str, str, str], float]:
    """(model, backend, scheme) -> perplexity rise over the unquantized baseline of the same model and
    backend: a scheme's quality is one figure, whichever batch size's record carries it (a resumed
    sweep may have written it on some records only)."""
    from effbench.quant.registry import get_scheme

    def unquantized(scheme: str) -> bool:
        try:
            return get_scheme(scheme).unquantized
        except Exception:  # noqa: BLE001 - a scheme this effbench does not know is not a baseline
            return False

    base: dict[tuple[str, str], float] = {}
    for r in records:
        ppl = r.quality.perplexity
        if ppl and unquantized(r.quantization.scheme):
            key = (r.model.id, r.backend.name)
            base[key] = min(base.get(key, ppl), ppl)
    rises: dict[tuple[str, str, str], float] = {}
    for r in records:
        key = (r.model.id, r.backend.name, r.quantization.scheme)
        rise = r.quality.perplexity_rise
        if rise is None and r.quality.perplexity and (r.model.id, r.backend.name) in base:
            rise = r.quality.perplexity / base[(r.model.id, r.backend.name)] - 1
        if rise is not None:
            rises[key] = max(rises.get(key, rise), rise)
    return rises


def quality_flag(record: Record, req: PlanRequest, rises: Optional[dict[tuple[str, str, str], float]] = None) -> Optional[str]:
    """Why a record's scheme fails the quality limit (its perplexity rise, or the sweep's flag), else None."""
    q = record.quality
    if req.max_ppl_rise is None:
        return None
    rise = (rises or {}).get((record.model.id, record.backend.name, record.quantization.scheme), q.perplexity_rise)
    if rise is not None and rise > req.max_ppl_rise:
        return f"perplexity +{rise:.0%} over {q.baseline_scheme or 'the unquantized baseline'} > --max-ppl-rise {req.max_ppl_rise:.0%}"
    if q.flagged:
        return "quality flagged by its sweep (perplexity rise above the sweep's threshold)"
    return None


def context_memory_bytes(record: Record, demand: Demand) -> float:
    """The KV cache the demand's lengths add over the measured ones (the measured peak holds the KV of
    the measured prompt + new tokens): batch x KV per token x the extra tokens; 0 when unknown."""
    per_token = record.memory.kv_bytes_per_token
    if not per_token or demand.prompt_tokens is None or demand.output_tokens is None:
        return 0.0
    extra = (demand.prompt_tokens + demand.output_tokens) - (record.workload.prompt_tokens + record.workload.new_tokens)
    return max(extra, 0) * per_token * record.workload.batch_size


@dataclass(frozen=True)
class Economics:
    replicas: int
    active_replicas: int
    utilisation: float
    usd_per_hour: Optional[float]
    usd_per_month: Optional[float]
    usd_per_million_at_target: Optional[float]
    usd_per_million_at_capacity: Optional[float]
    spot_usd_per_month: Optional[float]
    kwh_per_month: Optional[float]
    kg_co2e_per_month: Optional[float]


def economics(capacity: float, price_per_replica: Optional[float], spot_per_replica: Optional[float], watts: Optional[float],
              req: PlanRequest, headroom: bool = True) -> Economics:
    """Replicas, cost and energy of serving the demand with replicas of ``capacity`` output tokens/s
    (the module docstring gives the arithmetic)."""
    d = req.demand.output_tokens_per_s
    u = req.max_utilisation if headroom else 1.0
    active = math.ceil(d / (capacity * u) - 1e-9)
    n = active + req.redundancy
    usd_h = n * price_per_replica if price_per_replica is not None else None
    kwh = n * watts * req.hours_per_month / 1000 if watts is not None else None
    return Economics(
        replicas=n, active_replicas=active, utilisation=d / (active * capacity), usd_per_hour=usd_h,
        usd_per_month=usd_h * req.hours_per_month if usd_h is not None else None,
        usd_per_million_at_target=usd_h / (d * 3600) * 1e6 if usd_h is not None else None,
        usd_per_million_at_capacity=price_per_replica / (capacity * 3600) * 1e6 if price_per_replica is not None else None,
        spot_usd_per_month=n * spot_per_replica * req.hours_per_month if spot_per_replica is not None else None,
        kwh_per_month=kwh, kg_co2e_per_month=kwh * req.grid_g_per_kwh / 1000 if kwh is not None else None)


def price_fields(profile: Optional[HardwareProfile], gpus: int, req: PlanRequest) -> tuple[Optional[float], Optional[float], Optional[str], bool]:
    """(price of one replica, spot price of one replica, price date, stale?)."""
    if profile is None:
        return None, None, None, False
    price = profile.price_per_hour_usd * gpus if profile.price_per_hour_usd is not None else None
    spot = profile.spot_price_per_hour_usd * gpus if profile.spot_price_per_hour_usd is not None else None
    age = price_age_days(profile.price_date, req.today)
    return price, spot, profile.price_date, price is not None and (age is None or age > PRICE_STALE_DAYS)


def build_option(record: Record, hw_id: str, profile: Optional[HardwareProfile], req: PlanRequest,
                 basis: str = "measured", projected_from: Optional[str] = None, notes: Sequence[str] = (),
                 band: Optional[dict] = None, rises: Optional[dict[tuple[str, str, str], float]] = None) -> tuple[Optional[PlanOption], str]:
    """One option, or (None, why it is excluded)."""
    demand = req.demand
    if record.serving is not None and record.serving.saturated:
        return None, f"saturated at {serving_load(record)} ({record.serving.saturation_reason})"
    flag = quality_flag(record, req, rises)
    if flag and not req.show_flagged:
        return None, f"{flag} (--show-flagged keeps it, marked)"
    cap = capacity_tokens_per_s(record, demand)
    if not cap:
        return None, "no throughput for this load form"
    first = ttft_ms(record, demand)
    tpot = tpot_ms(record)
    if req.max_ttft_ms is not None and (first is None or first > req.max_ttft_ms):
        return None, f"TTFT {first:,.0f} ms > {req.max_ttft_ms:g} ms" if first is not None else "TTFT unknown"
    if req.max_tpot_ms is not None and (tpot is None or tpot > req.max_tpot_ms):
        return None, f"TPOT {tpot:,.1f} ms > {req.max_tpot_ms:g} ms" if tpot is not None else "TPOT unknown"
    gpus = record.hardware.gpus or 1
    measured_peak = peak_memory_bytes(record)
    extra_kv = context_memory_bytes(record, demand) if basis != "reference" else 0.0
    peak = measured_peak + extra_kv if measured_peak is not None else None
    mem = profile.memory_gb * gpus if profile else None
    headroom = (mem - peak / 1e9) if (mem is not None and peak is not None) else None
    if headroom is not None and headroom < 0:
        return None, (f"does not fit: needs {peak / 1e9:,.1f} GB of {mem:g} GB"  # type: ignore[operator]
                      + (f" (KV cache at {demand.prompt_tokens}+{demand.output_tokens} tokens x batch {record.workload.batch_size})" if extra_kv else ""))
    price, spot, price_date, stale = price_fields(profile, gpus, req)
    watts, power_basis = power_w(record, profile)
    if power_basis == "tdp" and watts is not None:
        watts *= gpus
    measured_serving = record.serving is not None and basis == "measured"
    eco = economics(cap, price, spot, watts, req, headroom=not measured_serving)
    all_notes = list(notes)
    random_weights = record.model.weights == "random"
    if random_weights:
        all_notes.append(RANDOM_WEIGHTS_NOTE)
    if flag:
        all_notes.append(f"QUALITY: {flag}")
    if basis == "reference":
        all_notes.append(f"reference: published, not measured by effbench ({record.model.source or record.model.id}, "
                         f"{gpus}x {record.hardware.detected_name or hw_id}, max_num_seqs {record.workload.batch_size}, "
                         f"{record.workload.prompt_set}); TPOT is the published p95 inter-token latency")
    elif demand.requests_per_s is not None and (record.workload.prompt_tokens, record.workload.new_tokens) != (demand.prompt_tokens, demand.output_tokens):
        all_notes.append(f"measured at {record.workload.prompt_tokens}/{record.workload.new_tokens} prompt/new tokens; rates applied to {demand.prompt_tokens}/{demand.output_tokens}")
    if extra_kv:
        all_notes.append(f"memory: measured peak + {extra_kv / 1e9:,.1f} GB of KV cache for {demand.prompt_tokens}+{demand.output_tokens}-token requests")
    if record.stats.interference:
        all_notes.append("measured on a busy machine")
    if measured_serving:
        all_notes.append(f"serving: one replica at {serving_load(record)}, p95 TTFT/TPOT; capacity = the highest load "
                         "measured that meets the limits")
        c = record.serving.capacity if record.serving is not None else None
        if c is not None and c.rate is not None:
            bracket = f" [{c.ci95[0]:.3g}, {c.ci95[1]:.3g}]" if c.ci95 else ""
            all_notes.append(f"measured capacity at the SLO (p95 TTFT <= {c.slo.get('ttft_ms')} ms, p95 TPOT <= "
                             f"{c.slo.get('tpot_ms')} ms): {c.rate:.3g} req/s{bracket}")
    if price is None:
        all_notes.append(f"no price: pass --price {hw_id}=USD_PER_HOUR")
    return PlanOption(
        hardware=hw_id, hardware_name=profile.name if profile else (record.hardware.detected_name or hw_id), basis=basis,
        model=record.model.id, backend=record.backend.name, scheme=record.quantization.scheme, batch_size=record.workload.batch_size,
        capacity_tokens_per_s=cap, replicas=eco.replicas, utilisation=eco.utilisation, ttft_ms=first, tpot_ms=tpot,
        price_per_hour_usd=price, usd_per_hour=eco.usd_per_hour, usd_per_month=eco.usd_per_month,
        usd_per_million_tokens=eco.usd_per_million_at_target,
        power_w=watts, power_basis=power_basis if basis != "reference" else "reference", kwh_per_month=eco.kwh_per_month,
        kg_co2e_per_month=eco.kg_co2e_per_month,
        memory_gb=mem, peak_memory_gb=peak / 1e9 if peak is not None else None, memory_headroom_gb=headroom,
        price_source=profile.price_source if profile else None, projected_from=projected_from, notes=all_notes,
        random_weights=random_weights, serving_load=serving_load(record) if basis != "reference" else f"{record.workload.batch_size} seqs",
        gpus_per_replica=gpus, active_replicas=eco.active_replicas, usd_per_million_tokens_at_capacity=eco.usd_per_million_at_capacity,
        spot_price_per_hour_usd=spot, spot_usd_per_month=eco.spot_usd_per_month, price_date=price_date, price_stale=stale,
        joules_per_token=(watts / cap) if watts is not None else None, band=band,
        source=record.source if basis == "reference" else None, quality_flag=flag,
    ), ""


# -- projection ---------------------------------------------------------------------------------
def _peak(profile: HardwareProfile, scheme: str) -> Optional[float]:
    dtype = SCHEME_DTYPE.get(scheme)
    return getattr(profile.peak_tflops, dtype) if dtype else None


def project(record: Record, ref: HardwareProfile, target: HardwareProfile) -> tuple[Optional[Record], list[str]]:
    """``record`` (measured on ``ref``) as it would run on ``target``: (virtual record, notes), or
    (None, [why not])."""
    frac = achieved_fraction(record, ref)
    bound = decode_bound_tokens_per_s(record, target)
    t = record.throughput
    if frac is None or bound is None or not t.prefill_tokens_per_s or not t.ttft_s:
        return None, ["no roofline fraction or prefill rate to project from"]
    runs = scheme_runs_on_device(record.quantization.scheme, target)
    if runs is not None:
        return None, [runs]
    dtype = SCHEME_DTYPE.get(record.quantization.scheme)
    if dtype and getattr(target.peak_tflops, dtype) is None and target.kind == "gpu":
        return None, [f"{target.id} has no {dtype} support"]
    pt, pr = _peak(target, record.quantization.scheme), _peak(ref, record.quantization.scheme)
    if pt and pr:
        ratio, how = pt / pr, f"prefill scaled by peak {dtype} TFLOPs ({pt:g}/{pr:g})"
    else:
        ratio, how = target.memory_bandwidth_gbps / ref.memory_bandwidth_gbps, "prefill scaled by memory bandwidth (peak TFLOPs unknown)"
    decode = frac * bound
    w, b = record.workload, record.workload.batch_size
    ttft = t.ttft_s / ratio
    tpot = b / decode
    e2e = b * w.new_tokens / (ttft + (w.new_tokens - 1) * tpot)
    kv = (record.memory.kv_bytes_per_token or 0) * b * (w.prompt_tokens + w.new_tokens)
    weights = weights_bytes(record) or 0
    from effbench.results.schema import Throughput

    virtual = record.model_copy(update={
        "throughput": Throughput(prefill_tokens_per_s=t.prefill_tokens_per_s * ratio, decode_tokens_per_s=decode,
                                 e2e_tokens_per_s=e2e, ttft_s=ttft, tpot_s=tpot, e2e_latency_s=ttft + (w.new_tokens - 1) * tpot),
        "energy": record.energy.model_copy(update={"status": "unavailable", "joules_total": None}),
        "memory": record.memory.model_copy(update={"peak_device_bytes": weights + kv, "peak_host_bytes": None}),
        "stats": record.stats.model_copy(update={"interference": False}),
    })
    notes = [f"decode = {frac:.1%} of roofline (achieved on {ref.id}) x bound {bound:,.0f} tok/s", how,
             "memory = weights + KV cache only"]
    if ref.kind != target.kind:
        notes.append(f"low confidence: reference is a {ref.kind}, target a {target.kind}")
    return virtual, notes


def scheme_runs_on_device(scheme: str, target: HardwareProfile) -> Optional[str]:
    """None when the quantization registry says the scheme runs on the target's kind of device, else why not."""
    from effbench.quant.registry import get_scheme

    try:
        devices = get_scheme(scheme).devices
    except Exception:  # noqa: BLE001 - a scheme this effbench does not know: no claim either way
        return None
    need = "cuda" if target.kind == "gpu" else "cpu"
    return None if need in devices else f"scheme '{scheme}' runs on {' or '.join(devices).upper()} only, not on {target.id}"


def _nearest(refs: list[tuple[Record, HardwareProfile]], target: HardwareProfile) -> Optional[tuple[Record, HardwareProfile]]:
    usable = [(r, p) for r, p in refs if achieved_fraction(r, p) is not None]
    if not usable:
        return None
    return min(usable, key=lambda rp: (rp[1].kind != target.kind, abs(math.log(target.memory_bandwidth_gbps / rp[1].memory_bandwidth_gbps))))


# -- models nobody measured here: the reference data and the GPU projection model -------------------
def arch_name(model_id: Optional[str]) -> Optional[str]:
    """The shipped architecture a model id names (``arch:NAME``), else None."""
    from effbench.models.arch import PREFIX, catalog

    if not model_id or not model_id.lower().startswith(PREFIX):
        return None
    name = model_id[len(PREFIX):].lower()
    return name if name in catalog() else None


def known_arch(model_id: Optional[str]) -> Optional[str]:
    """The shipped architecture of a record's model: ``arch:NAME``, or a model id that is a shipped
    name or its Hugging Face id (the bundled smollm2-135m) - for its maximum context."""
    from effbench.models.arch import catalog

    if not model_id:
        return None
    found = arch_name(model_id)
    if found:
        return found
    low = model_id.lower()
    return next((n for n, e in catalog().items() if low in (n, e.hf_id.lower())), None)


def _projected_schemes(profile: HardwareProfile) -> list[str]:
    """The weight formats a replica of this GPU is sized for: bf16 (fp16 where it has no bf16), and fp8
    where it has fp8 tensor cores."""
    from effbench.analysis.projection import scheme_runs_on

    half = "bf16" if scheme_runs_on("bf16", profile) else ("fp16" if scheme_runs_on("fp16", profile) else None)
    return [s for s in (half, "fp8") if s and scheme_runs_on(s, profile)]


def _request_shape(req: PlanRequest, arch: str) -> tuple[int, int, Optional[str], list[str]]:
    """(prompt tokens, output tokens, reference task or None, notes) of the demand's requests."""
    from effbench.reference import workload

    d = req.demand
    if d.prompt_tokens is not None and d.output_tokens is not None:
        return d.prompt_tokens, d.output_tokens, req.workload, []
    w = workload(req.workload or DEFAULT_WORKLOAD, arch)
    return w.prompt_tokens, w.output_tokens, w.name, [f"requests shaped as {w.name}: {w.prompt_note}"]


def arch_options(name: str, targets: Sequence[HardwareProfile], req: PlanRequest) -> tuple[list[PlanOption], list[str]]:
    """Options for an architecture on GPUs: per (GPU, GPUs per replica, scheme), the concurrency that
    serves the most while its p95 inter-token latency (the projected percentile, or the published
    one) meets the limit; the reference data where it has that point, else projected."""
    from effbench.analysis.projection import TP_SIZES, Config, max_concurrency
    from effbench.analysis.stepshape import shipped

    arch = shipped(name)
    prompt, output, task, shape_notes = _request_shape(req, name)
    options: list[PlanOption] = []
    excluded: list[str] = []
    for prof in targets:
        if prof.kind != "gpu":
            continue
        for gpus in (g for g in TP_SIZES if g <= prof.max_gpus_per_node):
            for scheme in _projected_schemes(prof):
                what = f"arch:{name} {scheme} on {gpus}x {prof.id}"
                if arch.heads % gpus:
                    excluded.append(f"{what}: {gpus} GPUs do not divide its {arch.heads} attention heads")
                    continue
                limit = max_concurrency(Config(arch, prof, gpus, 1, prompt, output, scheme))
                if limit < 1:
                    if gpus == 1 or scheme == "bf16":
                        excluded.append(f"{what}: does not fit (weights alone exceed {gpus * prof.memory_gb:g} GB)")
                    continue
                best, why = _best_concurrency(name, prof, gpus, limit, prompt, output, task, scheme, req, shape_notes)
                if best is None:
                    excluded.append(f"{what}: {why or 'no concurrency meets the limits'}")
                else:
                    options.append(best)
    return options, excluded


def _best_concurrency(name: str, prof: HardwareProfile, gpus: int, limit: int, prompt: int, output: int, task: Optional[str],
                      scheme: str, req: PlanRequest, shape_notes: list[str]) -> tuple[Optional[PlanOption], str]:
    """The candidate concurrency serving the most within the limits (p95 TPOT from the predicted p95
    inter-token latency, never the median), and why the next one up failed."""
    best: Optional[PlanOption] = None
    why = ""
    for c in sorted({*(x for x in CONCURRENCY_CANDIDATES if x <= limit), min(limit, max(CONCURRENCY_CANDIDATES))}):
        r = _project(name, prof, gpus, c, prompt, output, task, scheme, req)
        tpot = r["tpot_p95_ms"]
        if req.max_tpot_ms is not None and tpot > req.max_tpot_ms:
            why = f"p95 TPOT {tpot:,.1f} ms > {req.max_tpot_ms:g} ms at concurrency {c}"
            break  # higher concurrency only lengthens the step
        if req.max_ttft_ms is not None:
            why = "TTFT is not projected (drop --max-ttft-ms, or measure a serving run)"
            break
        opt = _option_from_point(r, prof, tpot, req, shape_notes)
        if best is None or opt.capacity_tokens_per_s > best.capacity_tokens_per_s:
            best = opt
    return best, why


def _project(name: str, prof: HardwareProfile, gpus: int, c: int, prompt: int, output: int, task: Optional[str],
             scheme: str, req: PlanRequest) -> dict:
    from effbench.analysis.projection import project_point

    if task is not None and req.demand.prompt_tokens is None:
        return project_point(f"arch:{name}", prof.id, gpus=gpus, concurrency=c, workload=task, scheme=scheme, profile=prof)
    return project_point(f"arch:{name}", prof.id, gpus=gpus, concurrency=c, prompt_tokens=prompt, output_tokens=output,
                         scheme=scheme, profile=prof)


def _option_from_point(r: dict, prof: HardwareProfile, tpot_p95: float, req: PlanRequest, shape_notes: list[str]) -> PlanOption:
    gpus = r["gpus"]
    cap = r["output_tokens_per_s"]
    price, spot, price_date, stale = price_fields(prof, gpus, req)
    eco = economics(cap, price, spot, r["power_w"], req)
    notes = [*shape_notes, *r["notes"]]
    if r["basis"] == "reference":
        notes.append(f"reference: published, not measured by effbench ({r['reference_key']}); TPOT is the published p95 inter-token latency")
    else:
        notes.append(f"projected from the GPU step-time model fitted to the reference data; 95% band: tokens/s x/÷ {1 + r['band']['output_tokens_per_s']:.2f}, "
                     f"J/token x/÷ {1 + r['band']['joules_per_token']:.2f} ({r['band']['method']}); TPOT = projected p95 inter-token latency "
                     f"({tpot_p95:.1f} ms; median {r['tpot_ms']:.1f} ms); {r['effective_batch']:.0f} sequences running, KV cache room for "
                     f"{r['kv_capacity_sequences']:.0f}")
    if price is None:
        notes.append(f"no price: pass --price {prof.id}=USD_PER_HOUR")
    return PlanOption(
        hardware=prof.id, hardware_name=prof.name, basis=r["basis"], model=r["model"], backend="vllm", scheme=r["scheme"],
        batch_size=r["concurrency"], capacity_tokens_per_s=cap, replicas=eco.replicas, utilisation=eco.utilisation,
        ttft_ms=None, tpot_ms=tpot_p95, price_per_hour_usd=price, usd_per_hour=eco.usd_per_hour, usd_per_month=eco.usd_per_month,
        usd_per_million_tokens=eco.usd_per_million_at_target, power_w=r["power_w"],
        power_basis="reference" if r["basis"] == "reference" else "projected", kwh_per_month=eco.kwh_per_month,
        kg_co2e_per_month=eco.kg_co2e_per_month, memory_gb=r["memory_capacity_gb"], peak_memory_gb=r["memory_gb"],
        memory_headroom_gb=r["memory_capacity_gb"] - r["memory_gb"], price_source=prof.price_source,
        projected_from="reference fit" if r["basis"] == "projected" else None, notes=notes, random_weights=False,
        serving_load=f"{r['running_sequences']:.0f} seqs", gpus_per_replica=gpus, active_replicas=eco.active_replicas,
        usd_per_million_tokens_at_capacity=eco.usd_per_million_at_capacity, spot_price_per_hour_usd=spot,
        spot_usd_per_month=eco.spot_usd_per_month, price_date=price_date, price_stale=stale,
        joules_per_token=r["joules_per_token"], band=r["band"] if r["basis"] == "projected" else None, source=r["source"])


# -- the plan -----------------------------------------------------------------------------------
def load_runs(dirs: Sequence[str | Path]) -> list[StoredRun]:
    """The run directories (or their results.jsonl files): run.json, which carries the hardware
    profile, and the records. A run without records is an error naming it."""
    from effbench.results.hardware import StoredRun
    from effbench.results.store import read_run_dir

    if not dirs:
        raise EffbenchError("no results given: pass --results DIR (a run directory from 'effbench run')")
    runs: list[StoredRun] = []
    for d in dirs:
        run, rs = read_run_dir(d)
        if not rs:
            raise EffbenchError(f"{d} holds no records yet (results.jsonl is empty); pass a run that finished a configuration")
        runs.append(StoredRun(str(d), run, rs))
    return runs


def load_records(dirs: Sequence[str | Path]) -> list[Record]:
    return [r for run in load_runs(dirs) for r in run.records]


def _best_serving_load(options: list[PlanOption], excluded: list[str]) -> tuple[list[PlanOption], list[str]]:
    """A serving replica is one option: the highest measured load that meets the limits (its capacity);
    its lower loads are the same replica, less used."""
    best: dict[tuple, PlanOption] = {}
    for o in options:
        if o.serving_load is None:
            continue
        key = (o.hardware, o.gpus_per_replica, o.basis, o.model, o.backend, o.scheme)
        if key not in best or o.capacity_tokens_per_s > best[key].capacity_tokens_per_s:
            best[key] = o
    keep = [o for o in options if o.serving_load is None or best.get((o.hardware, o.gpus_per_replica, o.basis, o.model, o.backend, o.scheme)) is o]
    dropped = [f"{o.model} {o.scheme} {o.serving_load} on {o.hardware}: a higher load of the same replica meets the limits"
               for o in options if o not in keep]
    return keep, excluded + dropped


def _rank_key(o: PlanOption) -> tuple:
    # Cheapest first; on equal cost, less energy, measured before projected, then lower TPOT.
    return (o.usd_per_month is None, o.usd_per_month or 0.0, o.kwh_per_month or 0.0, o.basis != "measured",
            o.tpot_ms if o.tpot_ms is not None else math.inf, o.replicas)


def _catalog_profile(record: Record, prices: dict[str, PriceOverride]) -> Optional[HardwareProfile]:
    """A record given without its run (the Python API): its profile id in the catalog, never this machine."""
    if not record.hardware.profile:
        return None
    from effbench.hardware import get_profile

    try:
        return get_profile(record.hardware.profile, prices, measure=False, local=False)
    except EffbenchError:
        return None


def plan(records: Sequence[Record], req: PlanRequest, runs: Sequence[Union[StoredRun, Mapping[str, Any]]] = (),
         run_hardware: Optional[str] = None) -> Plan:
    """``runs``: the runs the records come from (``StoredRun``, or bare run.json contents). Each record's
    hardware is the profile its run stored; a run that stores none is an error unless ``run_hardware``
    names the profile it ran on. Records given without a run are looked up by profile id in the catalog.
    Nothing describes the machine the plan is computed on. With ``req.model`` an architecture
    (``arch:NAME``), records are optional: GPUs nobody measured are sized from the reference data and
    the GPU projection model."""
    from effbench.hardware import get_profile, profiles
    from effbench.results.hardware import (
        StoredRun,
        require_profiles,
        resolve_run_profiles,
    )

    stored_runs = [r if isinstance(r, StoredRun) else StoredRun(str(r.get("run_id") or "?"), r, ()) for r in runs]
    resolved = require_profiles(resolve_run_profiles(stored_runs, run_hardware, req.prices), RUN_HARDWARE_OPTION)
    catalog = profiles(req.prices)  # read once: the price check and the projection targets both use it
    known_ids = resolved.ids | {p.id for p in catalog}
    wanted = ({h if h in resolved.ids else get_profile(h, req.prices, local=False).id for h in req.hardware}  # unknown ids -> error
              if req.hardware else None)
    unknown_prices = sorted(set(req.prices) - known_ids)
    if unknown_prices:
        raise EffbenchError(f"--price names unknown hardware profile '{unknown_prices[0]}'; "
                            "'effbench hardware list' shows the ids (or the results' own profiles)")
    model_arch = arch_name(req.model)
    if req.model is not None and req.model.lower().startswith("arch:") and model_arch is None:
        from effbench.models.arch import resolve_arch

        resolve_arch(req.model)  # the one-line error that lists the shipped architectures
    if req.model is not None:
        records = [r for r in records if r.model.id.lower() == req.model.lower()]
        if not records and model_arch is None:
            raise EffbenchError(f"no records for model '{req.model}' in the results given")
    if not records and model_arch is None:
        raise EffbenchError("no records in the results given")
    archs = sorted({a for a in [model_arch, *(arch_name(r.model.id) for r in records)] if a})
    _check_context(sorted({*archs, *(a for a in (known_arch(r.model.id) for r in records) if a)}), req.demand)
    options: list[PlanOption] = []
    excluded: list[str] = []
    warnings: list[str] = []
    measured: dict[tuple, list[tuple[Record, HardwareProfile]]] = {}
    measured_ids: dict[str, set[str]] = {}  # model id -> profiles it was measured on
    rises = scheme_rises(records)
    for r in records:
        what = f"{r.model.id} {r.quantization.scheme} b{r.workload.batch_size}"
        if r.error:
            excluded.append(f"{what} on {r.hardware.profile or r.hardware.detected_name}: failed ({r.error})")
            continue
        profile = resolved.of(r) or _catalog_profile(r, req.prices)
        hw_id = profile.id if profile else (r.hardware.profile or r.hardware.detected_name or "unknown")
        measured_ids.setdefault(r.model.id, set()).add(hw_id)
        if profile is not None and r.serving is None:  # serving points are not roofline-projected
            cfg = (r.model.id, r.backend.name, r.quantization.scheme, r.workload.batch_size, r.workload.prompt_tokens, r.workload.new_tokens)
            measured.setdefault(cfg, []).append((r, profile))
        if wanted is not None and hw_id not in wanted:
            continue
        notes = [] if profile else [f"no hardware profile for '{hw_id}': no price, TDP or memory size"]
        opt, why = build_option(r, hw_id, profile, req, notes=notes, rises=rises)
        (options.append(opt) if opt else excluded.append(f"{what} on {hw_id}: {why}"))
    all_measured = set().union(*measured_ids.values()) if measured_ids else set()
    cpu_skipped = 0
    if req.projections:
        targets = [p for p in catalog if p.id not in all_measured and (wanted is None or p.id in wanted)]
        for target in targets:
            for refs in measured.values():
                if arch_name(refs[0][0].model.id) and target.kind == "gpu":
                    continue  # a shipped architecture on a GPU: the fitted GPU model below, not a roofline from another device
                near = _nearest(refs, target)
                if near is None:
                    continue
                ref_record, ref_profile = near
                band = None
                if ref_profile.kind != target.kind:
                    if not req.project_from_cpu:
                        cpu_skipped += 1
                        continue
                    band = dict(CPU_TO_GPU_BAND)
                virtual, notes = project(ref_record, ref_profile, target)
                what = f"{ref_record.model.id} {ref_record.quantization.scheme} b{ref_record.workload.batch_size} on {target.id} (projected)"
                if virtual is None:
                    excluded.append(f"{what}: {notes[0]}")
                    continue
                opt, why = build_option(virtual, target.id, target, req, "projected", ref_profile.id, notes, band=band, rises=rises)
                (options.append(opt) if opt else excluded.append(f"{what}: {why}"))
        for name in archs:
            done = measured_ids.get(f"arch:{name}", set())
            targets = [p for p in catalog if p.kind == "gpu" and p.id not in done and (wanted is None or p.id in wanted)]
            more, why = arch_options(name, targets, req)
            options += more
            excluded += why
    if cpu_skipped:
        why = (f"{cpu_skipped} projection(s) of a CPU run to a GPU left out: a CPU's roofline fraction says little "
               "about a GPU; --project-from-cpu shows them, with a wide band")
        warnings.append(why)
        excluded.append(why)
    options, excluded = _best_serving_load(options, excluded)
    options.sort(key=_rank_key)
    for i, o in enumerate(options, 1):
        o.rank = i
    stale = sorted({f"{o.hardware} ({o.price_date or 'undated'})" for o in options if o.price_stale})
    if stale:
        warnings.append(f"prices older than {PRICE_STALE_DAYS} days or undated: {', '.join(stale)}; check them and pass --price ID=USD_PER_HOUR")
    return Plan(req.demand.label(), req.demand.output_tokens_per_s, req.hours_per_month, req.grid_g_per_kwh,
                req.grid_source, options, excluded, warnings, req.max_utilisation, req.redundancy)


def _check_context(archs: Sequence[str], demand: Demand) -> None:
    """Refuse request lengths beyond a model's maximum context (its config's max_position_embeddings)."""
    if demand.prompt_tokens is None or demand.output_tokens is None:
        return
    from effbench.analysis.projection import check_lengths
    from effbench.analysis.stepshape import shipped

    for name in archs:
        check_lengths(shipped(name), demand.prompt_tokens, demand.output_tokens)
