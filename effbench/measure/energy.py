"""Turn the energy windows of a ``LoopResult`` into the record's ``energy`` section: total,
prefill and decode joules, per-token and per-character figures, idle-subtracted energy, and an
uncertainty that combines the repeat spread with the sensor's own (docs/method.md).

The same arithmetic runs on windows rebuilt from a finished record (``windows_from_record``), so a
power trace recorded beside a run can be attached afterwards (``effbench sensors attach``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from effbench.measure.loop import LoopResult, WindowResult
from effbench.results.schema import Energy
from effbench.sensors.base import EnergyReading
from effbench.stats import CONFIDENCE, combine_rel, mean_or_none, summarize

_STATUS_RANK = {"measured": 0, "estimated": 1, "unavailable": 2}
# Below this coverage a window's figure is flagged: a good part of it was interpolated.
LOW_COVERAGE = 0.9


def _per_call(windows: list[WindowResult]) -> list[float]:
    return [j for w in windows if (j := w.joules_per_call) is not None]


def _flags(windows: list[WindowResult]) -> list[str]:
    readings = [w.energy for w in windows]
    flags = set()
    if any(rd.error for rd in readings):
        flags.add("sensor-failed")
    if any(w.short for w in windows):
        flags.add("short-window")  # the call could not be repeated enough for the sensor (docs/method.md)
    if any(rd.coverage is not None and rd.coverage < LOW_COVERAGE for rd in readings):
        flags.add("low-coverage")
    if len({rd.status for rd in readings}) > 1:
        flags.add("mixed-status")
    for rd in readings:  # what the sensor said about itself: accuracy-unstated, mig-whole-gpu, ...
        flags.update(rd.flags)
    return sorted(flags)


def _window_entries(r: LoopResult) -> list[dict[str, Any]]:
    return [{"phase": phase, "start": w.start_unix, "end": w.end_unix, "calls": w.calls, "joules": w.energy.joules}
            for phase, ws in (("prefill", r.prefill), ("full", r.full)) for w in ws]


def _domains_per_call(windows: list[WindowResult]) -> dict[str, float]:
    usable = [w for w in windows if w.energy.joules is not None]
    if not usable:
        return {}
    names = sorted({d for w in usable for d in w.energy.joules_by_domain})
    return {d: sum(w.energy.joules_by_domain.get(d, 0.0) / w.calls for w in usable) / len(usable) for d in names}


def energy_section(r: LoopResult, idle_power_w: Optional[float]) -> Energy:
    """The energy section of one configuration's record."""
    energy = section(r.prefill, r.full, r.workload.batch_size, r.workload.new_tokens,
                     r.output.chars if r.output else None, idle_power_w)
    energy.windows = _window_entries(r)
    return energy


def apply_totals(energy: Energy, joules: float, seconds: float, tokens: float, chars: Optional[float],
                 idle_power_w: Optional[float], uncertainty_rel: Optional[float], sensor_rel: Optional[float]) -> None:
    """The figures every energy section derives from one total (an offline call's mean, a serving
    window's reading): per token, tokens per joule, per 1,000 output characters, and the
    idle-subtracted (dynamic) energy with its uncertainty. One home for both scenarios."""
    energy.confidence = CONFIDENCE
    energy.joules_total = joules
    energy.uncertainty_rel = uncertainty_rel
    if tokens > 0:
        energy.joules_per_token = joules / tokens
        energy.tokens_per_joule = tokens / joules if joules > 0 else None
    if chars:
        energy.joules_per_kchar = joules / (chars / 1000)
    if idle_power_w is None:
        return
    idle_j = idle_power_w * seconds
    energy.joules_dynamic = joules - idle_j
    # The idle power came from the same sensor: its window carries the same relative uncertainty.
    dyn_abs = (((uncertainty_rel or 0.0) * joules) ** 2 + ((sensor_rel or 0.0) * idle_j) ** 2) ** 0.5
    energy.dynamic_uncertainty_rel = dyn_abs / energy.joules_dynamic if energy.joules_dynamic > 0 else None
    if energy.joules_dynamic > 0 and tokens > 0:
        energy.tokens_per_joule_dynamic = tokens / energy.joules_dynamic


