"""The GPU projection model: output tokens/s, inter-token time, power and J/token of a (model, GPU,
GPUs per replica, concurrency, request shape) nobody measured, from the architecture and the hardware
profile, with efficiency terms fitted to published GPU measurements (the reference data), never to
CPU runs.

One decode step of a replica of N GPUs serving B concurrent sequences (vLLM-style continuous
batching, chunked prefill):

    bytes  = dense weights + experts touched by B tokens + B x KV cache at the mean context
    flops  = B x (2 x active params x (1 + P/O) + attention over the context)   (P/O: prompt tokens
             are computed too, one prompt per O output tokens)
    t_mem  = bytes / (N x bandwidth x e_bw)        t_comp = flops / (N x peak TFLOPs x e_fl)
    t_step = max(t_mem, t_comp) + layers x (c_layer + [N > 1] x c_tp) + all-reduce bytes / link
    output tokens/s = B / t_step;  TPOT (inter-token time) = t_step

Power of each GPU = TDP x (p0 + p_mem x t_mem / t_step + p_comp x t_comp / t_step), capped at TDP;
J/token = N x power / tokens/s. e_bw, e_fl, c_layer, c_tp and the power terms are fitted to every
reference point whose architecture effbench ships (``fit``). Every projection carries a band: the
95th percentile of the relative error of leave-one-model-out predictions (each architecture predicted
by a fit that never saw it), for tokens/s and for J/token.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Optional, Sequence

import numpy as np

from effbench.errors import EffbenchError
from effbench.hardware.catalog import HardwareProfile
from effbench.models.arch import ArchShape
from effbench.stats import percentile

CONFIDENCE = 0.95  # brief rule 14: the band is a 95% interval
# Bytes per parameter of the weights as served, and the peak-TFLOPs dtype their matmuls run at.
# mxfp4 (gpt-oss): 4-bit experts with a scale per 32 values; attention and embeddings stay bf16.
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "mxfp4": 2.0}
EXPERT_BYTES = {**WEIGHT_BYTES, "mxfp4": 4.25 / 8}
COMPUTE_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "bf16", "mxfp4": "bf16"}
KV_ELEMENT_BYTES = 2  # vLLM's default KV cache dtype follows the model's (bf16)
RUNTIME_OVERHEAD_GB = 2.0  # per GPU: CUDA context, activations, CUDA graphs (vLLM's own margin is similar)
GPU_MEMORY_UTILISATION = 0.9  # vLLM's default share of GPU memory for weights + KV cache


@dataclass(frozen=True)
class Shape:
    """One configuration to project (or one published point to fit)."""

    arch: ArchShape
    profile: HardwareProfile
    gpus: int
    concurrency: float  # sequences decoding together
    prompt_tokens: float
    output_tokens: float
    scheme: str = "bf16"

    @property
    def mean_context(self) -> float:
        return self.prompt_tokens + self.output_tokens / 2


@dataclass(frozen=True)
class DeviceTerms:
    """The fitted efficiency of the serving software on one reference GPU."""

    bw_eff: float  # achieved share of memory bandwidth
    flops_eff: float  # achieved share of peak TFLOPs
    layer_us: float  # fixed cost per layer per step (kernel launches, scheduling), microseconds
    power: tuple[float, float] = (0.6, 0.4)  # p0, p_comp: power share of TDP = p0 + p_comp x compute share of a step


@dataclass(frozen=True)
class Coefficients:
    devices: dict[str, DeviceTerms]  # reference profile id -> its terms
    tp_layer_us: float  # extra fixed cost per layer per step on a multi-GPU replica (all-reduce latency)

    def of(self, profile_id: str) -> tuple[str, DeviceTerms]:
        """(the reference GPU whose terms apply, its terms): the profile's own where the reference data
        has it, else the H100's (the mature software path, same or older generation than the targets)."""
        if profile_id in self.devices:
            return profile_id, self.devices[profile_id]
        ref = FALLBACK_DEVICE if FALLBACK_DEVICE in self.devices else sorted(self.devices)[0]
        return ref, self.devices[ref]


FALLBACK_DEVICE = "h100-sxm"


@dataclass(frozen=True)
class Terms:
    t_mem: float
    t_comp: float
    t_fixed: float

    @property
    def step_s(self) -> float:
        # Sum, not max: with chunked prefill a step mixes compute-bound prompt chunks with memory-bound
        # decode, which run one after the other (the sum fitted the reference data better than the max).
        return self.t_mem + self.t_comp + self.t_fixed


