"""The profile catalog: the model, loading from YAML with errors that name the file and key, the
shipped set, user profiles and price overrides. (Not named ``profiles``: that is the public function.)

Where profiles come from, later ones replacing earlier ones with the same id:
1. shipped: ``effbench/_data/hardware`` in a wheel, the repository's ``hardware/`` in an editable install;
2. user: ``<user config dir>/hardware/*.yaml`` (``EFFBENCH_CONFIG_DIR`` replaces the config dir);
3. prices: ``<user config dir>/prices.yaml`` (``EFFBENCH_PRICES`` names another file), then ``--price``.
"""
from __future__ import annotations

import difflib
import importlib.resources
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from effbench.errors import EffbenchError
from effbench.yamlfile import read_yaml

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
DATE_PATTERN = r"^\d{4}-\d{2}(-\d{2})?$"


class PeakTflops(BaseModel):
    """Dense peak throughput by dtype in TFLOP/s (int8 in TOPS); ``None`` where unsupported or unknown."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    fp32: Optional[float] = Field(None, gt=0)
    bf16: Optional[float] = Field(None, gt=0)
    fp16: Optional[float] = Field(None, gt=0)
    fp8: Optional[float] = Field(None, gt=0)
    int8: Optional[float] = Field(None, gt=0)


class HardwareProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    kind: Literal["gpu", "cpu"]
    memory_gb: float = Field(gt=0)  # 10^9 bytes
    memory_bandwidth_gbps: float = Field(gt=0)  # GB/s (10^9 bytes per second), not gigabits
    peak_tflops: PeakTflops = Field(default_factory=PeakTflops)
    tdp_w: Optional[float] = Field(None, gt=0)
    match: list[str] = Field(default_factory=list)
    price_per_hour_usd: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    price_source: Optional[str] = None
    price_date: Optional[str] = Field(None, pattern=DATE_PATTERN)
    spot_price_per_hour_usd: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    spot_price_source: Optional[str] = None
    # Multi-GPU replicas (tensor parallel inside one node): the GPU-to-GPU link and how many GPUs a node holds.
    interconnect: Optional[str] = None  # e.g. "NVLink 4", "PCIe Gen4 x16"
    interconnect_gbps: Optional[float] = Field(None, gt=0)  # GB/s per GPU, one direction
    max_gpus_per_node: int = Field(8, ge=1)
    # Optional extras, used by detected CPU profiles.
    cores: Optional[int] = Field(None, gt=0)
    bandwidth_source: Optional[str] = None
    tdp_source: Optional[str] = None
    notes: Optional[str] = None
    # Where the profile was loaded from; not part of the YAML.
    origin: str = Field("", exclude=True)

    @field_validator("match")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a valid regular expression ({e})") from None
        return patterns

    @field_validator("price_date", mode="before")
    @classmethod
    def _date_to_str(cls, v: Any) -> Any:
        return v.isoformat() if hasattr(v, "isoformat") else v  # YAML parses bare dates

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    def matches(self, name: str) -> bool:
        return any(re.search(p, name, re.IGNORECASE) for p in self.match)

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "origin": self.origin}


# -- locations ---------------------------------------------------------------------------------
def shipped_dir() -> Path:
    """The shipped profiles: package data in a wheel, else the repository's ``hardware/``."""
    try:
        packaged = importlib.resources.files("effbench") / "_data" / "hardware"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        pass
    return Path(__file__).resolve().parents[2] / "hardware"


