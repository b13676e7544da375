"""The sweep, in the parent process: checks every input before anything is loaded, owns the run
directory (run.json, results.jsonl appended and fsynced per record, --resume), hands each group to
a launcher and turns what comes back into records. Baselines are derived here from the records
themselves (the perplexity of the run's unquantized scheme, stored or new; the idle power of each
host), so every launcher gives the same results."""
from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from effbench.analysis.carbon import resolve as resolve_grid
from effbench.backends import BACKENDS, create_backend
from effbench.config import SweepConfig
from effbench.environment import collect, now_iso
from effbench.errors import ConfigError, EffbenchError, UnsupportedError
from effbench.hardware import Detected, detect, get_profile, resolve_profile_id
from effbench.hardware.cpu import usable_cpus
from effbench.hardware.gpu_control import RESTORE_FILE as GPU_RESTORE_FILE
from effbench.hardware.gpu_control import restoring_on_signals
from effbench.launchers import GroupFailed, Launcher, create_launcher
from effbench.models import load_prompt_set, resolve_model
from effbench.models.resolve import check_hub_model_reachable
from effbench.registry import carried_registrations
from effbench.results.schema import Record
from effbench.results.store import RunStore, validate_records
from effbench.scenarios import scenario_class
from effbench.sensors import AUTO as AUTO_SENSOR
from effbench.sensors import SENSORS, EnergySensor
from effbench.sensors import create as create_sensor
from effbench.sweep.baseline import Baselines
from effbench.sweep.checks import contradictions, nothing_fits, threads_error
from effbench.sweep.observer import SweepObserver
from effbench.sweep.plan import GroupSpec, expand
from effbench.sweep.worker import GroupWorker, hardware_block, measure_idle, run_group


@dataclass
class Run:
    path: Path
    run_id: str
    records: list[Record] = field(default_factory=list)  # every record in the directory


def default_out_dir() -> Path:
    return Path("effbench-runs") / datetime.now().strftime("run-%Y%m%d-%H%M%S")


