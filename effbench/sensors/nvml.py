"""NVIDIA GPUs through NVML: one domain ``gpu:N`` per visible GPU. The GPUs, their counters and
power readings come from the device layer (``effbench.device.nvidia``: NVML session, selection under
``CUDA_VISIBLE_DEVICES`` and MIG, typed errors); this module turns them into energy windows.

Volta and newer GPUs have a total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ): a
window is the counter's difference and needs no sampling thread (docs/method.md). Older GPUs are
polled in a background thread and integrated by trapezoid. Polling prefers the instantaneous power
field (``NVML_FI_DEV_POWER_INSTANT``, newer drivers) over ``nvmlDeviceGetPowerUsage``, which on
Ampere and newer is a 1 s average, and on A100/H100 the sensor observes only ~25% of each 100 ms
period ("Part-time Power Measurements", Yang et al.): polled figures carry that in their uncertainty.

``N`` in ``gpu:N`` is the CUDA index: ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) is respected. CUDA
orders devices fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NVML orders by PCI bus, so on a
machine with mixed GPUs set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or use UUIDs.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any, Callable, Optional

from effbench.device.nvidia import NvidiaDevice, NvidiaGPUs
from effbench.device.nvidia import visible_indices as visible_indices  # re-exported: its name here predates the device layer
from effbench.errors import UnsupportedError
from effbench.sensors.base import (
    EnergyReading,
    EnergySensor,
    SensorInfo,
    Window,
    observed_reading,
    unavailable_reading,
)
from effbench.sensors.generations import GENERATIONS, Generation, generation_of
from effbench.sensors.generations import UPDATE_PERIOD_S as GEN_UPDATE_PERIOD_S
from effbench.sensors.poller import Polled, PolledWindow, Poller, Sensing, describe_error

# NVML publishes power and energy about every 100 ms on recent GPUs; poll at that rate. What each
# generation's sensor observes, averages and states as accuracy lives in ``generations``.
UPDATE_PERIOD_S = GEN_UPDATE_PERIOD_S
# Only Fermi and Kepler have a stated accuracy (+-5%, NVML reference); later GPUs: unstated.
ACCURACY_REL = GENERATIONS["kepler"].accuracy_rel
# Set to 1 to measure the whole GPU for a run on a MIG slice (every slice's energy, flagged).
MIG_WHOLE_GPU_ENV = "EFFBENCH_MIG_WHOLE_GPU"

# One GPU as the sensor sees it: the device layer's.
Gpu = NvidiaDevice


@lru_cache(maxsize=64)
def _generation_named(name: str) -> Generation:
    return generation_of(name)


def _generation(g: NvidiaDevice) -> Generation:
    """What this GPU's power sensor observes, averages and states as accuracy (``generations``)."""
    return _generation_named(g.name)


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - NotSupported, a lost GPU: the fact is simply unknown
        return None


