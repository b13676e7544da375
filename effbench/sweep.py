"""A sweep: expand the config into configurations, skip finished ones (--resume), run each through
the measurement loop and append its record. A configuration that fails becomes a record with
``error`` and the sweep goes on; after an out-of-memory the larger batch sizes are skipped."""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from effbench.backends import Backend, create_backend
from effbench.config import SweepConfig
from effbench.environment import collect, now_iso
from effbench.analysis.carbon import carbon_section
from effbench.analysis.carbon import resolve as resolve_grid
from effbench.errors import EffbenchError, OutOfMemory, UnsupportedError
from effbench.hardware import Detected, detect, get_profile, profile_for, resolve_profile_id
from effbench.measure.fit import estimate_bytes, fit_error
from effbench.measure.host import InterferenceProbe, trim_heap
from effbench.measure.loop import RepeatPolicy, Workload, run_loop
from effbench.measure.energy import energy_section
from effbench.measure.summary import stats_section, throughput_section
from effbench.models import ModelSpec, load_prompt_set, load_quality_text, resolve_model
from effbench.models.resolve import check_hub_model_reachable, model_dims
from effbench.models.arch import RANDOM_WEIGHTS_QUALITY_NOTE, record_fields
from effbench.quant import Scheme, get_scheme
from effbench.results.schema import (BackendInfo, HardwareInfo, Memory, ModelInfo, Quality,
                                     QuantizationInfo, Record, WorkloadInfo)
from effbench.results.store import RunStore, validate_records
from effbench.sensors import EnergySensor, create as create_sensor


@dataclass(frozen=True)
class ConfigPoint:
    """One configuration: what a record describes."""

    model: str  # ModelSpec.id
    backend: str
    device: str
    scheme: str
    prompt_set: str
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    compile: bool = False

    @property
    def config_id(self) -> str:
        fields = asdict(self)
        if not self.compile:  # eager ids stay what they were before the option existed
            del fields["compile"]
        key = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def label(self) -> str:
        return (f"{self.model} {self.backend} {self.scheme} bs={self.batch_size} "
                f"p={self.prompt_tokens} n={self.new_tokens} {self.prompt_set}")


class SweepObserver:
    """Progress hooks (the CLI draws a progress bar with them); all no-ops by default."""

    def start(self, total: int, done_before: int) -> None: ...
    def message(self, text: str) -> None: ...
    def config_started(self, point: ConfigPoint) -> None: ...
    def repeat_done(self, point: ConfigPoint, repeats: int) -> None: ...
    def config_done(self, point: ConfigPoint, record: Record) -> None: ...


@dataclass
class Run:
    path: Path
    run_id: str
    records: list[Record] = field(default_factory=list)  # every record in the directory


def default_out_dir() -> Path:
    return Path("effbench-runs") / datetime.now().strftime("run-%Y%m%d-%H%M%S")


@dataclass
class _Group:
    """Configurations sharing one loaded model (model x backend x scheme)."""

    spec: ModelSpec
    backend: str
    scheme: Scheme
    points: list[ConfigPoint]


def _plan(config: SweepConfig, specs: dict[str, ModelSpec], devices: dict[str, str]) -> list[_Group]:
    groups = []
    for model in config.model:
        spec = specs[model]
        for backend in config.backend:
            # unquantized schemes first: they are the perplexity baseline of the quantized ones
            for scheme_name in sorted(config.quant, key=lambda n: not get_scheme(n).unquantized):
                scheme = get_scheme(scheme_name)
                points = [
                    ConfigPoint(spec.id, backend, devices[backend], scheme.name, ps, pt, nt, bs, config.compile)
                    for ps in config.prompts
                    for pt in config.prompt_tokens
                    for nt in config.new_tokens
                    for bs in sorted(config.batch_sizes)
                ]
                groups.append(_Group(spec, backend, scheme, points))
    return groups


