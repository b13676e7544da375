"""The decode roofline: decode reads every weight (and the KV cache) once per step, so it is
memory-bound, and memory bandwidth caps decode tokens/s:

    bound = batch x bandwidth / (weights_bytes + kv_bytes_read_per_step)
    kv_bytes_read_per_step = batch x kv_bytes_per_token x mean context
    mean context = prompt_tokens + new_tokens / 2   (the cache grows from prompt to prompt + new)

Where the record lacks ``kv_bytes_per_token`` the KV term is taken as 0, which only raises the
bound (still an upper bound). Reports show ``achieved_fraction``; effbench.analysis.transfer uses it to
project a record to hardware nobody has measured.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:  # pragma: no cover - annotations; the catalog loads on first use
    from effbench.hardware.catalog import HardwareProfile
    from effbench.results.schema import Record

ProfileArg = Union["HardwareProfile", str, None]

# The dtype whose peak TFLOPs a scheme's matmuls run at: one table for both projections. effbench's
# measured schemes (their records' ``quantization.scheme``; weight-only ones are left out, so a roofline
# transfer scales their prefill by bandwidth: effbench.analysis.transfer) and the weight formats the GPU
# projection serves (effbench.analysis.projection: int4 and mxfp4 weights compute in bf16, fp4 on fp8 units).
COMPUTE_DTYPE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8-dynamic": "int8", "torchao-int8da8w": "int8",
                 "fp8": "fp8", "int8": "int8", "int4": "bf16", "mxfp4": "bf16", "fp4": "fp8"}


def _profile(record: Record, profile: ProfileArg) -> Optional[HardwareProfile]:
    """A profile object from an object, an id, or (``None``) the record's own hardware."""
    from effbench.hardware.catalog import HardwareProfile

    if isinstance(profile, HardwareProfile):
        return profile
    from effbench.errors import EffbenchError
    from effbench.hardware import get_profile

    # Never measures and never looks at this machine: a record's hardware is what it stored (its
    # profile id in the catalog); callers with the run's stored profile pass it in.
    name = profile if isinstance(profile, str) else record.hardware.profile
    if not name:
        return None
    try:
        return get_profile(name, measure=False, local=isinstance(profile, str))
    except EffbenchError:
        return None


def weights_bytes(record: Record) -> Optional[int]:
    return record.memory.weights_bytes or record.model.weights_bytes


def mean_context_tokens(record: Record) -> float:
    return record.workload.prompt_tokens + record.workload.new_tokens / 2


def kv_bytes_per_step(record: Record) -> float:
    per_token = record.memory.kv_bytes_per_token or 0
    return record.workload.batch_size * per_token * mean_context_tokens(record)


def bytes_per_step(record: Record) -> Optional[float]:
    w = weights_bytes(record)
    return None if not w else w + kv_bytes_per_step(record)


def decode_bound_tokens_per_s(record: Record, profile: ProfileArg = None) -> Optional[float]:
    """Upper bound on aggregate decode tokens/s of ``record``'s configuration on ``profile`` (a
    profile, an id, or ``None`` for the record's own hardware); ``None`` when unknown."""
    p = _profile(record, profile)
    step = bytes_per_step(record)
    if p is None or step is None:
        return None
    return record.workload.batch_size * p.bandwidth_bytes_per_s / step


def achieved_fraction(record: Record, profile: ProfileArg = None) -> Optional[float]:
    """Measured decode tokens/s as a fraction of the bound (0..1, above 1 means the bound's
    inputs are wrong, e.g. a bandwidth figure too low)."""
    measured = record.throughput.decode_tokens_per_s
    bound = decode_bound_tokens_per_s(record, profile)
    if measured is None or not bound or record.error:
        return None
    return measured / bound
