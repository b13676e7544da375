"""A finished run, read once: ``run.json`` as a typed ``RunMeta`` and ``load_run(dir) -> Run`` (its
records, metadata, the hardware profile of each record and its perplexity baselines). ``report``,
``compare``, ``plan`` and ``sensors attach`` all read runs through it.

``RunMeta`` types the keys effbench writes (``sweep.runner``, ``wrap.runner.run_json``,
``environment.collect``, ``sensors attach``); any other key is kept as it is, so older runs and
hand-edited files load. A key of the wrong type is one line naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effbench.errors import EffbenchError
from effbench.hardware import HardwareProfile, PriceOverride, stored_profiles
from effbench.results.baseline import DEFAULT_PPL_THRESHOLD, Baselines
from effbench.results.hardware import Key, given_profile, hardware_id, record_key, run_profiles
from effbench.results.schema import Record
from effbench.results.store import RESULTS_FILE, RUN_FILE, iter_record_dicts, read_run_dir, run_dir_of, validate_records

# The sections of a stored sweep config (effbench/config.py SECTIONS), read flat here.
CONFIG_SECTIONS = ("offline", "serving", "gpu")


class _Block(BaseModel):
    """A block of run.json: the keys effbench writes typed, any other kept."""

    model_config = ConfigDict(extra="allow")


class CpuInfo(_Block):
    model: Optional[str] = None
    physical_cores: Optional[int] = None
    logical_cpus: Optional[int] = None
    affinity: Optional[int] = None


class TorchInfo(_Block):
    threads: Optional[int] = None
    interop_threads: Optional[int] = None
    cuda: Optional[str] = None
    cudnn: Optional[int] = None
    cuda_available: Optional[bool] = None


class Environment(_Block):
    """``environment``: where the run was measured (``effbench.environment.collect``)."""

    collected_at: Optional[str] = None
    effbench_version: Optional[str] = None
    git_sha: Optional[str] = None
    python: Optional[str] = None
    platform: Optional[str] = None
    hostname: Optional[str] = None
    cpu: CpuInfo = Field(default_factory=CpuInfo)
    memory_bytes: Optional[int] = None
    load_avg: Optional[list[float]] = None
    torch: Optional[TorchInfo] = None  # None: not recorded (a process that loaded no model)
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    nvml: dict[str, Any] = Field(default_factory=dict)
    packages: dict[str, str] = Field(default_factory=dict)
    env_vars: dict[str, str] = Field(default_factory=dict)
    seed: Optional[int] = None
    sensor_device: Any = None
    sensor_environment: dict[str, Any] = Field(default_factory=dict)

    @field_validator("torch", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None


class SensorInfo(_Block):
    """``sensor``: the energy sensor (``sensors.base.SensorInfo``), or just its name."""

    name: Optional[str] = None
    kind: Optional[str] = None
    available: Optional[bool] = None
    reason: Optional[str] = None
    domains: list[str] = Field(default_factory=list)
    update_period_s: Optional[float] = None
    accuracy_rel: Optional[float] = None
    accuracy_source: Optional[str] = None


class IdleBaseline(_Block):
    """``idle_baseline``: the idle power measured before the sweep (``sweep.worker.measure_idle``)."""

    power_w: Optional[float] = None
    duration_s: Optional[float] = None
    sensor: Optional[str] = None
    status: Optional[str] = None
    error: Optional[str] = None
    coverage: Optional[float] = None
    uncertainty_rel: Optional[float] = None
    power_by_domain_w: dict[str, float] = Field(default_factory=dict)
    start_unix: Optional[float] = None
    end_unix: Optional[float] = None
    host: Optional[str] = None


class Grid(_Block):
    region: Optional[str] = None
    intensity_g_per_kwh: Optional[float] = None
    source: Optional[str] = None


class HardwareEntry(_Block):
    """The hardware one process measured on (``sweep.worker.hardware_block``); ``resolved`` is the
    profile written out in full, read by ``effbench.hardware.stored_profiles``."""

    profile: Optional[str] = None
    detected_name: Optional[str] = None
    kind: Optional[str] = None
    host: Optional[str] = None
    resolved: Optional[dict[str, Any]] = None
    resolved_error: Optional[str] = None


class Hardware(HardwareEntry):
    """``hardware``: the machine the sweep ran on, and each fleet host (``targets``) that reported."""

    targets: list[HardwareEntry] = Field(default_factory=list)


class Session(_Block):
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    status: Optional[str] = None
    resumed: Optional[bool] = None


class RunConfig(_Block):
    """``config``: the sweep's configuration as it ran (the keys the report reads typed). Runs since
    the config has sections (``offline:``, ``serving:``, ``gpu:``, ``launcher: {kind: ...}``) store
    them nested; earlier runs stored every key flat. Both read as one flat block."""

    @model_validator(mode="before")
    @classmethod
    def _flatten_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        flat = {k: v for k, v in data.items() if not (k in CONFIG_SECTIONS and isinstance(v, dict))}
        for section in CONFIG_SECTIONS:
            if isinstance(data.get(section), dict):
                flat.update({k: v for k, v in data[section].items() if k not in flat})
        if isinstance(data.get("launcher"), dict):
            flat["launcher"] = data["launcher"].get("kind")
        return flat

    scenario: Optional[str] = None
    sensor: Optional[str] = None
    seed: Optional[int] = None
    idle_s: Optional[float] = None
    warmup: Optional[int] = None
    repeats: Optional[int] = None
    min_repeats: Optional[int] = None
    max_repeats: Optional[int] = None
    ci_target: Optional[float] = None
    max_time_s: Optional[float] = None
    ppl_threshold: Optional[float] = None


class RunMeta(_Block):
    """``run.json``: what a run stored about itself. Every key is optional (older runs lack some)."""

    schema_version: Optional[int] = None
    run_id: Optional[str] = None
    created_at: Optional[str] = None
    config: RunConfig = Field(default_factory=RunConfig)
    environment: Environment = Field(default_factory=Environment)
    sensor: Optional[SensorInfo] = None
    idle_baseline: Optional[IdleBaseline] = None
    grid: Optional[Grid] = None
    hardware: Optional[Hardware] = None
    sessions: list[Session] = Field(default_factory=list)
    wrap: Optional[dict[str, Any]] = None  # a wrapped command (``effbench wrap``)
    attached_trace: Optional[dict[str, Any]] = None  # ``effbench sensors attach``

    @field_validator("sensor", "idle_baseline", "grid", "hardware", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None  # an empty block records nothing

    @classmethod
    def parse(cls, data: Mapping[str, Any], origin: str = RUN_FILE) -> RunMeta:
        """``data`` (run.json's object) typed; a key of the wrong type is an ``EffbenchError`` naming it."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise EffbenchError(f"{origin} is invalid at '{where}': {err['msg']}; "
                                "fix or remove that key (effbench writes it)") from None

    @property
    def ppl_threshold(self) -> float:
        return self.config.ppl_threshold or DEFAULT_PPL_THRESHOLD

    def hardware_json(self) -> dict[str, Any]:
        """The hardware block as run.json holds it (what ``stored_profiles`` reads)."""
        return {"hardware": self.hardware.model_dump(mode="json")} if self.hardware is not None else {}