def weight_bytes(arch: ArchShape, scheme: str) -> float:
    if scheme not in WEIGHT_BYTES:
        raise EffbenchError(f"no projection for scheme '{scheme}': use one of {', '.join(WEIGHT_BYTES)}")
    return arch.dense_params * WEIGHT_BYTES[scheme] + arch.expert_params * EXPERT_BYTES[scheme]


def _bytes_per_step(s: Shape) -> float:
    a = s.arch
    dense = a.dense_params * WEIGHT_BYTES[s.scheme]
    experts = 0.0
    if a.experts:  # B tokens each pick k of E experts per layer: the share of experts touched
        touched = 1 - (1 - a.experts_per_token / a.experts) ** max(s.concurrency, 1)
        experts = a.expert_params * EXPERT_BYTES[s.scheme] * touched
    return dense + experts + s.concurrency * a.kv_bytes(s.mean_context, KV_ELEMENT_BYTES)


def _flops_per_step(s: Shape) -> float:
    a = s.arch
    prompt_share = s.prompt_tokens / max(s.output_tokens, 1)
    return s.concurrency * (2 * (a.active_params - a.embedding_params) * (1 + prompt_share)
                            + a.attention_flops_per_token(s.mean_context))


def _peak_flops(s: Shape) -> float:
    t = s.profile.peak_tflops
    v = getattr(t, COMPUTE_DTYPE.get(s.scheme, "bf16"), None) or t.bf16 or t.fp16
    if not v:
        raise EffbenchError(f"{s.profile.id} has no peak TFLOPs for {s.scheme} in its profile; no projection")
    return v * 1e12


def terms(s: Shape, c: Coefficients) -> Terms:
    n = s.gpus
    d = c.of(s.profile.id)[1]
    t_mem = _bytes_per_step(s) / (n * s.profile.bandwidth_bytes_per_s * d.bw_eff)
    t_comp = _flops_per_step(s) / (n * _peak_flops(s) * d.flops_eff)
    fixed = s.arch.layers * (d.layer_us + (c.tp_layer_us if n > 1 else 0.0)) * 1e-6
    if n > 1:  # two all-reduces of the activations per layer, ring: 2 (n-1)/n of the bytes cross each link
        link = (s.profile.interconnect_gbps or 32) * 1e9
        fixed += s.arch.layers * 2 * 2 * (n - 1) / n * s.concurrency * s.arch.hidden * 2 / link
    return Terms(t_mem, t_comp, fixed)


def power_per_gpu(s: Shape, c: Coefficients, t: Terms) -> float:
    p0, pc = c.of(s.profile.id)[1].power
    tdp = s.profile.tdp_w or 0.0
    return tdp * min(max(p0 + pc * t.t_comp / t.step_s, 0.1), 1.0)


@dataclass(frozen=True)
class Prediction:
    output_tokens_per_s: float
    tpot_ms: float
    power_w: float  # all GPUs of the replica
    joules_per_token: float
    bound: str  # "memory", "compute"


def predict(s: Shape, c: Coefficients) -> Prediction:
    t = terms(s, c)
    tps = s.concurrency / t.step_s
    watts = s.gpus * power_per_gpu(s, c, t)
    return Prediction(tps, t.step_s * 1000, watts, watts / tps, "compute" if t.t_comp > t.t_mem else "memory")


# -- memory -------------------------------------------------------------------------------------
def memory_gb(s: Shape) -> float:
    """Weights + the KV cache of every sequence at its full length (prompt + output) + runtime overhead,
    for the whole replica (GB, 10^9 bytes)."""
    kv = s.concurrency * s.arch.kv_bytes(s.prompt_tokens + s.output_tokens, KV_ELEMENT_BYTES)
    return (weight_bytes(s.arch, s.scheme) + kv) / 1e9 + RUNTIME_OVERHEAD_GB * s.gpus


