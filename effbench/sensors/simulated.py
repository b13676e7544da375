"""Simulated power hardware for tests (there is no GPU and no RAPL on the development machines).

- Waveforms with an exact energy integral (constant, square/spiky pulses, ramp), so an
  integrated figure can be checked against the analytic truth.
- ``FakeNvml``: a module-like stand-in for ``pynvml`` driven by a waveform and a clock, with a
  per-generation sensor model (``FakeGpu.of(name)``): the power sensor observes only part of each
  update period (``sense_s`` of every ``update_period_s``: 25 ms of 100 ms on A100/H100),
  ``nvmlDeviceGetPowerUsage`` is instantaneous on GA100 and older and a 1 s average on later
  GPUs, so polling can miss spikes; the energy counter moves once per update period (true energy
  up to the last update, or with ``counter_sensed`` the sensed power only) and can be reset
  (``counter_reset_at``, a driver reload). It can lose the GPU at a set time, drop power reads in
  given intervals, answer NotSupported/NoPermission per call (``errors``), be in MIG mode with
  MIG devices, list running processes, and take power-limit and locked-clock settings (root only,
  within the GPU's range; read back as in force). It plugs in at the device layer
  (``effbench.device.nvidia``), the only code that calls NVML: passed as ``nvml`` to a sensor,
  ``NvidiaGPUs.open``, ``open_gpu_control`` or ``restore_pending``, or, for code that takes no such
  argument (detection, the environment block), installed with ``effbench.device.plugged(fake)``.
- ``FakePowercap``: writes a ``/sys/class/powercap``-like tree whose ``energy_uj`` files follow a
  waveform and wrap around at ``max_energy_range_uj``.
- ``nvidia_smi_csv``: the CSV ``nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv -lms N``
  would log for a waveform.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional, Protocol, Sequence


class Waveform(Protocol):
    def power(self, t: float) -> float: ...

    def energy(self, t0: float, t1: float) -> float: ...


class SimClock:
    """Time that moves only when told to."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass(frozen=True)
class Constant:
    watts: float

    def power(self, t: float) -> float:
        return self.watts

    def energy(self, t0: float, t1: float) -> float:
        return self.watts * (t1 - t0)


@dataclass(frozen=True)
class Pulses:
    """``low`` watts with ``high`` for ``on_s`` at the start of every ``period_s`` (after ``phase_s``).
    A square wave is on for half the period; spikes are short and tall."""

    low: float
    high: float
    period_s: float
    on_s: float
    phase_s: float = 0.0

    def power(self, t: float) -> float:
        return self.high if (t - self.phase_s) % self.period_s < self.on_s else self.low

    def _cumulative(self, t: float) -> float:
        u = t - self.phase_s
        n = math.floor(u / self.period_s)
        on_time = n * self.on_s + min(u - n * self.period_s, self.on_s)
        return self.low * t + (self.high - self.low) * on_time

    def energy(self, t0: float, t1: float) -> float:
        return self._cumulative(t1) - self._cumulative(t0)


def square(low: float, high: float, period_s: float) -> Pulses:
    return Pulses(low, high, period_s, period_s / 2)


def spiky(base: float, spike: float, period_s: float, width_s: float, phase_s: float = 0.0) -> Pulses:
    return Pulses(base, spike, period_s, width_s, phase_s)


@dataclass(frozen=True)
class Ramp:
    """Linear from ``w0`` at ``t_start`` to ``w1`` at ``t_start + duration_s``, held outside."""

    w0: float
    w1: float
    duration_s: float
    t_start: float = 0.0

    def power(self, t: float) -> float:
        x = min(max((t - self.t_start) / self.duration_s, 0.0), 1.0)
        return self.w0 + (self.w1 - self.w0) * x

    def _cumulative(self, t: float) -> float:
        u = t - self.t_start
        if u <= 0:
            return self.w0 * u
        if u <= self.duration_s:
            return self.w0 * u + (self.w1 - self.w0) * u * u / (2 * self.duration_s)
        return (self.w0 + self.w1) * self.duration_s / 2 + self.w1 * (u - self.duration_s)

    def energy(self, t0: float, t1: float) -> float:
        return self._cumulative(t1) - self._cumulative(t0)