class NvmlDevices(NvidiaGPUs):
    """The GPUs one effbench device string selects (``NvidiaGPUs``), with what the sensor and the
    environment block read of them."""

    def power_w(self, gpu: NvidiaDevice) -> float:
        return gpu.power_w()

    def energy_mj(self, gpu: NvidiaDevice) -> int:
        return gpu.energy_mj()

    def utilization(self, gpu: NvidiaDevice) -> float:
        return gpu.utilization()

    def power_limit_w(self, gpu: NvidiaDevice) -> Optional[float]:
        return gpu.power_limit_w()

    def processes(self, gpu: NvidiaDevice) -> Optional[list[dict[str, Any]]]:
        """Compute processes on this GPU (pid, GPU memory in bytes); None when NVML cannot say."""
        return gpu.processes()

    def environment(self) -> dict:
        gpus = []
        for g in self.gpus:
            gen = _generation(g)
            gpus.append({
                "domain": g.domain, "nvml_index": g.nvml_index, "uuid": g.uuid, "name": g.name,
                "power_limit_w": g.power_limit_w(),
                "default_power_limit_w": g.default_power_limit_w(),
                "clocks_mhz": {"sm": g.clock_mhz("sm"), "mem": g.clock_mhz("mem")},
                "max_clocks_mhz": {"sm": g.max_clock_mhz("sm"), "mem": g.max_clock_mhz("mem")},
                "temperature_c": g.temperature_c(),
                "persistence_mode": g.persistence_mode(),
                "energy_counter": g.has_counter,
                "power_source": _power_source(g),
                "generation": gen.name,
                "sensor_semantics": gen.describe(),
                "mig_mode": g.mig_mode,
                "mig_device": g.mig_slice,
                **self._activity(g),
            })
        return {"driver": self.driver_version(), "gpus": gpus}

    def _activity(self, g: NvidiaDevice) -> dict[str, Any]:
        return {"utilization": _try(g.utilization), "processes": g.processes()}

    def interference(self, own_pids: Optional[set[int]] = None) -> dict[str, Any]:
        """Other compute processes on these GPUs and their utilisation, right now. ``flagged`` when
        another process holds a GPU (its work shares the energy counter and the SMs)."""
        own = {os.getpid()} | set(own_pids or ())
        others: list[dict[str, Any]] = []
        util: dict[str, Optional[float]] = {}
        for g in self.gpus:
            util[g.domain] = _try(g.utilization)
            for p in g.processes() or []:
                if p["pid"] not in own:
                    others.append({"gpu": g.domain, **p})
        return {"gpu_other_processes": others, "gpu_utilization_before": util, "flagged": bool(others)}


def open_gpu_control(device: str, run_dir: Any = None, nvml: Any = None, env: Optional[dict[str, str]] = None) -> Any:
    """``hardware.gpu_control.open_gpu_control`` (kept here for the callers that import it from here)."""
    from effbench.hardware.gpu_control import open_gpu_control as open_control

    return open_control(device, run_dir, nvml, env)


def _power_source(g: NvidiaDevice, polling: bool = False) -> str:
    if g.has_counter and not polling:
        return "total energy counter"
    if g.has_instant:
        return "instantaneous power field"
    avg = _generation(g).power_usage_average_s
    return f"power usage ({avg:g} s average on {_generation(g).name})" if avg else "power usage (instantaneous)"


def _flags_for(gpus: list[NvidiaDevice]) -> tuple[str, ...]:
    flags = []
    if any(not _generation(g).accuracy_stated for g in gpus):
        flags.append("accuracy-unstated")
    if any(g.mig_mode for g in gpus):
        flags.append("mig-whole-gpu")
    return tuple(flags)


def _accuracy(gpus: list[NvidiaDevice]) -> Optional[float]:
    """The stated accuracy bound of these GPUs (the worst), None when any is unstated."""
    stated = [_generation(g).accuracy_rel for g in gpus]
    return None if any(a is None for a in stated) else max(stated)  # type: ignore[type-var]


class _CounterWindow(Window):
    """The difference of each GPU's energy counter; no thread, no sampling. The power at each edge
    (one instantaneous read) bounds what the counter's ~100 ms steps at the edges can hide."""

    def __init__(self, sensor: "NvmlSensor") -> None:
        self._sensor = sensor
        self._t0 = sensor.clock()
        self._e0, self._error = sensor._counters()
        self._p0 = sensor._edge_power()

    def stop(self) -> EnergyReading:
        s = self._sensor
        e1, error = s._counters()
        p1 = s._edge_power()
        duration = s.clock() - self._t0
        error = self._error or error
        if error:
            return unavailable_reading("nvml", duration, f"NVML energy counter failed mid-window: {error}")
        fell = [d for d in e1 if e1[d] < self._e0[d]]
        if fell:
            return unavailable_reading("nvml", duration, f"the NVML energy counter of {', '.join(fell)} went down "
                                       "(a driver reload or GPU reset restarts it): this window's energy is unknown")
        joules = {d: (e1[d] - self._e0[d]) / 1000.0 for d in e1}
        gpus = s._open().gpus
        total = sum(joules.values())
        mean_w = total / duration if duration > 0 else 0.0
        edge_w = max([mean_w, *(self._p0 or {}).values(), *(p1 or {}).values()])
        # Each edge hides up to one update period of power; relative to the window that is at most
        # (period x edge power) / energy.
        period = max(_generation(g).update_period_s for g in gpus)
        resolution = period * (edge_w / mean_w if mean_w > 0 else 1.0)
        return observed_reading(
            "nvml", duration, joules, accuracy_rel=_accuracy(gpus), coverage=1.0,
            resolution_s=resolution, basis=f"NVML total energy counter ({_generations(gpus)})",
            flags=_flags_for(gpus),
        )