def config_dir() -> Path:
    env = os.environ.get("EFFBENCH_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("effbench"))


def user_dir() -> Path:
    return config_dir() / "hardware"


def prices_file() -> Path:
    env = os.environ.get("EFFBENCH_PRICES")
    return Path(env) if env else config_dir() / "prices.yaml"


# -- loading -----------------------------------------------------------------------------------
def _validation_message(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (allowed: " + ", ".join(
            k for k in HardwareProfile.model_fields if k != "origin") + ")"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"key '{key}': {msg}"


def profile_from_dict(data: Any, origin: str) -> HardwareProfile:
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise EffbenchError(f"hardware profile '{origin}' must be a YAML mapping of keys (id, name, ...), not {found}")
    try:
        return HardwareProfile.model_validate({**data, "origin": origin})
    except ValidationError as e:
        raise EffbenchError(f"hardware profile '{origin}': {_validation_message(e)}; fix the file") from None


def load_profile_file(path: str | Path) -> HardwareProfile:
    path = Path(path)
    return profile_from_dict(read_yaml(path, "hardware profile"), str(path))


def _load_dir(directory: Path) -> list[HardwareProfile]:
    if not directory.is_dir():
        return []
    return [load_profile_file(p) for p in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))]


# -- prices ------------------------------------------------------------------------------------
class PriceOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    price_per_hour_usd: float = Field(ge=0, allow_inf_nan=False)
    price_source: Optional[str] = None
    price_date: Optional[str] = Field(None, pattern=DATE_PATTERN)

    @field_validator("price_date", mode="before")
    @classmethod
    def _date_to_str(cls, v: Any) -> Any:
        return v.isoformat() if hasattr(v, "isoformat") else v


def load_price_file(path: Optional[Path] = None) -> dict[str, PriceOverride]:
    """``prices.yaml``: ``ID: USD_PER_HOUR`` or ``ID: {price_per_hour_usd, price_source, price_date}``."""
    path = path or prices_file()
    if not path.is_file():
        return {}
    data = read_yaml(path, "price file") or {}
    if not isinstance(data, dict):
        raise EffbenchError(f"price file '{path}' must map profile ids to prices (h100-sxm: 2.5)")
    out = {}
    for pid, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"price_per_hour_usd": value}
        try:
            override = PriceOverride.model_validate(value)
        except ValidationError as e:
            raise EffbenchError(f"price file '{path}': entry '{pid}': {_validation_message(e)}") from None
        out[str(pid)] = override.model_copy(update={"price_source": override.price_source or f"user price file {path}"})
    return out


def parse_price_options(values: Iterable[str]) -> dict[str, PriceOverride]:
    """``--price ID=USD_PER_HOUR`` (repeatable, or comma-separated)."""
    out: dict[str, PriceOverride] = {}
    for raw in values:
        for item in filter(None, (s.strip() for s in raw.split(","))):
            pid, sep, usd = item.partition("=")
            try:
                price = float(usd)
            except ValueError:
                price = -1.0
            if not sep or not pid.strip() or not math.isfinite(price) or price < 0:
                raise EffbenchError(f"--price '{item}' is not ID=USD_PER_HOUR with a finite price >= 0 (e.g. --price "
                                    "h100-sxm=2.10)")
            out[pid.strip()] = PriceOverride(price_per_hour_usd=price, price_source="command line (--price)")
    return out


def apply_prices(profiles: Iterable[HardwareProfile], prices: dict[str, PriceOverride]) -> list[HardwareProfile]:
    result = []
    for p in profiles:
        o = prices.get(p.id)
        result.append(p if o is None else p.model_copy(update={
            "price_per_hour_usd": o.price_per_hour_usd, "price_source": o.price_source, "price_date": o.price_date}))
    return result


# -- the registry ------------------------------------------------------------------------------
# Profiles given as YAML paths (``--hardware my.yaml``) during this process, so their id resolves later.
_extra: dict[str, HardwareProfile] = {}


def register(profile: HardwareProfile) -> None:
    _extra[profile.id] = profile


def profiles(prices: Optional[dict[str, PriceOverride]] = None) -> list[HardwareProfile]:
    """Shipped and user profiles (user ones replace shipped ones with the same id), with the price
    file and then ``prices`` applied. A broken user profile is an error that names its file."""
    by_id: dict[str, HardwareProfile] = {}
    for p in _load_dir(shipped_dir()) + _load_dir(user_dir()) + list(_extra.values()):
        by_id[p.id] = p
    overrides = {**load_price_file(), **(prices or {})}
    return apply_prices(by_id.values(), overrides)


def suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'? " if close else ""


def looks_like_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or os.sep in value or "/" in value
