"""The result record, ``results.jsonl`` schema_version 1.

Field names are a contract shared with every other lab's results: add fields, never rename one
without bumping ``SCHEMA_VERSION``. Sections that a configuration could not fill stay ``None``.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SCHEMA_VERSION = 1


class _Section(BaseModel):
    # Readers accept records from newer effbench versions that added fields.
    model_config = ConfigDict(extra="allow")


class ModelInfo(_Section):
    id: str
    source: Optional[str] = None
    params: Optional[int] = None
    weights_bytes: Optional[int] = None
    weights: Literal["pretrained", "random"] = "pretrained"


class BackendInfo(_Section):
    name: str
    version: Optional[str] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    compile: bool = False  # torch.compile'd forward (else eager)


class QuantizationInfo(_Section):
    scheme: str
    weight_bits: Optional[float] = None
    library: Optional[str] = None
    note: Optional[str] = None  # what was quantized, and anything left in full precision


class WorkloadInfo(_Section):
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prompt_set: str


class Latency(_Section):
    """One latency distribution (a serving point's TTFT, TPOT, ITL, end-to-end; an offline record's ITL), in milliseconds."""

    p50: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    mean: Optional[float] = None
    n: Optional[int] = None
    ci95: dict[str, list[float]] = Field(default_factory=dict)  # percentile -> [low, high], distribution-free


# The rates, times and energies a record states: each a finite number >= 0 where given. A results file
# with a negative or NaN figure (hand-edited, foreign) is refused where it is read (validated with
# READ_CONTEXT), not ranked or plotted; effbench's own writer drops such a figure and flags it
# (``impossible_amounts_dropped``), so a file it wrote always reads back, and building a record in
# process never fails on one.
AMOUNTS = {"throughput": ("prefill_tokens_per_s", "decode_tokens_per_s", "e2e_tokens_per_s", "ttft_s", "tpot_s",
                          "e2e_latency_s", "output_chars_per_s"),
           "energy": ("joules_total", "joules_prefill", "joules_decode", "joules_per_token", "decode_joules_per_token",
                      "tokens_per_joule", "joules_per_kchar", "uncertainty_rel", "joules_per_request", "mean_power_w",
                      "idle_power_w", "coverage")}


def _is_amount(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


READ_CONTEXT = {"reading": True}


def _measured_amount(v: Optional[float], info: ValidationInfo) -> Optional[float]:
    if v is not None and (info.context or {}).get("reading") and not _is_amount(v):
        raise ValueError(f"must be a finite number >= 0 (got {v})")
    return v


def impossible_amounts_dropped(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (a JSON dict) with every AMOUNTS figure that is not a finite number >= 0 set to None and
    named in ``energy.flags`` ("impossible-<section>.<field>"): a sensor or timing fault, left out rather
    than written as a measurement."""
    dropped = []
    for section, fields in AMOUNTS.items():
        part = record.get(section)
        if not isinstance(part, dict):
            continue
        for f in fields:
            if part.get(f) is not None and not _is_amount(part[f]):
                part[f] = None
                dropped.append(f"impossible-{section}.{f}")
    if dropped and isinstance(record.get("energy"), dict):
        record["energy"]["flags"] = sorted(set(record["energy"].get("flags") or []) | set(dropped))
    return record


class Throughput(_Section):
    prefill_tokens_per_s: Optional[float] = None
    decode_tokens_per_s: Optional[float] = None
    e2e_tokens_per_s: Optional[float] = None
    ttft_s: Optional[float] = None
    tpot_s: Optional[float] = None
    e2e_latency_s: Optional[float] = None
    output_chars_per_s: Optional[float] = None
    # Inter-token latency (one decode step of the batch) over every kept repeat, from per-token times;
    # None for an engine without a per-token hook.
    itl_ms: Optional[Latency] = None

    @field_validator(*AMOUNTS["throughput"])
    @classmethod
    def _amounts(cls, v: Optional[float], info: ValidationInfo) -> Optional[float]:
        return _measured_amount(v, info)


