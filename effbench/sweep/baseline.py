"""The perplexity baseline the sweep applies to each record as it is written: the one rule of
``effbench.results.baseline`` (the report and the planner use it too)."""
from __future__ import annotations

from effbench.results.baseline import NO_BASELINE_NOTE, Baselines

__all__ = ["NO_BASELINE_NOTE", "Baselines"]