def max_concurrency(s: Shape) -> int:
    """The most sequences of this length whose KV cache fits beside the weights (0: the weights alone do not fit)."""
    usable = s.gpus * (s.profile.memory_gb * GPU_MEMORY_UTILISATION - RUNTIME_OVERHEAD_GB) * 1e9 - weight_bytes(s.arch, s.scheme)
    per_seq = s.arch.kv_bytes(s.prompt_tokens + s.output_tokens, KV_ELEMENT_BYTES)
    return max(int(usable // per_seq), 0) if usable > 0 else 0


# -- fitting --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    shape: Shape
    model: str  # the architecture: leave-one-model-out leaves all of its points out
    output_tokens_per_s: float
    power_w: float
    key: str

    @property
    def joules_per_token(self) -> float:
        return self.power_w / self.output_tokens_per_s


_START, _LOW, _HIGH = (0.6, 0.5, 20.0), (0.05, 0.02, 0.0), (1.0, 1.0, 500.0)  # bw_eff, flops_eff, layer_us


def _coefficients(x: Sequence[float], devices: Sequence[str], power: Optional[dict[str, tuple]] = None) -> Coefficients:
    per = {d: DeviceTerms(float(x[3 * i]), float(x[3 * i + 1]), float(x[3 * i + 2]), *(((power or {}).get(d),) if power and d in power else ()))
           for i, d in enumerate(devices)}
    return Coefficients(per, float(x[-1]))


def _fit_power(samples: Sequence[Sample], c: Coefficients) -> tuple[float, float]:
    """Least squares of the per-GPU power share of TDP on the compute share of a step (the memory share
    is nearly its complement, so it adds no information)."""
    rows, target = [], []
    for smp in samples:
        t = terms(smp.shape, c)
        rows.append([1.0, t.t_comp / t.step_s])
        target.append(smp.power_w / smp.shape.gpus / (smp.shape.profile.tdp_w or 1.0))
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
    return float(sol[0]), float(sol[1])


def fit(samples: Sequence[Sample]) -> Coefficients:
    """Per reference GPU: bandwidth and compute efficiency and a per-layer cost; one multi-GPU cost;
    by least squares on log tokens/s (relative errors weigh alike). Then power, per GPU."""
    from scipy.optimize import least_squares

    if len(samples) < 5:
        raise EffbenchError(f"too few reference points to fit the projection ({len(samples)}; need 5)")
    devices = sorted({s.shape.profile.id for s in samples})
    observed = np.log([s.output_tokens_per_s for s in samples])

    def residuals(x: np.ndarray) -> np.ndarray:
        c = _coefficients(x, devices)
        return np.log([s.shape.concurrency / terms(s.shape, c).step_s for s in samples]) - observed

    start = [*(_START * len(devices)), 20.0]
    bounds = ([*(_LOW * len(devices)), 0.0], [*(_HIGH * len(devices)), 500.0])
    x = least_squares(residuals, start, bounds=bounds).x
    c = _coefficients(x, devices)
    power = {d: _fit_power([s for s in samples if s.shape.profile.id == d], c) for d in devices}
    return _coefficients(x, devices, power)


@dataclass
class ErrorTable:
    """Leave-one-model-out relative errors |predicted / published - 1|."""

    models: list[str]
    points: int
    tokens_per_s: dict[str, float]  # median, p90, p95
    joules_per_token: dict[str, float]
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> median errors
    per_device: dict[str, dict[str, Any]] = field(default_factory=dict)  # reference GPU -> points and quantiles

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantiles(ratios: Sequence[float]) -> dict[str, float]:
    """Of predicted / published ratios: |ratio - 1| at the median, 90th and 95th percentiles, and the 95%
    band as a factor (the 95th percentile of |ln ratio|: the truth lies within prediction / f .. x f)."""
    errors = [abs(r - 1) for r in ratios]
    logs = [abs(math.log(r)) for r in ratios]
    return {"median": percentile(errors, 0.5), "p90": percentile(errors, 0.9), "p95": percentile(errors, 0.95),
            "factor95": math.exp(percentile(logs, 0.95))}


def leave_one_model_out(samples: Sequence[Sample]) -> ErrorTable:
    models = sorted({s.model for s in samples})
    if len(models) < 3:
        raise EffbenchError(f"leave-one-model-out needs at least 3 models in the reference data (got {len(models)})")
    err_tps: list[float] = []
    err_jpt: list[float] = []
    per_model: dict[str, dict[str, float]] = {}
    by_device: dict[str, tuple[list[float], list[float]]] = {}
    for m in models:
        coef = fit([s for s in samples if s.model != m])
        e_t, e_j = [], []
        for s in (s for s in samples if s.model == m):
            p = predict(s.shape, coef)
            e_t.append(p.output_tokens_per_s / s.output_tokens_per_s)
            e_j.append(p.joules_per_token / s.joules_per_token)
            dev = by_device.setdefault(s.shape.profile.id, ([], []))
            dev[0].append(e_t[-1])
            dev[1].append(e_j[-1])
        err_tps += e_t
        err_jpt += e_j
        per_model[m] = {"points": len(e_t), "tokens_per_s_median": _quantiles(e_t)["median"],
                        "joules_per_token_median": _quantiles(e_j)["median"]}
    per_device = {d: {"points": len(t), "tokens_per_s": _quantiles(t), "joules_per_token": _quantiles(j)}
                  for d, (t, j) in sorted(by_device.items())}
    return ErrorTable(models, len(samples), _quantiles(err_tps), _quantiles(err_jpt), per_model, per_device)


# -- the fitted model on the shipped reference data -------------------------------------------------
def reference_samples() -> list[Sample]:
    """Every shipped reference point whose architecture and hardware effbench knows."""
    from effbench.hardware import get_profile
    from effbench.models.arch import shape
    from effbench.reference import ASSUMED_PROMPT_TOKENS, points

    out = []
    profiles: dict[str, HardwareProfile] = {}
    for p in points():
        if not p.arch or not p.profile or p.scheme not in WEIGHT_BYTES:
            continue
        if p.profile not in profiles:
            profiles[p.profile] = get_profile(p.profile, measure=False, local=False)
        s = Shape(shape(f"arch:{p.arch}"), profiles[p.profile], p.num_gpus,
                  p.avg_batch_size, ASSUMED_PROMPT_TOKENS.get(p.task, 256), p.avg_output_len, p.scheme)
        out.append(Sample(s, p.arch, p.output_tokens_per_s, p.power_w, p.key))
    return out


FIT_FILE = "projection_fit.json"  # written by benchmarks/projection_error.py; tests check it is current


@dataclass(frozen=True)
class FittedModel:
    coefficients: Coefficients
    errors: ErrorTable
    fitted_on: tuple[str, ...]  # the reference point keys

    def band(self, profile_id: str) -> dict[str, Any]:
        """The 95% band of a projection on ``profile_id``: from the leave-one-model-out errors of the
        reference GPU whose terms apply. Relative, as a factor less one: x means the truth lies within
        projection / (1 + x) .. projection x (1 + x) (``interval`` gives the two ends)."""
        ref, _ = self.coefficients.of(profile_id)
        dev = self.errors.per_device.get(ref) or {"tokens_per_s": self.errors.tokens_per_s, "joules_per_token": self.errors.joules_per_token}
        f_t, f_j = dev["tokens_per_s"]["factor95"], dev["joules_per_token"]["factor95"]
        return {"output_tokens_per_s": f_t - 1, "joules_per_token": f_j - 1, "confidence": CONFIDENCE,
                "terms_from": ref,
                "method": (f"95th percentile of leave-one-model-out errors on {ref} ({dev.get('points', self.errors.points)} published "
                           f"points; {len(self.errors.models)} models, ML.ENERGY Leaderboard v3)")}

    @staticmethod
    def coefficients_profile(profile_id: str) -> HardwareProfile:
        from effbench.hardware import get_profile

        return get_profile(profile_id, measure=False, local=False)

    def to_dict(self) -> dict[str, Any]:
        return {"coefficients": coefficients_dict(self.coefficients), "errors": self.errors.to_dict(),
                "fitted_on": list(self.fitted_on)}


def from_dict(d: dict[str, Any]) -> FittedModel:
    c = d["coefficients"]
    devices = {k: DeviceTerms(v["bw_eff"], v["flops_eff"], v["layer_us"], (v["power_share_of_tdp"]["p0"], v["power_share_of_tdp"]["p_comp"]))
               for k, v in c["devices"].items()}
    return FittedModel(Coefficients(devices, c["tp_layer_us"]), ErrorTable(**d["errors"]), tuple(d["fitted_on"]))


def fit_reference() -> FittedModel:
    """Fit and leave-one-model-out on the shipped reference data (seconds; the shipped fit is its result)."""
    samples = reference_samples()
    return FittedModel(fit(samples), leave_one_model_out(samples), tuple(s.key for s in samples))


@lru_cache(maxsize=1)
def fitted() -> FittedModel:
    """The fit shipped with effbench (``projection_fit.json``)."""
    import json
    from importlib import resources

    return from_dict(json.loads(resources.files("effbench.analysis").joinpath(FIT_FILE).read_text(encoding="utf-8")))


def banded(value: float, rel: float) -> list[float]:
    """[low, high] of a figure with a relative half-width (never below zero)."""
    return [max(value * (1 - rel), 0.0), value * (1 + rel)]


def coefficients_dict(c: Coefficients) -> dict[str, Any]:
    return {"tp_layer_us": c.tp_layer_us,
            "devices": {k: {"bw_eff": v.bw_eff, "flops_eff": v.flops_eff, "layer_us": v.layer_us,
                            "power_share_of_tdp": dict(zip(("p0", "p_comp"), v.power))} for k, v in c.devices.items()}}


def is_finite(x: float) -> bool:
    return math.isfinite(x) and x > 0


# -- one point: what `effbench project` prints ---------------------------------------------------
TP_SIZES = (1, 2, 4, 8)


def scheme_runs_on(scheme: str, profile: HardwareProfile) -> bool:
    """Whether the device has the arithmetic the scheme's matmuls need (fp8 needs fp8 tensor cores)."""
    dtype = COMPUTE_DTYPE.get(scheme)
    if dtype is None or profile.kind != "gpu":
        return False
    t = profile.peak_tflops
    return bool(getattr(t, dtype, None) or (dtype == "bf16" and t.fp16 and scheme == "mxfp4"))


def check_lengths(arch: ArchShape, prompt_tokens: int, output_tokens: int) -> None:
    if arch.max_context_tokens and prompt_tokens + output_tokens > arch.max_context_tokens:
        raise EffbenchError(f"{arch.name} supports at most {arch.max_context_tokens:,} tokens of context; "
                            f"{prompt_tokens:,} prompt + {output_tokens:,} output = {prompt_tokens + output_tokens:,} is longer")


def _exact_reference(arch: str, profile_id: str, gpus: int, concurrency: int, scheme: str, task: Optional[str]) -> Optional[Any]:
    from effbench.reference import points

    for p in points():
        if (p.arch == arch and p.profile == profile_id and p.num_gpus == gpus and p.max_num_seqs == concurrency
                and p.scheme == scheme and task is not None and p.task == task):
            return p
    return None


def project_point(model: str, hardware: str, *, gpus: int = 1, concurrency: int, workload: Optional[str] = None,
                  prompt_tokens: Optional[int] = None, output_tokens: Optional[int] = None, scheme: str = "bf16",
                  profile: Optional[HardwareProfile] = None) -> dict[str, Any]:
    """One point, as ``effbench project --json`` prints it: basis ``reference`` where the published data
    has exactly this point (model, GPU, GPUs, max_num_seqs = concurrency, scheme, workload), else
    ``projected`` with its band."""
    from effbench.hardware import get_profile
    from effbench.models.arch import PREFIX, shape
    from effbench.reference import CITATION, SOURCE, workload as reference_workload

    name = model[len(PREFIX):] if model.lower().startswith(PREFIX) else model
    if not name:
        raise EffbenchError("--model needs an architecture: arch:NAME (see 'effbench models')")
    arch = shape(f"{PREFIX}{name.lower()}" if not name.endswith(".json") else name)
    prof = profile or get_profile(hardware, local=False)
    if prof.kind != "gpu":
        raise EffbenchError(f"{prof.id} is a {prof.kind}: the projection model is fitted to GPU serving data only")
    if gpus not in TP_SIZES:
        raise EffbenchError(f"--gpus must be one of {', '.join(map(str, TP_SIZES))} (tensor parallel inside one node); got {gpus}")
    if gpus > prof.max_gpus_per_node:
        raise EffbenchError(f"{prof.id} nodes hold at most {prof.max_gpus_per_node} GPUs; --gpus {gpus} does not fit one node")
    if concurrency < 1:
        raise EffbenchError(f"--concurrency must be a positive integer (got {concurrency})")
    if workload is not None and (prompt_tokens is not None or output_tokens is not None):
        raise EffbenchError("give --workload NAME or --prompt-tokens P --output-tokens O, not both")
    notes: list[str] = []
    if workload is not None:
        w = reference_workload(workload, arch.name)
        prompt_tokens, output_tokens = w.prompt_tokens, w.output_tokens
        notes.append(f"workload {w.name}: {w.prompt_note}")
    elif prompt_tokens is None or output_tokens is None:
        raise EffbenchError("give --workload lm-arena-chat|gpqa|sourcegraph-fim, or both --prompt-tokens P and --output-tokens O")
    for flag, v in (("--prompt-tokens", prompt_tokens), ("--output-tokens", output_tokens)):
        if v < 0 or (flag == "--output-tokens" and v < 1):
            raise EffbenchError(f"{flag} must be a positive integer (got {v})")
    check_lengths(arch, prompt_tokens, output_tokens)
    if not scheme_runs_on(scheme, prof):
        raise EffbenchError(f"scheme '{scheme}' does not run on {prof.id} (no {COMPUTE_DTYPE.get(scheme, scheme)} support in its profile); "
                            f"projected schemes: {', '.join(s for s in WEIGHT_BYTES if scheme_runs_on(s, prof))}")
    shape_ = Shape(arch, prof, gpus, concurrency, prompt_tokens, output_tokens, scheme)
    limit = max_concurrency(shape_)
    if limit < 1:
        raise EffbenchError(f"{arch.name} {scheme} does not fit {gpus}x {prof.id}: weights alone need "
                            f"{weight_bytes(arch, scheme) / 1e9:,.1f} GB of {gpus * prof.memory_gb:g} GB; try more --gpus")
    effective = min(concurrency, limit)
    if effective < concurrency:
        notes.append(f"only {limit} sequences of {prompt_tokens + output_tokens} tokens fit the KV cache: projected at {limit} running")
    m = fitted()
    common = {"model": f"{PREFIX}{arch.name}", "hardware": prof.id, "gpus": gpus, "concurrency": concurrency,
              "running_sequences": effective, "max_concurrency": limit, "workload": workload,
              "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "scheme": scheme,
              "memory_gb": memory_gb(Shape(arch, prof, gpus, effective, prompt_tokens, output_tokens, scheme)),
              "memory_capacity_gb": gpus * prof.memory_gb}
    ref = _exact_reference(arch.name, prof.id, gpus, concurrency, scheme, workload)
    if ref is not None:
        return {**common, "basis": "reference", "output_tokens_per_s": ref.output_tokens_per_s,
                "joules_per_token": ref.joules_per_token, "power_w": ref.power_w, "tpot_ms": ref.itl_ms["p50"],
                "tpot_p95_ms": ref.itl_ms["p95"],
                "band": {"output_tokens_per_s": None, "joules_per_token": None, "confidence": CONFIDENCE,
                         "method": "a published measurement, not a projection (its own uncertainty is not published)"},
                "source": f"{SOURCE}; cite: {CITATION}", "reference_key": ref.key, "fitted_on": [], "notes": notes}
    p = predict(Shape(arch, prof, gpus, effective, prompt_tokens, output_tokens, scheme), m.coefficients)
    band = m.band(prof.id)
    anchor = _exact_reference(arch.name, band["terms_from"], gpus, concurrency, scheme, workload)
    if anchor is not None and effective == concurrency:
        # The same configuration was published on the GPU whose terms apply: carry its residual over
        # (published / projected there), so the projection agrees with the reference it extends.
        on_ref = predict(Shape(arch, m.coefficients_profile(band["terms_from"]), gpus, anchor.avg_batch_size, prompt_tokens,
                               output_tokens, scheme), m.coefficients)
        k_t = anchor.output_tokens_per_s / on_ref.output_tokens_per_s
        k_j = anchor.joules_per_token / on_ref.joules_per_token
        p = Prediction(p.output_tokens_per_s * k_t, p.tpot_ms / k_t, p.power_w * k_t * k_j, p.joules_per_token * k_j, p.bound)
        notes.append(f"anchored to the published point {anchor.key} (x{k_t:.2f} tokens/s, x{k_j:.2f} J/token of the model's own residual)")
    f_t, f_j = 1 + band["output_tokens_per_s"], 1 + band["joules_per_token"]
    band["interval"] = {"output_tokens_per_s": [p.output_tokens_per_s / f_t, p.output_tokens_per_s * f_t],
                        "joules_per_token": [p.joules_per_token / f_j, p.joules_per_token * f_j]}
    if band["terms_from"] != prof.id:
        notes.append(f"efficiency terms of {band['terms_from']} (the reference data has no {prof.id}) applied to {prof.id}'s bandwidth, TFLOPs and TDP")
    return {**common, "basis": "projected", "output_tokens_per_s": p.output_tokens_per_s, "joules_per_token": p.joules_per_token,
            "power_w": p.power_w, "tpot_ms": p.tpot_ms, "bound": p.bound, "band": band,
            "source": f"projection fitted to {SOURCE}", "fitted_on": list(m.fitted_on),
            "fitted_on_models": m.errors.models, "notes": notes}
