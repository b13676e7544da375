"""Which machine this is, and which profile a name or a record belongs to."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from effbench.device.nvidia import gpu_names
from effbench.errors import EffbenchError, first_line
from effbench.hardware.catalog import (
    HardwareProfile,
    PriceOverride,
    apply_prices,
    load_price_file,
    load_profile_file,
    looks_like_path,
    profiles,
    register,
    suggest,
)
from effbench.hardware.cpu import cpu_name, cpu_profile_id, local_cpu_profile


@dataclass(frozen=True)
class Detected:
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or "AMD EPYC 7B13"
    kind: str  # "gpu" or "cpu"
    profile: Optional[str]  # id of the matching profile, if any


def match_profile(name: str, kind: Optional[str] = None,
                  pool: Optional[list[HardwareProfile]] = None) -> Optional[HardwareProfile]:
    """The profile whose ``match`` patterns fit a device name. Several matches are ambiguous: the
    longest matching pattern wins, so a user profile can be more specific than a shipped one."""
    best: tuple[int, Optional[HardwareProfile]] = (-1, None)
    for p in profiles() if pool is None else pool:
        if kind and p.kind != kind:
            continue
        for pattern in p.match:
            m = re.search(pattern, name, re.IGNORECASE)
            if m and len(pattern) > best[0]:
                best = (len(pattern), p)
    return best[1]


def _nvml_gpu_names() -> list[str]:
    """Every NVIDIA GPU NVML sees (empty without NVML, a driver or a GPU), through the device layer."""
    return gpu_names()


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if it is one effbench understands (auto, cpu, cuda, cuda:N), else a one-line error."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise EffbenchError(f"{option} '{device}' is not a device; use auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    return device


def _gpu_name(device: str) -> str:
    if device == "auto":
        return _nvml_gpu_names()[0]
    index = int(device.partition(":")[2] or 0)
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch, or a torch built without CUDA: no CUDA device
        count = 0
    if count == 0:
        raise EffbenchError(f"no CUDA device here (device '{device}'); use --device cpu")
    if index >= count:
        raise EffbenchError(f"no CUDA device {index} here (this machine has {count}: cuda:0..cuda:{count - 1})")
    try:
        return torch.cuda.get_device_name(index)
    except Exception as e:  # noqa: BLE001 - a driver error: say what it is, in one line
        raise EffbenchError(f"cannot query CUDA device {index}: {first_line(e) or type(e).__name__}") from None


def detect(device: str = "cpu") -> Detected:
    """What this machine is, for ``device`` ('cpu', 'cuda', 'cuda:N', or 'auto': the first NVIDIA GPU
    NVML sees, else the CPU). Never measures anything (the sweep calls it before every run)."""
    check_device(device)
    if device.startswith("cuda") or (device == "auto" and _nvml_gpu_names()):
        name = _gpu_name(device)
        p = match_profile(name, "gpu")
        return Detected(name, "gpu", p.id if p else None)
    name = cpu_name()
    p = match_profile(name, "cpu")  # a user profile for this CPU wins over the detected one
    return Detected(name, "cpu", p.id if p else cpu_profile_id(name))


def known_ids() -> list[str]:
    return sorted({p.id for p in profiles()} | {cpu_profile_id(cpu_name())})


def get_profile(id_or_path: str, prices: Optional[dict[str, PriceOverride]] = None, measure: bool = True,
                local: bool = True) -> HardwareProfile:
    """A profile by id (shipped, user, or, with ``local``, this machine's ``cpu-...``) or from a YAML
    file; unknown ids are an error with a did-you-mean. ``local=False`` for anything describing a
    stored run: its hardware never depends on the machine reading it."""
    if looks_like_path(id_or_path):
        return apply_prices([load_profile_file(id_or_path)], {**load_price_file(), **(prices or {})})[0]
    for p in profiles(prices):
        if p.id == id_or_path:
            return p
    if local and id_or_path == cpu_profile_id(cpu_name()):
        here = local_cpu_profile(measure)
        if here is not None:
            return apply_prices([here], {**load_price_file(), **(prices or {})})[0]
    known = known_ids() if local else sorted(p.id for p in profiles())
    raise EffbenchError(f"unknown hardware profile '{id_or_path}'; {suggest(id_or_path, known)}"
                        "'effbench hardware list' shows the ids, or pass the path of a profile YAML file")


def resolve_profile_id(id_or_path: Optional[str], detected: Detected) -> Optional[str]:
    """The profile a run is filed under: the one asked for (checked), else the detected one."""
    if not id_or_path:
        return detected.profile
    if looks_like_path(id_or_path):
        profile = load_profile_file(id_or_path)
        register(profile)  # later look-ups by id in this process find it
        return profile.id
    if id_or_path not in known_ids():
        raise EffbenchError(f"unknown hardware profile '{id_or_path}'; {suggest(id_or_path, known_ids())}"
                            "'effbench hardware list' shows the ids, or pass the path of a profile YAML file")
    return id_or_path


StoredProfiles = Mapping[tuple[Optional[str], Optional[str]], HardwareProfile]


def stored_profiles(run: Mapping[str, Any], prices: Optional[dict[str, PriceOverride]] = None,
                    origin: str = "run.json") -> dict[tuple[Optional[str], Optional[str]], HardwareProfile]:
    """The profiles a run stored in its ``run.json``, keyed by the (profile id, detected name) its
    records carry, with the price file and ``prices`` applied: ``hardware.resolved`` (the machine the
    sweep ran on, written by the sweep) and each ``hardware.targets[]`` entry (a fleet host: a SLURM
    node or a Ray worker that reported what it measured on). Entries that do not validate (an older
    or edited run.json) are left out."""
    block = run.get("hardware") if isinstance(run, Mapping) else None
    if not isinstance(block, Mapping):
        return {}
    entries = [block] + [t for t in block.get("targets") or [] if isinstance(t, Mapping)]
    found: dict[tuple[Optional[str], Optional[str]], HardwareProfile] = {}
    overrides = {**load_price_file(), **(prices or {})}
    for entry in entries:
        data = entry.get("resolved")
        if not isinstance(data, Mapping):
            continue
        try:
            profile = HardwareProfile.model_validate(dict(data))
        except ValidationError:
            continue
        profile = apply_prices([profile.model_copy(update={"origin": origin})], overrides)[0]
        found.setdefault((entry.get("profile"), entry.get("detected_name")), profile)
    return found


def profile_for(profile_id: Optional[str], detected_name: Optional[str],
                prices: Optional[dict[str, PriceOverride]] = None, measure: bool = True,
                stored: Optional[StoredProfiles] = None) -> Optional[HardwareProfile]:
    """The profile a record was taken on: the one its run stored in run.json (``stored``, from
    ``stored_profiles``), else its ``hardware.profile`` id, else the profile matching its detected
    name (this machine's CPU included). ``None`` when none is known here."""
    if stored and (profile_id, detected_name) in stored:
        return stored[(profile_id, detected_name)]
    if profile_id:
        try:
            return get_profile(profile_id, prices, measure)
        except EffbenchError:
            pass  # a profile from another machine's user dir: fall back to the name
    if detected_name:
        p = match_profile(detected_name, pool=profiles(prices))
        if p is not None:
            return p
        if detected_name == cpu_name():
            try:
                return get_profile(cpu_profile_id(detected_name), prices, measure)
            except EffbenchError:
                return None  # bandwidth not measured yet and measuring not allowed
    return None
