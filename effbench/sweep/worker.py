"""The worker: measures one group wherever a launcher runs it (this process, a child process, a
SLURM job, a Ray task) and emits events; it never touches the run directory.

It loads the model once, scores perplexity (the raw figure: the parent compares it with the run's
unquantized baseline), checks each configuration fits the device, has the scenario measure it and
emits the record. A configuration that fails is a record with ``error``; after an out-of-memory the
larger batch sizes of the same workload are skipped.
"""
from __future__ import annotations

import math
import socket
import time
from typing import Any, Optional

from effbench.backends import Backend, create_backend
from effbench.environment import now_iso
from effbench.errors import EffbenchError, OutOfMemory, UnsupportedError, first_line
from effbench.hardware import Detected, detect, profile_for, resolve_profile_id
from effbench.launchers.base import Sink
from effbench.measure.fit import estimate_bytes, fit_error
from effbench.measure.host import trim_heap
from effbench.models import load_quality_text
from effbench.models.arch import RANDOM_WEIGHTS_QUALITY_NOTE, record_fields
from effbench.models.resolve import model_dims
from effbench.quant import get_scheme
from effbench.registry import install
from effbench.results.schema import (
    BackendInfo,
    GpuInfo,
    HardwareInfo,
    ModelInfo,
    Quality,
    QuantizationInfo,
    Record,
    WorkloadInfo,
)
from effbench.scenarios import Context, Point, Session, create_scenario, scenario_class
from effbench.sensors import EnergySensor
from effbench.sensors import create as create_sensor
from effbench.sensors.base import min_window_s
from effbench.sweep.plan import ConfigPoint, GroupSpec


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
        self.backend: Optional[Backend] = None
        self.device = group.device
        self.hardware = group.hardware
        self.idle_power_w: Optional[float] = None
        self.quant_note: Optional[str] = None
        self.model_info = ModelInfo(id=group.spec.id, source=group.spec.source, **record_fields(group.spec.kind))
        self.quality: Optional[Quality] = None
        self.kv_bytes_per_token: Optional[int] = None
        self.engine_version: Optional[str] = None  # a scenario's own engine (a server), when it runs one
        self.gpu_control: Any = None  # hardware.gpu_control.GpuControl when the sweep sets GPU limits/clocks
        self._gpu_setting: Optional[tuple] = None  # (power_limit_w, gpu_clock_mhz) in force now

    # -- records -----------------------------------------------------------------------------
    def record(self, p: ConfigPoint, **sections: Any) -> Record:
        hw = self.hardware or {}
        b = self.backend
        return Record(
            run_id=self.group.run_id, config_id=p.config_id, created_at=now_iso(),
            model=self.model_info,
            backend=BackendInfo(name=self.group.backend, version=b.version() if b else self.engine_version, device=self.device,
                                threads=(b.threads_in_use() if b else None) or self.config.threads, compile=p.compile),
            quantization=QuantizationInfo(scheme=self.scheme.name, weight_bits=self.scheme.weight_bits,
                                          library=self.scheme.library, note=self.quant_note),
            workload=WorkloadInfo(batch_size=p.batch_size, prompt_tokens=p.prompt_tokens, new_tokens=p.new_tokens,
                                  prompt_set=p.prompt_set),
            hardware=HardwareInfo(profile=hw.get("profile"), detected_name=hw.get("detected_name")),
            **({"quality": self.quality} if self.quality is not None and "quality" not in sections else {}),
            **{k: v for k, v in scenario_class(p.scenario).point_sections(self.config, p).items() if k not in sections},
            **sections,
        )

    def finish(self, p: ConfigPoint, record: Record, gpu: Optional[GpuInfo] = None) -> None:
        if gpu is not None:
            stats = record.stats
            if gpu.other_processes:  # another process on the GPU shares its counter and its SMs (rule 12)
                stats = stats.model_copy(update={"interference": True})
            record = record.model_copy(update={"gpu": gpu, "stats": stats})
        self.emit(("record", record.to_json_dict()))

    # -- GPU settings and activity (--power-limits, --gpu-clocks; rule 12) ----------------------
    def _gpu_before(self, p: ConfigPoint, sensor: EnergySensor) -> Optional[GpuInfo]:
        """Apply this point's power limit / locked clock (read back), and note who else is on the GPU."""
        applied = None
        if self.gpu_control is not None:
            setting = (p.power_limit_w, p.gpu_clock_mhz)
            if setting != self._gpu_setting:
                self.emit(("message", f"GPU settings: {p.power_limit_w or 'unchanged'} W, "
                                      f"{p.gpu_clock_mhz or 'unchanged'} MHz"))
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

    def fail_all(self, points: list[ConfigPoint], error: str) -> None:
        for p in points:
            self.finish(p, self.record(p, error=error))

    # -- the group ---------------------------------------------------------------------------
    def run(self) -> None:
        g = self.group
        scenario = create_scenario(self.config.scenario, self.config)
        if not scenario.loads_model:
            return self._run_own_engine(scenario)
        try:
            self.backend = create_backend(g.backend)
            self.backend.compile = self.config.offline.compile
            self.device = self.backend.resolve_device(g.device)
        except UnsupportedError as e:
            return self.fail_all(g.points, f"unsupported: {e}")
        reason = self.scheme.support(self.backend, self.device.partition(":")[0])
        if reason:
            return self.fail_all(g.points, f"unsupported: {reason}")
        sensor = self._start_host()
        try:
            self._open_gpu_control()
            self._run_points(scenario, sensor)
        finally:
            self._close_gpu_control()
            sensor.close()

    def _run_own_engine(self, scenario: Any) -> None:
        """A scenario that runs its own engine (a server): it starts it once for the group, measures
        each point and stops it, also on error and Ctrl-C."""
        g = self.group
        self.device = g.device if g.device != "auto" else "cpu"
        self.quality = Quality(note=f"not scored in the {scenario.name} scenario (the offline scenario scores perplexity)")
        sensor = self._start_host()
        try:
            self._open_gpu_control()
            try:
                self.engine_version = scenario.open(Session(g.spec, self.scheme, self.device, self.config.threads, sensor,
                                                            lambda m: self.emit(("message", m))))
            except UnsupportedError as e:
                return self.fail_all(g.points, f"unsupported: {e}")
            except EffbenchError:
                raise  # an endpoint that is not there, or not an OpenAI server: the user's input
            except Exception as e:  # noqa: BLE001 - an engine that cannot start must not end the sweep
                return self.fail_all(g.points, f"engine failed: {type(e).__name__}: {first_line(e)}")
            for p in g.points:
                point = _scenario_point(p)
                skip = scenario.skip_reason(point)
                if skip:
                    self.finish(p, self.record(p, error=skip))
                    continue
                self.emit(("started", p.config_id))
                gpu = self._gpu_before(p, sensor)
                self.finish(p, self._measure(scenario, sensor, None, p), gpu)
        finally:
            scenario.close()
            self._close_gpu_control()
            sensor.close()

    def _start_host(self) -> EnergySensor:
        """Sensor, hardware and idle baseline of the machine this worker runs on."""
        g = self.group
        sensor = create_sensor(self.config.sensor, self.device)
        host = socket.gethostname()
        idle = None
        if host in g.idle_power_w:
            self.idle_power_w = g.idle_power_w[host]
        else:  # a host the parent has not measured (a SLURM node, a Ray worker): measure it here
            idle = measure_idle(sensor, self.config.idle_s, lambda m: self.emit(("message", m)))
            self.idle_power_w = idle.get("power_w") if idle else None
        if self.hardware is None:
            self.hardware = hardware_block((g.target.hardware if g.target else None) or self.config.hardware, self.device)
            self.emit(("host", {**self.hardware, "target": g.target_name, "sensor": sensor.info().to_dict(),
                                "idle_baseline": idle}))
        return sensor

    def _run_points(self, scenario: Any, sensor: EnergySensor) -> None:
        g, backend = self.group, self.backend
        assert backend is not None
        self.emit(("message", f"loading {g.spec.id} ({self.scheme.name}) on {self.device}"))
        backend.notify = lambda m: self.emit(("message", m))
        try:
            loaded = backend.load(g.spec, self.scheme, self.device, self.config.threads, self.config.seed)
        except (UnsupportedError, OutOfMemory) as e:
            return self.fail_all(g.points, f"load failed: {e}")
        except EffbenchError:
            raise  # the user's input (a model file that is not a model): not this group's alone
        except Exception as e:  # noqa: BLE001 - a scheme that breaks on this model must not end the sweep
            kind = "out of memory" if backend.is_out_of_memory(e) else "load failed"
            return self.fail_all(g.points, f"{kind}: {type(e).__name__}: {first_line(e)}")
        self.quant_note = loaded.quant_note
        self.kv_bytes_per_token = loaded.kv_bytes_per_token
        self.model_info = ModelInfo(id=g.spec.id, source=g.spec.source, params=loaded.params,
                                    weights_bytes=loaded.weights_bytes, **record_fields(g.spec.kind))
        if g.spec.kind == "arch":
            self.quality = Quality(note=RANDOM_WEIGHTS_QUALITY_NOTE)
        elif self.config.offline.perplexity:
            self.quality = perplexity(backend)
        else:
            self.quality = Quality(note="disabled (perplexity: false)")
        dims = model_dims(g.spec)
        oom_at: dict[tuple, int] = {}
        try:
            for p in g.points:
                key = (p.prompt_set, p.prompt_tokens, p.new_tokens)
                if key in oom_at and p.batch_size > oom_at[key]:
                    self.finish(p, self.record(p, error=f"skipped: batch size {oom_at[key]} ran out of memory"))
                    continue
                self.emit(("started", p.config_id))
                need = estimate_bytes(loaded.weights_bytes, loaded.kv_bytes_per_token, dims,
                                      p.batch_size, p.prompt_tokens, p.new_tokens)
                too_big = fit_error(need, self.device)
                if too_big:
                    self.finish(p, self.record(p, error=too_big))
                    continue
                gpu = self._gpu_before(p, sensor)
                record = self._measure(scenario, sensor, loaded, p)
                if record.error and record.error.startswith("out of memory"):
                    oom_at[key] = p.batch_size
                self.finish(p, record, gpu)
        finally:
            backend.unload()
            trim_heap()

    def _measure(self, scenario: Any, sensor: EnergySensor, loaded: Any, p: ConfigPoint) -> Record:
        ctx = Context(engine=self.backend, loaded=loaded, sensor=sensor, idle_power_w=self.idle_power_w,
                      grid=self.group.grid, on_repeat=lambda n: self.emit(("repeat", p.config_id, n)))
        try:
            sections = scenario.measure(_scenario_point(p), ctx)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            return self.record(p, error=config_error(self.backend, e))
        return self.record(p, **sections)


