"""Scenarios (what is measured): ``offline`` static batches through ``generate``. Looked up by name
through the one registry pattern (``effbench.registry``)."""
from __future__ import annotations

from effbench.registry import Registry
from effbench.scenarios.base import Context, Point, Scenario

SCENARIOS: Registry[type[Scenario]] = Registry("scenario", {
    "offline": "effbench.scenarios.offline:OfflineScenario",
})


def create_scenario(name: str, config: object) -> Scenario:
    return SCENARIOS.get(name)(config)


__all__ = ["Context", "Point", "SCENARIOS", "Scenario", "create_scenario"]