def _measure_idle(sensor: EnergySensor, seconds: float, observer: SweepObserver) -> Optional[dict[str, Any]]:
    """Idle power before the sweep (rule 4). Skipped for estimates: TDP x ~0% says nothing."""
    info = sensor.info()
    if seconds <= 0 or info.kind in ("estimate", "none"):
        return None
    import time

    observer.message(f"measuring idle power for {seconds:.0f} s ({info.name})")
    # At least 10 update periods, like any energy window (rule 2).
    seconds = max(seconds, 10 * (info.update_period_s or 0.0))
    window = sensor.start_window()
    start_unix = time.time()
    time.sleep(seconds)
    end_unix = time.time()
    reading = window.stop()
    # The wall-clock bounds let 'effbench sensors attach' take the idle power from a trace too.
    bounds = {"start_unix": start_unix, "end_unix": end_unix}
    if reading.joules is None:
        return {"status": reading.status, "error": reading.error, **bounds}
    return {"power_w": reading.mean_power_w, "duration_s": reading.duration_s, "sensor": reading.sensor,
            "status": reading.status, "coverage": reading.coverage, "uncertainty_rel": reading.uncertainty_rel,
            "power_by_domain_w": {d: j / reading.duration_s for d, j in reading.joules_by_domain.items()},
            **bounds}


