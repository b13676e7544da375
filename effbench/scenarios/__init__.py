"""Scenarios (what is measured): ``offline`` static batches through ``generate``; ``serving`` a
server under offered load. Looked up by name
through the one registry pattern (``effbench.registry``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from effbench.registry import Registry
from effbench.scenarios.base import CannotRun, Context, Group, Opened, Point, Scenario, Sections

if TYPE_CHECKING:
    from effbench.config import SweepConfig

SCENARIOS: Registry[type[Scenario]] = Registry("scenario", {
    "offline": "effbench.scenarios.offline:OfflineScenario",
    "serving": "effbench.scenarios.serving:ServingScenario",
}, group="effbench.scenarios")


def scenario_class(name: str) -> type[Scenario]:
    return SCENARIOS.get(name)


def create_scenario(name: str, config: SweepConfig) -> Scenario:
    return SCENARIOS.get(name)(config)


__all__ = ["SCENARIOS", "CannotRun", "Context", "Group", "Opened", "Point", "Scenario", "Sections", "create_scenario",
           "scenario_class"]
