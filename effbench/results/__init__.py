"""Result records (schema) and run directories (store)."""
from effbench.results.schema import SCHEMA_VERSION, Record
from effbench.results.store import RunStore, load_results, read_run_dir

__all__ = ["SCHEMA_VERSION", "Record", "RunStore", "load_results", "read_run_dir"]
