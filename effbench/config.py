"""Sweep configuration: one pydantic model that YAML files, CLI options and the Python API resolve to.

The sweep's grid (models, backends, schemes, batch sizes, lengths, prompt sets) and what every run
shares (device, sensor, hardware, output) are top-level keys; each part has its own typed section,
beside its code: ``offline:`` (effbench/scenarios/offline/config.py), ``serving:``
(effbench/scenarios/serving/config.py), ``gpu:`` (effbench/hardware/gpu_control.py) and ``launcher:``
(effbench/launchers/config.py, a ``kind`` and that launcher's options). A section's keys may also be
given at the top level under their own names (``warmup: 2``, ``rates: 1,2``, the CLI's ``--warmup``):
they are folded into their section. ``effbench run``'s options are generated from these models.

List keys accept a list, a scalar or a comma-separated string ("1,4,16"). Unknown keys, wrong types and
empty files are errors naming the key.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from effbench.config_fields import LIST_HELP, checked, cli, positive_ints, split_list
from effbench.errors import ConfigError
from effbench.hardware.gpu_control import GpuConfig
from effbench.launchers.config import LauncherConfig
from effbench.scenarios.offline.config import OfflineConfig
from effbench.scenarios.serving.config import ServingConfig
from effbench.yamlfile import read_yaml as read_yaml_file

DEFAULT_MODEL = "smollm2-135m"
# The typed section of each part; its keys may also be given flat (top level, or as CLI options).
SECTIONS: dict[str, type[BaseModel]] = {"offline": OfflineConfig, "serving": ServingConfig, "gpu": GpuConfig}
# Flat spellings that are not a section's field name: the CLI's --duration, the older launcher keys.
FLAT_ALIASES = {"duration": ("serving", "duration_s")}
SERVING_KEYS = tuple(ServingConfig.model_fields)


class SweepConfig(BaseModel):
    """Everything that defines a sweep. Its JSON form is written to ``run.json``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    model: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL], min_length=1, json_schema_extra=cli(
        f"Model: 'smollm2-135m' (bundled), a checkpoint dir, a .gguf file or a hub id; {LIST_HELP}.", "--model", "-m",
        listed=True))
    backend: list[str] = Field(default_factory=lambda: ["transformers"], min_length=1, json_schema_extra=cli(
        "Inference backend: transformers, llamacpp or vllm.", listed=True))
    device: str = Field(default="auto", json_schema_extra=cli("auto, cpu, cuda or cuda:N."))
    quant: list[str] = Field(default_factory=lambda: ["fp32"], min_length=1, json_schema_extra=cli(
        f"Quantization schemes, {LIST_HELP} (fp32, fp16, bf16, int8-dynamic, ...).", "--quant", "-q", listed=True))
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 16], min_length=1, json_schema_extra=cli(
        f"Batch sizes, {LIST_HELP}.", "--batch-sizes", "-b", listed=True))
    prompt_tokens: list[int] = Field(default_factory=lambda: [64], min_length=1, json_schema_extra=cli(
        f"Prompt length(s) in tokens, {LIST_HELP}.", listed=True))
    new_tokens: list[int] = Field(default_factory=lambda: [32], min_length=1, json_schema_extra=cli(
        f"Generated tokens per sequence (forced, greedy), {LIST_HELP}.", listed=True))
    prompts: list[str] = Field(default_factory=lambda: ["en"], min_length=1, json_schema_extra=cli(
        f"Prompt sets: en, ko, ja or a text/JSONL file; {LIST_HELP}.", listed=True))
    sensor: str = Field(default="auto", json_schema_extra=cli("Energy sensor: auto, nvml, rapl, estimate or none."))
    hardware: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Hardware profile id or profile YAML path.", default="detected"))
    region: Optional[str] = Field(default=None, json_schema_extra=cli(  # grid region for CO2e
        "Grid region for CO2e: ISO country code, USA/<state>, world, ...",
        default="EFFBENCH_REGION, else this machine's country, else world"))
    out: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Run directory.", "--out", "-o", default="effbench-runs/run-<time>"))
    resume: bool = Field(default=False, json_schema_extra=cli(
        "Continue the run in --out, skipping finished configurations.", "--resume"))
    idle_s: float = Field(default=5.0, ge=0, json_schema_extra=cli(
        "Seconds of idle-power baseline before the sweep (measuring sensors only)."))
    threads: Optional[int] = Field(default=None, ge=1, json_schema_extra=cli(
        "CPU threads for the backend.", default="the library's"))
    seed: int = Field(default=0, json_schema_extra=cli("Random seed."))
    scenario: str = Field(default="offline", json_schema_extra=cli(
        "What is measured: offline (static batches through generate) or serving (an OpenAI-compatible server "
        "under load)."))
    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_keys(cls, data: Any) -> Any:
        """Top-level keys of a section (``warmup: 2``, ``rates: 1,2``, ``--duration``) go into it; a flat
        key wins over the same key in the section (the command line overrides the sweep file)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, model in SECTIONS.items():
            names = {k: k for k in model.model_fields} | {a: f for a, (s, f) in FLAT_ALIASES.items() if s == section}
            flat = {names[k]: data.pop(k) for k in list(data) if k in names}
            if flat:
                data[section] = {**_as_dict(data.get(section)), **flat}
        return _fold_launcher_keys(data)

    @model_serializer(mode="wrap")
    def _stored_form(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        """The JSON form (run.json's ``config``) keeps the keys runs have always stored: the offline and
        GPU keys at the top level, ``launcher`` the kind beside ``launcher_opt`` and ``targets``;
        serving keys in ``serving``. ``load_config`` reads it back as it reads a sweep file."""
        data = dict(handler(self))
        for section in ("offline", "gpu"):
            data.update(data.pop(section, None) or {})
        launcher = dict(data.pop("launcher", None) or {})
        if launcher or not info.exclude_unset:
            data["launcher"] = launcher.pop("kind", self.launcher.kind)
            data["targets"] = launcher.pop("targets", [])
            data["launcher_opt"] = launcher
        return data

    @field_validator("scenario", mode="before")
    @classmethod
    def _known_scenario(cls, v: Any) -> Any:
        from effbench.scenarios import SCENARIOS

        return checked(SCENARIOS.canonical, v)

    @field_validator("model", "backend", "quant", "batch_sizes", "prompt_tokens", "new_tokens", "prompts", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return split_list(v)

    @field_validator("batch_sizes", "prompt_tokens", "new_tokens")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return positive_ints(v)

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
        from effbench.sensors import canonical_sensor_name

        return checked(canonical_sensor_name, v)

    @field_validator("backend")
    @classmethod
    def _known_backends(cls, v: list[str]) -> list[str]:
        from effbench.backends import canonical_backend_name

        return [checked(canonical_backend_name, b) for b in v]


def _as_dict(section: Any) -> dict[str, Any]:
    """A section given as a model (the Python API) or a mapping (a file), as a mapping of what was set."""
    if isinstance(section, BaseModel):
        return section.model_dump(exclude_unset=True)
    return dict(section) if isinstance(section, dict) else {}


def _fold_launcher_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``launcher: NAME`` with ``launcher_opt: {...}`` and ``targets: [...]`` (the flat form, and the
    CLI's --launcher / --launcher-opt) become the one ``launcher`` section."""
    opts, targets = data.pop("launcher_opt", None), data.pop("targets", None)
    if opts is None and targets is None:
        return data
    section = data.get("launcher")
    merged = {"kind": section} if isinstance(section, str) else _as_dict(section)
    if isinstance(section, BaseModel):
        merged = {**merged, **(section.model_extra or {})}
    merged.update(dict(opts or {}))
    if targets is not None:
        merged["targets"] = targets
    data["launcher"] = merged
    return data


# Every key a sweep file or the Python API may give (for "did you mean"): top level, sections, flat section keys.
FIELDS = tuple(dict.fromkeys([*SweepConfig.model_fields, *(k for m in SECTIONS.values() for k in m.model_fields),
                              *FLAT_ALIASES, "launcher_opt", "targets"]))


def _format_validation_error(err: ValidationError, origin: str, cli_keys: set[str]) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    msg = first["msg"].removeprefix("Value error, ")
    if loc[:1] == ["launcher"]:
        if msg.startswith("--launcher-opt"):  # a launcher's option: the message names it already
            return f"{origin}: {msg}" if origin != "config" else msg
        loc = ["launcher"] if loc[1:] in ([], ["kind"]) else loc[1:]
    elif loc[:1] and loc[0] in SECTIONS:  # a section's keys are plain keys to the user
        loc = loc[1:]
    key = loc[0] if loc else "?"
    if key == "duration_s" and "duration" in cli_keys:
        key = "duration"
    if key in cli_keys:
        origin = f"option --{key.replace('_', '-')}"
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


def load_config(source: SweepConfig | dict[str, Any] | str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> SweepConfig:
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
        config = SweepConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin, set(given))) from None
    problem = _option_of_another_scenario(config.scenario, set(given))
    if problem:
        raise ConfigError(problem)
    return config


# Options that only one scenario reads: given with the other, they would be silently ignored.
SCENARIO_ONLY = {"offline": {*OfflineConfig.model_fields, "batch_sizes"}, "serving": {*SERVING_KEYS, *FLAT_ALIASES}}


def _option_of_another_scenario(scenario: str, options: set[str]) -> Optional[str]:
    """The first option (given on the command line or as an override) that the sweep's scenario
    ignores, as one line; None when every one applies."""
    for owner, keys in SCENARIO_ONLY.items():
        stray = sorted(options & keys) if scenario != owner and scenario in SCENARIO_ONLY else []
        if stray:
            flag = "--" + stray[0].replace("_", "-")
            return (f"option {flag} applies to --scenario {owner} only, and this sweep is --scenario {scenario}: "
                    f"add --scenario {owner}, or leave {flag} out")
    return None

