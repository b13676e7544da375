"""CO2e from energy: a grid's carbon intensity (gCO2e/kWh) from codecarbon's data files.

codecarbon (the optional extra ``carbon``) ships per-country energy mixes, US state and Nordic
bidding-zone factors and cloud-region factors. We read those JSON/CSV files directly: its tracker
does geo-IP lookups over the network and takes seconds to start, which has no place in a
measurement. Without codecarbon the world average is used, and the source says so.

Regions: an ISO 3166 alpha-3 or alpha-2 country code or country name (``FRA``, ``FR``, ``France``),
``USA/<state>`` (``USA/california``), a Nordic bidding zone (``SE3``), a cloud region
``<provider>:<region>`` as listed in codecarbon's cloud table (``gcp:europe-west1``; 3.3.2 lists GCP
only), or ``world``. With no region, the machine's country where its time zone tells it
(``EFFBENCH_REGION`` overrides), else the world average.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from effbench.errors import EffbenchError

if TYPE_CHECKING:  # pragma: no cover - the schema loads when a record's carbon block is built
    from effbench.results.schema import Carbon, Energy

# IEA's 2019 world average, the figure codecarbon also uses; for when codecarbon is not installed.
WORLD_AVERAGE_G_PER_KWH = 475.0
WORLD_AVERAGE_SOURCE = "world average 475 gCO2e/kWh (IEA Global Energy & CO2 Status Report 2019)"
_LBS_PER_MWH_TO_G_PER_KWH = 453.59237 / 1000.0
J_PER_KWH = 3.6e6


def _data_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("codecarbon")  # finds the package without importing it
    if not spec or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "data"
    return d if d.is_dir() else None


@lru_cache(maxsize=None)
def _json(relpath: str) -> dict[str, Any]:
    d = _data_dir()
    if d is None:
        return {}
    try:
        return json.loads((d / relpath).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=None)
def _cloud_rows() -> tuple[dict[str, str], ...]:
    d = _data_dir()
    if d is None:
        return ()
    try:
        with (d / "cloud" / "impact.csv").open(encoding="utf-8-sig") as f:
            return tuple(csv.DictReader(f))
    except OSError:
        return ()


def _world() -> tuple[float, str]:
    sources = _json("private_infra/carbon_intensity_per_source.json")
    if "world_average" in sources:
        return float(sources["world_average"]), (f"world average {sources['world_average']} gCO2e/kWh "
                                                 f"(codecarbon data: {sources.get('world_average_source', 'IEA')})")
    return WORLD_AVERAGE_G_PER_KWH, WORLD_AVERAGE_SOURCE


def _alpha3(code: str) -> Optional[str]:
    """ISO alpha-3 of a country code or name, via the energy-mix table (alpha-3 keys and names) and
    pycountry (a codecarbon dependency) for alpha-2 codes."""
    mix = _json("private_infra/global_energy_mix.json")
    up = code.strip().upper()
    if up in mix:
        return up
    for iso, row in mix.items():
        if str(row.get("country_name", "")).lower() == code.strip().lower():
            return iso
    if len(up) == 2:
        try:
            import pycountry

            country = pycountry.countries.get(alpha_2=up)
            return country.alpha_3 if country else None
        except ImportError:
            return None
    return None


def _lookup(region: str) -> tuple[float, str]:
    r = region.strip()
    if r.lower() in ("world", "global", "world-average"):
        return _world()
    if ":" in r:  # cloud region
        provider, name = r.split(":", 1)
        for row in _cloud_rows():
            if row.get("provider", "").lower() == provider.lower() and row.get("region", "").lower() == name.lower():
                return float(row["impact"]), (f"{row.get('providerName', provider)} {name} "
                                              f"({row.get('source') or 'codecarbon cloud data'})")
        raise EffbenchError(f"unknown cloud region '{region}' (use provider:region as in codecarbon's cloud table, e.g. "
                            "gcp:us-east1)")
    if "/" in r:  # USA/<state>
        country, state = r.split("/", 1)
        if _alpha3(country) == "USA":
            usa = _json("private_infra/2023/usa_emissions.json")
            state_row = usa.get(state.lower().replace("_", " ")) or next(
                (v for v in usa.values() if isinstance(v, dict) and str(v.get("regionCode", "")).lower() == state.lower()), None)
            if state_row:
                src = usa.get("_source", {})
                return float(state_row["emissions"]) * _LBS_PER_MWH_TO_G_PER_KWH, f"US {state} ({src.get('name', 'EPA eGRID')})"
        raise EffbenchError(f"unknown region '{region}' (sub-national data: USA/<state>, e.g. USA/california)")
    nordic = _json("private_infra/nordic_emissions.json").get("data", {})
    if r.upper() in nordic:
        z = nordic[r.upper()]
        return float(z["emission_factor"]), f"{z.get('description', r.upper())} ({z.get('year', '')} codecarbon Nordic data)"
    iso = _alpha3(r)
    mix = _json("private_infra/global_energy_mix.json")
    if iso and iso in mix and mix[iso].get("carbon_intensity") is not None:
        row = mix[iso]
        return float(row["carbon_intensity"]), (f"{row.get('country_name', iso)} grid mix {row.get('year', '')} "
                                                "(codecarbon global_energy_mix)")
    if _data_dir() is None:
        raise EffbenchError(f"region '{region}' needs codecarbon's data: pip install 'effbench[carbon]' (or pass no region for "
                            "the world average)")
    raise EffbenchError(f"unknown region '{region}': use an ISO country code (FRA, FR), USA/<state>, a Nordic zone (SE3), "
                        "provider:region or world")


# The time-zone database's zone -> country tables (tzdata), the first readable one wins.
ZONE_TABS = ("/usr/share/zoneinfo/zone1970.tab", "/usr/share/zoneinfo/zone.tab")


def machine_country() -> Optional[str]:
    """The ISO alpha-2 country of this machine's time zone (``/etc/localtime`` or ``TZ``), if it names one."""
    zone = os.environ.get("TZ", "").lstrip(":")
    if not zone:
        try:
            target = os.path.realpath("/etc/localtime")
            zone = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
        except OSError:
            zone = ""
    if not zone or zone.startswith(("Etc/", "UTC", "GMT")):
        return None
    for tab in ZONE_TABS:
        try:
            lines = Path(tab).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split("\t")
            if not line.startswith("#") and len(parts) >= 3 and parts[2] == zone:
                return parts[0].split(",")[0]
    return None


