"""The hardware a run was measured on, read only from what the run stored.

A results directory is self-contained: ``report``, ``compare`` and ``plan`` describe a run's
hardware from its ``run.json`` (``hardware.resolved``, the full profile the sweep wrote), never by
detecting the machine they happen to run on. A run that stores no profile is named in one line;
the user may say which profile it ran on (``--hardware ID``), which is then recorded as theirs.

One rule names a record's hardware everywhere (``hardware_id``): report sections, compare's
matching and plan's options.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

from effbench.errors import EffbenchError
from effbench.hardware import HardwareProfile, PriceOverride, get_profile
from effbench.hardware.cpu import cpu_profile_id
from effbench.results.schema import Record

if TYPE_CHECKING:  # pragma: no cover
    from effbench.results.run import Run

# The first effbench release whose runs store their hardware profile in run.json.
PROFILE_STORED_SINCE = "0.2.0"

Key = tuple[Optional[str], Optional[str]]  # a record's (hardware.profile, hardware.detected_name)


def record_key(record: Record) -> Key:
    return record.hardware.profile, record.hardware.detected_name


def missing_profile_message(run: str, option: str = "--hardware ID") -> str:
    return (f"run {run} stores no hardware profile: pass {option}, "
            f"or re-run with effbench >= {PROFILE_STORED_SINCE}")


def normalise_hardware(name: Optional[str], device: Optional[str]) -> Optional[str]:
    """The id a profile of a detected name would have: CPUs as ``cpu-<slug>`` (``cpu_profile_id``),
    other devices as their lower-case slug."""
    if not name:
        return None
    if (device or "cpu").startswith("cpu") and not name.lower().startswith("cpu-"):
        return cpu_profile_id(name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def hardware_id(record: Record, profile: Optional[HardwareProfile] = None) -> str:
    """The one name of the hardware a record ran on: its profile id, else the id of the profile its
    run stored (or ``--hardware`` named: ``profile``), else the id a profile of its detected name
    would have, so "AMD EPYC" and ``cpu-amd-epyc`` are the same machine; else "unknown"."""
    if record.hardware.profile:
        return record.hardware.profile
    if profile is not None:
        return profile.id
    return normalise_hardware(record.hardware.detected_name, record.backend.device) or "unknown"


def given_profile(hardware: Optional[str], prices: Optional[dict[str, PriceOverride]] = None) -> Optional[HardwareProfile]:
    """The profile ``--hardware`` names (an id of a shipped or user profile, or a YAML path), never this machine's."""
    return get_profile(hardware, prices, measure=False, local=False) if hardware else None


def run_profiles(stored: Mapping[Key, HardwareProfile], records: Sequence[Record],
                 given: Optional[HardwareProfile] = None) -> dict[Key, HardwareProfile]:
    """The profile of each record key of one run: the one its run.json stored for that key
    (``stored``: ``effbench.hardware.stored_profiles``), or where the run stored one profile, that
    one (an older run.json filed it under another id, yet one run is measured on one profile); for a
    run that stores none, ``given``; else none. Nothing about this machine is consulted."""
    if not stored:
        return {record_key(r): given for r in records} if given is not None else {}
    only = next(iter(stored.values())) if len({p.id for p in stored.values()}) == 1 else None
    found = dict(stored)
    for r in records:
        p = stored.get(record_key(r)) or only
        if p is not None:
            found[record_key(r)] = p
    return found


@dataclass
class Profiles:
    """The profile of each record of several runs, by the record's run id and key (what survives a
    copy of the record), else by key among every profile the runs stored."""

    by_run: dict[tuple[str, Key], HardwareProfile] = field(default_factory=dict)
    by_key: dict[Key, HardwareProfile] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # runs that store none (and no --hardware given)

    @classmethod
    def of_runs(cls, runs: Iterable[Run]) -> Profiles:
        found = cls()
        for run in runs:
            found.by_key.update(run.stored)
            for r in run.records:
                p = run.profiles.get(record_key(r))
                if p is not None:
                    found.by_run.setdefault((r.run_id, record_key(r)), p)
            if run.missing_profile:
                found.missing.append(run.name)
        return found

    def of(self, record: Record) -> Optional[HardwareProfile]:
        key = record_key(record)
        return self.by_run.get((record.run_id, key)) or self.by_key.get(key)

    @property
    def ids(self) -> set[str]:
        return {p.id for p in [*self.by_key.values(), *self.by_run.values()]}

    def require(self, option: str = "--hardware ID") -> Profiles:
        """Itself if every run has a profile, else the one-line error for the first that has none."""
        if self.missing:
            raise EffbenchError(missing_profile_message(self.missing[0], option))
        return self