class Sweep:
    """A prepared sweep: constructing it checks every input (models, prompts, backends, device,
    sensor) so errors surface before anything is loaded; ``run()`` measures."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        self.observer = SweepObserver()
        self.store = RunStore(config.out or default_out_dir())
        # Preflight: every input error surfaces here, before any model is loaded.
        self.specs = {m: resolve_model(m) for m in config.model}
        for spec in self.specs.values():
            check_hub_model_reachable(spec)
        self.dims = {spec.id: model_dims(spec) for spec in self.specs.values()}  # for the memory check
        self.prompt_sets = {p: load_prompt_set(p) for p in config.prompts}
        self.backends: dict[str, Backend] = {}
        self.devices: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}  # backend -> why it cannot run here (recorded per configuration)
        for name in config.backend:
            self._prepare_backend(name)
        first_device = next((self.devices[b] for b in self.backends), "cpu")
        self.sensor = create_sensor(config.sensor, first_device)
        self.detected: Detected = detect(first_device)
        self.profile = resolve_profile_id(config.hardware, self.detected)
        self._check_profile_kind()
        self.groups = _plan(config, self.specs, self.devices)
        self.grid = resolve_grid(config.region)  # a mistyped region fails here, before any work
        self.run_id = ""
        self.idle_power_w: Optional[float] = None
        self.quant_notes: dict[tuple[str, str, str], Optional[str]] = {}
        # (model, backend) -> (scheme, perplexity) of the run's first unquantized record, stored or new
        self.baselines: dict[tuple[str, str], tuple[str, float]] = {}

    def _prepare_backend(self, name: str) -> None:
        """A backend that cannot run here (missing package, no GPU for 'auto') becomes error records
        and the sweep goes on; a device the user named explicitly that is not present is an input error."""
        backend = None
        try:
            backend = create_backend(name)
            self.devices[name] = backend.resolve_device(self.config.device)
        except UnsupportedError as e:
            if backend is not None and self.config.device != "auto":
                raise
            self.unavailable[name] = str(e)
            self.devices[name] = self.config.device
            return
        backend.compile = self.config.compile
        self.backends[name] = backend

    # -- run directory -----------------------------------------------------------------------
    def _open_store(self) -> set[str]:
        if self.store.exists() and not self.config.resume:
            raise EffbenchError(f"'{self.store.path}' already holds a run; pass --resume to continue it or choose another --out")
        previous = self.store.read_run() if self.config.resume else {}
        self._check_same_setup(previous)
        self.run_id = previous.get("run_id") or uuid.uuid4().hex[:12]
        done = self.store.completed_config_ids() if self.config.resume else set()
        # The perplexity baseline of a resumed run: unquantized records measured by earlier sessions.
        self.baselines = stored_baselines(self.store.record_dicts()) if self.config.resume else {}
        sessions = previous.get("sessions", []) + [{"started_at": now_iso(), "resumed": bool(previous)}]
        idle = _measure_idle(self.sensor, self.config.idle_s, self.observer)
        self.idle_power_w = idle.get("power_w") if idle else None
        self.store.write_run({
            "schema_version": 1,
            "run_id": self.run_id,
            "created_at": previous.get("created_at", now_iso()),
            "config": self.config.model_dump(mode="json"),
            "environment": collect({"seed": self.config.seed, "sensor_device": self.sensor.environment()}),
            "sensor": self.sensor.info().to_dict(),
            "idle_baseline": idle,
            "grid": {"region": self.grid.region, "intensity_g_per_kwh": self.grid.g_per_kwh, "source": self.grid.source},
            "hardware": self._hardware_block(),
            "sessions": sessions,
        })
        return done

    def _check_profile_kind(self) -> None:
        """Records are filed under the hardware that ran them: a GPU profile for a CPU run (or the
        reverse) would put CPU figures in a GPU's column of every report and plan."""
        if not self.config.hardware or not self.profile:
            return
        profile = get_profile(self.profile, measure=False)
        if profile.kind != self.detected.kind:
            raise EffbenchError(f"hardware profile '{profile.id}' is a {profile.kind} but this run measures the "
                                f"{self.detected.kind} ({self.detected.name}); pass a {self.detected.kind} profile or leave --hardware out")

    def _check_same_setup(self, previous: dict[str, Any]) -> None:
        """A resumed run must be measured on the same hardware with the same sensor, or its records
        would not be comparable with each other (run.json describes them all)."""
        if not previous:
            return
        before_hw = (previous.get("hardware") or {}).get("detected_name")
        before_sensor = (previous.get("sensor") or {}).get("name")
        now_sensor = self.sensor.info().name
        if before_hw and before_hw != self.detected.name:
            raise EffbenchError(f"'{self.store.path}' was measured on {before_hw}, this is {self.detected.name}: "
                                "resume it there, or start a new --out here")
        if before_sensor and before_sensor != now_sensor:
            raise EffbenchError(f"'{self.store.path}' was measured with sensor '{before_sensor}', not '{now_sensor}': "
                                f"resume with --sensor {before_sensor}, or start a new --out")

    def _hardware_block(self) -> dict[str, Any]:
        """The profile the run is filed under, written out in full (bandwidth, TDP, prices as of
        now) so reports and plans made on another machine need not find it again."""
        block: dict[str, Any] = {"profile": self.profile, "detected_name": self.detected.name, "kind": self.detected.kind}
        try:
            resolved = profile_for(self.profile, self.detected.name, measure=True)
        except EffbenchError as e:
            block["resolved_error"] = str(e)
            return block
        block["resolved"] = resolved.model_dump(mode="json") if resolved else None
        return block

    def _close_store(self, status: str) -> None:
        data = self.store.read_run()
        if data.get("sessions"):
            data["sessions"][-1].update({"finished_at": now_iso(), "status": status})
            self.store.write_run(data)

    # -- records -----------------------------------------------------------------------------
    def _record(self, point: ConfigPoint, group: _Group, **sections: Any) -> Record:
        backend = self.backends.get(group.backend)
        return Record(
            run_id=self.run_id,
            config_id=point.config_id,
            created_at=now_iso(),
            model=sections.pop("model", ModelInfo(id=group.spec.id, source=group.spec.source,
                                                  **record_fields(group.spec.kind))),
            backend=BackendInfo(name=group.backend, version=backend.version() if backend else None, device=point.device,
                                threads=self.config.threads or _torch_threads(), compile=point.compile),
            quantization=QuantizationInfo(scheme=group.scheme.name, weight_bits=group.scheme.weight_bits,
                                          library=group.scheme.library, note=self.quant_notes.get(_group_key(group))),
            workload=WorkloadInfo(batch_size=point.batch_size, prompt_tokens=point.prompt_tokens,
                                  new_tokens=point.new_tokens, prompt_set=point.prompt_set),
            hardware=HardwareInfo(profile=self.profile, detected_name=self.detected.name),
            **sections,
        )

    def _finish(self, point: ConfigPoint, record: Record) -> None:
        self.store.append(record)
        self.observer.config_done(point, record)

    # -- the sweep ---------------------------------------------------------------------------
    def run(self, observer: Optional[SweepObserver] = None) -> Run:
        self.observer = observer or self.observer
        done = self._open_store()
        total = sum(len(g.points) for g in self.groups)
        self.observer.start(total, sum(p.config_id in done for g in self.groups for p in g.points))
        status = "interrupted"
        try:
            for group in self.groups:
                todo = [p for p in group.points if p.config_id not in done]
                if todo:
                    self._run_group(group, todo)
            status = "complete"
        finally:
            self._close_store(status)
            self.sensor.close()
        return Run(self.store.path, self.run_id, validate_records(self.store.record_dicts(warn=True), str(self.store.results_file)))

    def _run_group(self, group: _Group, todo: list[ConfigPoint]) -> None:
        device = self.devices[group.backend]
        reason = self.unavailable.get(group.backend) or group.scheme.support(group.backend, device.partition(":")[0])
        if reason:
            for p in todo:
                self._finish(p, self._record(p, group, error=f"unsupported: {reason}"))
            return
        backend = self.backends[group.backend]
        self.observer.message(f"loading {group.spec.id} ({group.scheme.name}) on {device}")
        backend.notify = self.observer.message
        try:
            loaded = backend.load(group.spec, group.scheme, device, self.config.threads, self.config.seed)
        except EffbenchError as e:
            if not _is_group_error(e):
                raise
            for p in todo:
                self._finish(p, self._record(p, group, error=f"load failed: {e}"))
            return
        except Exception as e:  # noqa: BLE001 - a scheme that breaks on this model must not end the sweep
            kind = "out of memory" if backend.is_out_of_memory(e) else "load failed"
            for p in todo:
                self._finish(p, self._record(p, group, error=f"{kind}: {type(e).__name__}: {_first_line(e)}"))
            return
        self.quant_notes[_group_key(group)] = loaded.quant_note
        model_info = ModelInfo(id=group.spec.id, source=group.spec.source, params=loaded.params,
                               weights_bytes=loaded.weights_bytes, **record_fields(group.spec.kind))
        if group.spec.kind == "arch":
            quality = Quality(note=RANDOM_WEIGHTS_QUALITY_NOTE)
        else:
            quality = self._quality(backend, group) if self.config.perplexity else Quality(note="disabled (perplexity: false)")
        oom_at: dict[tuple, int] = {}
        try:
            for p in todo:
                key = (p.prompt_set, p.prompt_tokens, p.new_tokens)
                if key in oom_at and p.batch_size > oom_at[key]:
                    self._finish(p, self._record(p, group, model=model_info, quality=quality,
                                                 error=f"skipped: batch size {oom_at[key]} ran out of memory"))
                    continue
                record = self._run_point(backend, group, p, model_info, quality, loaded.kv_bytes_per_token)
                if record.error and record.error.startswith("out of memory"):
                    oom_at[key] = p.batch_size
                self._finish(p, record)
        finally:
            backend.unload()
            trim_heap()

    def _quality(self, backend: Backend, group: _Group) -> Quality:
        """Perplexity on the shipped texts, and its rise over the model's unquantized baseline (rule 9)."""
        try:
            ppl, n = backend.perplexity(load_quality_text("en"))
            ppl_ko, _ = backend.perplexity(load_quality_text("ko"))
        except NotImplementedError:
            return Quality(note="this backend cannot score perplexity")
        except Exception as e:  # noqa: BLE001
            return Quality(note=f"perplexity failed: {type(e).__name__}: {_first_line(e)}")
        if not math.isfinite(ppl):  # fp16/fp8 overflow: the scheme's quality cost is unbounded, not unknown
            return Quality(text="effbench/quality/en", tokens=n, flagged=True,
                           note=f"perplexity is not finite ({ppl}): the scheme overflows on this model")
        quality = Quality(perplexity=ppl, text="effbench/quality/en", tokens=n,
                          perplexity_ko=ppl_ko if math.isfinite(ppl_ko) else None)
        key = (group.spec.id, group.backend)
        if group.scheme.unquantized:
            self.baselines.setdefault(key, (group.scheme.name, ppl))
        elif key in self.baselines:
            base_name, base = self.baselines[key]
            rise = ppl / base - 1
            quality.baseline_scheme, quality.perplexity_rise = base_name, rise
            quality.flagged = rise > self.config.ppl_threshold
        else:
            quality.note = "no unquantized scheme in this run to compare perplexity with"
        return quality

    def _run_point(self, backend: Backend, group: _Group, p: ConfigPoint, model_info: ModelInfo,
                   quality: Quality, kv_bytes_per_token: Optional[int]) -> Record:
        self.observer.config_started(p)
        policy = RepeatPolicy(
            warmup=self.config.warmup, min_repeats=self.config.min_repeats, max_repeats=self.config.max_repeats,
            ci_target=self.config.ci_target, max_time_s=self.config.max_time_s, fixed_repeats=self.config.repeats,
        )
        workload = Workload(p.batch_size, p.prompt_tokens, p.new_tokens)
        too_big = self._memory_error(p, model_info, kv_bytes_per_token)
        if too_big:
            return self._record(p, group, model=model_info, quality=quality, error=too_big)
        probe = InterferenceProbe()
        try:
            batch = backend.prepare(self.prompt_sets[p.prompt_set], p.batch_size, p.prompt_tokens, p.new_tokens)
            result = run_loop(backend, batch, workload, self.sensor, policy,
                              on_repeat=lambda r: self.observer.repeat_done(p, r.repeats))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            return self._record(p, group, model=model_info, quality=quality, error=_config_error(backend, e))
        finally:
            batch = None  # free activations before the next configuration
        energy = energy_section(result, self.idle_power_w)
        return self._record(
            p, group, model=model_info, quality=quality,
            throughput=throughput_section(result),
            energy=energy,
            carbon=carbon_section(energy, p.batch_size * p.new_tokens, self.grid),
            memory=Memory(peak_host_bytes=result.peak_host_bytes, peak_device_bytes=result.peak_device_bytes,
                          peak_device_reserved_bytes=result.peak_device_reserved_bytes,
                          weights_bytes=model_info.weights_bytes, kv_bytes_per_token=kv_bytes_per_token),
            stats=stats_section(result, policy.warmup, probe.stop()),
        )

    def _memory_error(self, p: ConfigPoint, model_info: ModelInfo, kv_bytes_per_token: Optional[int]) -> Optional[str]:
        """Whether the configuration can fit on its device at all (measure/fit.py), before its batch
        is built: a batch size of 10^12 is recorded as not fitting in milliseconds."""
        need = estimate_bytes(model_info.weights_bytes, kv_bytes_per_token, self.dims.get(p.model),
                              p.batch_size, p.prompt_tokens, p.new_tokens)
        return fit_error(need, p.device)


