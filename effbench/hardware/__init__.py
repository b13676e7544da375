"""Hardware profiles (data in the top-level ``hardware/`` folder, shipped as ``effbench/_data/hardware``)
and detection of this machine.

Public API: ``profiles()`` (what ``effbench hardware list`` shows), ``get_profile(id_or_path)``,
``detect(device)``, ``resolve_profile_id(id_or_path, detected)`` (used by the sweep),
``profile_for(profile_id, detected_name, stored=...)`` (the profile a record was taken on; ``stored``
from ``stored_profiles(run_json)``, the profile the sweep wrote into run.json).
"""
from __future__ import annotations

from effbench.hardware.catalog import (
    HardwareProfile,
    PeakTflops,
    PriceOverride,
    load_price_file,
    load_profile_file,
    parse_price_options,
    profiles,
)
from effbench.hardware.cpu import cpu_name, cpu_profile_id, local_cpu_profile
from effbench.hardware.detection import (
    Detected,
    detect,
    get_profile,
    known_ids,
    match_profile,
    profile_for,
    resolve_profile_id,
    stored_profiles,
)

__all__ = [
    "Detected", "HardwareProfile", "PeakTflops", "PriceOverride", "cpu_name", "cpu_profile_id", "detect",
    "get_profile", "known_ids", "load_price_file", "load_profile_file", "local_cpu_profile", "match_profile",
    "parse_price_options", "profile_for", "profiles", "resolve_profile_id", "stored_profiles",
]