def _generations(gpus: list[NvidiaDevice]) -> str:
    return "; ".join(sorted({_generation(g).describe() for g in gpus}))


class NvmlSensor(EnergySensor):
    """GPU energy from NVML. ``nvml`` is the ``pynvml`` module or a stand-in (``simulated.FakeNvml``);
    ``clock``, ``threaded`` and ``env`` are injectable so tests run on simulated time.

    A GPU in MIG mode cannot be measured per slice (NVML reports power and energy for the whole
    GPU only): its windows are ``unavailable`` with that reason, unless ``mig_whole_gpu`` (or the
    ``EFFBENCH_MIG_WHOLE_GPU=1`` environment variable) asks for the whole GPU's energy, flagged."""

    name = "nvml"
    auto_for = ("cuda",)  # on a CPU run a GPU's power is not the workload's: NVML only when asked by name
    auto_rank = 0

    @classmethod
    def for_device(cls, device: str) -> "NvmlSensor":
        return cls(device if device.startswith("cuda") else "cuda")

    def __init__(self, device: str = "cuda", nvml: Any = None, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = True, poll_interval_s: float = UPDATE_PERIOD_S, force_polling: bool = False,
                 env: Optional[dict[str, str]] = None, mig_whole_gpu: Optional[bool] = None) -> None:
        self.device = device
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._nvml, self._env, self._threaded, self._force_polling = nvml, env, threaded, force_polling
        environ = os.environ if env is None else env
        self.mig_whole_gpu = (environ.get(MIG_WHOLE_GPU_ENV, "") == "1") if mig_whole_gpu is None else mig_whole_gpu
        self._devices: Optional[NvmlDevices] = None
        self._failure: Optional[str] = None
        self._poller: Optional[Poller] = None

    def _open(self) -> NvmlDevices:
        if self._devices is None:
            if self._failure:
                raise UnsupportedError(self._failure)
            try:
                self._devices = NvmlDevices.open(self.device, self._nvml, self._env)
            except UnsupportedError as e:
                self._failure = str(e)
                raise
        return self._devices

    @property
    def counter_mode(self) -> bool:
        return not self._force_polling and all(g.has_counter for g in self._open().gpus)

    def mig_refusal(self) -> Optional[str]:
        """Why this run's GPU energy cannot be measured (a MIG slice), or None."""
        if self.mig_whole_gpu:
            return None
        on_mig = [g for g in self._open().gpus if g.mig_mode]
        if not on_mig:
            return None
        where = ", ".join(f"{g.domain} {g.name}" + (f" (slice {g.mig_slice})" if g.mig_slice else "") for g in on_mig)
        return (f"{where} is in MIG mode: NVML measures only the whole GPU, not a MIG slice, so this slice's "
                f"energy is unavailable (set {MIG_WHOLE_GPU_ENV}=1 to record the whole GPU's energy, flagged)")

    def info(self) -> SensorInfo:
        try:
            devices = self._open()
        except UnsupportedError as e:
            return SensorInfo("nvml", "energy-counter", False, str(e), accuracy_rel=None, accuracy_source="unstated")
        names = ", ".join(f"{g.domain} {g.name}" for g in devices.gpus)
        if self.counter_mode:
            kind, how = "energy-counter", "NVML total energy counter"
        else:
            kind = "power-polling"
            how = f"NVML power polled every {self.poll_interval_s * 1000:.0f} ms ({_power_source(devices.gpus[0], polling=True)})"
        refusal = self.mig_refusal()
        accuracy = _accuracy(devices.gpus)
        source = "; ".join(sorted({_generation(g).accuracy_source for g in devices.gpus}))
        reason = f"{how} on {names}; {_generations(devices.gpus)}" + (f"; {refusal}" if refusal else "")
        return SensorInfo("nvml", kind, True, reason, tuple(g.domain for g in devices.gpus),
                          UPDATE_PERIOD_S, accuracy, source)

    def _counters(self) -> tuple[dict[str, int], Optional[str]]:
        devices = self._open()
        try:
            return {g.domain: g.energy_mj() for g in devices.gpus}, None
        except Exception as e:  # noqa: BLE001 - a lost GPU ends this window, not the sweep
            return {}, describe_error(e)

    def _edge_power(self) -> Optional[dict[str, float]]:
        try:
            return self._read_power()
        except Exception:  # noqa: BLE001 - the edge power only sharpens the bound; the counter decides
            return None

    def _read_power(self) -> dict[str, float]:
        devices = self._open()
        return {g.domain: g.power_w() for g in devices.gpus}

    def poller(self) -> Poller:
        if self._poller is None:
            self._poller = Poller(self._read_power, self.poll_interval_s, self.clock, self._threaded)
        return self._poller

    def _polled_reading(self, polled: Polled) -> EnergyReading:
        gpus = self._open().gpus
        g = gpus[0]
        gen = _generation(g)
        # The instantaneous field is the last update period's value; nvmlDeviceGetPowerUsage is
        # that too on GA100 and older, a 1 s average on later GPUs (generations.py).
        average = None if g.has_instant else gen.power_usage_average_s
        sensing = Sensing(gen.duty, average, gen.update_period_s)
        return polled.reading("nvml", _accuracy(gpus), basis=f"NVML power polled, {_power_source(g, polling=True)} "
                              f"({_generations(gpus)})", domains=tuple(x.domain for x in gpus), sensing=sensing,
                              flags=_flags_for(gpus) + (() if gen.duty is not None else ("duty-unstated",)))

    def start_window(self) -> Window:
        refusal = self.mig_refusal()
        if refusal:
            return _RefusedWindow(self.clock, refusal)
        if self.counter_mode:
            return _CounterWindow(self)
        if all(g.has_counter for g in self._open().gpus):
            return _CheckedPolledWindow(self)
        return PolledWindow(self.poller(), self._polled_reading)

    def environment(self) -> dict:
        try:
            return self._open().environment()
        except UnsupportedError as e:
            return {"nvml": f"unavailable: {e}"}

    def interference(self) -> dict:
        """Other processes on this run's GPUs and their utilisation now (docs/method.md)."""
        try:
            return self._open().interference()
        except UnsupportedError:
            return {}

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._devices is not None:
            self._devices.close()
            self._devices = None