class Energy(_Section):
    # "reference": published figures (a reference record, basis "reference"), never this tool's sensor
    status: Literal["measured", "estimated", "unavailable", "reference"] = "unavailable"
    sensor: Optional[str] = None
    sampling_interval_s: Optional[float] = None
    coverage: Optional[float] = None
    idle_power_w: Optional[float] = None
    joules_total: Optional[float] = None  # one full generate call (prefill + decode), whole batch
    joules_dynamic: Optional[float] = None  # joules_total minus idle power x duration
    joules_prefill: Optional[float] = None
    joules_decode: Optional[float] = None
    joules_per_token: Optional[float] = None  # joules_total / generated tokens
    decode_joules_per_token: Optional[float] = None  # joules_decode / decoded tokens
    tokens_per_joule: Optional[float] = None
    joules_per_kchar: Optional[float] = None  # per 1,000 output characters (language-fair)
    uncertainty_rel: Optional[float] = None
    basis: Optional[str] = None  # what an estimate is computed from / why unavailable
    window_s: Optional[float] = None  # length of one energy window
    flags: list[str] = Field(default_factory=list)  # e.g. "short-window", "sensor-failed"
    joules_by_domain: dict[str, float] = Field(default_factory=dict)  # one full call, per gpu:N / cpu:... / dram:N
    tokens_per_joule_dynamic: Optional[float] = None  # generated tokens / joules_dynamic
    output_chars: Optional[int] = None  # characters of one full call's output (whole batch)
    # Every energy window: {phase: prefill|full, start, end (unix s), calls, joules}; lets a power
    # trace recorded beside the run be attached afterwards (effbench sensors attach).
    windows: list[dict[str, Any]] = Field(default_factory=list)
    # Serving records: one steady-state window per point (scenarios/serving).
    joules_per_request: Optional[float] = None  # joules_per_token x the mean output tokens of a request
    mean_power_w: Optional[float] = None
    tokens_in_window: Optional[float] = None  # output tokens streamed inside the window
    confidence: Optional[float] = None  # the level of the intervals stated (0.95, docs/method.md)
    decode_uncertainty_rel: Optional[float] = None  # 95% half-width of joules_decode (and decode J/token), relative
    dynamic_uncertainty_rel: Optional[float] = None  # 95% half-width of joules_dynamic, relative
    # Serving and wrap: energy per request attributed by work (docs/method.md, "Energy per request"):
    # {rule, joules_per_request: {p50, p90, p95, mean, n, ci95}, idle_share, joules_per_output_token, ...}
    attribution: Optional[dict[str, Any]] = None

    @field_validator(*AMOUNTS["energy"])
    @classmethod
    def _amounts(cls, v: Optional[float], info: ValidationInfo) -> Optional[float]:
        return _measured_amount(v, info)


class Carbon(_Section):
    """CO2e of the energy above, at a grid's carbon intensity (analysis/carbon.py)."""

    region: Optional[str] = None  # what the intensity is for: an ISO country code, "world", ...
    intensity_g_per_kwh: Optional[float] = None
    source: Optional[str] = None  # where the intensity comes from, and how the region was chosen
    g_per_call: Optional[float] = None  # one full generate call (energy.joules_total)
    g_per_million_tokens: Optional[float] = None
    energy_status: Optional[str] = None  # the energy's status: CO2e from an estimate is an estimate


class Memory(_Section):
    peak_host_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    peak_device_reserved_bytes: Optional[int] = None
    weights_bytes: Optional[int] = None
    kv_bytes_per_token: Optional[int] = None


class Quality(_Section):
    perplexity: Optional[float] = None  # on the shipped English text
    perplexity_ko: Optional[float] = None  # on the shipped Korean text
    text: Optional[str] = None
    tokens: Optional[int] = None
    baseline_scheme: Optional[str] = None  # the unquantized scheme this one is compared with
    perplexity_rise: Optional[float] = None  # relative rise over the baseline's perplexity
    flagged: bool = False  # rise above the sweep's ppl_threshold
    note: Optional[str] = None


