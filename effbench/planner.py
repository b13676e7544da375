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

Projection to a profile with no measurement: decode tokens/s = achieved roofline fraction of the nearest
measured device (closest memory bandwidth, same kind first) x the roofline bound on the target; prefill
scales with peak TFLOPs of the scheme's dtype (bandwidth when unknown); power is the target's TDP;
memory is weights + KV cache only. Such options are always labelled ``projected``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from effbench.analysis.carbon import WORLD_AVERAGE_G_PER_KWH as WORLD_GRID_G_PER_KWH
from effbench.analysis.carbon import WORLD_AVERAGE_SOURCE as WORLD_GRID_SOURCE
from effbench.analysis.carbon import grid_intensity as grid_by_region
from effbench.analysis.roofline import achieved_fraction, decode_bound_tokens_per_s, weights_bytes
from effbench.errors import EffbenchError
from effbench.models.arch import RANDOM_WEIGHTS_NOTE  # one wording wherever it appears (records, plans)
from effbench.hardware import HardwareProfile, PriceOverride, get_profile, profiles
from effbench.results.hardware import StoredRun, require_profiles, resolve_run_profiles
from effbench.results.schema import Record, Throughput
from effbench.results.store import read_run_dir

# plan's own option for the profile of a run that stores none (its --hardware filters candidates).
RUN_HARDWARE_OPTION = "--run-hardware ID"

