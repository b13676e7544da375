"""Published reference data shipped with effbench (basis ``reference``, with its source).

Today one source: the ML.ENERGY Leaderboard v3 LLM measurements (``mlenergy``; attribution in
``ATTRIBUTION.md``). ``to_record`` turns a point into a result record of basis ``reference`` that the
planner sizes from like a serving record; the projection model is fitted to the same points.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING, Optional

from effbench.reference.mlenergy import CITATION, SOURCE, SOURCE_ID, TASKS, ReferencePoint, find, points

if TYPE_CHECKING:  # the record models load with to_record: a projection reads the points only
    from effbench.results.schema import Record

__all__ = ["CITATION", "SOURCE", "SOURCE_ID", "TASKS", "ReferencePoint", "Workload", "find", "points", "to_record",
           "workload", "records_for"]

# Weight bits of the schemes the reference data serves (mxfp4: 4-bit values plus one 8-bit scale per 32).
WEIGHT_BITS = {"bf16": 16.0, "fp8": 8.0, "mxfp4": 4.25}


@dataclass(frozen=True)
class Workload:
    """A reference task as a request shape. The published data gives output lengths only; the prompt
    lengths are effbench's assumption (stated wherever they are used)."""

    name: str
    prompt_tokens: int
    output_tokens: int  # median over the published models of their mean output length
    prompt_note: str


ASSUMED_PROMPT_TOKENS = {"lm-arena-chat": 256, "gpqa": 256, "sourcegraph-fim": 1024}


def workload(name: str, arch: Optional[str] = None) -> Workload:
    """A task's request shape; the output length is ``arch``'s own published mean on that task where the
    data has it (models differ in verbosity by 2x), else the median over the published models."""
    from effbench.errors import EffbenchError

    if name not in TASKS:
        raise EffbenchError(f"unknown workload '{name}': use one of {', '.join(TASKS)} (the reference data's tasks), "
                            "or --prompt-tokens P --output-tokens O")
    own = [p.avg_output_len for p in points() if p.task == name and arch is not None and p.arch == arch]
    outs = own or [p.avg_output_len for p in points() if p.task == name]
    whose = f"{arch}'s published mean" if own else "median of the published models"
    return Workload(name, ASSUMED_PROMPT_TOKENS[name], round(median(outs)),
                    f"{round(median(outs))} output tokens ({whose}); prompt length {ASSUMED_PROMPT_TOKENS[name]} tokens assumed "
                    "(the published data gives output lengths only)")


def to_record(p: ReferencePoint) -> Record:
    """A result record of basis ``reference``: one serving replica of ``num_gpus`` GPUs at the point's
    concurrency, with the published throughput, power, energy and inter-token latencies."""
    from effbench.results.schema import (
        BackendInfo,
        Energy,
        HardwareInfo,
        Latency,
        ModelInfo,
        QuantizationInfo,
        Record,
        ServingInfo,
        Throughput,
        WorkloadInfo,
    )

    itl = Latency(p50=p.itl_ms["p50"], p90=p.itl_ms["p90"], p95=p.itl_ms["p95"], p99=p.itl_ms["p99"])
    model_id = f"arch:{p.arch}" if p.arch else p.model_id
    return Record(
        run_id=f"reference:{SOURCE_ID}", config_id=p.key, basis="reference", source=f"{SOURCE}; {CITATION}",
        model=ModelInfo(id=model_id, source=p.model_id, params=int(p.total_params_b * 1e9)),
        backend=BackendInfo(name="vllm", version="0.11"),
        quantization=QuantizationInfo(scheme=p.scheme, weight_bits=WEIGHT_BITS.get(p.scheme)),
        workload=WorkloadInfo(batch_size=p.max_num_seqs, prompt_tokens=ASSUMED_PROMPT_TOKENS.get(p.task, 0),
                              new_tokens=round(p.avg_output_len), prompt_set=p.task),
        throughput=Throughput(decode_tokens_per_s=p.output_tokens_per_s, e2e_tokens_per_s=p.output_tokens_per_s,
                              tpot_s=p.itl_ms["p50"] / 1000),
        energy=Energy(status="reference", sensor="zeus-nvml (published)", joules_per_token=p.joules_per_token,
                      tokens_per_joule=1 / p.joules_per_token if p.joules_per_token else None,
                      joules_per_request=p.joules_per_request, mean_power_w=p.power_w,
                      basis="published GPU energy (all GPUs of the configuration), steady-state window"),
        hardware=HardwareInfo(profile=p.profile, detected_name=f"{p.num_gpus}x {p.gpu}", gpus=p.num_gpus),
        serving=ServingInfo(scenario="serving", concurrency=p.max_num_seqs, arrival="closed-loop (max_num_seqs cap)",
                            itl_ms=itl, tpot_ms=itl, output_tokens_per_s=p.output_tokens_per_s,
                            achieved_rate=p.output_tokens_per_s / p.avg_output_len if p.avg_output_len else None,
                            mean_output_tokens=p.avg_output_len,
                            engine={"name": "vllm", "max_num_seqs": p.max_num_seqs, "avg_batch_size": p.avg_batch_size,
                                    "tensor_parallel": p.tensor_parallel, "expert_parallel": p.expert_parallel}),
    )


def records_for(arch_name: Optional[str] = None, task: Optional[str] = None) -> list[Record]:
    """Reference records, of one architecture (``llama-3.1-8b``) and/or task where given."""
    return [to_record(p) for p in points()
            if (arch_name is None or p.arch == arch_name) and (task is None or p.task == task)]