class Bursts:
    """``base`` watts with bursts ``(start, end, watts)`` on top of it (non-overlapping, sorted):
    a random bursty load with an exact integral (``random_bursts`` draws one)."""

    def __init__(self, base: float, bursts: Sequence[tuple[float, float, float]]) -> None:
        self.base = float(base)
        arr = sorted((float(a), float(b), float(w)) for a, b, w in bursts)
        self.starts = [a for a, _, _ in arr]
        self.ends = [b for _, b, _ in arr]
        self.extra = [w - self.base for _, _, w in arr]
        self._cum = [0.0]  # extra energy of all bursts before each index
        for a, b, x in zip(self.starts, self.ends, self.extra):
            self._cum.append(self._cum[-1] + (b - a) * x)

    def power(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        return self.base + (self.extra[i] if i >= 0 and t < self.ends[i] else 0.0)

    def _cumulative(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        extra = self._cum[i] if i >= 0 else 0.0
        if i >= 0:
            extra += (min(t, self.ends[i]) - self.starts[i]) * self.extra[i]
        return self.base * t + extra

    def energy(self, t0: float, t1: float) -> float:
        return self._cumulative(t1) - self._cumulative(t0)


def random_bursts(rng, t_end: float, base: float, peak: float, min_s: float = 0.005, max_s: float = 0.5,
                  mean_gap_s: float = 0.2) -> Bursts:
    """Bursts of ``min_s``..``max_s`` (log-uniform) at random phases (exponential gaps) up to
    ``t_end``, each at a random height between the base and ``peak``. ``rng``: numpy Generator."""
    bursts, t = [], float(rng.uniform(0.0, mean_gap_s))
    while t < t_end:
        width = float(math.exp(rng.uniform(math.log(min_s), math.log(max_s))))
        bursts.append((t, t + width, float(rng.uniform(base, peak))))
        t += width + float(rng.exponential(mean_gap_s)) + 1e-6
    return Bursts(base, bursts)


# -- NVML --------------------------------------------------------------------------------------

class FakeNVMLError(Exception):
    """Shaped like ``pynvml.NVMLError``: ``value`` is the NVML return code."""

    _TEXT = {3: "Not Supported", 4: "Insufficient Permissions", 9: "Driver Not Loaded",
             12: "NVML Shared Library Not Found", 15: "GPU is lost", 2: "Invalid Argument"}

    def __init__(self, value: int) -> None:
        super().__init__(self._TEXT.get(value, f"NVML error {value}"))
        self.value = value


@dataclass
class FakeMig:
    """A MIG device (slice) of a FakeGpu."""

    uuid: str
    profile: str = "1g.10gb"


@dataclass
class FakeProcess:
    pid: int
    usedGpuMemory: Optional[int] = None  # bytes, as pynvml names it


@dataclass
class FakeGpu:
    waveform: Waveform
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    has_counter: bool = True
    has_instant: bool = True
    update_period_s: float = 0.1
    sense_s: float = 0.025  # A100/H100 observe ~25% of each update period
    average_s: float = 1.0  # nvmlDeviceGetPowerUsage is a 1 s average on Ampere (except GA100) and newer
    fail_at: Optional[float] = None  # the GPU is lost from this time on
    missing: Sequence[tuple[float, float]] = ()  # power reads fail inside these intervals
    power_limit_w: float = 700.0
    utilization: float = 50.0  # percent, for the estimate
    counter_offset_mj: int = 123_456_789  # the counter counts since the driver loaded
    counter_sensed: bool = False  # the counter accumulates the sensed power, not the true energy
    counter_reset_at: Optional[float] = None  # the driver reloads: the counter restarts from 0 here
    errors: dict = field(default_factory=dict)  # NVML call name -> return code it raises
    mig_mode: Optional[bool] = None  # None: no MIG support (NotSupported)
    migs: list = field(default_factory=list)  # FakeMig devices when in MIG mode
    processes: list = field(default_factory=list)  # FakeProcess running on the GPU
    # Settable limits and clocks (nvmlDeviceSetPowerManagementLimit, nvmlDeviceSetGpuLockedClocks).
    min_power_limit_w: float = 200.0
    max_power_limit_w: float = 700.0
    default_power_limit_w: float = 700.0
    sm_clock_mhz: int = 1755
    max_sm_clock_mhz: int = 1980
    supported_sm_clocks: Sequence[int] = ()  # empty: any clock up to the maximum
    locked_sm_clocks: Optional[tuple[int, int]] = None

    @classmethod
    def of(cls, name: str, waveform: Waveform, **kw) -> "FakeGpu":
        """A GPU whose sensor behaves like its generation's (``generations.generation_of``): duty
        cycle where published (else the whole period), averaging of nvmlDeviceGetPowerUsage."""
        from effbench.sensors.generations import generation_of

        gen = generation_of(name)
        period = kw.pop("update_period_s", gen.update_period_s)
        sense = period * (gen.duty if gen.duty is not None else 1.0)
        average = gen.power_usage_average_s or period
        return cls(waveform, name=name, update_period_s=period, sense_s=kw.pop("sense_s", sense),
                   average_s=kw.pop("average_s", average), **kw)

    def sensed(self, tick: int) -> float:
        """Mean power the device observed in update period ``tick`` (over its first ``sense_s``)."""
        t0 = tick * self.update_period_s
        return self.waveform.energy(t0, t0 + self.sense_s) / self.sense_s

    def last_tick(self, t: float) -> int:
        # The value published at the end of period k covers [k*T, k*T + sense_s].
        return math.floor(t / self.update_period_s + 1e-9) - 1

    def counter_mj(self, t: float) -> int:
        """The energy counter at time ``t``: it moves once per update period."""
        base, offset = 0.0, self.counter_offset_mj
        if self.counter_reset_at is not None and t >= self.counter_reset_at:
            base, offset = self.counter_reset_at, 0
        ticks = math.floor(t / self.update_period_s + 1e-9)
        t_pub = ticks * self.update_period_s
        if self.counter_sensed:
            first = math.ceil(base / self.update_period_s - 1e-9)
            joules = sum(self.sensed(k) for k in range(first, ticks)) * self.update_period_s
        else:
            joules = self.waveform.energy(base, max(base, t_pub))
        return offset + int(joules * 1000)


@dataclass
class _FieldValue:
    fieldId: int
    nvmlReturn: int
    valueType: int
    value: "_Value"


@dataclass
class _Value:
    uiVal: int = 0
    dVal: float = 0.0


@dataclass
class _Util:
    gpu: int
    memory: int


class FakeNvml:
    """The parts of ``pynvml`` effbench uses, for GPUs in ``gpus``; time comes from ``clock``."""

    NVML_SUCCESS = 0
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVMLError = FakeNVMLError

    def __init__(self, gpus: Sequence[FakeGpu], clock: SimClock, init_error: Optional[int] = None,
                 driver: str = "580.65.06", root: bool = True) -> None:
        self.gpus = list(gpus)
        self.clock = clock
        self.init_error = init_error
        self.driver = driver
        self.root = root  # setters need root (NoPermission otherwise), as on a real driver
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        for gpu in self.gpus:  # a call-specific error set on any GPU (tests use one GPU for these)
            if name in gpu.errors:
                raise FakeNVMLError(gpu.errors[name])

    def _gpu(self, handle: int, power_read: bool = False) -> FakeGpu:
        gpu = self.gpus[handle]
        t = self.clock()
        if gpu.fail_at is not None and t >= gpu.fail_at:
            raise FakeNVMLError(self.NVML_ERROR_GPU_IS_LOST)
        if power_read and any(a <= t < b for a, b in gpu.missing):
            raise FakeNVMLError(self.NVML_ERROR_GPU_IS_LOST)
        return gpu

    # library
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(2)
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str):
        for i, g in enumerate(self.gpus):
            if g.uuid == uuid:
                return i
            for j, m in enumerate(g.migs):
                if m.uuid == uuid:
                    return ("mig", i, j)
        raise FakeNVMLError(6)

    # MIG
    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        gpu = self.gpus[h]
        if gpu.mig_mode is None:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return [int(gpu.mig_mode), int(gpu.mig_mode)]  # [current, pending]

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h) -> int:
        if not isinstance(h, tuple):
            raise FakeNVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        return h[1]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[FakeProcess]:
        self._count("nvmlDeviceGetComputeRunningProcesses")
        return list(self._gpu(h).processes)

    # device facts
    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.gpus[h].uuid

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.gpus[h].name.encode()  # older pynvml returns bytes; the sensor must cope

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return int(self._gpu(h).power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: int) -> int:
        return int(self._gpu(h).default_power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: int) -> list[int]:
        g = self._gpu(h)
        return [int(g.min_power_limit_w * 1000), int(g.max_power_limit_w * 1000)]

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        g = self._gpu(h)
        sm = g.locked_sm_clocks[1] if g.locked_sm_clocks else g.sm_clock_mhz
        return {0: sm, 1: sm, 2: 2619}[kind]

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        g = self._gpu(h)
        return {0: g.max_sm_clock_mhz, 1: g.max_sm_clock_mhz, 2: 2619}[kind]

    # setters (root only)
    def _settable(self, h: int, name: str) -> FakeGpu:
        self._count(name)
        if not self.root:
            raise FakeNVMLError(self.NVML_ERROR_NO_PERMISSION)
        return self._gpu(h)

    def nvmlDeviceSetPowerManagementLimit(self, h: int, limit_mw: int) -> None:
        g = self._settable(h, "nvmlDeviceSetPowerManagementLimit")
        if not g.min_power_limit_w * 1000 <= limit_mw <= g.max_power_limit_w * 1000:
            raise FakeNVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        g.power_limit_w = limit_mw / 1000.0

    def nvmlDeviceSetGpuLockedClocks(self, h: int, min_mhz: int, max_mhz: int) -> None:
        g = self._settable(h, "nvmlDeviceSetGpuLockedClocks")
        if not 0 < min_mhz <= max_mhz <= g.max_sm_clock_mhz:
            raise FakeNVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        if g.supported_sm_clocks:  # the driver rounds to the nearest supported clock at or below
            below = [c for c in g.supported_sm_clocks if c <= max_mhz] or [min(g.supported_sm_clocks)]
            max_mhz = min_mhz = max(below)
        g.locked_sm_clocks = (min_mhz, max_mhz)

    def nvmlDeviceResetGpuLockedClocks(self, h: int) -> None:
        g = self._settable(h, "nvmlDeviceResetGpuLockedClocks")
        g.locked_sm_clocks = None

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 41

    def nvmlDeviceGetPersistenceMode(self, h: int) -> int:
        return 1

    def nvmlDeviceGetUtilizationRates(self, h: int) -> _Util:
        self._count("nvmlDeviceGetUtilizationRates")
        return _Util(int(self._gpu(h, power_read=True).utilization), 10)

    # power and energy
    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        gpu = self._gpu(h)
        if not gpu.has_counter:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return gpu.counter_mj(self.clock())

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        gpu = self._gpu(h, power_read=True)
        last = gpu.last_tick(self.clock())
        n = max(1, round(gpu.average_s / gpu.update_period_s))
        ticks = range(last - n + 1, last + 1)
        return int(sum(gpu.sensed(k) for k in ticks) / n * 1000)

    def nvmlDeviceGetFieldValues(self, h: int, field_ids: Sequence[int]) -> list[_FieldValue]:
        self._count("nvmlDeviceGetFieldValues")
        gpu = self._gpu(h, power_read=True)
        out = []
        for fid in field_ids:
            if fid == self.NVML_FI_DEV_POWER_INSTANT and gpu.has_instant:
                mw = int(gpu.sensed(gpu.last_tick(self.clock())) * 1000)
                out.append(_FieldValue(fid, 0, self.NVML_VALUE_TYPE_UNSIGNED_INT, _Value(uiVal=mw)))
            else:
                out.append(_FieldValue(fid, self.NVML_ERROR_NOT_SUPPORTED, 0, _Value()))
        return out


