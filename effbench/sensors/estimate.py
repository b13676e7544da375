"""Estimated energy when no sensor can measure: TDP x utilisation, as codecarbon does without RAPL.

- CPU: the package TDP (a hardware profile's, codecarbon's CPU table where the model is listed,
  else an assumed figure per logical CPU) x this process's CPU utilisation over the window.
- GPU (a CUDA device, where NVML answers): each GPU's power limit x its NVML utilisation, polled
  during the window.

Every reading is ``status="estimated"`` and states its basis; the uncertainty is deliberately large.
"""
from __future__ import annotations

import csv
import importlib.util
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import psutil

from effbench.cputime import workload_cpu_seconds
from effbench.errors import UnsupportedError
from effbench.sensors.base import EnergyReading, EnergySensor, SensorInfo, Window
from effbench.sensors.poller import Polled, Poller

if TYPE_CHECKING:  # pragma: no cover - NVML loads only for a CUDA device
    from effbench.sensors.nvml import NvmlDevices

# Without a hardware profile or a listed CPU we assume this much power per logical CPU at full load
# (codecarbon's fallback is a constant per-thread figure of the same order).
DEFAULT_WATTS_PER_CPU = 10.0
# TDP x utilisation ignores idle power, turbo and memory: +-50% is an honest stated accuracy.
ESTIMATE_UNCERTAINTY_REL = 0.5
# NVML utilisation is itself an average over 1/6 s to 1 s: sampling faster adds nothing.
GPU_UTIL_POLL_S = 0.2


def _normalise_cpu(name: str) -> str:
    s = re.sub(r"\((R|TM|tm|r)\)", " ", name)
    s = re.sub(r"@.*$", " ", s)
    s = re.sub(r"\b(CPU|Processor|\d+-Core)\b", " ", s, flags=re.IGNORECASE)
    return " ".join(s.split()).lower()


def codecarbon_cpu_tdp(model: str) -> Optional[float]:
    """The TDP codecarbon's CPU table lists for ``model`` (exact model match), if codecarbon is installed."""
    spec = importlib.util.find_spec("codecarbon")  # locates the package without importing it
    if not spec or not spec.submodule_search_locations or not model:
        return None
    table = Path(next(iter(spec.submodule_search_locations))) / "data" / "hardware" / "cpu_power.csv"
    wanted = _normalise_cpu(model)
    try:
        with table.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if _normalise_cpu(row.get("Name", "")) == wanted:
                    return float(row["TDP"])
    except (OSError, ValueError, KeyError):
        return None
    return None


class _EstimateWindow(Window):
    def __init__(self, sensor: "EstimateSensor") -> None:
        self._sensor = sensor
        self._others = list(sensor.pids)
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu_seconds()
        self._gpu_poller = sensor._gpu_poller
        self._gpu_token = self._gpu_poller.begin() if self._gpu_poller else None

    def _cpu_seconds(self) -> float:
        return workload_cpu_seconds(self._others)

    def stop(self) -> EnergyReading:
        s = self._sensor
        duration = time.perf_counter() - self._t0
        joules: dict[str, float] = {}
        basis: list[str] = []
        if s.cpu:
            cpu_s = max(0.0, self._cpu_seconds() - self._cpu0)
            util = min(1.0, cpu_s / (duration * s.logical_cpus)) if duration > 0 else 0.0
            joules["cpu:estimate"] = s.cpu_tdp_w * util * duration
            whose = "this process's and the engine's" if self._others else "this process's"
            basis.append(f"CPU TDP {s.cpu_tdp_w:.0f} W ({s.tdp_source}) x {whose} CPU utilisation "
                         f"{util:.0%} of {s.logical_cpus} logical CPUs")
        coverage, interval, error = None, None, None
        if self._gpu_poller is not None and self._gpu_token is not None:
            polled: Polled = self._gpu_poller.end(self._gpu_token)
            gpu = polled.reading("estimate", ESTIMATE_UNCERTAINTY_REL, status="estimated")
            duration = gpu.duration_s if not s.cpu else duration
            joules.update(gpu.joules_by_domain)
            coverage, interval, error = gpu.coverage, gpu.sampling_interval_s, gpu.error
            basis.append(f"GPU power limit x NVML utilisation polled every {self._gpu_poller.interval_s * 1000:.0f} ms")
        basis.append(f"covers {', '.join(sorted(joules)) or 'nothing'}")
        return EnergyReading(
            status="estimated" if joules else "unavailable", sensor="estimate", duration_s=duration,
            joules_by_domain=joules, sampling_interval_s=interval, coverage=coverage,
            uncertainty_rel=ESTIMATE_UNCERTAINTY_REL, basis="; ".join(basis) or None, error=error,
        )


