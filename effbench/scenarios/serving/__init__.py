"""The serving scenario (``--scenario serving``): an OpenAI-compatible server under offered load.
``client`` streams requests, ``load`` offers them (rates or concurrency), ``metrics`` sums a point
up, ``engines`` starts and stops the servers effbench manages, ``scenario`` ties them together."""
from effbench.scenarios.serving.scenario import ServingScenario

__all__ = ["ServingScenario"]
