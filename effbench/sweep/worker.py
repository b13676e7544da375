"""The worker: measures one group wherever a launcher runs it (this process, a child process, a
SLURM job, a Ray task) and emits events; it never touches the run directory.

Every scenario runs the same way (``effbench.scenarios.base``): the scenario places the group on a
device and opens it (loads the model, or starts or reaches a server) once; for each point it may
skip it, else it measures it and the worker emits the record. A group that cannot open is a record
with ``error`` for each point; so is a configuration that fails.
"""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, Optional

from effbench.environment import now_iso
from effbench.errors import EffbenchError
from effbench.hardware import Detected, detect, profile_for, resolve_profile_id
from effbench.launchers.base import Sink
from effbench.models.arch import record_fields
from effbench.quant import get_scheme
from effbench.registry import install
from effbench.results.schema import (
    BackendInfo,
    GpuInfo,
    HardwareInfo,
    ModelInfo,
    QuantizationInfo,
    Record,
    WorkloadInfo,
)
from effbench.scenarios import CannotRun, Context, Group, Opened, Point, Scenario, create_scenario, scenario_class
from effbench.sensors import EnergySensor
from effbench.sensors import create as create_sensor
from effbench.sensors.base import min_window_s
from effbench.sweep.plan import GroupSpec

if TYPE_CHECKING:
    from effbench.hardware.gpu_control import GpuControl


def measure_idle(sensor: EnergySensor, seconds: float, notify: Any = None) -> Optional[dict[str, Any]]:
    """Idle power (docs/method.md), over at least WINDOW_PERIODS sensor periods like any energy window.
    Skipped for estimates: TDP x ~0% says nothing."""
    info = sensor.info()
    if seconds <= 0 or info.kind in ("estimate", "none"):
        return None
    if notify:
        notify(f"measuring idle power for {seconds:.0f} s ({info.name})")
    seconds = max(seconds, min_window_s(info))
    window = sensor.start_window()
    start_unix = time.time()
    time.sleep(seconds)
    end_unix = time.time()
    reading = window.stop()
    # The wall-clock bounds let 'effbench sensors attach' take the idle power from a trace too.
    bounds = {"start_unix": start_unix, "end_unix": end_unix, "host": socket.gethostname()}
    if reading.joules is None:
        return {"status": reading.status, "error": reading.error, **bounds}
    return {"power_w": reading.mean_power_w, "duration_s": reading.duration_s, "sensor": reading.sensor,
            "status": reading.status, "coverage": reading.coverage, "uncertainty_rel": reading.uncertainty_rel,
            "power_by_domain_w": {d: j / reading.duration_s for d, j in reading.joules_by_domain.items()},
            **bounds}


def hardware_block(profile_id: Optional[str], device: str, detected: Optional[Detected] = None) -> dict[str, Any]:
    """The hardware this process measures on, with its profile written out in full (bandwidth, TDP,
    prices as of now), so reports and plans made on another machine need not find it again.
    ``detected``: what the caller already detected, ``profile_id`` then being resolved against it."""
    if detected is None:
        detected = detect(device)
        profile_id = resolve_profile_id(profile_id, detected)
    profile = profile_id
    block: dict[str, Any] = {"profile": profile, "detected_name": detected.name, "kind": detected.kind,
                             "host": socket.gethostname()}
    try:
        resolved = profile_for(profile, detected.name, measure=True)
    except EffbenchError as e:
        block["resolved_error"] = str(e)
        return block
    block["resolved"] = resolved.model_dump(mode="json") if resolved else None
    return block


