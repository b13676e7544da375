"""A sweep: expand the config into groups of configurations (``plan``), run each group through a
launcher (``effbench.launchers``) with the worker (``worker``: load once, the scenario measures each
configuration) and append every record to the run directory (``runner``, the parent's alone).

The names below are imported on first use: importing a light submodule (``observer``, which the
CLI subclasses) must not load the runner."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from effbench.sweep.observer import SweepObserver
    from effbench.sweep.plan import ConfigPoint, GroupSpec, expand
    from effbench.sweep.runner import Run, Sweep, default_out_dir, run_sweep

__all__ = ["ConfigPoint", "GroupSpec", "Run", "Sweep", "SweepObserver", "default_out_dir", "expand", "run_sweep"]

_WHERE = {"ConfigPoint": "plan", "GroupSpec": "plan", "expand": "plan", "SweepObserver": "observer",
          "Run": "runner", "Sweep": "runner", "default_out_dir": "runner", "run_sweep": "runner"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"effbench.sweep.{where}"), name)