class Sweep:
    """A prepared sweep: constructing it checks every input (models, prompts, backends, device,
    sensor, launcher) so errors surface before anything is loaded; ``run()`` measures."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        problem = contradictions(config)
        if problem:
            raise ConfigError(problem)
        self.observer = SweepObserver()
        self.store = RunStore(config.out or default_out_dir())
        self.specs = {m: resolve_model(m) for m in config.model}
        for spec in self.specs.values():
            check_hub_model_reachable(spec)
        for p in config.prompts:
            load_prompt_set(p)
        self.grid = resolve_grid(config.region)  # a mistyped region fails here, before any work
        # Fail fast: an unknown launcher option, a missing extra or an unreachable cluster. One
        # launcher per fleet target (its options over the shared ones), or one for this machine ("").
        kind = config.launcher.kind
        self.launchers = ({t.name: create_launcher(kind, config.launcher.options(t.name), self.store.path)
                           for t in config.launcher.targets}
                          or {"": create_launcher(kind, config.launcher.options(), self.store.path)})
        self.local = all(launcher.local for launcher in self.launchers.values())
        self.scenario = scenario_class(config.scenario)
        self.scenario.check(config)
        self.plugins = self._carried_plugins()  # a closure or a __main__ class a worker cannot import fails here
        self.devices = {b: config.device for b in self.scenario.backends(config)}
        self.detected: Optional[Detected] = None
        self.profile: Optional[str] = config.hardware
        self.sensor: Optional[EnergySensor] = None  # this machine's, for the idle baseline (local launchers)
        self.gpu_control: Any = None  # hardware.gpu_control.GpuControl for --power-limits / --gpu-clocks
        if self.local:
            self._preflight_here()
        elif config.gpu.power_limits or config.gpu.gpu_clocks:
            raise EffbenchError("--power-limits and --gpu-clocks need a local launcher (inline or process): the "
                                "original GPU settings are restored by this process")
        self.groups = expand(config, self.specs, self.devices)
        self.run_id = ""
        self.hardware: Optional[dict[str, Any]] = None
        self.idle_power_w: dict[str, float] = {}
        self.baselines = Baselines(config.offline.ppl_threshold)
        self.point_by_id = {p.config_id: p for g in self.groups for p in g.points}

    def _carried_plugins(self) -> dict[str, dict[str, Any]]:
        """The run-time registrations (a backend or sensor a test or notebook registered) for workers that
        start without them: a spawned process, a SLURM job, a Ray task (effbench.registry)."""
        fresh = [launcher for launcher in self.launchers.values() if not launcher.inherits_registrations]
        if not fresh:
            return {}
        c = self.config
        used = {"effbench.scenarios": [c.scenario], "effbench.quant": c.quant,
                "effbench.sensors": list(SENSORS.added()) if c.sensor == AUTO_SENSOR else [c.sensor],
                "effbench.backends" if self.scenario.loads_model else "effbench.engines": self.scenario.backends(c)}
        return carried_registrations(used, f"a worker of the {fresh[0].name} launcher")

    def _preflight_here(self) -> None:
        """Groups run on this machine: check the device and sensor here, before any model loads. A
        backend that cannot run here (missing package, no GPU for 'auto') becomes error records; a
        device the user named explicitly that is not present is an input error."""
        too_many = threads_error(self.config.threads, usable_cpus())
        if too_many:
            raise EffbenchError(too_many)
        for name in self.devices:
            # Offline these are backends; serving, they are serving engines (ENGINES, another registry),
            # whose device is the one the backend of the same library resolves ("transformers" engine:
            # "transformers" backend). An --endpoint server, or an engine with no such backend: none here.
            if name not in BACKENDS.entries:
                self.devices[name] = "cpu" if self.config.device == "auto" else self.config.device
                continue
            backend = None
            try:
                backend = create_backend(name)
                self.devices[name] = backend.resolve_device(self.config.device)
            except UnsupportedError:
                if backend is not None and self.config.device != "auto":
                    raise
        # The devices are known: a sweep where nothing can run (beyond the context, or, for a model
        # loaded here, too large for the device) ends here.
        fixed_lengths = self.scenario.loads_model or not (self.config.serving.workload or self.config.serving.replay)
        problem = fixed_lengths and nothing_fits(expand(self.config, self.specs, self.devices), self.specs,
                                                 memory=self.scenario.loads_model)
        if problem:
            raise EffbenchError(problem)
        first_device = next((d for d in self.devices.values() if d != "auto"), "cpu")
        self.sensor_device = first_device
        self.sensor = create_sensor(self.config.sensor, first_device)  # an unavailable sensor fails here
        self._preflight_gpu_control(first_device)
        self.detected = detect(first_device)
        self.profile = resolve_profile_id(self.config.hardware, self.detected)
        if self.config.hardware and self.profile:
            # Records are filed under the hardware that ran them: a GPU profile for a CPU run (or the
            # reverse) would put CPU figures in a GPU's column of every report and plan.
            profile = get_profile(self.profile, measure=False)
            if profile.kind != self.detected.kind:
                raise EffbenchError(f"hardware profile '{profile.id}' is a {profile.kind} but this run measures the "
                                    f"{self.detected.kind} ({self.detected.name}); pass a {self.detected.kind} profile "
                                    "or leave --hardware out")

    def _preflight_gpu_control(self, device: str) -> None:
        """--power-limits / --gpu-clocks: a GPU this process can set, values in its range, a local
        launcher (the originals are restored from here); each problem is one line before any load."""
        self.gpu_control = None
        if not (self.config.gpu.power_limits or self.config.gpu.gpu_clocks):
            return
        if not self.local:
            raise EffbenchError("--power-limits and --gpu-clocks need a local launcher (inline or process): the "
                                "original GPU settings are restored by this process")
        from effbench.sensors.nvml import open_gpu_control

        self.gpu_control = open_gpu_control(device, self.store.path)
        self.gpu_control.check(self.config.gpu.power_limits, self.config.gpu.gpu_clocks)

    def _restore_gpu(self) -> None:
        if self.gpu_control is None:
            return
        failures = self.gpu_control.restore()
        if failures:
            self.observer.message(f"warning: could not restore the GPU settings ({'; '.join(failures)}); "
                                  f"they are kept in {self.store.path}: "
                                  f"python -m effbench.hardware.gpu_control {self.store.path}")

    # -- run directory -----------------------------------------------------------------------
    def _open_store(self) -> set[str]:
        if self.store.exists() and not self.config.resume:
            raise EffbenchError(f"'{self.store.path}' already holds a run; pass --resume to continue it or choose another --out")
        previous = self.store.read_run() if self.config.resume else {}
        sensor_info: dict[str, Any] = {}
        sensor_env: dict[str, Any] = {}
        idle = None
        if (self.store.path / GPU_RESTORE_FILE).exists():  # a run killed before it could restore
            from effbench.hardware.gpu_control import restore_pending

            note = restore_pending(self.store.path, self.gpu_control.nv if self.gpu_control else None)
            if note:
                self.observer.message(note)
        if self.sensor is not None:
            try:
                sensor_info = self.sensor.info().to_dict()
                sensor_env = self.sensor.environment()
                self._check_same_setup(previous, sensor_info.get("name"))
                idle = measure_idle(self.sensor, self.config.idle_s, self.observer.message)
            finally:  # each worker opens its own sensor: this one must not poll beside it
                self.sensor.close()
                self.sensor = None
            if idle and idle.get("power_w") is not None:
                self.idle_power_w[socket.gethostname()] = float(idle["power_w"])
            self.hardware = hardware_block(self.profile, self.sensor_device, self.detected)
        self.run_id = previous.get("run_id") or uuid.uuid4().hex[:12]
        done = self.store.completed_config_ids() if self.config.resume else set()
        # Baselines come from every record of the run, stored ones included (a resumed run compares
        # a quantized scheme with the unquantized one an earlier session measured).
        self.baselines.add_stored(self.store.record_dicts() if self.config.resume else [])
        sessions = previous.get("sessions", []) + [{"started_at": now_iso(), "resumed": bool(previous),
                                                    "launcher": self.config.launcher.kind}]
        hardware = dict(self.hardware or {"profile": self.profile, "detected_name": None, "kind": None})
        hardware["targets"] = (previous.get("hardware") or {}).get("targets", [])
        self.store.write_run({
            "schema_version": 1,
            "run_id": self.run_id,
            "created_at": previous.get("created_at", now_iso()),
            "config": self.config.model_dump(mode="json"),
            "environment": collect({"seed": self.config.seed, "sensor_device": sensor_info.get("device"),
                                    **({"sensor_environment": sensor_env} if sensor_env else {})},
                                   load_torch=self.scenario.loads_model),
            "sensor": sensor_info or previous.get("sensor") or {"name": self.config.sensor},
            "idle_baseline": idle,
            "grid": {"region": self.grid.region, "intensity_g_per_kwh": self.grid.g_per_kwh, "source": self.grid.source},
            "hardware": hardware,
            "sessions": sessions,
        })
        return done

    def _check_same_setup(self, previous: dict[str, Any], sensor_name: Optional[str]) -> None:
        """A resumed run must be measured on the same hardware with the same sensor, or its records
        would not be comparable with each other (run.json describes them all)."""
        if not previous or self.detected is None:
            return
        before_hw = (previous.get("hardware") or {}).get("detected_name")
        before_sensor = (previous.get("sensor") or {}).get("name")
        if before_hw and before_hw != self.detected.name:
            raise EffbenchError(f"'{self.store.path}' was measured on {before_hw}, this is {self.detected.name}: "
                                "resume it there, or start a new --out here")
        if before_sensor and sensor_name and before_sensor != sensor_name:
            raise EffbenchError(f"'{self.store.path}' was measured with sensor '{before_sensor}', not '{sensor_name}': "
                                f"resume with --sensor {before_sensor}, or start a new --out")

    def _add_host(self, host: dict[str, Any]) -> None:
        """A worker on another machine says what it measures on: run.json keeps one entry per host and
        target, with its resolved profile, so reports and plans of the merged fleet stay self-contained."""
        data = self.store.read_run()
        hardware = data.setdefault("hardware", {})
        where = (host.get("host"), host.get("target"))
        targets = [t for t in hardware.get("targets", []) if (t.get("host"), t.get("target")) != where]
        hardware["targets"] = targets + [host]
        self.store.write_run(data)

    def _close_store(self, status: str) -> None:
        data = self.store.read_run()
        if data.get("sessions"):
            data["sessions"][-1].update({"finished_at": now_iso(), "status": status})
            self.store.write_run(data)

    # -- the sweep ---------------------------------------------------------------------------
    def run(self, observer: Optional[SweepObserver] = None) -> Run:
        self.observer = observer or self.observer
        done = self._open_store()
        total = sum(len(g.points) for g in self.groups)
        self.observer.start(total, sum(p.config_id in done for g in self.groups for p in g.points))
        status = "interrupted"
        if self.gpu_control is not None:
            self.gpu_control.save_originals()  # in the run directory, before the first change
        try:
            with restoring_on_signals(self._restore_gpu):
                for group in self.groups:
                    todo = [p for p in group.points if p.config_id not in done]
                    if todo:
                        self._launch(replace(group, points=todo, run_id=self.run_id, grid=self.grid,
                                             idle_power_w=dict(self.idle_power_w), plugins=self.plugins,
                                             hardware=self._hardware_info() if self.local else None))
            status = "complete"
        finally:
            if self.gpu_control is not None:
                self.gpu_control.close()
                self.gpu_control = None
            self._close_store(status)
            for launcher in self.launchers.values():
                launcher.close()
        records = validate_records(self.store.record_dicts(warn=True), str(self.store.results_file))
        return Run(self.store.path, self.run_id, records)

    def _hardware_info(self) -> dict[str, Any]:
        hw = self.hardware or {}
        return {"profile": hw.get("profile", self.profile), "detected_name": hw.get("detected_name")}

    def _launch(self, group: GroupSpec, launcher: Optional[Launcher] = None) -> None:
        launcher = launcher or self.launchers[group.target_name]
        received: set[str] = set()

        def sink(event: tuple) -> None:
            kind = event[0]
            if kind == "record":
                record = self.baselines.apply(Record.model_validate(event[1]))
                if record.config_id in received:
                    return
                received.add(record.config_id)
                self.store.append(record)
                self.observer.config_done(self.point_by_id.get(record.config_id) or group.points[0], record)
            elif kind == "started" and event[1] in self.point_by_id:
                self.observer.config_started(self.point_by_id[event[1]])
            elif kind == "repeat" and event[1] in self.point_by_id:
                self.observer.repeat_done(self.point_by_id[event[1]], int(event[2]))
            elif kind == "message":
                self.observer.message(str(event[1]))
            elif kind == "host":
                self._add_host(dict(event[1]))

        try:
            launcher.launch(run_group, group, sink, group.label)
        except GroupFailed as e:
            # The group's process, job or task died: its unfinished configurations become error
            # records (kept by --resume as done: rerun them with a new --out or delete the lines).
            stand_in = GroupWorker(group, sink)
            for p in group.points:
                if p.config_id not in received:
                    sink(("record", stand_in.record(p, error=f"failed: {e.reason}").to_json_dict()))


def run_sweep(config: SweepConfig, observer: Optional[SweepObserver] = None) -> Run:
    return Sweep(config).run(observer)