def stored_baselines(dicts: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, float]]:
    """The perplexity baselines in records already written: per (model, backend), the first record
    of an unquantized scheme with a finite perplexity, in the order they were measured (the order a
    sweep measures them in too, so a resumed run compares with the same baseline as an uninterrupted one)."""
    found: dict[tuple[str, str], tuple[str, float]] = {}
    for d in dicts:
        scheme = (d.get("quantization") or {}).get("scheme")
        ppl = (d.get("quality") or {}).get("perplexity")
        key = ((d.get("model") or {}).get("id"), (d.get("backend") or {}).get("name"))
        if not isinstance(scheme, str) or not isinstance(ppl, (int, float)) or not math.isfinite(ppl) or ppl <= 0:
            continue
        if not all(isinstance(k, str) for k in key):
            continue
        try:
            unquantized = get_scheme(scheme).unquantized
        except EffbenchError:  # a scheme this version no longer knows cannot be a baseline
            continue
        if unquantized:
            found.setdefault(key, (scheme, float(ppl)))
    return found


def _group_key(group: _Group) -> tuple[str, str, str]:
    return (group.spec.id, group.backend, group.scheme.name)


def _is_group_error(e: EffbenchError) -> bool:
    """Errors that belong to one model/scheme (record and go on) rather than to the user's input."""
    return isinstance(e, (UnsupportedError, OutOfMemory))


def _config_error(backend: Backend, e: BaseException) -> str:
    """The ``error`` of a configuration that could not be measured: its kind, then the reason."""
    if backend.is_out_of_memory(e):
        return f"out of memory: {type(e).__name__}: {_first_line(e)}"
    if isinstance(e, UnsupportedError):
        return f"unsupported: {_first_line(e)}"
    if isinstance(e, EffbenchError):
        return f"failed: {_first_line(e)}"
    return f"failed: {type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _torch_threads() -> Optional[int]:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def run_sweep(config: SweepConfig, observer: Optional[SweepObserver] = None) -> Run:
    return Sweep(config).run(observer)
