"""A sweep: expand the config into groups of configurations (``plan``), run each group through a
launcher (``effbench.launchers``) with the worker (``worker``: load once, the scenario measures each
configuration) and append every record to the run directory (``runner``, the parent's alone)."""
from effbench.sweep.plan import ConfigPoint, GroupSpec, expand
from effbench.sweep.runner import Run, Sweep, SweepObserver, default_out_dir, run_sweep

__all__ = ["ConfigPoint", "GroupSpec", "Run", "Sweep", "SweepObserver", "default_out_dir", "expand", "run_sweep"]
