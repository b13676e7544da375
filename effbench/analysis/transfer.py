"""A measured record carried by the roofline to a device nobody measured it on (``effbench plan``'s
projected rows; docs/method.md, "Roofline").

From the measured device nearest the target (same kind of device first, then the closest memory
bandwidth):
- decode tokens/s = the achieved roofline fraction on the measured device x the decode bound on the
  target (effbench.analysis.roofline);
- prefill scales with the peak TFLOPs of the scheme's compute dtype (``COMPUTE_DTYPE``, the one table the
  GPU projection uses too), by memory bandwidth where either device's figure is unknown;
- TTFT = measured TTFT / that ratio, TPOT = batch / decode tokens/s, e2e tokens/s = batch x new tokens /
  (TTFT + (new tokens - 1) x TPOT);
- memory = weights + KV cache of the full length only; energy is left unmeasured (the target's TDP
  stands in for power downstream).
Only schemes the quantization registry runs on the target's kind of device. A CPU measurement carried to
a GPU has no fitted error: it gets ``CPU_TO_GPU_BAND``, a judgement.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

from effbench.analysis.roofline import COMPUTE_DTYPE, achieved_fraction, decode_bound_tokens_per_s, weights_bytes

if TYPE_CHECKING:  # pragma: no cover - annotations; the catalog and schema load on first use
    from effbench.hardware.catalog import HardwareProfile
    from effbench.results.schema import Record

# A CPU run projected to a GPU: the roofline fraction of a CPU says little about GPU kernels (eager
# transformers on a GPU is bound by launches, not bandwidth): the truth may be up to 30x lower.
CPU_TO_GPU_BAND = {"output_tokens_per_s": 29.0, "joules_per_token": 29.0, "confidence": 0.95,
                   "method": "CPU-to-GPU roofline scaling: no fit; the truth may be up to 30x lower in tokens/s and 30x higher "
                             "in J/token (judgement, not a fit)"}


def peak_tflops(profile: HardwareProfile, scheme: str) -> Optional[float]:
    """The device's peak TFLOPs in the scheme's compute dtype; None where the scheme has no entry in the
    table (weight-only schemes) or the profile gives no figure."""
    dtype = COMPUTE_DTYPE.get(scheme)
    return getattr(profile.peak_tflops, dtype) if dtype else None


def scheme_runs_on_device(scheme: str, target: HardwareProfile) -> Optional[str]:
    """None when the quantization registry says the scheme runs on the target's kind of device, else why not."""
    from effbench.quant.registry import get_scheme

    try:
        devices = get_scheme(scheme).devices
    except Exception:  # noqa: BLE001 - a scheme this effbench does not know: no claim either way
        return None
    need = "cuda" if target.kind == "gpu" else "cpu"
    return None if need in devices else f"scheme '{scheme}' runs on {' or '.join(devices).upper()} only, not on {target.id}"


def project_record(record: Record, ref: HardwareProfile, target: HardwareProfile) -> tuple[Optional[Record], list[str]]:
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
    dtype = COMPUTE_DTYPE.get(record.quantization.scheme)
    if dtype and getattr(target.peak_tflops, dtype) is None and target.kind == "gpu":
        return None, [f"{target.id} has no {dtype} support"]
    pt, pr = peak_tflops(target, record.quantization.scheme), peak_tflops(ref, record.quantization.scheme)
    if pt and pr:
        ratio, how = pt / pr, f"prefill scaled by peak {dtype} TFLOPs ({pt:g}/{pr:g})"
    else:
        ratio = target.memory_bandwidth_gbps / ref.memory_bandwidth_gbps
        how = "prefill scaled by memory bandwidth (peak TFLOPs unknown)"
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


def nearest(refs: Sequence[tuple[Record, HardwareProfile]], target: HardwareProfile) -> Optional[tuple[Record, HardwareProfile]]:
    """The measurement to carry to ``target``: one with a roofline fraction, on the same kind of device
    if any, with the closest memory bandwidth (in ratio)."""
    usable = [(r, p) for r, p in refs if achieved_fraction(r, p) is not None]
    if not usable:
        return None
    return min(usable, key=lambda rp: (rp[1].kind != target.kind,
                                       abs(math.log(target.memory_bandwidth_gbps / rp[1].memory_bandwidth_gbps))))
