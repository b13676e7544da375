"""What a sweep measures: configurations (``ConfigPoint``) and the groups that share one loaded
model (``GroupSpec``: one model + scheme on one device, what a launcher runs)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from effbench.config import SweepConfig
from effbench.launchers.config import TargetConfig
from effbench.models import ModelSpec
from effbench.quant import get_scheme
from effbench.scenarios import scenario_class


@dataclass(frozen=True)
class ConfigPoint:
    """One configuration: what a record describes."""

    model: str  # ModelSpec.id
    backend: str
    device: str
    scheme: str
    prompt_set: str
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    compile: bool = False
    target: str = ""  # the fleet target (hardware) it runs on; "" for a single-machine sweep
    rate: Optional[float] = None  # serving: offered requests/s (math.inf = all at once)
    concurrency: Optional[int] = None  # serving: closed-loop users
    scenario: str = "offline"
    power_limit_w: Optional[float] = None  # --power-limits: the GPU power limit set for this point
    gpu_clock_mhz: Optional[int] = None  # --gpu-clocks: the SM clock locked for this point

    @property
    def config_id(self) -> str:
        fields = asdict(self)
        # Ids of configurations without these options stay what they were before the options existed.
        if not self.compile:
            del fields["compile"]
        if not self.target:
            del fields["target"]
        for name in ("rate", "concurrency", "power_limit_w", "gpu_clock_mhz"):
            if fields[name] is None:
                del fields[name]
        if self.scenario == "offline":
            del fields["scenario"]
        key = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def label(self) -> str:
        where = f" on {self.target}" if self.target else ""
        load = (f"rate={self.rate:g}" if self.rate is not None else  # :g writes inf as "inf"
                f"users={self.concurrency}" if self.concurrency is not None else f"bs={self.batch_size}")
        gpu = (f" {self.power_limit_w:g}W" if self.power_limit_w is not None else "") + \
              (f" {self.gpu_clock_mhz}MHz" if self.gpu_clock_mhz is not None else "")
        return (f"{self.model} {self.backend} {self.scheme} {load} "
                f"p={self.prompt_tokens} n={self.new_tokens} {self.prompt_set}{gpu}{where}")


@dataclass
class GroupSpec:
    """Everything a worker needs to measure one group, anywhere: picklable, no open handles."""

    config: SweepConfig
    spec: ModelSpec
    backend: str
    scheme: str
    device: str
    points: list[ConfigPoint]
    run_id: str = ""
    target: Optional[TargetConfig] = None  # a fleet target of the sweep file, None for this sweep's machine
    idle_power_w: dict[str, float] = field(default_factory=dict)  # hostname -> idle W measured by the parent
    grid: Any = None  # effbench.analysis.carbon.Intensity
    hardware: Optional[dict[str, Any]] = None  # {"profile", "detected_name"} when the parent knows them (local)
    # Backends, sensors, ... registered at run time in the parent, for a worker in a fresh process to
    # re-register (entry-point group -> name -> "module:attr"; effbench.registry.install).
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def target_name(self) -> str:
        return self.target.name if self.target else ""

    @property
    def label(self) -> str:
        where = f"-{self.target_name}" if self.target else ""
        return f"{self.spec.id}-{self.backend}-{self.scheme}{where}".replace("/", "_")


def expand(config: SweepConfig, specs: dict[str, ModelSpec], devices: dict[str, str]) -> list[GroupSpec]:
    """The sweep's groups in measuring order, for each fleet target of the config (or this machine).
    Unquantized schemes come first: they are the perplexity baseline of the quantized ones."""
    groups = []
    scenario = scenario_class(config.scenario)
    targets: list[Optional[TargetConfig]] = list(config.launcher.targets) or [None]
    limits: list[Optional[float]] = [*config.gpu.power_limits] or [None]  # no axis: the GPU as it is
    clocks: list[Optional[int]] = [*config.gpu.gpu_clocks] or [None]
    for target in targets:
        where = target.name if target else ""
        for model in config.model:
            spec = specs[model]
            for backend in scenario.backends(config):
                for scheme_name in sorted(config.quant, key=lambda n: not get_scheme(n).unquantized):
                    points = [
                        ConfigPoint(spec.id, backend, devices[backend], scheme_name, ps, pt, nt, compile=config.offline.compile,
                                    target=where, scenario=scenario.name, power_limit_w=pl, gpu_clock_mhz=clk, **load)
                        for pl in limits
                        for clk in clocks
                        for ps in config.prompts
                        for pt in config.prompt_tokens
                        for nt in config.new_tokens
                        for load in scenario.load_points(config)
                    ]
                    groups.append(GroupSpec(config, spec, backend, scheme_name, devices[backend], points, target=target))
    return groups