class Stats(_Section):
    repeats: int = 0
    ci95_rel: Optional[float] = None  # relative half-width of the 95% interval of the headline decode tokens/s
    estimator: Optional[str] = None  # how per-repeat values become the headline: "median"
    ci95_method: Optional[str] = None  # "bootstrap-percentile" (the median's interval)
    ci_target: Optional[float] = None  # the stopping rule's target for ci95_rel (None with --repeats N)
    spread_cv: Optional[float] = None  # per-repeat spread of the headline: standard deviation / mean of the kept repeats
    excluded_repeats: int = 0  # repeats left out for interference (their values are in samples["excluded_*"])
    stop_reason: Optional[str] = None  # "ci-target", "time-cap", "max-repeats", "fixed-repeats"
    warmup: Optional[int] = None
    duration_s: Optional[float] = None
    interference: bool = False
    other_cpu_frac: Optional[float] = None  # share of the machine's CPU used by other processes
    load_avg_before: Optional[float] = None
    load_avg_after: Optional[float] = None
    samples: dict[str, list[float]] = Field(default_factory=dict)  # per-repeat values, for compare

    @property
    def short_of_target(self) -> bool:
        """The repeats ended (time cap or most repeats) before the interval reached its target."""
        return self.ci_target is not None and self.ci95_rel is not None and self.ci95_rel > self.ci_target


class ServingWindow(_Section):
    """Throughput over one window of a serving point (docs/method.md, "Serving throughput"):
    ``whole`` is the field's definition (first send to last answer), ``steady`` the load's plateau."""

    window_s: float
    # whole: requests completed; steady: output_tokens / the point's mean output tokens (request-equivalents)
    requests: float
    completed: Optional[int] = None  # answers inside the window (the count behind the interval)
    output_tokens: float  # streamed inside the window (a request's count shared over its chunks)
    requests_per_s: float
    output_tokens_per_s: float
    ci95: dict[str, list[float]] = Field(default_factory=dict)  # figure -> [low, high], exact Poisson on requests


class CapacityResult(_Section):
    """A capacity-at-SLO search: the highest offered rate whose p95 latencies meet the SLO."""

    rate: Optional[float] = None  # highest rate that met the SLO (None: not even the lowest tried)
    ci95: Optional[list[float]] = None  # [last rate that met, first rate that failed] (the bracket)
    failed_rate: Optional[float] = None  # lowest rate tried that missed the SLO
    resolution: Optional[float] = None  # relative width at which the search stopped
    slo: dict[str, Optional[float]] = Field(default_factory=dict)  # ttft_ms, tpot_ms (both p95)
    goodput: Optional[float] = None  # at ``rate``
    joules_per_request: Optional[float] = None  # at ``rate``
    output_tokens_per_s: Optional[float] = None  # at ``rate``
    tried: list[dict[str, Any]] = Field(default_factory=list)  # {rate, met, ttft_p95_ms, tpot_p95_ms, reason}
    reason: Optional[str] = None  # why the search ended where it did