class _CheckedPolledWindow(Window):
    """Polling on GPUs that also have an energy counter (polling forced, e.g. to compare them):
    the counter, read at both edges, checks the polled figure. A load whose bursts fall where a
    part-time sensor never looks (periodic at its update period) leaves the samples steady and the
    sampling estimate small; the counter sees it, and the polled interval is widened to reach it."""

    def __init__(self, sensor: "NvmlSensor") -> None:
        self._sensor = sensor
        self._e0, self._error = sensor._counters()
        self._inner = PolledWindow(sensor.poller(), sensor._polled_reading)

    def stop(self) -> EnergyReading:
        reading = self._inner.stop()
        e1, error = self._sensor._counters()
        if self._error or error or reading.joules is None or not reading.joules:
            return reading
        counted = sum(e1[d] - self._e0[d] for d in e1) / 1000.0
        if counted < 0:
            return reading
        gap = abs(reading.joules - counted) / reading.joules
        if gap > (reading.uncertainty_rel or 0.0):
            reading.uncertainty_rel = gap * (1.0 + 1e-9)
            reading.flags = sorted(set(reading.flags) | {"polling-disagrees-with-counter"})
            reading.basis = (reading.basis or "") + f"; the energy counter read {counted:.1f} J over the same window"
        return reading


class _RefusedWindow(Window):
    def __init__(self, clock: Callable[[], float], reason: str) -> None:
        self._clock, self._t0, self._reason = clock, clock(), reason

    def stop(self) -> EnergyReading:
        return unavailable_reading("nvml", self._clock() - self._t0, self._reason)
