"""NVIDIA GPUs through NVML (``pynvml`` from nvidia-ml-py): one domain ``gpu:N`` per visible GPU.

Volta and newer GPUs have a total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ): a
window is the counter's difference and needs no sampling thread (brief rule 1). Older GPUs are
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
from dataclasses import dataclass
from typing import Any, Callable, Optional

from effbench.errors import UnsupportedError
from effbench.sensors.base import (
    EnergyReading, EnergySensor, SensorInfo, Window, observed_reading, unavailable_reading,
)
from effbench.sensors.poller import Polled, PolledWindow, Poller, describe_error

# NVML publishes power and energy about every 100 ms on recent GPUs; poll at that rate.
UPDATE_PERIOD_S = 0.1
# NVIDIA states board power readings to about +-5%.
ACCURACY_REL = 0.05
# nvmlDeviceGetPowerUsage averages over 1 s on Ampere and newer: a polled window is that blurry.
POWER_USAGE_AVERAGE_S = 1.0

_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def visible_indices(env: Optional[str], uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs CUDA shows, in CUDA order. Like CUDA, parsing stops at the first
    entry that names no GPU; an unset variable shows every GPU."""
    if env is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for token in (t.strip() for t in env.split(",")):
        if token.lstrip("-").isdigit():
            index = int(token)
            if not 0 <= index < len(uuids):
                break
        else:  # a full UUID or a unique prefix, with or without "GPU-"
            matches = [i for i, u in enumerate(uuids) if token and (u.startswith(token) or u.startswith("GPU-" + token))]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out


@dataclass
class Gpu:
    domain: str  # "gpu:N", N the CUDA index
    nvml_index: int
    handle: Any
    uuid: str
    name: str
    has_counter: bool
    has_instant: bool


