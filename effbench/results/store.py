"""The run directory: ``run.json`` (environment, resolved config) and the append-only
``results.jsonl`` (one record per finished configuration).

Records are appended as whole lines and fsynced, so a sweep killed at any moment keeps every
finished record; a torn last line (killed mid-write) is ignored when reading and cut off before
the next append.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from pydantic import ValidationError

from effbench.errors import EffbenchError
from effbench.results.schema import READ_CONTEXT, SCHEMA_VERSION, Record, impossible_amounts_dropped

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers, and a
    figure that is not finite is not a measurement)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def iter_record_dicts(path: Path, skipped: Optional[list[int]] = None) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of a results file. A torn last line (a write interrupted by a kill) is
    ignored; any other line that is not a JSON object is skipped and its number added to ``skipped``."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # torn final line from an interrupted write
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                yield obj
            elif skipped is not None:
                skipped.append(number)


class RunStore:
    """One run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run_file = self.path / RUN_FILE
        self.results_file = self.path / RESULTS_FILE

    def exists(self) -> bool:
        return self.run_file.is_file() or self.results_file.is_file()

    def read_run(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EffbenchError(f"{self.run_file} is corrupt ({e}); move it aside to start a new run") from None
        if not isinstance(data, dict):
            raise EffbenchError(f"{self.run_file} is not a run description (a JSON object); move it aside to start a new run")
        return data

    def write_run(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.run_file, data)

    def record_dicts(self, warn: bool = False) -> list[dict[str, Any]]:
        skipped: list[int] = []
        records = list(iter_record_dicts(self.results_file, skipped))
        if warn and skipped:
            print(f"effbench: warning: {self.results_file}: skipped {len(skipped)} line(s) that are not records "
                  f"(line {', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''})", file=sys.stderr)
        return records

    def completed_config_ids(self) -> set[str]:
        return {str(d["config_id"]) for d in self.record_dicts() if "config_id" in d}

    def _repair_tail(self) -> None:
        """Cut a torn last line so the next append starts on a fresh line."""
        if not self.results_file.is_file():
            return
        with self.results_file.open("rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)

    def append(self, record: Record) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        data = impossible_amounts_dropped(finite(record.to_json_dict()))
        line = json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"
        with self.results_file.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def validate_records(dicts: Iterable[dict[str, Any]], origin: str) -> list[Record]:
    records = []
    for i, d in enumerate(dicts, 1):
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EffbenchError(f"{origin}: record {i} has schema_version {version!r}; this effbench reads {SCHEMA_VERSION}")
        try:
            records.append(Record.model_validate(d, context=READ_CONTEXT))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise EffbenchError(f"{origin}: record {i} is invalid at '{where}': {err['msg']}") from None
    return records


def run_dir_of(path: str | Path) -> Path:
    """A run directory, given as itself or as its results.jsonl / run.json (what users paste)."""
    p = Path(path)
    return p.parent if p.is_file() and p.name in (RESULTS_FILE, RUN_FILE) else p


def read_run_dir(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    store = RunStore(run_dir_of(path))
    if not store.path.is_dir():
        raise EffbenchError(f"run directory '{path}' does not exist")
    if not store.results_file.is_file():
        raise EffbenchError(f"'{path}' is not a run directory (no {RESULTS_FILE}); pass a directory written by 'effbench run'")
    return store.read_run(), validate_records(store.record_dicts(warn=True), str(store.results_file))


def load_results(*dirs: str | Path, as_dataframe: Optional[bool] = None) -> Any:
    """Validated records of run directories: a pandas DataFrame (flattened fields) where pandas is
    installed, else a list of ``Record``."""
    records: list[Record] = []
    for d in dirs:
        records.extend(read_run_dir(d)[1])
    if as_dataframe is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if as_dataframe:
            raise EffbenchError("pandas is not installed; pip install pandas, or call load_results(..., "
                                "as_dataframe=False)") from None
        return records
    return pd.json_normalize([r.to_json_dict() for r in records])