@dataclass(frozen=True)
class Run:
    """One finished run: its records in the order written, its typed run.json, the hardware profile of
    each record key (stored by the run, or ``--hardware`` for a run that stores none; never this
    machine's)."""

    name: str  # how messages name it: the path as given, or a report's label
    path: Path  # the run directory (a bare results file: the file)
    meta: RunMeta
    records: list[Record]
    described: bool = True  # it has a (non-empty) run.json
    profiles: dict[Key, HardwareProfile] = field(default_factory=dict)  # record key -> profile
    stored: dict[Key, HardwareProfile] = field(default_factory=dict)  # the profiles run.json stored

    @classmethod
    def of(cls, name: str, records: list[Record], data: Optional[Mapping[str, Any]] = None, path: Optional[Path] = None,
           hardware: Optional[str] = None, prices: Optional[dict[str, PriceOverride]] = None) -> Run:
        """A run from its parts: ``data`` is run.json's object (None or empty: the run has none)."""
        origin = str((path or Path(name)) / RUN_FILE)
        run = cls(name, path or Path(name), RunMeta.parse(data or {}, origin), list(records), bool(data))
        return run.reprofiled(given_profile(hardware, prices), prices)

    def reprofiled(self, given: Optional[HardwareProfile] = None,
                   prices: Optional[dict[str, PriceOverride]] = None) -> Run:
        """The run with its profiles resolved again: the price file and ``prices`` applied, and
        ``given`` (``results.hardware.given_profile``) as the profile of a run that stores none."""
        stored = stored_profiles(self.meta.hardware_json(), prices, origin=str(self.path / RUN_FILE))
        return replace(self, profiles=run_profiles(stored, self.records, given), stored=dict(stored))

    @property
    def missing_profile(self) -> bool:
        """It has records but stores no profile, and none was given."""
        return bool(self.records) and not self.profiles

    def profile_of(self, record: Record) -> Optional[HardwareProfile]:
        return self.profiles.get(record_key(record))

    def hardware_id(self, record: Record) -> str:
        return hardware_id(record, self.profile_of(record))

    @property
    def hostname(self) -> str:
        return self.meta.environment.hostname or ""

    @property
    def baselines(self) -> Baselines:
        """The perplexity baseline of each (model, backend) of this run, with the run's threshold."""
        return Baselines(self.meta.ppl_threshold).add(self.records)

    def quality_compared(self) -> list[Record]:
        """The records with perplexity compared to this run's own baseline where a record lacks the
        comparison (a ``--resume`` session that had no baseline in memory wrote it unflagged)."""
        if not any(r.quality.perplexity is not None and r.quality.baseline_scheme is None for r in self.records):
            return list(self.records)
        return self.baselines.completed(self.records)


def load_run(path: str | Path, name: Optional[str] = None, hardware: Optional[str] = None,
             prices: Optional[dict[str, PriceOverride]] = None) -> Run:
    """A run directory, given as itself or as its results.jsonl / run.json, or a bare results file
    (no run.json). ``hardware``: the profile of a run that stores none. Errors are one line."""
    p = Path(path)
    label = name or str(path)
    if p.is_file() and p.name not in (RESULTS_FILE, RUN_FILE):
        return Run.of(label, validate_records(iter_record_dicts(p), str(p)), None, p, hardware, prices)
    data, records = read_run_dir(p)
    return Run.of(label, records, data, run_dir_of(p), hardware, prices)
