"""Turn a ``LoopResult`` into the record's throughput and stats sections (energy: ``energy.py``).

Every per-repeat figure's headline is the median over the kept repeats (robust to a disturbed
repeat that the interference probe did not catch); its interval is the bootstrap 95% interval of the
median (``effbench.stats.median_ci95``)."""
from __future__ import annotations

import statistics
from typing import Optional

from effbench.measure.energy import _per_call
from effbench.measure.host import INTERFERENCE_CPU_FRAC, Interference
from effbench.measure.loop import LoopResult, ci95_rel
from effbench.results.schema import Latency, Stats, Throughput
from effbench.stats import distribution_ms, spread_cv

ESTIMATOR = "median"
CI95_METHOD = "bootstrap-percentile"


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def throughput_section(r: LoopResult) -> Throughput:
    wl = r.workload
    ttft = _median(r.ttft_samples())
    full = _median(r.full_samples())
    decode = _median(r.decode_tps_samples())
    tpot = wl.batch_size / decode if decode else None  # seconds per token per sequence
    chars = r.output.chars if r.output else None
    itl = distribution_ms(r.itl_samples())
    return Throughput(
        prefill_tokens_per_s=wl.batch_size * wl.prompt_tokens / ttft if ttft else None,
        decode_tokens_per_s=decode,
        e2e_tokens_per_s=wl.batch_size * wl.new_tokens / full if full else None,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_latency_s=full,
        output_chars_per_s=chars / full if chars and full else None,
        itl_ms=Latency(**itl) if itl else None,
    )


def _disturbed(r: LoopResult, interference: Optional[Interference]) -> bool:
    """Whether the figures are disturbed: a kept repeat over the share (readmitted because too few
    were clean), or the configuration's own probe over it while no repeat was left out (repeats the
    loop left out explain the configuration's share; the kept ones are clean)."""
    if any(o is not None and o > INTERFERENCE_CPU_FRAC for o in r.other_cpu):
        return True
    return bool(interference and interference.flagged and not r.excluded)


def stats_section(r: LoopResult, warmup: int, interference: Optional[Interference]) -> Stats:
    samples = {
        "ttft_s": r.ttft_samples(),
        "e2e_latency_s": r.full_samples(),
        "decode_tokens_per_s": r.decode_tps_samples(),
    }
    joules = _per_call(r.full)
    if joules:
        samples["joules_total"] = joules
    if any(o is not None for o in r.other_cpu):
        samples["other_cpu_frac"] = [o if o is not None else 0.0 for o in r.other_cpu]
    if r.excluded:
        samples["excluded_other_cpu_frac"] = [e.other_cpu_frac for e in r.excluded]
        samples["excluded_for_gpu_process"] = [1.0 if e.reason == "gpu" else 0.0 for e in r.excluded]
        samples["excluded_e2e_latency_s"] = [e.window.seconds_per_call for e in r.excluded]
    return Stats(
        repeats=r.repeats,
        ci95_rel=ci95_rel(r.headline_samples()),
        estimator=ESTIMATOR,
        ci95_method=CI95_METHOD,
        ci_target=r.ci_target,
        spread_cv=spread_cv(r.headline_samples()),
        excluded_repeats=len(r.excluded),
        stop_reason=r.stop_reason,
        warmup=warmup,
        duration_s=r.duration_s,
        interference=_disturbed(r, interference),
        other_cpu_frac=interference.other_cpu_frac if interference else None,
        load_avg_before=interference.load_avg_before if interference else None,
        load_avg_after=interference.load_avg_after if interference else None,
        samples=samples,
    )
