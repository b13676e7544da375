"""Attach a power trace to a finished run: each record's energy is recomputed from the trace over
that record's own windows (``energy.windows``), with the same arithmetic as a live sensor.

The records are rewritten in place (atomically); the first attach keeps the original file as
``results.before-attach.jsonl`` and each record keeps its previous energy summary under
``energy.replaced``. Nothing is rewritten when no record window overlaps the trace (a wrong clock or
time zone), and records appended to ``results.jsonl`` while the trace was attached are kept (the
file is re-read right before it is replaced; any other change makes the attach refuse). The idle power
comes from the trace over the run's idle window when the trace covers it, else it is left out (mixing
two sensors' figures would be wrong).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from effbench.errors import EffbenchError
from effbench.measure.energy import reattributed
from effbench.results.run import RunMeta, load_run
from effbench.results.schema import Record
from effbench.results.store import RESULTS_FILE, RunStore
from effbench.sensors.base import MIN_COVERAGE
from effbench.sensors.trace import Trace, integrate_trace, trace_reading

BACKUP_FILE = "results.before-attach.jsonl"


@dataclass
class AttachReport:
    updated: int = 0
    skipped: list[str] = field(default_factory=list)  # "config_id: why"
    idle_power_w: Optional[float] = None
    idle_note: str = ""
    unavailable: int = 0  # records whose energy became unavailable (the trace misses some of their windows)


def _idle_from_trace(trace: Trace, meta: RunMeta, gpu: Optional[int]) -> tuple[Optional[float], str]:
    idle = meta.idle_baseline
    if idle is None or idle.start_unix is None or idle.end_unix is None:
        return None, "the run recorded no idle window: dynamic energy left out"
    te = integrate_trace(trace, idle.start_unix, idle.end_unix, gpu)
    if te.reach < MIN_COVERAGE:
        return None, f"the trace covers only {te.reach:.0%} of the idle window: dynamic energy left out"
    return te.mean_power_w, f"idle {te.mean_power_w:.1f} W from the trace over the run's idle window"


def _when(t: float) -> str:
    try:
        return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{t:.3f}"


def _check_overlap(trace: Trace, records: list[Record]) -> None:
    spans = [(float(w["start"]), float(w["end"])) for r in records for w in r.energy.windows]
    if not spans or any(a < trace.end and b > trace.start for a, b in spans):
        return
    raise EffbenchError(f"no record window overlaps the trace: the trace spans {_when(trace.start)}..{_when(trace.end)} "
                        f"but the run's windows are {_when(min(a for a, _ in spans))}..{_when(max(b for _, b in spans))}: "
                        "wrong clock or time zone? Nothing was changed")


def _complete_lines(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def attach_trace(run_dir: str | Path, trace: Trace, gpu: Optional[int] = None,
                 accuracy_rel: Optional[float] = None) -> AttachReport:
    store = RunStore(run_dir)
    if not store.path.is_dir():
        raise EffbenchError(f"run directory '{run_dir}' does not exist")
    snapshot = store.results_file.read_bytes() if store.results_file.is_file() else b""
    run = load_run(store.path)
    if store.results_file.read_bytes() != snapshot:
        raise EffbenchError(f"{store.results_file} changed while it was read (is a run still writing to it?); try again")
    _check_overlap(trace, run.records)
    report = AttachReport()
    report.idle_power_w, report.idle_note = _idle_from_trace(trace, run.meta, gpu)
    out: list[Record] = []
    for rec in run.records:
        e = rec.energy
        if not e.windows:
            report.skipped.append(f"{rec.config_id}: no energy windows recorded" + (f" ({rec.error})" if rec.error else ""))
            out.append(rec)
            continue
        new = reattributed(e, rec.workload.batch_size, rec.workload.new_tokens,
                           lambda a, b: trace_reading(trace, a, b, gpu, accuracy_rel), report.idle_power_w)
        # ``replaced``: an extra field of the energy section (its model allows extra keys)
        new = new.model_copy(update={"replaced": {"sensor": e.sensor, "status": e.status, "joules_total": e.joules_total,
                                                  "tokens_per_joule": e.tokens_per_joule}})
        rec = rec.model_copy(update={"energy": new})
        c = rec.carbon
        if c.intensity_g_per_kwh is not None:
            from effbench.analysis.carbon import Intensity, carbon_section

            rec = rec.model_copy(update={"carbon": carbon_section(
                new, rec.workload.batch_size * rec.workload.new_tokens,
                Intensity(c.intensity_g_per_kwh, c.source or "", c.region or ""))})
        out.append(rec)
        report.updated += 1
        if new.status == "unavailable":
            report.unavailable += 1
    if not report.updated:
        raise EffbenchError(f"no record in '{run_dir}' has energy windows to attach a trace to "
                            "(records written before effbench stored window times, or every configuration failed)")
    _rewrite(store, out, _complete_lines(snapshot))
    data = store.read_run()  # written back as it is, with the trace's entry added
    data["attached_trace"] = {"path": str(Path(trace.path).resolve()), "kind": trace.kind, "gpu": gpu,
                              "idle": report.idle_note}
    store.write_run(data)
    return report


def _rewrite(store: RunStore, records: list[Record], read: bytes) -> None:
    """Replace the results file with ``records``; ``read`` is the (complete lines of the) file they
    came from. Lines appended since are kept as they are; any other change refuses."""
    backup = store.path / BACKUP_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{RESULTS_FILE}.", dir=store.path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_json_dict(), ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            now = store.results_file.read_bytes()  # re-read right before replacing it
            if not now.startswith(read):
                raise EffbenchError(f"{store.results_file} changed while the trace was attached (not just appended to); "
                                    "nothing was changed: try again")
            appended = now[len(read):]
            if appended and not appended.endswith(b"\n"):
                raise EffbenchError(f"{store.results_file} is being written to (a torn last line); nothing was changed: "
                                    "try again when the run has finished")
            if not backup.exists():  # the records as they were read (not the lines appended since)
                backup.write_bytes(read)
                shutil.copystat(store.results_file, backup)
            if appended:
                f.write(appended.decode("utf-8"))
                f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, store.results_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
