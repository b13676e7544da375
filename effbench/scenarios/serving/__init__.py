"""The serving scenario (``--scenario serving``): an OpenAI-compatible server under offered load.
``config`` holds its keys, ``client`` streams requests, ``load`` offers them (rates or concurrency),
``metrics`` sums a point up, ``engines`` starts and stops the servers effbench manages, ``scenario``
ties them together."""
from __future__ import annotations

from typing import Any

from effbench.scenarios.serving.config import ServingConfig


def __getattr__(name: str) -> Any:
    # The scenario imports the client and statistics; load it only when it is asked for.
    if name == "ServingScenario":
        from effbench.scenarios.serving.scenario import ServingScenario

        return ServingScenario
    raise AttributeError(name)


__all__ = ["ServingConfig", "ServingScenario"]
