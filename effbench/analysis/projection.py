"""The GPU projection: a step-time model of vLLM-style serving (continuous batching, chunked prefill)
with physics terms and a handful of global fitted coefficients, no per-model or per-GPU calibration.

One engine step of a replica of N GPUs running B sequences (mean context c = prompt + kappa x output, kappa =
E[L^2] / (2 E[L]^2): 0.5 at fixed lengths, about 1 for chat's spread-out lengths, long requests staying longer):

    T_dec = sum_i theta_i x_i   over the terms below, each x_i the time at the GPU's datasheet peak
      weights    dense weights read once per step / (tensor-parallel share x bandwidth)
      experts    routed experts the step's B tokens touch, 1 - (1 - k/E)^B of them (expert parallel: on the
                 GPU whose experts were touched most, see expert_load)
      kv         KV cache (or Mamba state, read and written) of B sequences at c
      linear     2 x active parameters x B FLOPs          attention  B x attention FLOPs at c
      comm       two all-reduces of B x hidden per layer over the GPU link (N > 1)
      layer / tp_layer / moe_layer / step / request   fixed costs: per layer (per multi-GPU layer, per
                 MoE layer), per step, per running sequence
    prefill of one request (P prompt tokens): the same linear, attention, comm and expert terms for P
                 tokens, plus a fixed cost per prefill (with data-parallel attention a prompt's dense and
                 attention work loads only its own engine's GPUs; the experts spread over all)
    lambda = B / output tokens new requests join per step (closed loop), so
    mean step = T_dec + lambda x t_prefill;  output tokens/s = B / mean step;
    ITL at quantile q = a_q T_dec + b_q t_prefill K_q(lambda): for the median K the Poisson median of the
    prefills riding in one step (the median step rarely carries a prompt), for p90/p95 the chance that a
    step carries any, 1 - e^-lambda (see burst).

Effective batch: ``max_num_seqs`` capped by KV-cache capacity ((HBM x 0.9 - weights - runtime) / KV
bytes of a sequence at prompt + omega x output tokens; omega fitted to the published avg_batch_size).
Power per GPU = TDP x (p0 + p_mem x memory share + p_comp x compute share of the step) (shares at the
datasheet peaks), J/token = GPUs x power / tokens/s.

Efficiency transfer (``Transfer``): the physics' residual, log(published / projected) of tokens/s, ITL
p50/p90/p95 and power, is taken from the measured configurations nearest in shape (same GPU, weights per
GPU, running batch, context, GPU count, weight format, family), Gaussian-weighted and shrunk toward none,
so a shape far from every measured one keeps the physics alone.

The coefficients (``projection_fit.json``) are fitted by ``effbench.analysis.projection_fit`` to every
published point of the reference data (``python -m benchmarks.projection_fit``), with their held-out
error as 95% bands per family and per kind of extrapolation. Pure Python: a projection imports neither
numpy nor torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, Sequence

from effbench.analysis.roofline import COMPUTE_DTYPE as SCHEME_COMPUTE_DTYPE
from effbench.errors import EffbenchError
from effbench.hardware.catalog import HardwareProfile
from effbench.models.stepshape import StepShape

CONFIDENCE = 0.95  # the band is a 95% interval, as every figure's (docs/method.md)
FIT_FILE = "projection_fit.json"
# Bytes per parameter of the weights as served; mxfp4 (gpt-oss): 4-bit experts with a scale per 32 values,
# the rest bf16. The compute dtype of the matmuls picks the peak TFLOPs.
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "mxfp4": 2.0, "fp4": 0.5625}
EXPERT_BYTES = {**WEIGHT_BYTES, "mxfp4": 4.25 / 8}
SCHEME_ALIASES = {"nvfp4": "fp4", "mxfp4-experts": "mxfp4", "bfloat16": "bf16", "float16": "fp16", "w8a8-fp8": "fp8"}
COMPUTE_DTYPE = {s: SCHEME_COMPUTE_DTYPE[s] for s in WEIGHT_BYTES}  # these formats' rows of the one table (analysis.roofline)
KV_ELEMENT_BYTES = 2  # vLLM's default KV cache dtype follows the model's (bf16), fp8 checkpoints included
# Mamba-2 state: the SSM state in fp32 (vLLM --mamba-ssm-cache-dtype float32, which NVIDIA requires for the
# Nemotron-H models' output quality and the reference data's published serving configs set), the
# convolution window in the model's dtype. Held out, the hybrid family's tokens/s went from 26% to 10%
# (physics alone) with the fp32 state.
SSM_STATE_ELEMENT_BYTES = 4
STATE_ELEMENT_BYTES = 2
RUNTIME_OVERHEAD_GB = 2.0  # per GPU: CUDA context, activations, CUDA graphs
GPU_MEMORY_UTILISATION = 0.9  # vLLM's default share of GPU memory for weights + KV cache
TP_SIZES = (1, 2, 4, 8)
# A running sequence's mean depth into its output, as a share of the mean output: E[L^2] / (2 E[L]^2)
# (see Config.mean_context). Fixed lengths (a benchmark's --output-tokens): 0.5. The reference tasks, from
# the published output-length histograms (median over their models of E[L^2] / E[L]^2: chat 1.95,
# gpqa 1.45, FIM 3.25).
CONTEXT_OUTPUT_SHARE = 0.5
TASK_CONTEXT_OUTPUT_SHARE = {"lm-arena-chat": 0.97, "gpqa": 0.72, "sourcegraph-fim": 1.63}
FEATURES = ("weights", "experts", "kv", "linear", "attention", "comm", "layer", "tp_layer", "moe_layer", "step",
            "request", "prefill", "fp8_dequant")
QUANTILES = ("p50", "p90", "p95")
# the terms whose time draws memory power: the reads at the datasheet peak, and the data-movement time
# the read carries with it (the all-reduce over the link; dequantising block-scaled fp8 experts as they
# stream in). Held out, J/token 10.5% / 29.7% vs 11.1% / 32.9% with the reads alone
# (docs/size-a-gpu-rental.md, the experiments table).
MEMORY_SHARE = ("weights", "experts", "kv", "comm", "fp8_dequant")
COMPUTE_SHARE = ("linear", "attention")  # ... and tensor-core power
CPU_FEATURES = ("step", "request")  # host work per engine step (scheduling, sampling, detokenising, streaming)
# Units of the fixed-cost features, so their coefficients read as microseconds / milliseconds.
_US, _MS = 1e-6, 1e-3


@dataclass(frozen=True)
class Config:
    """One serving configuration: a replica of ``gpus`` GPUs at a concurrency cap (``max_num_seqs``)."""

    arch: StepShape
    profile: HardwareProfile
    gpus: int
    concurrency: float
    prompt_tokens: float
    output_tokens: float
    scheme: str = "bf16"
    data_parallel: int = 1  # attention replicas inside the replica (experts spread over all GPUs)
    context_output_share: float = CONTEXT_OUTPUT_SHARE  # kappa: see mean_context
    # Expert parallelism: each GPU holds whole experts (E / N of them) instead of a 1 / N slice of every
    # expert; the step waits for the GPU whose experts the batch touched most (see expert_load).
    expert_parallel: bool = False
    # fp8 weights with a scale per 128 x 128 block (as the Qwen3 and DeepSeek fp8 checkpoints ship), not
    # per channel or tensor (as vLLM quantises a bf16 checkpoint to fp8 on load): see the fp8_dequant term.
    fp8_block_scaled: bool = False

    @property
    def tensor_parallel(self) -> int:
        return max(self.gpus // max(self.data_parallel, 1), 1)

    @property
    def mean_context(self) -> float:
        """The mean context of a running sequence in a decode step. Longer requests stay in the batch
        longer (length-biased sampling): a running sequence is on average E[L^2] / (2 E[L]) tokens into
        its output: half the output at fixed lengths, about the whole mean output for the spread-out
        lengths of chat (0.7x for gpqa, 1.6x for FIM: ``TASK_CONTEXT_OUTPUT_SHARE``)."""
        return self.prompt_tokens + self.context_output_share * self.output_tokens


@dataclass(frozen=True)
class Fit:
    """The global coefficients (no per-model or per-GPU term)."""

    step: dict[str, float]  # feature -> coefficient (1 / efficiency for the roofline terms)
    itl: dict[str, tuple[float, float]]  # quantile -> (a on the decode step, b on the prefill bursts)
    power: tuple[float, float, float]  # p0, p_mem, p_comp (shares of TDP)
    kv_output_share: float  # omega: the share of its output a running sequence holds in the KV cache, on average
    # Async scheduling: the host's work for step n+1 (the CPU_FEATURES) overlaps the GPU's step n, so a
    # step takes the longer of the two (a smooth maximum of this sharpness); 0 = the old sum of all terms.
    overlap: float = 0.0
    transfer: Optional["Transfer"] = None  # efficiency transfer from the nearest measured shapes (see Transfer)

    def to_dict(self) -> dict[str, Any]:
        d = {"step": self.step, "itl": {q: list(v) for q, v in self.itl.items()},
             "power": dict(zip(("p0", "p_mem", "p_comp"), self.power)), "kv_output_share": self.kv_output_share,
             "overlap": self.overlap}
        return {**d, "transfer": self.transfer.to_dict()} if self.transfer else d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Fit":
        p = d["power"]
        t = d.get("transfer")
        return Fit({k: float(v) for k, v in d["step"].items()}, {q: (float(v[0]), float(v[1])) for q, v in d["itl"].items()},
                   (float(p["p0"]), float(p["p_mem"]), float(p["p_comp"])), float(d["kv_output_share"]),
                   float(d.get("overlap", 0.0)), Transfer.from_dict(t) if t else None)


# Efficiency transfer (NVIDIA AIConfigurator's method, on top of the step-time physics): a configuration's
# achieved efficiency relative to the physics model, log(published / projected) per metric, is taken from
# the measured configurations nearest in shape: same GPU, similar weights per GPU, running batch, context,
# GPU count, weight format and family. Gaussian weights in these coordinates (``Transfer.scales``, global),
# shrunk toward no correction by a prior weight, so a shape far from every measured one (a new GPU, other
# lengths) keeps the physics alone.
TRANSFER_FEATURES = ("log_batch", "log_weight_bytes_per_gpu", "log_context", "log_bandwidth", "log_peak_tflops",
                     "log_gpus", "fp8", "four_bit", "moe", "hybrid", "log_data_parallel")
TRANSFER_METRICS = ("output_tokens_per_s", "itl_p50", "itl_p90", "itl_p95", "power_w")


@dataclass(frozen=True)
class Transfer:
    """The measured configurations (anchors: their TRANSFER_FEATURES and log(published / projected) per
    TRANSFER_METRICS under the fit's physics) and the kernel that weighs them."""

    scales: tuple[float, ...]  # per TRANSFER_FEATURES: the distance at which an anchor's weight falls to e^-1/2
    prior: float  # weight of "no correction": where the anchors' total weight is small, the physics stands
    anchors: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(TRANSFER_FEATURES), "metrics": list(TRANSFER_METRICS), "scales": list(self.scales),
                "prior": self.prior, "anchors": [[[round(v, 4) for v in x], [round(v, 4) for v in r]] for x, r in self.anchors]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Transfer":
        return Transfer(tuple(float(v) for v in d["scales"]), float(d["prior"]),
                        tuple((tuple(map(float, x)), tuple(map(float, r))) for x, r in d["anchors"]))

    def correction(self, x: Sequence[float]) -> list[float]:
        """log(published / projected) per TRANSFER_METRICS expected at coordinates ``x``."""
        return self._weigh(x)[1]

    def support(self, x: Sequence[float]) -> float:
        """How much measured data stands near ``x``: the anchors' total weight / (that + the prior), 0 .. 1
        (0: the physics alone; the band then is the physics' held-out band)."""
        total = self._weigh(x)[0]
        return total / (total + self.prior) if total + self.prior > 0 else 0.0

    def _weigh(self, x: Sequence[float]) -> tuple[float, list[float]]:
        inv = [1 / s for s in self.scales]
        total, acc = 0.0, [0.0] * len(TRANSFER_METRICS)
        for ax, r in self.anchors:
            d2 = 0.0
            for a, b, k in zip(x, ax, inv):
                d2 += ((a - b) * k) ** 2
            if d2 > 40:
                continue
            w = math.exp(-0.5 * d2)
            total += w
            for i, v in enumerate(r):
                acc[i] += w * v
        return total, [a / (total + self.prior) for a in acc]


# -- physics ------------------------------------------------------------------------------------
def peak_flops(profile: HardwareProfile, dtype: str) -> float:
    t = profile.peak_tflops
    v = getattr(t, dtype, None) or t.bf16 or t.fp16
    if not v:
        raise EffbenchError(f"{profile.id} has no peak TFLOPs for {dtype} in its profile; no projection")
    return float(v) * 1e12


def weight_bytes(arch: StepShape, scheme: str) -> float:
    """All weights as stored (the input embedding included)."""
    if scheme not in WEIGHT_BYTES:
        raise EffbenchError(f"no projection for scheme '{scheme}': use one of {', '.join(WEIGHT_BYTES)}")
    w = WEIGHT_BYTES[scheme]
    return (arch.dense_params + (0 if arch.tied else arch.embedding_params)) * w + arch.expert_params * EXPERT_BYTES[scheme]


def kv_replication(c: Config) -> float:
    """How many GPUs hold each KV entry: tensor parallelism splits KV heads, but not below one head per
    GPU (fewer KV heads than GPUs are copied), and MLA's single latent is copied to every GPU."""
    tp = c.tensor_parallel
    heads = 1 if c.arch.attention == "mla" else c.arch.kv_heads
    return tp / min(tp, heads)


def seq_bytes(c: Config, context: float) -> float:
    """KV cache and recurrent state of one sequence, summed over the GPUs that hold copies."""
    return c.arch.kv_bytes(context, KV_ELEMENT_BYTES) * kv_replication(c) + c.arch.state_bytes(SSM_STATE_ELEMENT_BYTES,
                                                                                                STATE_ELEMENT_BYTES)


# HBM is sold in GiB: an "80 GB" H100 or A100 holds 80 GiB (nvidia-smi: 81,559 / 81,920 MiB), an H200 141 GiB,
# a B200 about 180 GiB; vLLM's --gpu-memory-utilization is a share of that total. GDDR boards (L4, L40S,
# A10G: ECC on) report about their decimal size. HBM is told from GDDR by bandwidth (HBM2e and later
# >= 1.5 TB/s per GPU; GDDR6/6X/7 boards below). Held out, the published running batch of the points a KV
# cache limits (28 of 482) is met to a median 8.4% / p90 14% (decimal GB: 8.5% / 14%), and a kappa-long
# context to 12% / 53% (decimal: 25% / 61%).
HBM_MIN_BANDWIDTH_GBPS = 1500.0
GIB = 2 ** 30


def device_memory_bytes(profile: HardwareProfile) -> float:
    """One GPU's memory as the driver reports it (the total vLLM's memory utilisation is a share of)."""
    return profile.memory_gb * (GIB if profile.memory_bandwidth_gbps >= HBM_MIN_BANDWIDTH_GBPS else 1e9)


def usable_bytes(c: Config) -> float:
    """What vLLM holds weights and KV cache in on the replica's GPUs: its memory utilisation of each, less
    the runtime's overhead."""
    return c.gpus * (device_memory_bytes(c.profile) * GPU_MEMORY_UTILISATION - RUNTIME_OVERHEAD_GB * 1e9)


def kv_capacity(c: Config, output_share: float) -> float:
    """Sequences whose KV cache fits beside the weights, at prompt + ``output_share`` x output tokens each."""
    usable = usable_bytes(c) - weight_bytes(c.arch, c.scheme)
    if usable <= 0:
        return 0.0
    return usable / seq_bytes(c, max(c.prompt_tokens + output_share * c.output_tokens, 1.0))  # a sequence holds >= 1 token


def effective_batch(c: Config, fit: Fit) -> float:
    """The sequences a replica actually runs: its cap, or fewer where the KV cache fills first."""
    return max(min(float(c.concurrency), kv_capacity(c, fit.kv_output_share)), 0.0)


def _touched(arch: StepShape, tokens: float) -> float:
    if not arch.experts:
        return 0.0
    return 1 - (1 - arch.experts_per_token / arch.experts) ** max(tokens, 0.0)


@lru_cache(maxsize=4096)
def _max_binomial(m: int, p: float, n: int) -> float:
    """E[max of n independent Binomial(m, p)] = sum_j 1 - F(j)^n."""
    if m <= 0 or p <= 0:
        return 0.0
    if p >= 1:
        return float(m)
    out, cdf, pmf = 0.0, 0.0, (1 - p) ** m
    for j in range(m):
        cdf += pmf
        out += 1 - min(cdf, 1.0) ** n
        pmf *= (m - j) / (j + 1) * p / (1 - p)
    return out


def expert_load(c: Config, tokens: float) -> float:
    """The share of a GPU's expert weights the step reads: the mean touched share where experts are
    sliced across the GPUs (tensor parallel); with expert parallelism, the most-loaded GPU's share (its
    E / N experts each touched with probability 1 - (1 - k/E)^tokens, the maximum over N GPUs)."""
    a = c.arch
    touched = _touched(a, tokens)
    if not c.expert_parallel or c.gpus <= 1 or not a.experts:
        return touched
    m = max(a.experts // c.gpus, 1)
    return _max_binomial(m, round(touched, 4), c.gpus) / m


def _routed_active(arch: StepShape) -> float:
    return arch.expert_params * arch.experts_per_token / arch.experts if arch.experts else 0.0


def transfer_features(c: Config, batch: float) -> list[float]:
    """The coordinates (TRANSFER_FEATURES) in which measured configurations are near one another."""
    a, p = c.arch, c.profile
    per_gpu = a.dense_params * WEIGHT_BYTES[c.scheme] / c.tensor_parallel + a.expert_params * EXPERT_BYTES[c.scheme] / c.gpus
    return [math.log(max(batch, 1.0)), math.log(max(per_gpu, 1.0)), math.log(max(c.mean_context, 1.0)),
            math.log(p.memory_bandwidth_gbps), math.log(peak_flops(p, "bf16") / 1e12), math.log(c.gpus),
            float(c.scheme in ("fp8", "int8")), float(c.scheme in ("mxfp4", "fp4", "int4")), float(a.family == "moe"),
            float(a.family == "hybrid"), math.log(max(c.data_parallel, 1))]


def tp_sync_steps(gpus: int) -> float:
    """How tensor parallelism's fixed cost per layer (its all-reduces' launch and synchronisation, and
    the wait for the slowest GPU) grows with the GPU count: log2 of it, 0 on one GPU. Held out, it beats
    a constant (docs/size-a-gpu-rental.md, the experiments table)."""
    return math.log2(gpus) if gpus > 1 else 0.0


def features(c: Config, batch: float) -> tuple[list[float], list[float]]:
    """(the decode step of ``batch`` sequences, one request's prefill) as FEATURES-aligned vectors:
    seconds at the datasheet peaks for the roofline terms, counts in microseconds / milliseconds for
    the fixed costs."""
    a, n, p = c.arch, c.gpus, c.profile
    bw, tp = p.bandwidth_bytes_per_s, c.tensor_parallel
    peak, peak16 = peak_flops(p, COMPUTE_DTYPE.get(c.scheme, "bf16")), peak_flops(p, "bf16")
    link = (p.interconnect_gbps or 32.0) * 1e9
    ring = 2 * (n - 1) / n if n > 1 else 0.0
    experts = a.expert_params * EXPERT_BYTES[c.scheme] / n / bw
    touched = expert_load(c, batch)
    ctx, prompt = c.mean_context, c.prompt_tokens
    dec = {
        "weights": a.dense_params * WEIGHT_BYTES[c.scheme] / tp / bw,
        "experts": experts * touched,
        "kv": batch * (a.kv_bytes(ctx, KV_ELEMENT_BYTES) * kv_replication(c)
                       + 2 * a.state_bytes(SSM_STATE_ELEMENT_BYTES, STATE_ELEMENT_BYTES))
        / n / bw,
        "linear": batch * 2 * a.active_params / n / peak,
        "attention": batch * a.attention_flops(ctx) / n / peak16,
        "comm": a.layers * 2 * batch * a.hidden * 2 * ring / link,
        "layer": a.layers * _US, "tp_layer": a.layers * _US * tp_sync_steps(n), "moe_layer": a.moe_layers * _US,
        "step": _MS, "request": batch / max(c.data_parallel, 1) * 10 * _US, "prefill": 0.0,
        # block-scaled fp8 routed experts: the extra time of dequantising them in vLLM's fused-MoE kernels
        # (block scales in the main loop: the reference data has the Qwen3 fp8 MoEs slower than bf16), as a
        # share of their read. Dense fp8 GEMMs and per-channel / per-tensor fp8 (vLLM's on-load fp8) apply
        # their scales in the epilogue, near free. Held out (physics alone), tokens/s 15.5% with the term on
        # every fp8 weight, 14.6% on fp8 experts, 14.3% on block-scaled fp8 experts.
        "fp8_dequant": (a.expert_params * EXPERT_BYTES[c.scheme] / n * touched / bw
                        if c.scheme == "fp8" and c.fp8_block_scaled else 0.0),
    }
    pre = {
        "experts": experts * (1 - touched),  # a prompt touches the experts the decode tokens left
        # a prompt runs on its own engine: with data-parallel attention (dp > 1) its dense layers and
        # attention load that engine's tp GPUs (the others wait for it at the next expert exchange); its
        # routed experts spread over all n GPUs
        "linear": prompt * 2 * ((a.active_params - _routed_active(a)) / tp + _routed_active(a) / n) / peak,
        "attention": prompt * a.attention_flops(prompt / 2) / tp / peak16,
        "comm": a.layers * 2 * prompt * a.hidden * 2 * ring / link,
        "prefill": _MS,
    }
    return [dec[f] for f in FEATURES], [pre.get(f, 0.0) for f in FEATURES]


POISSON_SUM_UP_TO = 50.0  # above: the closed form below (the sum's first terms underflow from lam ~ 745)


def poisson_quantile(lam: float, q: float) -> float:
    """The q-quantile of a Poisson count, interpolated between integers (a smooth function of lam). For
    lam > POISSON_SUM_UP_TO, lam + z sqrt(lam) - 1 + (z^2 + 2) / 6 (z the normal q-quantile), within 0.01
    of the interpolated sum there and closer beyond (a step of a huge batch with one-token outputs)."""
    if lam <= 0:
        return 0.0
    if lam > POISSON_SUM_UP_TO:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(q)
        return lam + z * math.sqrt(lam) - 1 + (z * z + 2) / 6
    k, pmf = 0, math.exp(-lam)
    cdf_prev, cdf = 0.0, pmf
    while cdf < q and k < 1000:
        k += 1
        pmf *= lam / k
        cdf_prev, cdf = cdf, cdf + pmf
    return (k - 1) + (q - cdf_prev) / (cdf - cdf_prev) if k > 0 else q / cdf


def burst(lam: float, q: str) -> float:
    """What the q-quantile step carries beyond the decode step, in units of one prefill: the median step,
    the Poisson median of the prompts riding in it (none while lam < ln 2); a tail quantile (p90, p95),
    the chance a step carries any prompt, 1 - e^-lam (the tail is made of those steps; how far into it
    depends on prompt lengths the reference data does not publish, so the fitted coefficient scales it).
    Held out, this tail form has ITL p95 at a median 20% (vs 26% with the Poisson quantile, whose fitted
    coefficient went to 0)."""
    if q == "p50":
        return poisson_quantile(lam, 0.5)
    return 1 - math.exp(-lam)


def _dot(theta: dict[str, float], x: Sequence[float], only: Optional[bool] = None) -> float:
    """theta . x over all features, or only the host's (``only=True``) or only the GPU's (``False``)."""
    return sum(theta.get(f, 0.0) * v for f, v in zip(FEATURES, x) if only is None or (f in CPU_FEATURES) == only)


def smooth_max(a: float, b: float, k: float) -> float:
    """max(a, b), rounded where they are close (k large: the plain maximum)."""
    if a <= 0 or b <= 0:
        return max(a, b)
    m = max(a, b)
    return m * ((a / m) ** k + (b / m) ** k) ** (1 / k)


def step_times(dec: Sequence[float], pre: Sequence[float], lam: float, fit: "Fit") -> tuple[float, float, float]:
    """(mean step, decode-only step, one prefill's GPU time) under ``fit``: the GPU's terms add up; the
    host's terms overlap them (async scheduling) where ``fit.overlap`` > 0, else add too."""
    t_pre = _dot(fit.step, pre, False)
    if fit.overlap <= 0:
        t_dec = _dot(fit.step, dec)
        return t_dec + lam * t_pre, t_dec, t_pre
    gpu, cpu = _dot(fit.step, dec, False), _dot(fit.step, dec, True)
    return smooth_max(gpu + lam * t_pre, cpu, fit.overlap), smooth_max(gpu, cpu, fit.overlap), t_pre


def power_shares(dec: Sequence[float], pre: Sequence[float], lam: float, step: float) -> tuple[float, float]:
    """(memory, compute) share of a mean step of ``step`` seconds: the MEMORY_SHARE and COMPUTE_SHARE
    terms of its decode step and its ``lam`` prefills, at the datasheet peaks."""
    def share(group: Sequence[str]) -> float:
        return sum(dec[FEATURES.index(f)] + lam * pre[FEATURES.index(f)] for f in group) / step

    return share(MEMORY_SHARE), share(COMPUTE_SHARE)


@dataclass(frozen=True)
class Prediction:
    effective_batch: float
    output_tokens_per_s: float
    step_ms: float  # mean step (= mean inter-token time)
    itl_ms: dict[str, float]  # p50, p90, p95
    ttft_ms: float  # one prefill plus the step it joins (no queueing): a physics estimate, not fitted
    power_w: float  # all GPUs of the replica
    joules_per_token: float
    bound: str  # the largest term of the decode step

    def to_dict(self) -> dict[str, Any]:
        return {"effective_batch": self.effective_batch, "output_tokens_per_s": self.output_tokens_per_s,
                "step_ms": self.step_ms, "itl_ms": self.itl_ms, "ttft_ms": self.ttft_ms, "power_w": self.power_w,
                "joules_per_token": self.joules_per_token, "bound": self.bound}


def predict(c: Config, fit: Fit, batch: Optional[float] = None) -> Prediction:
    """Every projected figure of one configuration (``batch``: the running sequences, else predicted)."""
    b = effective_batch(c, fit) if batch is None else batch
    if b <= 0:
        raise EffbenchError(f"{c.arch.name} {c.scheme} does not fit {c.gpus}x {c.profile.id}")
    dec, pre = features(c, b)
    lam = b / max(c.output_tokens, 1.0)
    step, t_dec, t_pre = step_times(dec, pre, lam, fit)
    itl = {q: 1000 * (a * t_dec + k * t_pre * burst(lam, q)) for q, (a, k) in fit.itl.items()}
    tps = b / step
    mem, comp = power_shares(dec, pre, lam, step)
    p0, pm, pc = fit.power
    watts = c.gpus * (c.profile.tdp_w or 0.0) * min(max(p0 + pm * mem + pc * comp, 0.1), 1.0)
    if fit.transfer is not None:
        k = dict(zip(TRANSFER_METRICS, fit.transfer.correction(transfer_features(c, b))))
        tps *= math.exp(k["output_tokens_per_s"])
        itl = {q: v * math.exp(k.get(f"itl_{q}", 0.0)) for q, v in itl.items()}
        for lo, hi in zip(QUANTILES, QUANTILES[1:]):  # the corrected percentiles stay ordered
            if lo in itl and hi in itl:
                itl[hi] = max(itl[hi], itl[lo])
        watts = min(watts * math.exp(k["power_w"]), c.gpus * (c.profile.tdp_w or 0.0))
    terms = {f: fit.step.get(f, 0.0) * v for f, v in zip(FEATURES, dec)}
    return Prediction(b, tps, 1000 * b / tps, itl, 1000 * (t_pre + t_dec), watts, watts / tps,
                      max(terms, key=lambda f: terms[f]))


# -- the shipped fit ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shipped:
    fit: Fit
    data: dict[str, Any]  # the whole file: data version, points fitted, validation summary, bands

    @property
    def models(self) -> list[str]:
        return list(self.data["fitted_models"])

    @property
    def families(self) -> set[str]:
        return set(self.data["fitted_families"])

    @property
    def profiles(self) -> set[str]:
        return set(self.data["fitted_profiles"])

    @property
    def schemes(self) -> set[str]:
        """The weight formats some fitted reference point ran (the fit saw no other scheme's kernels)."""
        return set(self.data["fitted_schemes"])


@lru_cache(maxsize=1)
def shipped() -> Shipped:
    """The fit shipped with effbench (``projection_fit.json``, written by ``python -m benchmarks.projection_fit``)."""
    import json
    from importlib import resources

    d = json.loads(resources.files("effbench.analysis").joinpath(FIT_FILE).read_text(encoding="utf-8"))
    return Shipped(Fit.from_dict(d["coefficients"]), d)


def basis_of(arch: StepShape, profile_id: str, gpus: int, fitted: Shipped) -> tuple[str, list[str]]:
    """Which held-out error applies: 'new GPU' where the fit saw no point on this GPU, else 'new model'
    where it saw none of this architecture, else 'new TP degree' where it saw none at this GPU count,
    else 'seen configuration' (still the new-model error: the fit is never checked on its own points)."""
    notes = []
    combos = {tuple(x) for x in fitted.data["fitted_configs"]}
    if profile_id not in fitted.profiles:
        notes.append(f"{profile_id} is not in the reference data: its datasheet bandwidth, TFLOPs, link and TDP with the global "
                     "coefficients")
        return "new GPU", notes
    if arch.name not in fitted.models:
        return "new model", notes
    if (arch.name, profile_id, gpus) not in combos:
        return "new TP degree", notes
    return "seen configuration", notes


def transfer_support(c: Config, batch: float, fit: Fit) -> float:
    """0 .. 1: how near the measured configurations ``c`` is (``Transfer.support``); 0 without a transfer."""
    return fit.transfer.support(transfer_features(c, batch)) if fit.transfer is not None else 0.0


def band(arch: StepShape, profile_id: str, gpus: int, fitted: Shipped, support: float = 1.0,
         scheme: Optional[str] = None) -> dict[str, Any]:
    """The 95% band (factors: the truth within projection / f .. x f) from held-out residuals of the
    architecture's family and the kind of extrapolation; a family new to the fit says so. ``support``
    (``transfer_support``): where few measured shapes stand near the configuration (other lengths, say),
    the efficiency transfer corrects little and the new-model band moves toward the physics alone's
    (geometric interpolation of the two held-out bands). A ``scheme`` no reference point ran widens the
    band by the held-out error of a scheme the fit never saw (leave-one-scheme-out)."""
    basis, notes = basis_of(arch, profile_id, gpus, fitted)
    table = fitted.data["bands"]
    key = {"new GPU": "new_gpu", "new TP degree": "new_tp"}.get(basis, "new_model")
    first = arch.family not in fitted.families
    fam = table[key].get(arch.family) or table[key]["all"]
    factors = dict(fam["factor"])
    physics = table.get("new_model_physics_only")
    if key == "new_model" and physics and support < 1:
        phys = (physics.get(arch.family) or physics["all"])["factor"]
        s = min(max(support, 0.0), 1.0)
        factors = {m: math.exp(s * math.log(f) + (1 - s) * math.log(max(phys[m], f))) for m, f in factors.items()}
        notes.append(f"measured shapes near this configuration: support {s:.2f} of 1 (the efficiency transfer corrects "
                     f"{'little' if s < 0.5 else 'most'} of the physics' error); band between the transferred and the "
                     "physics-only held-out bands")
    if basis == "new GPU" and arch.name not in fitted.models:  # two extrapolations: combine in log space
        factors = _combined(factors, table["new_model"].get(arch.family) or table["new_model"]["all"])
    if scheme is not None and scheme not in fitted.schemes:
        # all families: one dense model ran a quantized scheme, too few for a dense band of its own
        other = table["new_scheme"]["all"]
        factors = _combined(factors, other)
        notes.append(f"no reference point runs {scheme}: the band adds the held-out error of a scheme the fit never saw "
                     f"(fp8 and mxfp4 each left out, {other['points']} points: tokens/s "
                     f"x{other['factor']['output_tokens_per_s']:.2f}, ITL p50 x{other['factor']['itl_p50']:.2f})")
    method = (f"95th percentile of held-out |ln(projected / published)|, {basis} ({key.replace('_', ' ')} residuals of "
              f"{'all families' if first else arch.family + ' models'}: {fam['points']} points); coverage of held-out points "
              f"{fam['coverage']:.0%}; {fitted.data['source_short']}")
    if first:
        method = f"first {arch.family} model: the fit has no model of this family, its band is the widest family's; " + method
        widest = max((v for k, v in table[key].items() if k != "all"), key=lambda v: v["factor"]["output_tokens_per_s"])
        factors = {m: max(f, widest["factor"][m]) for m, f in factors.items()}
    return {"factor": factors, "basis": basis, "confidence": CONFIDENCE, "first_of_family": first, "method": method,
            "notes": notes}


def _combined(factors: dict[str, float], other: dict[str, Any]) -> dict[str, float]:
    """Two independent extrapolations' 95% factors, combined in log space (root-sum-square)."""
    return {m: math.exp(math.hypot(math.log(f), math.log(other["factor"][m]))) for m, f in factors.items()}


# -- checks -------------------------------------------------------------------------------------
def scheme_runs_on(scheme: str, profile: HardwareProfile) -> bool:
    """Whether the device has the arithmetic the scheme's matmuls need (fp8 needs fp8 tensor cores)."""
    dtype = COMPUTE_DTYPE.get(scheme)
    if dtype is None or profile.kind != "gpu":
        return False
    if scheme == "fp4" and not fp4_tensor_cores(profile):
        return False
    t = profile.peak_tflops
    return bool(getattr(t, dtype, None) or (dtype == "bf16" and t.fp16 and scheme == "mxfp4"))


def fp4_tensor_cores(profile: HardwareProfile) -> bool:
    """NVFP4 checkpoints need the fp4 tensor cores of Blackwell (sm_100/sm_120); Hopper and older have none.
    The profile carries no fp4 peak, so the generation comes from the GPU's name (effbench.sensors.generations)."""
    from effbench.sensors.generations import generation_of

    return generation_of(profile.name).name == "blackwell" or generation_of(profile.id).name == "blackwell"


def check_lengths(arch: Any, prompt_tokens: int, output_tokens: int) -> None:
    limit = getattr(arch, "max_context", None) or getattr(arch, "max_context_tokens", None)
    if limit and prompt_tokens + output_tokens > limit:
        raise EffbenchError(f"{arch.name} supports at most {limit:,} tokens of context; "
                            f"{prompt_tokens:,} prompt + {output_tokens:,} output = {prompt_tokens + output_tokens:,} is longer")


def check_replica(a: StepShape, prof: HardwareProfile, gpus: int, concurrency: float, data_parallel: int = 1) -> None:
    """One-line errors for the GPU, the GPU count and the concurrency, before any length is known."""
    if prof.kind != "gpu":
        raise EffbenchError(f"{prof.id} is a {prof.kind}: the projection model is fitted to GPU serving data only")
    if gpus not in TP_SIZES:
        raise EffbenchError(f"--gpus must be one of {', '.join(map(str, TP_SIZES))} (tensor parallel inside one node); got "
                            f"{gpus}")
    if gpus > prof.max_gpus_per_node:
        raise EffbenchError(f"{prof.id} nodes hold at most {prof.max_gpus_per_node} GPUs; --gpus {gpus} does not fit one node")
    tp = max(gpus // max(data_parallel, 1), 1)
    if a.heads % tp:
        raise EffbenchError(f"{a.name} has {a.heads} attention heads: {tp} GPUs do not divide them "
                            f"(tensor parallelism splits heads); use {', '.join(str(g) for g in TP_SIZES if a.heads % g == 0)}")
    if concurrency <= 0:
        raise EffbenchError(f"--concurrency must be a positive integer (got {concurrency:g})")


def check_config(c: Config) -> None:
    """One-line errors for a configuration the projection cannot answer."""
    a, prof = c.arch, c.profile
    check_replica(a, prof, c.gpus, c.concurrency, c.data_parallel)
    if c.prompt_tokens < 0 or c.output_tokens < 1:
        raise EffbenchError(f"prompt tokens must be >= 0 and output tokens >= 1 (got {c.prompt_tokens:g}, {c.output_tokens:g})")
    check_lengths(a, int(c.prompt_tokens), int(c.output_tokens))
    if c.scheme not in WEIGHT_BYTES:
        raise EffbenchError(f"unknown scheme '{c.scheme}': the projection serves {', '.join(WEIGHT_BYTES)}")
    if not scheme_runs_on(c.scheme, prof):
        runs = ", ".join(s for s in WEIGHT_BYTES if scheme_runs_on(s, prof))
        why = ("no fp4 tensor cores: NVFP4 needs Blackwell" if c.scheme == "fp4" else
               f"no {COMPUTE_DTYPE.get(c.scheme, c.scheme)} support in its profile")
        raise EffbenchError(f"scheme '{c.scheme}' does not run on {prof.id} ({why}); it runs: {runs}")


def memory_gb(c: Config, batch: float) -> float:
    """Weights + KV cache of ``batch`` sequences at full length + runtime overhead, whole replica (GB); the
    KV cache at most the pool vLLM allocates (its memory utilisation of the device, less weights and
    overhead: a replica never holds more, it preempts)."""
    w = weight_bytes(c.arch, c.scheme)
    pool = max(usable_bytes(c) - w, 0.0)
    kv = min(batch * seq_bytes(c, c.prompt_tokens + c.output_tokens), pool)
    return (w + kv) / 1e9 + RUNTIME_OVERHEAD_GB * c.gpus


def fit_shortfall(c: Config) -> tuple[str, str]:
    """(what does not fit, what to change) where not one sequence of ``c``'s prompt fits: the weights
    alone, or one sequence's KV cache beside them, against the memory vLLM can use (``usable_bytes``)."""
    usable, w = usable_bytes(c), weight_bytes(c.arch, c.scheme)
    where = (f"of the {usable / 1e9:,.1f} GB vLLM can use ({GPU_MEMORY_UTILISATION:.0%} of "
             f"{c.gpus * device_memory_bytes(c.profile) / 1e9:,.1f} GB, less {RUNTIME_OVERHEAD_GB:g} GB runtime per GPU)")
    if w >= usable:
        return f"its weights need {w / 1e9:,.1f} GB {where}", "a smaller --scheme"
    one = seq_bytes(c, max(c.prompt_tokens, 1.0))
    return (f"one sequence's KV cache at {c.prompt_tokens:,.0f} prompt tokens needs {one / 1e9:,.1f} GB, and "
            f"{(usable - w) / 1e9:,.1f} GB {where} are left beside the weights"), "a shorter prompt"


def max_concurrency(c: Config) -> int:
    """The most sequences of full length (prompt + output) whose KV cache fits beside the weights."""
    return int(kv_capacity(c, 1.0))


# -- the grid API and one point -------------------------------------------------------------------
@dataclass(frozen=True)
class GridPoint:
    """One grid configuration: its prediction and the point as ``effbench project --json`` prints it
    (``result``; basis ``reference`` where the published data has exactly it), or the one-line reason it
    cannot run (``error``). ``kv_limit``: the most sequences of full length whose KV cache fits."""
    model: str
    hardware: str
    gpus: int
    concurrency: int
    scheme: str
    prediction: Optional[Prediction]
    error: Optional[str] = None
    band: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    kv_limit: Optional[int] = None


def project_grid(models: Sequence[str], profiles: Sequence[HardwareProfile | str], gpus: Sequence[int],
                 concurrencies: Sequence[int], prompt_tokens: Optional[float] = None, output_tokens: Optional[float] = None,
                 schemes: Sequence[str] = ("bf16",), *, workload: Optional[str] = None,
                 kv_limited: bool = False) -> list[GridPoint]:
    """Every (model, GPU, GPUs per replica, scheme, concurrency) in one call; a configuration that
    cannot run carries its one-line reason in ``error`` instead of a prediction. Requests are shaped by
    ``workload`` (a reference task) or by ``prompt_tokens`` and ``output_tokens``. With ``kv_limited``, a
    replica's concurrencies stop at the KV-capacity limit, which is added as a point of its own."""
    from effbench.hardware import get_profile
    from effbench.models.stepshape import of

    fitted = shipped()
    profs = [get_profile(p, local=False) if isinstance(p, str) else p for p in profiles]
    out: list[GridPoint] = []
    for m in models:
        arch = of(m)
        prompt, output, notes = _lengths(arch, workload, None if prompt_tokens is None else int(prompt_tokens),
                                         None if output_tokens is None else int(output_tokens))
        for prof in profs:
            for n in gpus:
                for s in schemes:
                    concs: Sequence[int] = concurrencies
                    if kv_limited:
                        try:
                            lim = max_concurrency(Config(arch, prof, n, 1, prompt, output, scheme_name(s)))
                        except EffbenchError:
                            lim = 0
                        if lim >= 1:
                            concs = sorted({*(x for x in concurrencies if x <= lim), min(lim, max(concurrencies))})
                    for conc in concs:
                        out.append(_grid_point(arch, prof, n, conc, s, prompt, output, fitted, workload, notes))
    return out


def scheme_name(scheme: str) -> str:
    """A scheme as the projection names it (``nvfp4`` is ``fp4``; case does not matter)."""
    s = scheme.strip().lower()
    return SCHEME_ALIASES.get(s, s)


def _grid_point(arch: StepShape, prof: HardwareProfile, n: int, conc: int, scheme: str, prompt: float, output: float,
                fitted: Shipped, workload: Optional[str] = None, notes: Sequence[str] = ()) -> GridPoint:
    scheme = scheme_name(scheme)
    try:
        check_replica(arch, prof, n, conc)
        r, p, c = _point(arch, prof, n, conc, scheme, prompt, output, workload, list(notes), fitted)
    except EffbenchError as e:
        return GridPoint(arch.name, prof.id, n, conc, scheme, None, str(e))
    b = r["band"] if r["basis"] == "projected" else band(arch, prof.id, n, fitted, transfer_support(c, p.effective_batch,
                                                                                                        fitted.fit))
    return GridPoint(arch.name, prof.id, n, conc, scheme, p, band=b, result=r, kv_limit=r["max_concurrency"])


def _exact_reference(arch: str, profile_id: str, gpus: int, concurrency: int, scheme: str, task: Optional[str]) -> Optional[Any]:
    from effbench.reference import points

    for p in points():
        if (p.arch == arch and p.profile == profile_id and p.num_gpus == gpus and p.max_num_seqs == concurrency
                and p.scheme == scheme and task is not None and p.task == task):
            return p
    return None


def _percentile_intervals(itl_ms: dict[str, float], factors: dict[str, float]) -> dict[str, list[float]]:
    """The ITL percentiles' bands, kept ordered: a higher percentile is never below a lower one, so its band
    starts no lower than the lower one's, and the lower one's ends no higher than the higher one's."""
    iv = {q: _interval(itl_ms[q], factors[f"itl_{q}"]) for q in QUANTILES}
    for lo, hi in zip(QUANTILES, QUANTILES[1:]):
        iv[hi][0] = max(iv[hi][0], iv[lo][0])
    for lo, hi in reversed(list(zip(QUANTILES, QUANTILES[1:]))):
        iv[lo][1] = min(iv[lo][1], iv[hi][1])
    return {f"itl_ms.{q}": v for q, v in iv.items()}


def _interval(value: float, factor: float) -> list[float]:
    return [value / factor, value * factor]


def project_point(model: str, hardware: str, *, gpus: int = 1, concurrency: int, workload: Optional[str] = None,
                  prompt_tokens: Optional[int] = None, output_tokens: Optional[int] = None, scheme: str = "bf16",
                  profile: Optional[HardwareProfile] = None) -> dict[str, Any]:
    """One point, as ``effbench project --json`` prints it: basis ``reference`` where the published data
    has exactly this point (model, GPU, GPUs, max_num_seqs = concurrency, scheme, workload), else
    ``projected`` with its band."""
    from effbench.hardware import get_profile
    from effbench.models.stepshape import of

    if not model or model.lower() in ("arch:", ""):
        raise EffbenchError("--model needs an architecture: arch:NAME (see 'effbench models')")
    arch = of(model)
    prof = profile or get_profile(hardware, local=False)
    check_replica(arch, prof, gpus, concurrency)
    prompt, output, notes = _lengths(arch, workload, prompt_tokens, output_tokens)
    return _point(arch, prof, gpus, concurrency, scheme_name(scheme), prompt, output, workload, notes, shipped())[0]


# The vendors whose own fp8 checkpoints scale weights per 128 x 128 block (Qwen3's -FP8 releases, DeepSeek-V3/R1's
# native fp8): an fp8 projection of their MoE architectures serves that checkpoint (the fp8_dequant term, fitted
# on exactly these checkpoints in the reference data). Other fp8 (vLLM's on-load fp8, per-channel checkpoints)
# is per channel or tensor.
FP8_BLOCK_SCALED_VENDORS = ("Qwen/Qwen3", "deepseek-ai/")


def vendor_fp8_block_scaled(arch: StepShape) -> bool:
    """Whether the architecture's vendor fp8 checkpoint scales its weights per block (see FP8_BLOCK_SCALED_VENDORS)."""
    from effbench.models.arch import catalog

    entry = catalog().get(arch.name)
    return bool(entry and arch.experts and entry.hf_id.startswith(FP8_BLOCK_SCALED_VENDORS))


def _point(arch: StepShape, prof: HardwareProfile, gpus: int, concurrency: int, scheme: str, prompt: float, output: float,
           workload: Optional[str], notes: list[str], fitted: Shipped) -> tuple[dict[str, Any], Prediction, Config]:
    """One checked point: the ``project --json`` dict, the prediction and its configuration."""
    c = Config(arch, prof, gpus, concurrency, prompt, output, scheme,
               context_output_share=TASK_CONTEXT_OUTPUT_SHARE.get(workload or "", CONTEXT_OUTPUT_SHARE),
               fp8_block_scaled=scheme == "fp8" and vendor_fp8_block_scaled(arch))
    if c.fp8_block_scaled:
        notes.append(f"fp8 as {arch.name}'s vendor checkpoint ships it: weights scaled per 128 x 128 block (the "
                     "dequantisation term on its routed experts)")
    check_config(c)
    limit = max_concurrency(c)
    if kv_capacity(c, 0.0) < 1:
        reason, remedy = fit_shortfall(c)
        raise EffbenchError(f"{arch.name} {scheme} does not fit {gpus}x {prof.id}: {reason}; try more --gpus or {remedy}")
    p = predict(c, fitted.fit)
    if p.effective_batch < concurrency:
        notes.append(f"the KV cache holds about {p.effective_batch:.0f} sequences of this shape: projected at "
                     f"{p.effective_batch:.0f} running, not {concurrency}")
    common = {"model": f"arch:{arch.name}", "hardware": prof.id, "gpus": gpus, "concurrency": concurrency,
              "effective_batch": p.effective_batch, "running_sequences": p.effective_batch, "max_concurrency": limit,
              "kv_capacity_sequences": kv_capacity(c, fitted.fit.kv_output_share), "workload": workload,
              "prompt_tokens": prompt, "output_tokens": output, "scheme": scheme, "family": arch.family,
              "memory_gb": memory_gb(c, p.effective_batch), "memory_capacity_gb": gpus * prof.memory_gb,
              "device_memory_gb": gpus * device_memory_bytes(prof) / 1e9}
    ref = _exact_reference(arch.name, prof.id, gpus, concurrency, scheme, workload)
    if ref is not None:
        return {**common, **_reference_fields(ref), "notes": notes}, p, c
    if scheme not in fitted.schemes:
        notes.append(f"no reference point runs {scheme}: its kernels are taken to read its weight bytes as efficiently as "
                     "the fitted schemes' do, which no measurement backs (in the external check of docs/size-a-gpu-rental.md "
                     "an int4 MoE ran at 1.7x the projected TPOT); measure before relying on it")
    b = band(arch, prof.id, gpus, fitted, transfer_support(c, p.effective_batch, fitted.fit), scheme)
    notes += b.pop("notes")
    f = b["factor"]
    b["interval"] = {"output_tokens_per_s": _interval(p.output_tokens_per_s, f["output_tokens_per_s"]),
                     "joules_per_token": _interval(p.joules_per_token, f["joules_per_token"]),
                     "power_w": _interval(p.power_w, f["power_w"]),
                     **_percentile_intervals(p.itl_ms, f)}
    # relative half-widths
    b["output_tokens_per_s"], b["joules_per_token"] = f["output_tokens_per_s"] - 1, f["joules_per_token"] - 1
    return {**common, "basis": "projected", "output_tokens_per_s": p.output_tokens_per_s, "joules_per_token": p.joules_per_token,
            "power_w": p.power_w, "tpot_ms": p.itl_ms["p50"], "tpot_p95_ms": p.itl_ms["p95"], "itl_ms": p.itl_ms,
            "tpot_percentiles_ms": p.itl_ms, "mean_step_ms": p.step_ms, "ttft_ms": p.ttft_ms,
            "ttft_note": ("one prefill plus the step it joins, no queueing: physics only, no band (the reference data "
                          "publishes no TTFT); against published vLLM runs, 0.6-1.5x a lone request's TTFT, while medians under "
                          "load ran 1.3-7x above it as prompts queue behind each other (docs/size-a-gpu-rental.md)"),
            "bound": p.bound, "band": b, "source": f"projection fitted to {fitted.data['source']}",
            "fitted_on": fitted.data["fitted_points"], "fitted_on_models": fitted.models,
            "fit_data_version": fitted.data["data_version"],
            "notes": notes}, p, c


def _lengths(arch: StepShape, workload: Optional[str], prompt: Optional[int],
             output: Optional[int]) -> tuple[int, int, list[str]]:
    from effbench.reference import workload as reference_workload

    if workload is not None and (prompt is not None or output is not None):
        raise EffbenchError("give --workload NAME or --prompt-tokens P --output-tokens O, not both")
    if workload is not None:
        w = reference_workload(workload, arch.name)
        return w.prompt_tokens, w.output_tokens, [f"workload {w.name}: {w.prompt_note}"]
    if prompt is None or output is None:
        raise EffbenchError("give --workload lm-arena-chat|gpqa|sourcegraph-fim, or both --prompt-tokens P and --output-tokens O")
    if prompt < 0 or output < 1:
        raise EffbenchError(f"--prompt-tokens must be >= 0 and --output-tokens >= 1 (got {prompt}, {output})")
    return prompt, output, []


def _reference_fields(ref: Any) -> dict[str, Any]:
    from effbench.reference import CITATION, SOURCE

    return {"basis": "reference", "output_tokens_per_s": ref.output_tokens_per_s, "joules_per_token": ref.joules_per_token,
            "power_w": ref.power_w, "tpot_ms": ref.itl_ms["p50"], "tpot_p95_ms": ref.itl_ms["p95"],
            "itl_ms": {q: ref.itl_ms[q] for q in QUANTILES}, "tpot_percentiles_ms": {q: ref.itl_ms[q] for q in QUANTILES},
            "effective_batch": ref.avg_batch_size, "running_sequences": ref.avg_batch_size,
            "band": {"output_tokens_per_s": None, "joules_per_token": None, "confidence": CONFIDENCE,
                     "method": "a published measurement, not a projection (its own uncertainty is not published)"},
            "source": f"{SOURCE}; cite: {CITATION}", "reference_key": ref.key, "fitted_on": []}
