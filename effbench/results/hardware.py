"""The hardware a run was measured on, read only from what the run stored.

A results directory is self-contained: ``report``, ``compare`` and ``plan`` describe a run's
hardware from its ``run.json`` (``hardware.resolved``, the full profile the sweep wrote), never by
detecting the machine they happen to run on. A run that stores no profile is named in one line;
the user may say which profile it ran on (``--hardware ID``), which is then recorded as theirs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from effbench.errors import EffbenchError
from effbench.hardware import HardwareProfile, PriceOverride, get_profile, stored_profiles
from effbench.results.schema import Record

# The first effbench release whose runs store their hardware profile in run.json.
PROFILE_STORED_SINCE = "0.2.0"

Key = tuple[Optional[str], Optional[str]]  # a record's (hardware.profile, hardware.detected_name)


def record_key(record: Record) -> Key:
    return record.hardware.profile, record.hardware.detected_name


def missing_profile_message(run: str, option: str = "--hardware ID") -> str:
    return (f"run {run} stores no hardware profile: pass {option}, "
            f"or re-run with effbench >= {PROFILE_STORED_SINCE}")


@dataclass(frozen=True)
class StoredRun:
    """What the resolver needs of one run directory: a name for messages, run.json, its records."""

    name: str
    run: Mapping[str, Any]
    records: Sequence[Record]


@dataclass
class RunProfiles:
    """The profile of each record, from its run's run.json (or the user's ``--hardware``)."""

    by_key: dict[Key, HardwareProfile] = field(default_factory=dict)
    by_record: dict[int, HardwareProfile] = field(default_factory=dict)  # id(record) -> profile
    missing: list[str] = field(default_factory=list)  # runs that store none (and no --hardware given)
    assumed: list[str] = field(default_factory=list)  # runs described by --hardware

    def of(self, record: Record) -> Optional[HardwareProfile]:
        return self.by_record.get(id(record)) or self.by_key.get(record_key(record))

    @property
    def ids(self) -> set[str]:
        return {p.id for p in [*self.by_key.values(), *self.by_record.values()]}

    def messages(self, option: str = "--hardware ID") -> list[str]:
        return [missing_profile_message(name, option) for name in self.missing]


def resolve_run_profiles(runs: Iterable[StoredRun], hardware: Optional[str] = None,
                         prices: Optional[dict[str, PriceOverride]] = None) -> RunProfiles:
    """Each record's hardware profile: the one its run stored; for a run that stores none, the
    profile ``hardware`` names (an id of a shipped or user profile, or a YAML path), else none and
    the run is listed in ``missing``. Nothing about this machine is consulted."""
    resolved = RunProfiles()
    given = get_profile(hardware, prices, measure=False, local=False) if hardware else None
    for src in runs:
        stored = stored_profiles(src.run, prices, origin=f"{src.name}/run.json")
        if stored:
            resolved.by_key.update(stored)
            # One run is measured on one profile: records whose key differs (an older run.json that
            # filed the profile under another id) still belong to it.
            only = next(iter(stored.values())) if len(set(p.id for p in stored.values())) == 1 else None
            for r in src.records:
                p = stored.get(record_key(r)) or only
                if p is not None:
                    resolved.by_record[id(r)] = p
        elif given is not None:
            resolved.assumed.append(src.name)
            for r in src.records:
                resolved.by_record[id(r)] = given
        elif src.records:
            resolved.missing.append(src.name)
    return resolved


def require_profiles(resolved: RunProfiles, option: str = "--hardware ID") -> RunProfiles:
    """``resolved`` if every run has a profile, else the one-line error for the first that has none."""
    if resolved.missing:
        raise EffbenchError(missing_profile_message(resolved.missing[0], option))
    return resolved
