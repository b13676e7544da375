"""Energy sensors behind one interface (see ``base``), and how a name becomes a sensor."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from effbench.errors import ConfigError, UnsupportedError
from effbench.registry import Registry
from effbench.sensors.base import EnergyReading, EnergySensor, NullSensor, SensorInfo, Window
from effbench.sensors.estimate import EstimateSensor

# The one registry pattern (effbench.registry). Each sensor class says which device types ``auto``
# may use it for and how much it is preferred there (``auto_for``, ``auto_rank``); nothing here
# knows which sensor is better for what.
SENSORS: Registry[type[EnergySensor]] = Registry("sensor", {
    "nvml": "effbench.sensors.nvml:NvmlSensor",
    "rapl": "effbench.sensors.rapl:RaplSensor",
    "estimate": EstimateSensor,
    "none": NullSensor,
})
AUTO = "auto"
SENSOR_NAMES = (AUTO, *SENSORS.names())


def canonical_sensor_name(name: str) -> str:
    """``auto`` or a registered sensor's name; unknown names are a ``ConfigError`` with the choices."""
    key = str(name).strip().lower()
    if key == AUTO:
        return key
    try:
        return SENSORS.canonical(key)
    except ConfigError as e:
        raise ConfigError(str(e).replace("choose one of: ", f"choose one of: {AUTO}, ")) from None


def register_sensor(name: str, sensor: type[EnergySensor]) -> None:
    """Add a sensor (plugins, tests); set its ``auto_for``/``auto_rank`` to let ``auto`` pick it."""
    SENSORS.register(name, sensor)


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
        # Brief rule 15: a GPU's energy comes only from a GPU sensor. The run goes on, its energy
        # unavailable with the reason, rather than passing the CPU's energy off as the GPU's.
        return NullSensor(f"GPU energy unavailable: no GPU sensor can measure {device} here ({'; '.join(why)})")
    if chosen is None:
        raise UnsupportedError(f"no sensor can measure {device} here; use --sensor none")
    return chosen


@dataclass
class Measurement:
    """Filled when the ``measure`` block exits."""

    result: EnergyReading | None = None


@contextmanager
def measure(sensor: str | EnergySensor = "auto", device: str = "cpu") -> Iterator[Measurement]:
    """``with measure() as m: work()`` then ``m.result`` holds joules per domain, duration, status."""
    own = not isinstance(sensor, EnergySensor)
    s = create(sensor, device) if own else sensor
    m = Measurement()
    window = s.start_window()
    try:
        yield m
    finally:
        m.result = window.stop()
        if own:
            s.close()


__all__ = [
    "EnergyReading", "EnergySensor", "SensorInfo", "Window", "NullSensor", "EstimateSensor",
    "SENSORS", "SENSOR_NAMES", "available", "canonical_sensor_name", "create", "measure", "Measurement",
    "register_sensor",
]
