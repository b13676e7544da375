"""One option: a record (measured, or carried to another device by the roofline) sized for the
demand: one replica's capacity, latency, power and memory, and the replicas, cost and energy of the
load (effbench.planner.economics).

One replica's capacity C (output tokens/s): tokens form: the measured ``e2e_tokens_per_s`` (generated
tokens / full call time, prefill included; decode tokens/s if e2e is missing); requests form:
O / (P / prefill_tokens_per_s + O / decode_tokens_per_s) (a batch of B requests spends B x P / prefill on
prefill and B x O / decode on decode). A serving record's capacity is what it served under its offered
load. TTFT is the measured ``ttft_s`` (requests form: B x P / prefill tokens/s), TPOT the measured
``tpot_s`` (a serving record: their p95). Power per replica W = joules_total / e2e_latency_s of the
measured call (basis: measured or estimated), else the profile's TDP (basis: tdp). Memory headroom =
profile memory - peak memory (device, or host on a CPU), the KV cache of longer requests added.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

from effbench.models.arch import RANDOM_WEIGHTS_NOTE  # one wording wherever it appears (records, plans)
from effbench.planner.demand import Demand, PlanRequest
from effbench.planner.economics import economics, price_fields
from effbench.planner.quality import Rises, quality_flag

if TYPE_CHECKING:  # pragma: no cover - the catalog and schema load when a plan is computed
    from effbench.hardware import HardwareProfile
    from effbench.results.schema import Record


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
    kv_max_concurrency: Optional[int] = None  # reference/projected: sequences of the request shape whose KV cache fits
    quality_flag: Optional[str] = None  # a perplexity rise above --max-ppl-rise (shown with --show-flagged)
    rank: int = 0


# -- a record under the demand ------------------------------------------------------------------
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


def context_memory_bytes(record: Record, demand: Demand) -> float:
    """The KV cache the demand's lengths add over the measured ones (the measured peak holds the KV of
    the measured prompt + new tokens): batch x KV per token x the extra tokens; 0 when unknown."""
    per_token = record.memory.kv_bytes_per_token
    if not per_token or demand.prompt_tokens is None or demand.output_tokens is None:
        return 0.0
    extra = (demand.prompt_tokens + demand.output_tokens) - (record.workload.prompt_tokens + record.workload.new_tokens)
    return max(extra, 0) * per_token * record.workload.batch_size


def build_option(record: Record, hw_id: str, profile: Optional[HardwareProfile], req: PlanRequest,
                 basis: str = "measured", projected_from: Optional[str] = None, notes: Sequence[str] = (),
                 band: Optional[dict] = None, rises: Optional[Rises] = None) -> tuple[Optional[PlanOption], str]:
    """One option, or (None, why it is excluded)."""
    demand, w = req.demand, record.workload
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
                      + (f" (KV cache at {demand.prompt_tokens}+{demand.output_tokens} tokens x batch {w.batch_size})"
                         if extra_kv else ""))
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
    elif demand.requests_per_s is not None and (w.prompt_tokens, w.new_tokens) != (demand.prompt_tokens, demand.output_tokens):
        all_notes.append(f"measured at {w.prompt_tokens}/{w.new_tokens} prompt/new tokens; "
                         f"rates applied to {demand.prompt_tokens}/{demand.output_tokens}")
    if extra_kv:
        all_notes.append(f"memory: measured peak + {extra_kv / 1e9:,.1f} GB of KV cache for "
                         f"{demand.prompt_tokens}+{demand.output_tokens}-token requests")
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
        model=record.model.id, backend=record.backend.name, scheme=record.quantization.scheme, batch_size=w.batch_size,
        capacity_tokens_per_s=cap, replicas=eco.replicas, utilisation=eco.utilisation, ttft_ms=first, tpot_ms=tpot,
        price_per_hour_usd=price, usd_per_hour=eco.usd_per_hour, usd_per_month=eco.usd_per_month,
        usd_per_million_tokens=eco.usd_per_million_at_target,
        power_w=watts, power_basis=power_basis if basis != "reference" else "reference", kwh_per_month=eco.kwh_per_month,
        kg_co2e_per_month=eco.kg_co2e_per_month,
        memory_gb=mem, peak_memory_gb=peak / 1e9 if peak is not None else None, memory_headroom_gb=headroom,
        price_source=profile.price_source if profile else None, projected_from=projected_from, notes=all_notes,
        random_weights=random_weights, serving_load=serving_load(record) if basis != "reference" else f"{w.batch_size} seqs",
        gpus_per_replica=gpus, active_replicas=eco.active_replicas,
        usd_per_million_tokens_at_capacity=eco.usd_per_million_at_capacity,
        spot_price_per_hour_usd=spot, spot_usd_per_month=eco.spot_usd_per_month, price_date=price_date, price_stale=stale,
        joules_per_token=(watts / cap) if watts is not None else None, band=band,
        source=record.source if basis == "reference" else None, quality_flag=flag,
    ), ""
