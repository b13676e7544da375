"""Sweep configuration: one pydantic model that YAML files, CLI options and the Python API resolve to.

Keys are the CLI option names with underscores. List keys accept a list, a scalar or a
comma-separated string ("1,4,16"). Unknown keys, wrong types and empty files are errors naming the key.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from effbench.errors import ConfigError
from effbench.yamlfile import read_yaml as read_yaml_file

DEFAULT_MODEL = "smollm2-135m"


def _split(value: Any) -> Any:
    """'1,4,16' -> ['1','4','16']; 4 -> [4]; lists pass through."""
    if value is None:
        return value
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        return [p for p in parts if p != ""] or [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class TargetConfig(BaseModel):
    """One fleet target of the sweep file's ``launcher: targets:`` list: where its groups run (its
    own launcher options, e.g. a SLURM partition or a Ray accelerator type) and the hardware profile
    its records are filed under (else the one detected there)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    hardware: Optional[str] = None

    @property
    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items()}


def _positive_ints(v: list[int]) -> list[int]:
    """The values, duplicates dropped in order; any value below 1 is an error naming it."""
    bad = [x for x in v if x < 1]
    if bad:
        raise ValueError(f"{bad[0]} is not a positive integer (every value must be >= 1)")
    return list(dict.fromkeys(v))


def _rate(value: Any) -> float:
    """A requests/s rate: a positive number, or inf (all requests at once)."""
    text = str(value).strip().lower()
    if text in ("inf", "infinity", "max"):
        return math.inf
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"rate '{value}' is not a number; give requests/s like 1,2,4 or inf") from None
    if not rate > 0 or math.isnan(rate):
        raise ValueError(f"rate '{value}' must be > 0 requests/s (inf = all at once)")
    return rate


