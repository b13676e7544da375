"""Energy sensors behind one interface (see ``base``), and how a name becomes a sensor."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from effbench.errors import UnsupportedError
from effbench.sensors.base import EnergyReading, EnergySensor, NullSensor, SensorInfo, Window
from effbench.sensors.estimate import EstimateSensor

SENSOR_NAMES = ("auto", "nvml", "rapl", "estimate", "none")


def _candidates(device: str) -> list[EnergySensor]:
    """Every sensor this build knows, in the order ``auto`` prefers them for ``device``."""
    return [EstimateSensor()]


def available(device: str = "cpu") -> list[SensorInfo]:
    """What ``effbench sensors`` shows: each sensor, available or not, with the reason."""
    return [s.info() for s in _candidates(device)] + [NullSensor().info()]


def create(name: str = "auto", device: str = "cpu") -> EnergySensor:
    """The sensor called ``name``; ``auto`` picks the best one that can measure ``device`` here."""
    if name not in SENSOR_NAMES:
        raise UnsupportedError(f"unknown sensor '{name}'; choose one of: {', '.join(SENSOR_NAMES)}")
    if name == "none":
        return NullSensor()
    for sensor in _candidates(device):
        info = sensor.info()
        if name == "auto" and info.available:
            return sensor
        if info.name == name:
            if not info.available:
                raise UnsupportedError(
                    f"sensor '{name}' is unavailable here: {info.reason}; use --sensor auto, estimate or none"
                )
            return sensor
    raise UnsupportedError(
        f"sensor '{name}' is unavailable here (not supported by this build); use --sensor auto, estimate or none"
    )


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
    "SENSOR_NAMES", "available", "create", "measure", "Measurement",
]
