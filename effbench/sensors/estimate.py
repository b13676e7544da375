"""Estimated energy when no sensor can measure: TDP x utilisation, as codecarbon does without RAPL.

Every reading is ``status="estimated"`` and states its basis; the uncertainty is deliberately large.
"""
from __future__ import annotations

import os
import time

import psutil

from effbench.sensors.base import EnergyReading, EnergySensor, SensorInfo, Window

# Without a hardware profile we assume this much power per logical CPU at full load (codecarbon's
# fallback is a constant per-thread figure of the same order).
DEFAULT_WATTS_PER_CPU = 10.0
# TDP x utilisation ignores idle power, turbo and memory: +-50% is an honest stated accuracy.
ESTIMATE_UNCERTAINTY_REL = 0.5


class _EstimateWindow(Window):
    def __init__(self, sensor: "EstimateSensor") -> None:
        self._sensor = sensor
        self._proc = psutil.Process(os.getpid())
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu_seconds()

    def _cpu_seconds(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> EnergyReading:
        duration = time.perf_counter() - self._t0
        cpu_s = max(0.0, self._cpu_seconds() - self._cpu0)
        n_cpu = self._sensor.logical_cpus
        util = min(1.0, cpu_s / (duration * n_cpu)) if duration > 0 else 0.0
        joules = self._sensor.cpu_tdp_w * util * duration
        return EnergyReading(
            status="estimated",
            sensor="estimate",
            duration_s=duration,
            joules_by_domain={"cpu:estimate": joules},
            uncertainty_rel=ESTIMATE_UNCERTAINTY_REL,
            basis=(
                f"CPU TDP {self._sensor.cpu_tdp_w:.0f} W ({self._sensor.tdp_source}) x this process's "
                f"CPU utilisation {util:.0%} of {n_cpu} logical CPUs"
            ),
        )


class EstimateSensor(EnergySensor):
    """TDP x process utilisation. Never a measurement; always says so."""

    name = "estimate"

    def __init__(self, cpu_tdp_w: float | None = None, tdp_source: str | None = None) -> None:
        self.logical_cpus = psutil.cpu_count(logical=True) or 1
        if cpu_tdp_w is None:
            cpu_tdp_w = DEFAULT_WATTS_PER_CPU * self.logical_cpus
            tdp_source = tdp_source or f"assumed {DEFAULT_WATTS_PER_CPU:.0f} W per logical CPU"
        self.cpu_tdp_w = float(cpu_tdp_w)
        self.tdp_source = tdp_source or "hardware profile"

    def info(self) -> SensorInfo:
        return SensorInfo(
            name="estimate",
            kind="estimate",
            available=True,
            reason=f"estimated, not measured: CPU TDP {self.cpu_tdp_w:.0f} W ({self.tdp_source}) x utilisation",
            domains=("cpu:estimate",),
            update_period_s=None,
            accuracy_rel=ESTIMATE_UNCERTAINTY_REL,
        )

    def start_window(self) -> Window:
        return _EstimateWindow(self)