class NvmlDevices:
    """An initialised NVML with the GPUs one effbench device string selects."""

    def __init__(self, nvml: Any, gpus: list[Gpu], own_init: bool) -> None:
        self.nv = nvml
        self.gpus = gpus
        self._own_init = own_init

    @classmethod
    def open(cls, device: str = "cuda", nvml: Any = None, env: Optional[dict[str, str]] = None) -> "NvmlDevices":
        """Raises ``UnsupportedError`` with a one-line reason when NVML cannot measure here."""
        nv = nvml if nvml is not None else _import_pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            raise UnsupportedError(_init_failure(nv, e)) from None
        try:
            gpus = _select(nv, device, os.environ if env is None else env)
        except BaseException:
            _shutdown(nv)
            raise
        return cls(nv, gpus, own_init=True)

    def power_w(self, gpu: Gpu) -> float:
        if gpu.has_instant:
            value = self.nv.nvmlDeviceGetFieldValues(gpu.handle, [self.nv.NVML_FI_DEV_POWER_INSTANT])[0]
            if value.nvmlReturn == 0:
                return float(getattr(value.value, _VALUE_ATTR.get(value.valueType, "uiVal"))) / 1000.0
        return self.nv.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0

    def energy_mj(self, gpu: Gpu) -> int:
        return int(self.nv.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))

    def utilization(self, gpu: Gpu) -> float:
        return float(self.nv.nvmlDeviceGetUtilizationRates(gpu.handle).gpu) / 100.0

    def power_limit_w(self, gpu: Gpu) -> Optional[float]:
        mw = self._try(self.nv.nvmlDeviceGetEnforcedPowerLimit, gpu.handle)
        return None if mw is None else mw / 1000.0

    def _try(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - NotSupported etc.: the fact is simply unknown
            return None

    def environment(self) -> dict:
        nv = self.nv
        gpus = []
        for g in self.gpus:
            clock = lambda fn, kind: self._try(getattr(nv, fn), g.handle, getattr(nv, kind))  # noqa: E731
            default_mw = self._try(nv.nvmlDeviceGetPowerManagementDefaultLimit, g.handle)
            persistence = self._try(nv.nvmlDeviceGetPersistenceMode, g.handle)
            gpus.append({
                "domain": g.domain, "nvml_index": g.nvml_index, "uuid": g.uuid, "name": g.name,
                "power_limit_w": self.power_limit_w(g),
                "default_power_limit_w": None if default_mw is None else default_mw / 1000.0,
                "clocks_mhz": {"sm": clock("nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
                               "mem": clock("nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM")},
                "max_clocks_mhz": {"sm": clock("nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),
                                   "mem": clock("nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_MEM")},
                "temperature_c": self._try(nv.nvmlDeviceGetTemperature, g.handle, nv.NVML_TEMPERATURE_GPU),
                "persistence_mode": None if persistence is None else bool(persistence),
                "energy_counter": g.has_counter,
                "power_source": _power_source(g),
            })
        driver = self._try(nv.nvmlSystemGetDriverVersion)
        return {"driver": None if driver is None else _text(driver), "gpus": gpus}

    def close(self) -> None:
        if self._own_init:
            self._own_init = False
            _shutdown(self.nv)


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise UnsupportedError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    return pynvml


def _init_failure(nv: Any, e: Exception) -> str:
    code = getattr(e, "value", None)
    if code == getattr(nv, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
        return "no NVIDIA driver on this machine (NVML library libnvidia-ml.so not found)"
    if code == getattr(nv, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
        return "the NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded)"
    return f"NVML failed to start ({describe_error(e)})"


def _shutdown(nv: Any) -> None:
    try:
        nv.nvmlShutdown()
    except Exception:  # noqa: BLE001 - nothing useful to do about a failing shutdown
        pass


def _select(nv: Any, device: str, env: dict[str, str]) -> list[Gpu]:
    count = nv.nvmlDeviceGetCount()
    if count == 0:
        raise UnsupportedError("NVML sees no NVIDIA GPU")
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    visible = visible_indices(cvd, uuids)
    if not visible:
        raise UnsupportedError(f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU")
    wanted = list(enumerate(visible))
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        if not index.isdigit() or int(index) >= len(visible):
            raise UnsupportedError(f"{device} is not a visible GPU ({len(visible)} visible)")
        wanted = [wanted[int(index)]]
    return [_probe(nv, cuda_i, nvml_i, handles[nvml_i], uuids[nvml_i]) for cuda_i, nvml_i in wanted]


def _probe(nv: Any, cuda_index: int, nvml_index: int, handle: Any, uuid: str) -> Gpu:
    """What this GPU can report: an energy counter (Volta+), the instantaneous power field."""
    try:
        nv.nvmlDeviceGetTotalEnergyConsumption(handle)
        has_counter = True
    except nv.NVMLError:
        has_counter = False
    try:
        field = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
        has_instant = field.nvmlReturn == 0
    except (nv.NVMLError, AttributeError):
        has_instant = False
    return Gpu(f"gpu:{cuda_index}", nvml_index, handle, uuid, _text(nv.nvmlDeviceGetName(handle)), has_counter, has_instant)


def _power_source(g: Gpu, polling: bool = False) -> str:
    if g.has_counter and not polling:
        return "total energy counter"
    return "instantaneous power field" if g.has_instant else "power usage (1 s average on Ampere+)"


class _CounterWindow(Window):
    """The difference of each GPU's energy counter; no thread, no sampling."""

    def __init__(self, sensor: "NvmlSensor") -> None:
        self._sensor = sensor
        self._t0 = sensor.clock()
        self._e0, self._error = sensor._counters()

    def stop(self) -> EnergyReading:
        e1, error = self._sensor._counters()
        duration = self._sensor.clock() - self._t0
        error = self._error or error
        if error:
            return unavailable_reading("nvml", duration, f"NVML energy counter failed mid-window: {error}")
        joules = {d: (e1[d] - self._e0[d]) / 1000.0 for d in e1}
        return observed_reading(
            "nvml", duration, joules, accuracy_rel=ACCURACY_REL, coverage=1.0,
            resolution_s=UPDATE_PERIOD_S, basis="NVML total energy counter",
        )


class NvmlSensor(EnergySensor):
    """GPU energy from NVML. ``nvml`` is the ``pynvml`` module or a stand-in (``simulated.FakeNvml``);
    ``clock``, ``threaded`` and ``env`` are injectable so tests run on simulated time."""

    name = "nvml"
    auto_for = ("cuda",)  # on a CPU run a GPU's power is not the workload's: NVML only when asked by name
    auto_rank = 0

    @classmethod
    def for_device(cls, device: str) -> "NvmlSensor":
        return cls(device if device.startswith("cuda") else "cuda")

    def __init__(self, device: str = "cuda", nvml: Any = None, clock: Callable[[], float] = time.monotonic,
                 threaded: bool = True, poll_interval_s: float = UPDATE_PERIOD_S, force_polling: bool = False,
                 env: Optional[dict[str, str]] = None) -> None:
        self.device = device
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._nvml, self._env, self._threaded, self._force_polling = nvml, env, threaded, force_polling
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

    def info(self) -> SensorInfo:
        try:
            devices = self._open()
        except UnsupportedError as e:
            return SensorInfo("nvml", "energy-counter", False, str(e), accuracy_rel=ACCURACY_REL)
        names = ", ".join(f"{g.domain} {g.name}" for g in devices.gpus)
        if self.counter_mode:
            kind, how = "energy-counter", "NVML total energy counter"
        else:
            kind = "power-polling"
            how = f"NVML power polled every {self.poll_interval_s * 1000:.0f} ms ({_power_source(devices.gpus[0], polling=True)})"
        return SensorInfo("nvml", kind, True, f"{how} on {names}", tuple(g.domain for g in devices.gpus),
                          UPDATE_PERIOD_S, ACCURACY_REL)

    def _counters(self) -> tuple[dict[str, int], Optional[str]]:
        devices = self._open()
        try:
            return {g.domain: devices.energy_mj(g) for g in devices.gpus}, None
        except Exception as e:  # noqa: BLE001 - a lost GPU ends this window, not the sweep
            return {}, describe_error(e)

    def _read_power(self) -> dict[str, float]:
        devices = self._open()
        return {g.domain: devices.power_w(g) for g in devices.gpus}

    def poller(self) -> Poller:
        if self._poller is None:
            self._poller = Poller(self._read_power, self.poll_interval_s, self.clock, self._threaded)
        return self._poller

    def _polled_reading(self, polled: Polled) -> EnergyReading:
        devices = self._open()
        averaged = any(not g.has_instant for g in devices.gpus)
        reading = polled.reading("nvml", ACCURACY_REL, basis=f"NVML power polled, {_power_source(devices.gpus[0], polling=True)}",
                                 domains=tuple(g.domain for g in devices.gpus))
        if averaged and reading.status == "measured":
            # A 1 s moving average blurs each edge of the window by up to that much.
            reading.uncertainty_rel = observed_reading(
                "nvml", reading.duration_s, {}, accuracy_rel=ACCURACY_REL, coverage=reading.coverage,
                resolution_s=max(POWER_USAGE_AVERAGE_S, self.poll_interval_s)).uncertainty_rel
        return reading

    def start_window(self) -> Window:
        if self.counter_mode:
            return _CounterWindow(self)
        return PolledWindow(self.poller(), self._polled_reading)

    def environment(self) -> dict:
        try:
            return self._open().environment()
        except UnsupportedError as e:
            return {"nvml": f"unavailable: {e}"}

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._devices is not None:
            self._devices.close()
            self._devices = None