class ServingInfo(_Section):
    """A serving-load point (scenario ``serving``): offered load, latency distributions, goodput."""

    scenario: str = "serving"
    rate: Optional[Union[float, str]] = None  # offered requests/s; "inf" = all at once
    concurrency: Optional[int] = None  # closed-loop users
    arrival: Optional[str] = None  # poisson, constant, closed-loop
    requests: Optional[int] = None  # measured requests (warm-up excluded)
    warmup_requests: Optional[int] = None
    duration_s: Optional[float] = None  # first measured send to last measured answer
    ttft_ms: Optional[Latency] = None
    tpot_ms: Optional[Latency] = None
    itl_ms: Optional[Latency] = None
    e2e_ms: Optional[Latency] = None
    achieved_rate: Optional[float] = None  # completed requests/s: steady.requests_per_s, else whole's
    output_tokens_per_s: Optional[float] = None  # steady.output_tokens_per_s, else whole's
    whole: Optional[ServingWindow] = None  # first send to last answer, as vLLM's bench, GuideLLM, AIPerf
    steady: Optional[ServingWindow] = None  # None when the point had no steady state (steady_reason)
    steady_reason: Optional[str] = None
    realised_rate: Optional[float] = None  # requests/s at which the measured requests were really sent
    api: Optional[str] = None  # completions or chat
    token_count_source: Optional[str] = None  # usage (the server's count), tokenizer, or chunks
    server_metrics: Optional[dict[str, Any]] = None  # what the server's /metrics said over the point
    workload: Optional[dict[str, Any]] = None  # the traffic: name, lengths, source
    capacity: Optional[CapacityResult] = None  # on the point a capacity search settled on
    goodput: Optional[float] = None  # requests/s meeting every SLO given
    slo_attainment: Optional[float] = None  # share of measured requests meeting the SLO
    slo: dict[str, Optional[float]] = Field(default_factory=dict)  # ttft_ms, tpot_ms
    saturated: bool = False
    saturation_reason: Optional[str] = None
    completed: Optional[int] = None
    failed: Optional[int] = None
    errors: dict[str, int] = Field(default_factory=dict)  # error text -> requests
    output_tokens: Optional[int] = None
    mean_output_tokens: Optional[float] = None
    mean_prompt_tokens: Optional[float] = None
    output_length: Optional[str] = None  # forced, or why not
    token_count: Optional[str] = None  # whose count the token figures are
    usage_mismatches: Optional[int] = None  # requests where the tokenizer and the server's usage disagree
    max_in_flight: Optional[int] = None
    client_lag_ms_max: Optional[float] = None  # how far the client fell behind the arrival schedule
    engine: dict[str, Any] = Field(default_factory=dict)  # name, version, url, managed, args, model

    @field_validator("rate", mode="before")
    @classmethod
    def _inf_as_text(cls, v: Any) -> Any:
        return "inf" if isinstance(v, float) and math.isinf(v) else v  # JSON has no infinity

    @property
    def load_label(self) -> str:
        """The offered load in words: "rate 2.0/s", "8 users"."""
        return f"{self.concurrency} users" if self.concurrency is not None else f"rate {self.rate}/s"


class GpuInfo(_Section):
    """NVIDIA GPU settings and activity of one configuration (hardware/gpu_control.py, sensors/nvml.py):
    the limit and clock in force (read back, not just requested), and who else was on the GPU."""

    power_limit_w: Optional[float] = None  # enforced power limit read back during this configuration
    sm_clock_mhz: Optional[int] = None  # SM clock read back (locked, where --gpu-clocks set it)
    requested_power_limit_w: Optional[float] = None  # --power-limits value for this configuration
    requested_sm_clock_mhz: Optional[int] = None  # --gpu-clocks value for this configuration
    other_processes: list[dict[str, Any]] = Field(default_factory=list)  # {gpu, pid, used_memory_bytes} before it
    utilization_before: dict[str, Optional[float]] = Field(default_factory=dict)  # gpu:N -> 0..1 before it


class HardwareInfo(_Section):
    profile: Optional[str] = None
    detected_name: Optional[str] = None
    gpus: Optional[int] = None  # devices of one replica (tensor/expert parallel); None = one


class Record(_Section):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    config_id: str
    created_at: Optional[str] = None
    model: ModelInfo
    backend: BackendInfo
    quantization: QuantizationInfo
    workload: WorkloadInfo
    throughput: Throughput = Field(default_factory=Throughput)
    energy: Energy = Field(default_factory=Energy)
    memory: Memory = Field(default_factory=Memory)
    quality: Quality = Field(default_factory=Quality)
    stats: Stats = Field(default_factory=Stats)
    hardware: HardwareInfo = Field(default_factory=HardwareInfo)
    carbon: Carbon = Field(default_factory=Carbon)
    serving: Optional[ServingInfo] = None
    gpu: Optional[GpuInfo] = None  # NVIDIA GPU runs: settings in force and other processes
    error: Optional[str] = None
    # docs/method.md "Bases": "measured" (this tool, a sensor), "reference" (published data; ``source`` cites it),
    # "projected" (a model's prediction). Records effbench runs write are always "measured".
    basis: Literal["measured", "reference", "projected"] = "measured"
    source: Optional[str] = None  # the citation of a reference record

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a record, for other tools."""
    return Record.model_json_schema()
