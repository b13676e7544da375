"""The offline scenario (``--scenario offline``): static batches of equal-length prompts through
``generate``. ``config`` holds its keys (light: the CLI imports it), ``scenario`` measures."""
from __future__ import annotations

from typing import Any

from effbench.scenarios.offline.config import OfflineConfig


def __getattr__(name: str) -> Any:
    # The scenario imports the measurement loop; load it only when it is asked for.
    if name in ("OfflineScenario", "repeat_policy"):
        from effbench.scenarios.offline import scenario

        return getattr(scenario, name)
    raise AttributeError(name)


__all__ = ["OfflineConfig", "OfflineScenario", "repeat_policy"]