class EstimateSensor(EnergySensor):
    """TDP x utilisation. Never a measurement; always says so.

    ``device`` starting with ``cuda`` adds the GPUs NVML can see; ``nvml``, ``clock`` and ``threaded``
    are injectable for tests (``cpu=False`` leaves the CPU part out)."""

    name = "estimate"
    auto_for = ("cpu", "cuda")
    auto_rank = 90  # only when nothing can measure

    @classmethod
    def for_device(cls, device: str) -> "EstimateSensor":
        return cls(device=device)

    pids: list[int]  # the engine's processes, whose CPU time counts with this process's

    def attribute(self, pids: list[int]) -> None:
        self.pids = list(pids)

    def __init__(self, cpu_tdp_w: Optional[float] = None, tdp_source: Optional[str] = None, device: str = "cpu",
                 nvml: Any = None, clock: Callable[[], float] = time.monotonic, threaded: bool = True,
                 cpu: bool = True) -> None:
        self.cpu = cpu
        self.device = device
        self.pids = []
        self.logical_cpus = psutil.cpu_count(logical=True) or 1
        if cpu_tdp_w is None:
            from effbench.hardware.cpu import cpu_name  # the one /proc/cpuinfo reader

            model = cpu_name()
            listed = codecarbon_cpu_tdp(model)
            if listed is not None:
                cpu_tdp_w, tdp_source = listed, f"codecarbon's CPU table for {model}"
            else:
                cpu_tdp_w = DEFAULT_WATTS_PER_CPU * self.logical_cpus
                tdp_source = tdp_source or f"assumed {DEFAULT_WATTS_PER_CPU:.0f} W per logical CPU"
        self.cpu_tdp_w = float(cpu_tdp_w)
        self.tdp_source = tdp_source or "hardware profile"
        self._gpus: Optional[NvmlDevices] = None
        self._gpu_poller: Optional[Poller] = None
        self.gpu_note = ""
        if device.startswith("cuda"):
            self._open_gpus(device, nvml, clock, threaded)

    def _open_gpus(self, device: str, nvml: Any, clock: Callable[[], float], threaded: bool) -> None:
        from effbench.sensors.nvml import NvmlDevices

        try:
            self._gpus = NvmlDevices.open(device, nvml)
        except UnsupportedError as e:
            self.gpu_note = f"; GPU not estimated ({e})"
            return
        gpus = self._gpus

        def read() -> dict[str, float]:
            return {g.domain: (gpus.power_limit_w(g) or 0.0) * gpus.utilization(g) for g in gpus.gpus}

        self._gpu_poller = Poller(read, GPU_UTIL_POLL_S, clock, threaded)

    def info(self) -> SensorInfo:
        if self.device.startswith("cuda") and self._gpus is None:
            # A GPU run's estimate must cover the GPU (docs/method.md): CPU TDP x utilisation is not it.
            return SensorInfo(name="estimate", kind="estimate", available=False,
                              reason=f"cannot estimate the GPU{self.gpu_note.replace('; GPU not estimated', '')}: "
                                     "a GPU run's energy is not the CPU's", accuracy_rel=ESTIMATE_UNCERTAINTY_REL)
        domains = (("cpu:estimate",) if self.cpu else ()) + tuple(g.domain for g in (self._gpus.gpus if self._gpus else []))
        gpu = " + GPU power limit x NVML utilisation" if self._gpus else ""
        return SensorInfo(
            name="estimate",
            kind="estimate",
            available=True,
            reason=(f"estimated, not measured: CPU TDP {self.cpu_tdp_w:.0f} W ({self.tdp_source}) x utilisation"
                    f"{gpu}{self.gpu_note}"),
            domains=domains,
            # Polled GPU utilisation needs windows of several polls; the CPU figure needs none.
            update_period_s=GPU_UTIL_POLL_S if self._gpus else None,
            accuracy_rel=ESTIMATE_UNCERTAINTY_REL,
        )

    def start_window(self) -> Window:
        return _EstimateWindow(self)

    def close(self) -> None:
        if self._gpu_poller is not None:
            self._gpu_poller.close()
        if self._gpus is not None:
            self._gpus.close()