def _scenario_point(p: ConfigPoint) -> Point:
    return Point(p.batch_size, p.prompt_tokens, p.new_tokens, p.prompt_set, rate=p.rate, concurrency=p.concurrency)


def run_group(group: GroupSpec, emit: Sink) -> None:
    """The worker entry point every launcher runs (module level, so it pickles). The parent's run-time
    registrations come first: a spawned process, a SLURM job or a Ray task starts without them."""
    install(group.plugins)
    GroupWorker(group, emit).run()


def perplexity(backend: Backend) -> Quality:
    """Perplexity on the shipped texts (rule 9). Its rise over the baseline is the parent's to add."""
    try:
        ppl, n = backend.perplexity(load_quality_text("en"))
        ppl_ko, _ = backend.perplexity(load_quality_text("ko"))
    except NotImplementedError:
        return Quality(note="this backend cannot score perplexity")
    except Exception as e:  # noqa: BLE001
        return Quality(note=f"perplexity failed: {type(e).__name__}: {first_line(e)}")
    if not math.isfinite(ppl):  # fp16/fp8 overflow: the scheme's quality cost is unbounded, not unknown
        return Quality(text="effbench/quality/en", tokens=n, flagged=True,
                       note=f"perplexity is not finite ({ppl}): the scheme overflows on this model")
    return Quality(perplexity=ppl, text="effbench/quality/en", tokens=n,
                   perplexity_ko=ppl_ko if math.isfinite(ppl_ko) else None)


def config_error(backend: Optional[Backend], e: BaseException) -> str:
    """The ``error`` of a configuration that could not be measured: its kind, then the reason."""
    if backend is not None and backend.is_out_of_memory(e):
        return f"out of memory: {type(e).__name__}: {first_line(e)}"
    if isinstance(e, UnsupportedError):
        return f"unsupported: {first_line(e)}"
    if isinstance(e, EffbenchError):
        return f"failed: {first_line(e)}"
    return f"failed: {type(e).__name__}: {first_line(e)}"
