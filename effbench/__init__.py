"""effbench: how much useful LLM work a machine does per second, per joule and per byte.

The public API is small and imports heavy libraries (torch, transformers) only when used:

- ``effbench.run(config)``: run a sweep (same as ``effbench run``), returns the records.
- ``effbench.measure(sensor="auto")``: an energy/time window around any code.
- ``effbench.load_results(*dirs)``: validated records of run directories.
"""
from __future__ import annotations

__version__ = "0.2.0"

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pragma: no cover
    from effbench.config import SweepConfig
    from effbench.sweep import Run


def run(config: Union[SweepConfig, dict[str, Any], str, Path, None] = None, **overrides: Any) -> Run:
    """Run a sweep from a ``SweepConfig``, a dict, a YAML path or keyword options."""
    from effbench.config import load_config
    from effbench.sweep import run_sweep

    return run_sweep(load_config(config, overrides))


def measure(sensor: str = "auto", device: str = "cpu"):
    """Context manager measuring energy and time of the enclosed block; see ``effbench.sensors.measure``."""
    from effbench.sensors import measure as _measure

    return _measure(sensor=sensor, device=device)


def load_results(*dirs: Union[str, Path]):
    """Records of one or more run directories (a pandas DataFrame when pandas is installed)."""
    from effbench.results.store import load_results as _load

    return _load(*dirs)


__all__ = ["__version__", "run", "measure", "load_results"]
