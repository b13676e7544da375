"""Drive simulated sensors through one window on simulated time."""
from __future__ import annotations

from typing import Optional

from effbench.sensors.nvml import NvmlSensor
from effbench.sensors.simulated import FakeGpu, FakeNvml, SimClock, Waveform


def ideal_gpu(waveform: Waveform, **kw) -> FakeGpu:
    """A sensor that observes all of every 100 ms period and publishes that period's mean (a V100:
    instantaneous power usage; its observed share and accuracy are unstated)."""
    kw.setdefault("name", "Tesla V100-SXM2-16GB")
    return FakeGpu(waveform, sense_s=0.1, average_s=0.1, **kw)


def nvml_sensor(gpus: list[FakeGpu], clock: SimClock, polling: bool, env: Optional[dict] = None, **kw) -> NvmlSensor:
    return NvmlSensor("cuda", nvml=FakeNvml(gpus, clock), clock=clock, threaded=False, force_polling=polling,
                      env={} if env is None else env, **kw)


def run_window(sensor: NvmlSensor, clock: SimClock, seconds: float, step: float = 0.1):
    """Open a window, let ``seconds`` pass in ``step``s (polling each step), close it."""
    window = sensor.start_window()
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
        if not sensor.counter_mode:
            sensor.poller().sample()
    return window.stop()