# -- RAPL --------------------------------------------------------------------------------------

@dataclass
class FakeZone:
    path: str  # e.g. "intel-rapl:0" or "intel-rapl:0:0"
    name: str  # e.g. "package-0", "dram", "core"
    waveform: Waveform
    max_energy_range_uj: int = 262_143_328_850
    offset_uj: int = 0  # the counter's value at t = 0


@dataclass
class FakePowercap:
    """A powercap tree under ``root``; ``update(t)`` rewrites every ``energy_uj`` for time ``t``."""

    root: Path
    zones: list[FakeZone] = field(default_factory=list)
    readable: bool = True

    def write(self, t: float = 0.0) -> "FakePowercap":
        for z in self.zones:
            d = self.root / z.path
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(z.name + "\n")
            (d / "max_energy_range_uj").write_text(f"{z.max_energy_range_uj}\n")
        self.update(t)
        if not self.readable:
            for z in self.zones:
                (self.root / z.path / "energy_uj").chmod(0)
        return self

    def update(self, t: float) -> None:
        for z in self.zones:
            uj = (z.offset_uj + int(z.waveform.energy(0.0, t) * 1e6)) % z.max_energy_range_uj
            (self.root / z.path / "energy_uj").write_text(f"{uj}\n")


# -- traces ------------------------------------------------------------------------------------

def nvidia_smi_csv(waveforms: Sequence[Waveform], t0_unix: float, seconds: float, interval_s: float,
                   header: bool = True) -> str:
    """What ``nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv -lms N`` logs: one row per
    GPU per sample, local-time timestamps with milliseconds, values like ``71.23 W``."""
    lines = ["timestamp, index, power.draw [W]"] if header else []
    n = int(round(seconds / interval_s))
    for k in range(n + 1):
        t = t0_unix + k * interval_s
        stamp = datetime.fromtimestamp(round(t, 3)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        for i, w in enumerate(waveforms):
            lines.append(f"{stamp}, {i}, {w.power(t - t0_unix):.2f} W")
    return "\n".join(lines) + "\n"
