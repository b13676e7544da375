"""What an NVIDIA GPU's power sensor does, per generation: the one home for these facts.

Three things decide how far a GPU energy figure can be trusted, and they differ by generation:

- **What ``nvmlDeviceGetPowerUsage`` returns.** The NVML reference: "On Ampere (except GA100) or
  newer GPUs, the API returns power averaged over 1 sec interval. On GA100 and older architectures,
  instantaneous power is returned." (GA100 is the A100's chip.)
- **How much of the time the sensor observes.** Yang et al., "Part-time Power Measurements:
  nvidia-smi's Lack of Attention" (arXiv 2312.02741): on A100 and H100 only about 25 ms of every
  100 ms update period is sampled. For other generations no share is published: it is *unstated*.
- **The stated accuracy.** The NVML reference: "On Fermi and Kepler GPUs the reading is accurate to
  within +/- 5% of current power draw." NVIDIA states none for later generations: *unstated* (an
  interval then covers only what effbench can bound, and the reading is flagged).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

NVML_DOC = "NVML reference, nvmlDeviceGetPowerUsage"
PART_TIME_PAPER = "Yang et al., arXiv 2312.02741"
UPDATE_PERIOD_S = 0.1  # NVML publishes power and energy about every 100 ms on recent GPUs


@dataclass(frozen=True)
class Generation:
    name: str  # "hopper", "ga100", ...
    power_usage_average_s: Optional[float]  # nvmlDeviceGetPowerUsage's averaging (None: instantaneous)
    duty: Optional[float]  # share of each update period the sensor observes (None: unstated)
    duty_source: str
    accuracy_rel: Optional[float]  # stated accuracy bound +-a (relative), None when unstated
    accuracy_source: str
    update_period_s: float = UPDATE_PERIOD_S

    @property
    def accuracy_stated(self) -> bool:
        return self.accuracy_rel is not None

    def describe(self) -> str:
        acc = (f"accuracy +-{self.accuracy_rel:.0%} ({self.accuracy_source})" if self.accuracy_rel is not None
               else "accuracy unstated by NVIDIA")
        duty = (f"observes {self.duty:.0%} of each {self.update_period_s * 1000:.0f} ms ({self.duty_source})"
                if self.duty is not None else "observed share unstated")
        avg = (f"power usage is a {self.power_usage_average_s:g} s average" if self.power_usage_average_s
               else "power usage is instantaneous")
        return f"{self.name}: {avg} ({NVML_DOC}); {duty}; {acc}"


_UNSTATED = "unstated"
GENERATIONS: dict[str, Generation] = {g.name: g for g in (
    Generation("kepler", None, None, _UNSTATED, 0.05, NVML_DOC),  # Fermi and Kepler share the statement
    Generation("maxwell", None, None, _UNSTATED, None, _UNSTATED),
    Generation("pascal", None, None, _UNSTATED, None, _UNSTATED),
    Generation("volta", None, None, _UNSTATED, None, _UNSTATED),
    Generation("turing", None, None, _UNSTATED, None, _UNSTATED),
    Generation("ga100", None, 0.25, PART_TIME_PAPER, None, _UNSTATED),
    Generation("ampere", 1.0, None, _UNSTATED, None, _UNSTATED),
    Generation("ada", 1.0, None, _UNSTATED, None, _UNSTATED),
    Generation("hopper", 1.0, 0.25, PART_TIME_PAPER, None, _UNSTATED),
    Generation("blackwell", 1.0, None, _UNSTATED, None, _UNSTATED),
    # An unrecognised name: assume the newest behaviour (averaged) and state nothing else.
    Generation("unknown", 1.0, None, _UNSTATED, None, _UNSTATED),
)}

# Product names to generations, first match wins (GA100 before the other Ampere parts).
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\b(a100|a30|ga100)\b", "ga100"),
    (r"\b(h100|h200|h800|gh200|h20)\b", "hopper"),
    (r"\b(b100|b200|gb200|b300|gb300|rtx pro 6000|rtx 50\d0)\b", "blackwell"),
    (r"\b(l4|l40s?|rtx 40\d0|rtx [2456]000 ada|rtx 6000 ada)\b", "ada"),
    (r"\b(a10g?|a16|a2|a40|a800|a[2456]000|rtx 30\d0|rtx a\d+)\b", "ampere"),
    (r"\b(t4|rtx 20\d0|quadro rtx|titan rtx|gtx 16\d0)\b", "turing"),
    (r"\b(v100|titan v|quadro gv100)\b", "volta"),
    (r"\b(p100|p40|p4|gtx 10\d0|titan xp?)\b", "pascal"),
    (r"\b(m40|m60|m10|gtx 9\d0|gtx titan x)\b", "maxwell"),
    (r"\b(k80|k40|k20x?|k10|gtx 7\d0|gtx titan|c20\d0|m20\d0)\b", "kepler"),
)


def generation_of(gpu_name: Optional[str]) -> Generation:
    """The generation of a product name as NVML or nvidia-smi prints it ("NVIDIA H100 80GB HBM3"),
    or a generation's own name ("hopper"); ``unknown`` when nothing matches."""
    if not gpu_name:
        return GENERATIONS["unknown"]
    key = " ".join(str(gpu_name).lower().replace("-", " ").split())
    if key in GENERATIONS:
        return GENERATIONS[key]
    for pattern, gen in _PATTERNS:
        if re.search(pattern, key):
            return GENERATIONS[gen]
    return GENERATIONS["unknown"]