class GroupWorker:
    def __init__(self, group: GroupSpec, emit: Sink) -> None:
        self.group, self.emit, self.config = group, emit, group.config
        self.scheme = get_scheme(group.scheme)
        self.device = group.device
        self.hardware = group.hardware
        self.idle_power_w: Optional[float] = None
        self.opened = Opened(version=None, threads=self.config.threads,
                             model=ModelInfo(id=group.spec.id, source=group.spec.source, **record_fields(group.spec.kind)))
        self.gpu_control: Optional[GpuControl] = None  # set when the sweep sets GPU limits/clocks
        self._gpu_setting: Optional[tuple[Optional[float], Optional[int]]] = None  # (power_limit_w, gpu_clock_mhz) in force now

    # -- records -----------------------------------------------------------------------------
    def record(self, p: Point, **sections: Any) -> Record:
        hw = self.hardware or {}
        o = self.opened
        return Record(
            run_id=self.group.run_id, config_id=p.config_id, created_at=now_iso(),
            model=o.model,
            backend=BackendInfo(name=self.group.backend, version=o.version, device=self.device, threads=o.threads,
                                compile=p.compile),
            quantization=QuantizationInfo(scheme=self.scheme.name, weight_bits=self.scheme.weight_bits,
                                          library=self.scheme.library, note=o.quant_note),
            workload=WorkloadInfo(batch_size=p.batch_size, prompt_tokens=p.prompt_tokens, new_tokens=p.new_tokens,
                                  prompt_set=p.prompt_set),
            hardware=HardwareInfo(profile=hw.get("profile"), detected_name=hw.get("detected_name")),
            **({"quality": o.quality} if o.quality is not None and "quality" not in sections else {}),
            **{k: v for k, v in scenario_class(p.scenario).point_sections(self.config, p).items() if k not in sections},
            **sections,
        )

    def finish(self, p: Point, record: Record, gpu: Optional[GpuInfo] = None) -> None:
        if gpu is not None:
            stats = record.stats
            if gpu.other_processes:  # another process on the GPU shares its counter and its SMs (docs/method.md)
                stats = stats.model_copy(update={"interference": True})
            record = record.model_copy(update={"gpu": gpu, "stats": stats})
        self.emit(("record", record.to_json_dict()))

    # -- GPU settings and activity (--power-limits, --gpu-clocks; docs/method.md) --------------
    def _gpu_before(self, p: Point, sensor: EnergySensor) -> Optional[GpuInfo]:
        """Apply this point's power limit / locked clock (read back), and note who else is on the GPU."""
        applied = None
        if self.gpu_control is not None:
            setting = (p.power_limit_w, p.gpu_clock_mhz)
            if setting != self._gpu_setting:
                self._message(f"GPU settings: {p.power_limit_w or 'unchanged'} W, {p.gpu_clock_mhz or 'unchanged'} MHz")
                self.gpu_control.apply(*setting)
                self._gpu_setting = setting
            in_force = list(self.gpu_control.in_force().values())
            applied = in_force[0] if in_force else None
        seen = sensor.interference()
        if applied is None and not seen:
            return None
        return GpuInfo(power_limit_w=applied.power_limit_w if applied else None,
                       sm_clock_mhz=applied.sm_clock_mhz if applied else None,
                       requested_power_limit_w=p.power_limit_w, requested_sm_clock_mhz=p.gpu_clock_mhz,
                       other_processes=seen.get("gpu_other_processes", []),
                       utilization_before=seen.get("gpu_utilization_before", {}))

    def _open_gpu_control(self) -> None:
        if not (self.config.gpu.power_limits or self.config.gpu.gpu_clocks) or self.gpu_control is not None:
            return
        from effbench.sensors.nvml import open_gpu_control

        # The parent saved the originals in the run directory; this process only applies and reads back.
        self.gpu_control = open_gpu_control(self.device)

    def _close_gpu_control(self) -> None:
        if self.gpu_control is not None:
            self.gpu_control.close()
            self.gpu_control = None

    def _message(self, text: str) -> None:
        self.emit(("message", text))

    def fail_all(self, points: list[Point], error: str) -> None:
        for p in points:
            self.finish(p, self.record(p, error=error))

    # -- the group: one path for every scenario ------------------------------------------------
    def run(self) -> None:
        g = self.group
        scenario = create_scenario(self.config.scenario, self.config)
        try:
            try:
                self.device = scenario.place(g.backend, g.device)
            except CannotRun as e:
                self.opened.version = e.version
                return self.fail_all(g.points, e.error)
            sensor = self._start_host()
            try:
                self._open_gpu_control()
                try:
                    self.opened = scenario.open(Group(g.spec, self.scheme, g.backend, self.device, self.config.threads,
                                                      self.config.seed, sensor, self._message))
                except CannotRun as e:
                    self.opened.version = e.version
                    return self.fail_all(g.points, e.error)
                for p in g.points:
                    self._run_point(scenario, sensor, p)
            finally:
                self._close_gpu_control()
                sensor.close()
        finally:
            scenario.close()

    def _run_point(self, scenario: Scenario, sensor: EnergySensor, p: Point) -> None:
        skip = scenario.skip_reason(p)
        if skip:
            return self.finish(p, self.record(p, error=skip))
        self.emit(("started", p.config_id))
        gpu = self._gpu_before(p, sensor)
        ctx = Context(sensor=sensor, idle_power_w=self.idle_power_w, grid=self.group.grid,
                      engine=scenario.engine, loaded=scenario.loaded,
                      on_repeat=lambda n: self.emit(("repeat", p.config_id, n)))
        try:
            record = self.record(p, **scenario.measure(p, ctx))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one configuration that fails is its record's error
            record = self.record(p, error=scenario.error_of(e))
        scenario.observe(p, record.error)
        self.finish(p, record, gpu)

    def _start_host(self) -> EnergySensor:
        """Sensor, hardware and idle baseline of the machine this worker runs on."""
        g = self.group
        sensor = create_sensor(self.config.sensor, self.device)
        host = socket.gethostname()
        idle = None
        if host in g.idle_power_w:
            self.idle_power_w = g.idle_power_w[host]
        else:  # a host the parent has not measured (a SLURM node, a Ray worker): measure it here
            idle = measure_idle(sensor, self.config.idle_s, self._message)
            self.idle_power_w = idle.get("power_w") if idle else None
        if self.hardware is None:
            self.hardware = hardware_block((g.target.hardware if g.target else None) or self.config.hardware, self.device)
            self.emit(("host", {**self.hardware, "target": g.target_name, "sensor": sensor.info().to_dict(),
                                "idle_baseline": idle}))
        return sensor


def run_group(group: GroupSpec, emit: Sink) -> None:
    """The worker entry point every launcher runs (module level, so it pickles). The parent's run-time
    registrations come first: a spawned process, a SLURM job or a Ray task starts without them."""
    install(group.plugins)
    GroupWorker(group, emit).run()
