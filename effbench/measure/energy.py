"""Turn the energy windows of a ``LoopResult`` into the record's ``energy`` section: total,
prefill and decode joules, per-token and per-character figures, idle-subtracted energy, and an
uncertainty that combines the repeat spread with the sensor's own (brief rules 4, 5, 7, 8)."""
from __future__ import annotations

from typing import Optional

from effbench.measure.loop import LoopResult, WindowResult
from effbench.measure.stats import combine_rel, summarize
from effbench.results.schema import Energy

_STATUS_RANK = {"measured": 0, "estimated": 1, "unavailable": 2}


def _mean(xs: list[float]) -> Optional[float]:
    return summarize(xs).mean if xs else None


def _per_call(windows: list[WindowResult]) -> list[float]:
    return [j for w in windows if (j := w.joules_per_call) is not None]


def energy_section(r: LoopResult, idle_power_w: Optional[float]) -> Energy:
    readings = [w.energy for w in r.prefill + r.full]
    status = max((rd.status for rd in readings), key=_STATUS_RANK.__getitem__, default="unavailable")
    first = readings[0] if readings else None
    flags = sorted({"sensor-failed" for rd in readings if rd.error} | {"short-window" for w in r.prefill + r.full if w.short})
    energy = Energy(
        status=status,
        sensor=first.sensor if first else None,
        sampling_interval_s=first.sampling_interval_s if first else None,
        coverage=min((rd.coverage for rd in readings if rd.coverage is not None), default=None),
        idle_power_w=idle_power_w,
        basis=first.basis if first else None,
        window_s=_mean([rd.duration_s for rd in readings]),
        flags=flags,
    )
    full_j, pre_j = _per_call(r.full), _per_call(r.prefill)
    if status == "unavailable" or not full_j or len(full_j) != len(r.full):
        energy.status = "unavailable"
        if any(rd.error for rd in readings):
            energy.basis = "; ".join(sorted({rd.error for rd in readings if rd.error}))
        return energy
    wl = r.workload
    total = summarize(full_j)
    energy.joules_total = total.mean
    tokens = wl.batch_size * wl.new_tokens
    energy.joules_per_token = total.mean / tokens
    energy.tokens_per_joule = tokens / total.mean if total.mean > 0 else None
    if pre_j and len(pre_j) == len(r.prefill):
        energy.joules_prefill = summarize(pre_j).mean
        energy.joules_decode = max(0.0, total.mean - energy.joules_prefill)
        if wl.new_tokens > 1:
            energy.decode_joules_per_token = energy.joules_decode / (wl.batch_size * (wl.new_tokens - 1))
    if r.output and r.output.chars:
        energy.joules_per_kchar = total.mean / (r.output.chars / 1000)
    if idle_power_w is not None:
        energy.joules_dynamic = total.mean - idle_power_w * _mean(r.full_samples())
    sensor_rel = _mean([rd.uncertainty_rel for rd in readings if rd.uncertainty_rel is not None])
    energy.uncertainty_rel = combine_rel(total.ci95_rel, sensor_rel)
    return energy