def section(prefill: list[WindowResult], full: list[WindowResult], batch_size: int, new_tokens: int,
            output_chars: Optional[int], idle_power_w: Optional[float]) -> Energy:
    readings = [w.energy for w in prefill + full]
    status = max((rd.status for rd in readings), key=_STATUS_RANK.__getitem__, default="unavailable")
    first = readings[0] if readings else None
    energy = Energy(
        status=status,
        sensor=first.sensor if first else None,
        sampling_interval_s=first.sampling_interval_s if first else None,
        coverage=min((rd.coverage for rd in readings if rd.coverage is not None), default=None),
        idle_power_w=idle_power_w,
        basis=first.basis if first else None,
        window_s=mean_or_none([rd.duration_s for rd in readings]),
        flags=_flags(prefill + full),
        output_chars=output_chars,
    )
    full_j, pre_j = _per_call(full), _per_call(prefill)
    if status == "unavailable" or not full_j or len(full_j) != len(full):
        energy.status = "unavailable"
        if any(rd.error for rd in readings):
            energy.basis = "; ".join(sorted({rd.error for rd in readings if rd.error}))
        return energy
    total = summarize(full_j)
    energy.joules_by_domain = _domains_per_call(full)
    # The spread across repeats (CI95 of the mean) and the sensor's own 95% half-width (stated
    # accuracy, unobserved share, sampling error, time resolution), at one level.
    sensor_rel = mean_or_none([rd.uncertainty_rel for rd in readings if rd.uncertainty_rel is not None])
    tokens = batch_size * new_tokens
    apply_totals(energy, total.mean, mean_or_none([w.seconds_per_call for w in full]) or 0.0, tokens, output_chars,
                 idle_power_w, combine_rel(total.ci95_rel, sensor_rel), sensor_rel)
    total_abs = (energy.uncertainty_rel or 0.0) * total.mean
    if pre_j and len(pre_j) == len(prefill):
        pre = summarize(pre_j)
        energy.joules_prefill = pre.mean
        pre_abs = (combine_rel(pre.ci95_rel, sensor_rel) or 0.0) * pre.mean
        decode = total.mean - pre.mean
        if decode < 0:
            # Prefill alone cannot cost more than prefill + decode: a sensor or timing problem. The
            # split is flagged and left out rather than clamped to a zero that looks measured.
            energy.flags = sorted(set(energy.flags) | {"impossible-split"})
        else:
            energy.joules_decode = decode
            # The difference of two figures: their absolute uncertainties add in quadrature.
            decode_abs = (total_abs ** 2 + pre_abs ** 2) ** 0.5
            energy.decode_uncertainty_rel = decode_abs / decode if decode > 0 else None
            if new_tokens > 1:
                energy.decode_joules_per_token = decode / (batch_size * (new_tokens - 1))
    if total.n < 2:  # one repeat: the spread is unknown, so the sensor's part alone would look too tight
        energy.flags = sorted(set(energy.flags) | {"single-repeat"})
    return energy


# -- re-deriving a record's energy from another source (a power trace) --------------------------

ReadWindow = Callable[[float, float], EnergyReading]


def windows_from_record(energy: Energy, read: ReadWindow, min_window_s: float = 0.0) -> tuple[list[WindowResult],
                                                                                              list[WindowResult]]:
    """The record's windows, each re-read over its [start, end] by ``read`` (prefill, full)."""
    out: dict[str, list[WindowResult]] = {"prefill": [], "full": []}
    for w in energy.windows:
        start, end, calls = float(w["start"]), float(w["end"]), int(w["calls"])
        reading = read(start, end)
        duration = end - start
        out[w["phase"]].append(WindowResult(duration / calls, calls, reading, duration < min_window_s, start, end))
    return out["prefill"], out["full"]


def reattributed(energy: Energy, batch_size: int, new_tokens: int, read: ReadWindow,
                 idle_power_w: Optional[float], min_window_s: float = 0.0) -> Energy:
    """A record's energy section recomputed from ``read`` over the same windows."""
    if not energy.windows:
        raise ValueError("the record has no energy windows (written before effbench recorded them)")
    prefill, full = windows_from_record(energy, read, min_window_s)
    new = section(prefill, full, batch_size, new_tokens, energy.output_chars, idle_power_w)
    new.windows = [{**w, "joules": wr.energy.joules} for w, wr in zip(energy.windows, _in_record_order(energy, prefill, full))]
    return new


def _in_record_order(energy: Energy, prefill: list[WindowResult], full: list[WindowResult]) -> list[WindowResult]:
    it = {"prefill": iter(prefill), "full": iter(full)}
    return [next(it[w["phase"]]) for w in energy.windows]