class ServingConfig(BaseModel):
    """The serving scenario's own keys (``scenario: serving``). In a sweep file and on the command
    line they are top-level keys (``rates: 1,2,inf``, ``--rates``); here they are one sub-model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint: Optional[str] = None  # an OpenAI-compatible server already running (effbench does not stop it)
    engine: str = "transformers"  # else effbench starts this engine (effbench.scenarios.serving.engines)
    engine_args: list[str] = Field(default_factory=list)  # extra arguments for the engine's command line
    host: str = "127.0.0.1"  # where a managed engine binds: loopback unless asked otherwise
    rates: list[float] = Field(default_factory=lambda: [1.0, 2.0])
    concurrency: list[int] = Field(default_factory=list)  # closed loop instead of rates when given
    arrival: Literal["poisson", "constant"] = "poisson"
    requests: Optional[int] = Field(default=None, ge=1)  # measured requests per point
    duration_s: Optional[float] = Field(default=None, gt=0)  # sending time per point
    warmup_requests: int = Field(default=2, ge=0)
    slo_ttft_ms: Optional[float] = Field(default=None, gt=0)
    slo_tpot_ms: Optional[float] = Field(default=None, gt=0)
    length_spread: float = Field(default=0.0, ge=0, lt=1)  # output lengths uniform in n x (1 -/+ spread)
    request_timeout_s: float = Field(default=120.0, gt=0)
    point_timeout_s: float = Field(default=600.0, gt=0)
    api: Literal["completions", "chat"] = "completions"  # which OpenAI API the client drives
    server_metrics: bool = True  # scrape the server's Prometheus /metrics during each point (where it has one)
    # Capacity at the SLO: search the highest rate whose p95 TTFT/TPOT meet --slo-ttft-ms/--slo-tpot-ms,
    # from the lowest of ``rates`` up, until the bracket is within ``capacity_resolution`` (relative).
    # The traffic (effbench/scenarios/serving/workload.py): a named output-length distribution or a
    # file, multi-turn conversations, shared system prompts, a replayed trace. Sweep file: ``workload:``
    # takes a name/file or a section {name, turns, shared_prefix, replay, replay_speed, scale}.
    workload: Optional[str] = None
    multi_turn: int = Field(default=1, ge=1)
    shared_prefix: Optional[str] = None  # N:L
    replay: Optional[str] = None
    replay_speed: float = Field(default=1.0, gt=0)
    workload_scale: float = Field(default=1.0, gt=0)  # output lengths of a named distribution x this
    find_capacity: bool = False
    capacity_resolution: float = Field(default=0.1, gt=0, lt=1)
    capacity_point_s: float = Field(default=20.0, gt=0)  # sending time per tried rate (a steady state needs it)
    capacity_max_points: int = Field(default=10, ge=2)

    @field_validator("concurrency", "engine_args", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        return [_rate(x) for x in (_split(v) or [])]

    @model_validator(mode="before")
    @classmethod
    def _workload_section(cls, data: Any) -> Any:
        """``workload: {name: lm-arena-chat, turns: 3, shared_prefix: 4:512, replay: f, replay_speed: 2}``."""
        if not isinstance(data, dict) or not isinstance(data.get("workload"), dict):
            return data
        data = dict(data)
        section = dict(data.pop("workload"))
        names = {"name": "workload", "file": "workload", "turns": "multi_turn", "multi_turn": "multi_turn",
                 "shared_prefix": "shared_prefix", "replay": "replay", "replay_speed": "replay_speed",
                 "scale": "workload_scale"}
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ValueError(f"unknown workload key '{unknown[0]}'; known: {', '.join(sorted(names))}")
        for k, v in section.items():
            if k == "shared_prefix" and isinstance(v, dict):
                v = f"{v.get('prompts', v.get('count'))}:{v.get('tokens')}"
            data[names[k]] = v
        return data

    @field_validator("shared_prefix")
    @classmethod
    def _shared_prefix(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            from effbench.errors import EffbenchError
            from effbench.scenarios.serving.workload import parse_shared_prefix

            try:
                parse_shared_prefix(v)
            except EffbenchError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("rates")
    @classmethod
    def _sorted_rates(cls, v: list[float]) -> list[float]:
        return sorted(dict.fromkeys(v))  # lowest first: the sweep stops where the engine saturates

    @field_serializer("rates")
    def _rates_json(self, v: list[float]) -> list[Any]:
        return ["inf" if math.isinf(r) else r for r in v]  # JSON has no infinity

    @field_validator("concurrency")
    @classmethod
    def _users(cls, v: list[int]) -> list[int]:
        return sorted(_positive_ints(v))

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from effbench.errors import EffbenchError
        from effbench.scenarios.serving.engines import ENGINES

        try:
            return ENGINES.canonical(v)
        except EffbenchError as e:
            raise ValueError(str(e)) from None

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not str(v).strip().startswith(("http://", "https://")):
            raise ValueError(f"'{v}' is not an http(s) URL; give e.g. http://127.0.0.1:8000")
        return v.strip().rstrip("/") if v else v

    @model_validator(mode="after")
    def _some_load(self) -> "ServingConfig":
        if not self.rates and not self.concurrency:
            raise ValueError("give --rates or --concurrency")
        if not self.concurrency and math.inf in self.rates and self.requests is None:
            raise ValueError("rate inf sends every request at once: give --requests N")
        if self.find_capacity:
            if self.slo_ttft_ms is None and self.slo_tpot_ms is None:
                raise ValueError("--find-capacity searches the rate that meets an SLO: give --slo-ttft-ms and/or --slo-tpot-ms")
            if self.concurrency:
                raise ValueError("--find-capacity searches over request rates: give --rates (its lowest is where the search "
                                 "starts), not --concurrency")
            if not [r for r in self.rates if math.isfinite(r)]:
                raise ValueError("--find-capacity needs a finite starting rate in --rates, e.g. --rates 1")
        if self.replay and (self.find_capacity or self.concurrency):
            raise ValueError("--replay sends the trace at its own pace: leave out --concurrency and --find-capacity")
        return self


SERVING_KEYS = tuple(ServingConfig.model_fields)


class SweepConfig(BaseModel):
    """Everything that defines a sweep. Its JSON form is written to ``run.json``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL], min_length=1)
    backend: list[str] = Field(default_factory=lambda: ["transformers"], min_length=1)
    device: str = "auto"
    quant: list[str] = Field(default_factory=lambda: ["fp32"], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 16], min_length=1)
    prompt_tokens: list[int] = Field(default_factory=lambda: [64], min_length=1)
    new_tokens: list[int] = Field(default_factory=lambda: [32], min_length=1)
    prompts: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    repeats: Optional[int] = Field(default=None, ge=1, description="fixed number of repeats (default: adaptive)")
    sensor: str = "auto"
    # NVIDIA GPU sweep axes (hardware/gpu_control.py): power limits in W, locked SM clocks in MHz.
    # Empty: the GPU's settings are left as they are.
    power_limits: list[float] = Field(default_factory=list)
    gpu_clocks: list[int] = Field(default_factory=list)
    hardware: Optional[str] = None
    region: Optional[str] = None  # grid region for CO2e (ISO country, USA/<state>, world, ...)
    out: Optional[str] = None
    resume: bool = False
    # Method knobs (docs/method.md): warm-up, adaptive repeats, time cap, idle baseline.
    warmup: int = Field(default=1, ge=0)
    min_repeats: int = Field(default=5, ge=1)  # the median's bootstrap interval needs a few
    max_repeats: int = Field(default=30, ge=1)
    ci_target: float = Field(default=0.05, gt=0, lt=1)
    max_time_s: float = Field(default=45.0, gt=0)
    idle_s: float = Field(default=5.0, ge=0)
    threads: Optional[int] = Field(default=None, ge=1)
    compile: bool = False  # torch.compile the model (transformers backend); eager by default
    seed: int = 0
    perplexity: bool = True
    ppl_threshold: float = Field(default=0.10, gt=0, description="flag schemes whose perplexity rises more than this")
    # What is measured and where (effbench.scenarios, effbench.launchers).
    scenario: str = "offline"
    launcher: str = "inline"
    launcher_opt: dict[str, Any] = Field(default_factory=dict)
    targets: list[TargetConfig] = Field(default_factory=list)
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @model_validator(mode="before")
    @classmethod
    def _serving_keys(cls, data: Any) -> Any:
        """Top-level serving keys (``rates: 1,2``; ``--duration`` is ``duration_s``) go into ``serving``."""
        if not isinstance(data, dict):
            return data
        flat = {k: data[k] for k in data if k in SERVING_KEYS or k == "duration"}
        if not flat:
            return data
        data = {k: v for k, v in data.items() if k not in flat}
        if "duration" in flat:
            flat["duration_s"] = flat.pop("duration")
        section = data.get("serving")
        base = section.model_dump(exclude_unset=True) if isinstance(section, ServingConfig) else dict(section or {})
        data["serving"] = {**base, **flat}
        return data

    @model_validator(mode="before")
    @classmethod
    def _launcher_section(cls, data: Any) -> Any:
        """The sweep file's ``launcher:`` may be a name or a section: ``{name: slurm, partition: gpu,
        targets: [{name: h100, hardware: h100-sxm, partition: h100}, ...]}``."""
        if isinstance(data, dict) and isinstance(data.get("launcher"), dict):
            section = dict(data["launcher"])
            data = dict(data)
            data["launcher"] = section.pop("name", "inline")
            if "targets" in section:
                data["targets"] = section.pop("targets")
            data["launcher_opt"] = {**section, **dict(data.get("launcher_opt") or {})}
        return data

    @field_validator("scenario", "launcher", mode="before")
    @classmethod
    def _known_part(cls, v: Any, info: Any) -> Any:
        from effbench.errors import EffbenchError
        from effbench.launchers import LAUNCHERS
        from effbench.scenarios import SCENARIOS

        registry = SCENARIOS if info.field_name == "scenario" else LAUNCHERS
        try:
            return registry.canonical(str(v))
        except EffbenchError as e:
            raise ValueError(str(e)) from None

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v: list[TargetConfig]) -> list[TargetConfig]:
        names = [t.name for t in v]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"target '{dup}' is listed twice; give each target its own name")
        return v

    @field_validator("model", "backend", "quant", "batch_sizes", "prompt_tokens", "new_tokens", "prompts", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("batch_sizes", "prompt_tokens", "new_tokens")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return _positive_ints(v)

    @field_validator("power_limits", "gpu_clocks", mode="before")
    @classmethod
    def _listify_gpu_axes(cls, v: Any) -> Any:
        return [] if v is None else _split(v)

    @field_validator("gpu_clocks")
    @classmethod
    def _positive_clocks(cls, v: list[int]) -> list[int]:
        return _positive_ints(v)

    @field_validator("power_limits")
    @classmethod
    def _positive_limits(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (x > 0 and math.isfinite(x))]
        if bad:
            raise ValueError(f"{bad[0]:g} is not a power limit in watts (every value must be a positive number)")
        return list(dict.fromkeys(v))

    @field_validator("model", "backend", "quant", "prompts")
    @classmethod
    def _non_empty_names(cls, v: list[str]) -> list[str]:
        v = [str(x).strip() for x in v]
        if any(not x for x in v):
            raise ValueError("empty name in list")
        return list(dict.fromkeys(v))

    @field_validator("quant")
    @classmethod
    def _known_schemes(cls, v: list[str]) -> list[str]:
        from effbench.quant import check_scheme_names

        return check_scheme_names(list(dict.fromkeys(n.lower() for n in v)))  # 'FP32' means fp32

    @field_validator("device", "sensor", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("sensor")
    @classmethod
    def _known_sensor(cls, v: str) -> str:
        from effbench.errors import EffbenchError
        from effbench.sensors import canonical_sensor_name

        try:
            return canonical_sensor_name(v)
        except EffbenchError as e:
            raise ValueError(str(e)) from None

    @field_validator("backend")
    @classmethod
    def _known_backends(cls, v: list[str]) -> list[str]:
        from effbench.backends import canonical_backend_name
        from effbench.errors import EffbenchError

        try:
            return [canonical_backend_name(b) for b in v]
        except EffbenchError as e:
            raise ValueError(str(e)) from None


    @model_validator(mode="after")
    def _repeat_bounds(self) -> "SweepConfig":
        if self.min_repeats > self.max_repeats and "min_repeats" not in self.model_fields_set:
            self.min_repeats = self.max_repeats  # a lower --max-repeats alone lowers the default minimum
        if self.min_repeats > self.max_repeats:
            raise ValueError(f"min_repeats ({self.min_repeats}) is larger than max_repeats ({self.max_repeats})")
        return self


FIELDS = tuple(SweepConfig.model_fields) + SERVING_KEYS


def _format_validation_error(err: ValidationError, origin: str, cli_keys: set[str]) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    if loc[:1] == ["serving"]:  # serving keys are top-level keys to the user
        loc = loc[1:]
    key = loc[0] if loc else "?"
    if key == "duration_s" and "duration" in cli_keys:
        key = "duration"
    if key in cli_keys:
        origin = f"option --{key.replace('_', '-')}"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key.replace("-", "_"), FIELDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(FIELDS)}"
        return f"{origin}: unknown key '{key}'{hint}"
    if not loc:  # a rule across keys
        return f"{origin}: {msg}"
    value = first.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, (dict, list)) else ""
    return f"{origin}: key '{key}': {msg}{shown}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    data = read_yaml_file(path, "sweep file", ConfigError)
    if data is None:
        raise ConfigError(f"sweep file '{path}' is empty; give at least one key, e.g. 'batch_sizes: [1, 4]'")
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file '{path}' must be a mapping of keys to values, not a {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def load_config(source: Any = None, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Resolve a config from a ``SweepConfig``, dict or YAML path, then apply ``overrides`` (CLI wins)."""
    origin = "config"
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, SweepConfig):
        data = source.model_dump(exclude_unset=True)
    elif isinstance(source, dict):
        data = dict(source)
    elif isinstance(source, (str, Path)):
        origin = f"sweep file '{source}'"
        data = read_yaml(source)
    else:
        raise ConfigError(f"cannot build a sweep config from a {type(source).__name__}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(given)
    try:
        return SweepConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin, set(given))) from None
