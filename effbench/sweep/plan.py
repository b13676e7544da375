"""What a sweep measures: configurations (``Point``) and the groups that share one loaded
model (``GroupSpec``: one model + scheme on one device, what a launcher runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from effbench.analysis.carbon import Intensity
from effbench.config import SweepConfig
from effbench.launchers.config import TargetConfig
from effbench.models import ModelSpec
from effbench.quant import get_scheme
from effbench.scenarios import Point, scenario_class

# One point type for every scenario (``effbench.scenarios.Point``); the old name stays for users' code.
ConfigPoint = Point


@dataclass
class GroupSpec:
    """Everything a worker needs to measure one group, anywhere: picklable, no open handles."""

    config: SweepConfig
    spec: ModelSpec
    backend: str
    scheme: str
    device: str
    points: list[Point]
    run_id: str = ""
    target: Optional[TargetConfig] = None  # a fleet target of the sweep file, None for this sweep's machine
    idle_power_w: dict[str, float] = field(default_factory=dict)  # hostname -> idle W measured by the parent
    grid: Optional[Intensity] = None
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
                        Point(spec.id, backend, devices[backend], scheme_name, ps, pt, nt, compile=config.offline.compile,
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
