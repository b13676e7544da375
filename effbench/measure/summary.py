"""Turn a ``LoopResult`` into the record's throughput and stats sections (energy: ``energy.py``)."""
from __future__ import annotations

from typing import Optional

from effbench.measure.host import Interference
from effbench.measure.energy import _per_call
from effbench.measure.loop import LoopResult
from effbench.stats import mean_or_none, summarize
from effbench.results.schema import Stats, Throughput


def throughput_section(r: LoopResult) -> Throughput:
    wl = r.workload
    ttft = mean_or_none(r.ttft_samples())
    full = mean_or_none(r.full_samples())
    decode = mean_or_none(r.decode_tps_samples())
    tpot = wl.batch_size / decode if decode else None  # seconds per token per sequence
    chars = r.output.chars if r.output else None
    return Throughput(
        prefill_tokens_per_s=wl.batch_size * wl.prompt_tokens / ttft if ttft else None,
        decode_tokens_per_s=decode,
        e2e_tokens_per_s=wl.batch_size * wl.new_tokens / full if full else None,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_latency_s=full,
        output_chars_per_s=chars / full if chars and full else None,
    )


def stats_section(r: LoopResult, warmup: int, interference: Optional[Interference]) -> Stats:
    decode = r.decode_tps_samples()
    headline = decode or [1 / s for s in r.full_samples()]
    samples = {
        "ttft_s": r.ttft_samples(),
        "e2e_latency_s": r.full_samples(),
        "decode_tokens_per_s": decode,
    }
    joules = _per_call(r.full)
    if joules:
        samples["joules_total"] = joules
    return Stats(
        repeats=r.repeats,
        ci95_rel=summarize(headline).ci95_rel if headline else None,
        stop_reason=r.stop_reason,
        warmup=warmup,
        duration_s=r.duration_s,
        interference=bool(interference and interference.flagged),
        other_cpu_frac=interference.other_cpu_frac if interference else None,
        load_avg_before=interference.load_avg_before if interference else None,
        load_avg_after=interference.load_avg_after if interference else None,
        samples=samples,
    )
