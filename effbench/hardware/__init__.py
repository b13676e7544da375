"""Hardware profiles (data in the top-level ``hardware/`` folder) and detection of this machine.

Minimal for now: detection names the CPU or GPU; profile loading and matching are filled in by
the hardware-profiles work (issue 6). The two functions below are the interface the sweep uses.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Detected:
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or "AMD EPYC 7B13"
    kind: str  # "gpu" or "cpu"
    profile: Optional[str]  # id of the matching profile, if any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect(device: str = "cpu") -> Detected:
    """What this machine is, for ``device`` ('cpu', 'cuda', 'cuda:N')."""
    if device.startswith("cuda"):
        import torch

        idx = int(device.partition(":")[2] or 0)
        return Detected(torch.cuda.get_device_name(idx), "gpu", None)
    return Detected(cpu_name(), "cpu", None)


def resolve_profile_id(id_or_path: Optional[str], detected: Detected) -> Optional[str]:
    """The profile a run is filed under: the one asked for, else the detected one."""
    return id_or_path or detected.profile