HOURS_PER_MONTH = 730.0

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

    def __post_init__(self) -> None:
        for flag, v in (("--max-ttft-ms", self.max_ttft_ms), ("--max-tpot-ms", self.max_tpot_ms),
                        ("--hours-per-month", self.hours_per_month)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise EffbenchError(f"{flag} must be a positive number (got {v})")
        if self.hours_per_month > 744:
            raise EffbenchError(f"--hours-per-month is at most 744 (31 days x 24 h); got {self.hours_per_month:g}")
        if not (self.grid_g_per_kwh >= 0 and math.isfinite(self.grid_g_per_kwh)):
            raise EffbenchError(f"--grid-intensity must be >= 0 gCO2/kWh (got {self.grid_g_per_kwh})")


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
    if record.serving is not None and e.status in ("measured", "estimated") and e.mean_power_w:
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


def build_option(record: Record, hw_id: str, profile: Optional[HardwareProfile], req: PlanRequest,
                 basis: str = "measured", projected_from: Optional[str] = None, notes: Sequence[str] = ()) -> tuple[Optional[PlanOption], str]:
    """One option, or (None, why it is excluded)."""
    demand = req.demand
    if record.serving is not None and record.serving.saturated:
        return None, f"saturated at {serving_load(record)} ({record.serving.saturation_reason})"
    cap = capacity_tokens_per_s(record, demand)
    if not cap:
        return None, "no throughput for this load form"
    first = ttft_ms(record, demand)
    tpot = tpot_ms(record)
    if req.max_ttft_ms is not None and (first is None or first > req.max_ttft_ms):
        return None, f"TTFT {first:,.0f} ms > {req.max_ttft_ms:g} ms" if first is not None else "TTFT unknown"
    if req.max_tpot_ms is not None and (tpot is None or tpot > req.max_tpot_ms):
        return None, f"TPOT {tpot:,.1f} ms > {req.max_tpot_ms:g} ms" if tpot is not None else "TPOT unknown"
    peak = peak_memory_bytes(record)
    mem = profile.memory_gb if profile else None
    headroom = (mem - peak / 1e9) if (mem is not None and peak is not None) else None
    if headroom is not None and headroom < 0:
        return None, f"does not fit: needs {peak / 1e9:,.1f} GB of {mem:g} GB"
    d = demand.output_tokens_per_s
    n = math.ceil(d / cap)
    price = profile.price_per_hour_usd if profile else None
    usd_h = n * price if price is not None else None
    watts, power_basis = power_w(record, profile)
    kwh = n * watts * req.hours_per_month / 1000 if watts is not None else None
    all_notes = list(notes)
    random_weights = record.model.weights == "random"
    if random_weights:
        all_notes.append(RANDOM_WEIGHTS_NOTE)
    if demand.requests_per_s is not None and (record.workload.prompt_tokens, record.workload.new_tokens) != (demand.prompt_tokens, demand.output_tokens):
        all_notes.append(f"measured at {record.workload.prompt_tokens}/{record.workload.new_tokens} prompt/new tokens; rates applied to {demand.prompt_tokens}/{demand.output_tokens}")
    if record.stats.interference:
        all_notes.append("measured on a busy machine")
    if record.serving is not None:
        all_notes.append(f"serving: one replica at {serving_load(record)}, p95 TTFT/TPOT; capacity = the highest load "
                         "measured that meets the limits")
    if price is None:
        all_notes.append(f"no price: pass --price {hw_id}=USD_PER_HOUR")
    return PlanOption(
        hardware=hw_id, hardware_name=profile.name if profile else (record.hardware.detected_name or hw_id), basis=basis,
        model=record.model.id, backend=record.backend.name, scheme=record.quantization.scheme, batch_size=record.workload.batch_size,
        capacity_tokens_per_s=cap, replicas=n, utilisation=d / (n * cap), ttft_ms=first, tpot_ms=tpot,
        price_per_hour_usd=price, usd_per_hour=usd_h, usd_per_month=usd_h * req.hours_per_month if usd_h is not None else None,
        usd_per_million_tokens=usd_h / (d * 3600) * 1e6 if usd_h is not None else None,
        power_w=watts, power_basis=power_basis, kwh_per_month=kwh,
        kg_co2e_per_month=kwh * req.grid_g_per_kwh / 1000 if kwh is not None else None,
        memory_gb=mem, peak_memory_gb=peak / 1e9 if peak is not None else None, memory_headroom_gb=headroom,
        price_source=profile.price_source if profile else None, projected_from=projected_from, notes=all_notes,
        random_weights=random_weights, serving_load=serving_load(record),
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


def _nearest(refs: list[tuple[Record, HardwareProfile]], target: HardwareProfile) -> Optional[tuple[Record, HardwareProfile]]:
    usable = [(r, p) for r, p in refs if achieved_fraction(r, p) is not None]
    if not usable:
        return None
    return min(usable, key=lambda rp: (rp[1].kind != target.kind, abs(math.log(target.memory_bandwidth_gbps / rp[1].memory_bandwidth_gbps))))


# -- the plan -----------------------------------------------------------------------------------
def load_runs(dirs: Sequence[str | Path]) -> list[StoredRun]:
    """The run directories (or their results.jsonl files): run.json, which carries the hardware
    profile, and the records. A run without records is an error naming it."""
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
        key = (o.hardware, o.basis, o.model, o.backend, o.scheme)
        if key not in best or o.capacity_tokens_per_s > best[key].capacity_tokens_per_s:
            best[key] = o
    keep = [o for o in options if o.serving_load is None or best.get((o.hardware, o.basis, o.model, o.backend, o.scheme)) is o]
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
    try:
        return get_profile(record.hardware.profile, prices, measure=False, local=False)
    except EffbenchError:
        return None


def plan(records: Sequence[Record], req: PlanRequest, runs: Sequence[Union[StoredRun, Mapping[str, Any]]] = (),
         run_hardware: Optional[str] = None) -> Plan:
    """``runs``: the runs the records come from (``StoredRun``, or bare run.json contents). Each record's
    hardware is the profile its run stored; a run that stores none is an error unless ``run_hardware``
    names the profile it ran on. Records given without a run are looked up by profile id in the catalog.
    Nothing describes the machine the plan is computed on."""
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
    if req.model is not None:
        records = [r for r in records if r.model.id == req.model]
        if not records:
            raise EffbenchError(f"no records for model '{req.model}' in the results given")
    if not records:
        raise EffbenchError("no records in the results given")
    options: list[PlanOption] = []
    excluded: list[str] = []
    measured: dict[tuple, list[tuple[Record, HardwareProfile]]] = {}
    measured_ids: set[str] = set()
    for r in records:
        what = f"{r.model.id} {r.quantization.scheme} b{r.workload.batch_size}"
        if r.error:
            excluded.append(f"{what} on {r.hardware.profile or r.hardware.detected_name}: failed ({r.error})")
            continue
        profile = resolved.of(r) or _catalog_profile(r, req.prices)
        hw_id = profile.id if profile else (r.hardware.profile or r.hardware.detected_name or "unknown")
        measured_ids.add(hw_id)
        if profile is not None and r.serving is None:  # serving points are not roofline-projected
            cfg = (r.model.id, r.backend.name, r.quantization.scheme, r.workload.batch_size, r.workload.prompt_tokens, r.workload.new_tokens)
            measured.setdefault(cfg, []).append((r, profile))
        if wanted is not None and hw_id not in wanted:
            continue
        notes = [] if profile else [f"no hardware profile for '{hw_id}': no price, TDP or memory size"]
        opt, why = build_option(r, hw_id, profile, req, notes=notes)
        (options.append(opt) if opt else excluded.append(f"{what} on {hw_id}: {why}"))
    if req.projections:
        targets = [p for p in catalog if p.id not in measured_ids and (wanted is None or p.id in wanted)]
        for target in targets:
            for refs in measured.values():
                near = _nearest(refs, target)
                if near is None:
                    continue
                ref_record, ref_profile = near
                virtual, notes = project(ref_record, ref_profile, target)
                what = f"{ref_record.model.id} {ref_record.quantization.scheme} b{ref_record.workload.batch_size} on {target.id} (projected)"
                if virtual is None:
                    excluded.append(f"{what}: {notes[0]}")
                    continue
                opt, why = build_option(virtual, target.id, target, req, "projected", ref_profile.id, notes)
                (options.append(opt) if opt else excluded.append(f"{what}: {why}"))
    options, excluded = _best_serving_load(options, excluded)
    options.sort(key=_rank_key)
    for i, o in enumerate(options, 1):
        o.rank = i
    return Plan(req.demand.label(), req.demand.output_tokens_per_s, req.hours_per_month, req.grid_g_per_kwh,
                req.grid_source, options, excluded)
