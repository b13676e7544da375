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
    """Every sensor this build knows, in the order ``auto`` prefers them for ``device``: a GPU's own
    counter for a CUDA device, RAPL for the CPU, and an estimate only when nothing can measure."""
    from effbench.sensors.nvml import NvmlSensor
    from effbench.sensors.rapl import RaplSensor

    if device.startswith("cuda"):
        return [NvmlSensor(device), RaplSensor(), EstimateSensor(device=device)]
    # On a CPU run a GPU's power is not the workload's: NVML is there only when asked for by name.
    return [RaplSensor(), EstimateSensor(), NvmlSensor("cuda")]


def available(device: str = "cpu") -> list[SensorInfo]:
    """What ``effbench sensors`` shows: each sensor, available or not, with the reason."""
    sensors = _candidates(device)
    try:
        infos = [s.info() for s in sensors] + [NullSensor().info()]
    finally:
        for s in sensors:
            s.close()
    return sorted(infos, key=lambda i: SENSOR_NAMES.index(i.name) if i.name in SENSOR_NAMES else len(SENSOR_NAMES))


def create(name: str = "auto", device: str = "cpu") -> EnergySensor:
    """The sensor called ``name``; ``auto`` picks the best one that can measure ``device`` here."""
    if name not in SENSOR_NAMES:
        raise UnsupportedError(f"unknown sensor '{name}'; choose one of: {', '.join(SENSOR_NAMES)}")
    if name == "none":
        return NullSensor()
    sensors = _candidates(device)
    chosen: EnergySensor | None = None
    try:
        for sensor in sensors:
            info = sensor.info()
            if name == "auto" and info.available:
                chosen = sensor
                return sensor
            if info.name == name:
                if not info.available:
                    raise UnsupportedError(
                        f"sensor '{name}' is unavailable here: {info.reason}; use --sensor auto, estimate or none"
                    )
                chosen = sensor
                return sensor
    finally:
        for sensor in sensors:
            if sensor is not chosen:
                sensor.close()
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