@dataclass(frozen=True)
class Intensity:
    g_per_kwh: float
    source: str
    region: str  # what the figure is for: the region asked for, the inferred country, or "world"


def resolve(region: Optional[str] = None) -> Intensity:
    """The intensity for ``region``; with none, ``EFFBENCH_REGION``, else the machine's country from
    its time zone, else the world average. The source says which was used and why."""
    if region:
        return Intensity(*_lookup(region), region)
    env = os.environ.get("EFFBENCH_REGION")
    if env:
        value, source = _lookup(env)
        return Intensity(value, f"{source}; region from EFFBENCH_REGION", env)
    country = machine_country()
    if country and _data_dir() is not None:
        try:
            value, source = _lookup(country)
            return Intensity(value, f"{source}; country {country} inferred from this machine's time zone", country)
        except EffbenchError:
            pass
    value, source = _world()
    return Intensity(value, f"{source}; no region given and this machine's country is unknown", "world")


def grid_intensity(region: Optional[str] = None) -> tuple[float, str]:
    """(gCO2e/kWh, source) for ``region`` (see ``resolve``)."""
    i = resolve(region)
    return i.g_per_kwh, i.source


def grams(joules: float, intensity_g_per_kwh: float) -> float:
    return joules / J_PER_KWH * intensity_g_per_kwh


def carbon_section(energy: Energy, tokens_per_call: int, intensity: Intensity) -> Carbon:
    """CO2e per full generate call and per 1M generated tokens for one record's energy section."""
    from effbench.results.schema import Carbon

    c = Carbon(region=intensity.region, intensity_g_per_kwh=intensity.g_per_kwh, source=intensity.source,
               energy_status=energy.status)
    if energy.joules_total is None or energy.status == "unavailable":
        return c
    c.g_per_call = grams(energy.joules_total, intensity.g_per_kwh)
    if tokens_per_call > 0:
        c.g_per_million_tokens = grams(energy.joules_total / tokens_per_call * 1e6, intensity.g_per_kwh)
    return c


def run_grams(energies: list[Energy], intensity: Intensity) -> Optional[float]:
    """CO2e of every energy window of a run (all repeats of all configurations), where measured or estimated."""
    joules = [w["joules"] for e in energies for w in e.windows if w.get("joules") is not None]
    return grams(sum(joules), intensity.g_per_kwh) if joules else None
