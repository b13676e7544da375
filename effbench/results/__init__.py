"""Result records (schema), run directories (store) and a finished run read once (run: ``load_run``).
The names below are imported on first use, so that importing this package loads nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from effbench.results.run import Run, RunMeta, load_run
    from effbench.results.schema import SCHEMA_VERSION, Record
    from effbench.results.store import RunStore, load_results, read_run_dir

__all__ = ["SCHEMA_VERSION", "Record", "Run", "RunMeta", "RunStore", "load_results", "load_run", "read_run_dir"]

_WHERE = {"SCHEMA_VERSION": "schema", "Record": "schema", "Run": "run", "RunMeta": "run", "load_run": "run",
          "RunStore": "store", "load_results": "store", "read_run_dir": "store"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"effbench.results.{where}"), name)
