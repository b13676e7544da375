"""Energy sensors behind one interface (see ``base``), and how a name becomes a sensor."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from effbench.errors import ConfigError, UnsupportedError
from effbench.registry import Registry
from effbench.sensors.base import WINDOW_PERIODS, EnergyReading, EnergySensor, NullSensor, SensorInfo, Window
from effbench.sensors.base import min_window_s as base_min_window_s
from effbench.sensors.estimate import EstimateSensor

# The one registry pattern (effbench.registry). Each sensor class says which device types ``auto``
# may use it for and how much it is preferred there (``auto_for``, ``auto_rank``); nothing here
# knows which sensor is better for what.
SENSORS: Registry[type[EnergySensor]] = Registry("sensor", {
    "nvml": "effbench.sensors.nvml:NvmlSensor",
    "rapl": "effbench.sensors.rapl:RaplSensor",
    "estimate": EstimateSensor,
    "none": NullSensor,
}, group="effbench.sensors")
AUTO = "auto"
SENSOR_NAMES = (AUTO, *SENSORS.entries)  # the built-ins (names() also lists installed plugins)


def canonical_sensor_name(name: str) -> str:
    """``auto`` or a registered sensor's name; unknown names are a ``ConfigError`` with the choices."""
    key = str(name).strip().lower()
    if key == AUTO:
        return key
    try:
        return SENSORS.canonical(key)
    except ConfigError as e:
        raise ConfigError(str(e).replace("choose one of: ", f"choose one of: {AUTO}, ")) from None


def register_sensor(name: str, sensor: type[EnergySensor], replace: bool = False) -> None:
    """Add a sensor (plugins, tests); set its ``auto_for``/``auto_rank`` to let ``auto`` pick it. A name
    already taken is an error unless ``replace``; installed packages use the ``effbench.sensors`` entry points."""
    SENSORS.register(name, sensor, replace=replace)


def _measuring(device: str) -> list[EnergySensor]:
    """One instance of every sensor that can measure, set up for ``device``."""
    return [SENSORS.get(n).for_device(device) for n in SENSORS.names() if n != NullSensor.name]


def _auto_order(sensors: list[EnergySensor], device: str) -> list[EnergySensor]:
    kind = device.partition(":")[0]
    return sorted((s for s in sensors if kind in s.auto_for), key=lambda s: s.auto_rank)


def available(device: str = "cpu") -> list[SensorInfo]:
    """What ``effbench sensors`` shows: each sensor, available or not, with the reason."""
    sensors = _measuring(device)
    try:
        infos = [s.info() for s in sensors] + [NullSensor().info()]
    finally:
        for s in sensors:
            s.close()
    return infos


def create(name: str = AUTO, device: str = "cpu") -> EnergySensor:
    """The sensor called ``name``; ``auto`` picks the best one that can measure ``device`` here."""
    try:
        name = canonical_sensor_name(name)
    except ConfigError as e:
        raise UnsupportedError(str(e)) from None
    if name == NullSensor.name:
        return NullSensor()
    if name != AUTO:
        sensor = SENSORS.get(name).for_device(device)
        info = sensor.info()
        if not info.available:
            sensor.close()
            raise UnsupportedError(f"sensor '{name}' is unavailable here: {info.reason}; use --sensor auto, estimate or none")
        return sensor
    sensors = _measuring(device)
    chosen: EnergySensor | None = None
    why: list[str] = []
    try:
        for s in _auto_order(sensors, device):
            info = s.info()
            if info.available:
                chosen = s
                break
            why.append(f"{info.name}: {info.reason}")
    finally:
        for sensor in sensors:
            if sensor is not chosen:
                sensor.close()
    if chosen is None and device.partition(":")[0] == "cuda":
        # docs/method.md "Sensors": a GPU's energy comes only from a GPU sensor. The run goes on, its energy
        # unavailable with the reason, rather than passing the CPU's energy off as the GPU's.
        return NullSensor(f"GPU energy unavailable: no GPU sensor can measure {device} here ({'; '.join(why)})")
    if chosen is None:
        raise UnsupportedError(f"no sensor can measure {device} here; use --sensor none")
    return chosen


@dataclass
class Measurement:
    """Filled when the ``measure`` block exits. ``calls``: how many times ``measure_call`` ran the
    function inside the window (the reading is the whole window's; ``per_call_joules`` divides)."""

    result: EnergyReading | None = None
    calls: int = 1

    @property
    def per_call_joules(self) -> float | None:
        j = self.result.joules if self.result else None
        return None if j is None else j / self.calls


def min_window_s(sensor: EnergySensor) -> float:
    """The shortest window this sensor can measure (sensors.base.min_window_s)."""
    return base_min_window_s(sensor.info())


def _checked(reading: EnergyReading, minimum_s: float) -> EnergyReading:
    """A window shorter than the sensor's minimum is not a measurement: an energy counter may not
    have moved at all (0 J for real work). Flagged, and ``unavailable`` with what to do."""
    if minimum_s <= 0 or reading.duration_s >= minimum_s or reading.status == "unavailable":
        return reading
    reading.flags = sorted(set(reading.flags) | {"short-window"})
    reading.error = (f"the window lasted {reading.duration_s * 1000:.0f} ms, shorter than {WINDOW_PERIODS} "
                     f"sensor periods ({minimum_s:.2f} s): repeat the work inside one window "
                     "(effbench.sensors.measure_call does) to measure it")
    reading.status = "unavailable"
    reading.joules_by_domain = {}
    return reading


@contextmanager
def measure(sensor: str | EnergySensor = "auto", device: str = "cpu") -> Iterator[Measurement]:
    """``with measure() as m: work()`` then ``m.result`` holds joules per domain, duration, status,
    coverage and the 95% uncertainty. A block shorter than 10 sensor periods is flagged
    ``short-window`` and ``unavailable`` (use ``measure_call`` to repeat short work)."""
    own = not isinstance(sensor, EnergySensor)
    s = sensor if isinstance(sensor, EnergySensor) else create(sensor, device)
    m = Measurement()
    minimum = min_window_s(s)
    window = s.start_window()
    try:
        yield m
    finally:
        m.result = _checked(window.stop(), minimum)
        if own:
            s.close()


def measure_call(fn: Callable[[], object], sensor: str | EnergySensor = "auto", device: str = "cpu",
                 sync: Callable[[], object] | None = None, max_calls: int = 1_000_000) -> Measurement:
    """Run ``fn`` repeatedly inside one window until it spans 10 sensor periods; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before the window closes so queued device work is inside it."""
    own = not isinstance(sensor, EnergySensor)
    s = sensor if isinstance(sensor, EnergySensor) else create(sensor, device)
    try:
        minimum = min_window_s(s)
        m = Measurement(calls=0)
        clock = getattr(s, "clock", time.perf_counter)  # the sensor's own time (simulated in tests)
        t0 = clock()
        window = s.start_window()
        while m.calls < max_calls:
            fn()
            m.calls += 1
            if sync is not None:
                sync()
            if clock() - t0 >= minimum:
                break
        m.result = _checked(window.stop(), minimum)
        return m
    finally:
        if own:
            s.close()


__all__ = [
    "EnergyReading", "EnergySensor", "SensorInfo", "Window", "NullSensor", "EstimateSensor",
    "SENSORS", "SENSOR_NAMES", "available", "canonical_sensor_name", "create", "measure", "measure_call", "min_window_s",
    "Measurement",
    "register_sensor",
]
