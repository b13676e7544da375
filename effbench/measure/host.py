"""Host-side trackers: peak resident memory per configuration and interference from other work."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import psutil

from effbench.cputime import workload_cpu_seconds

_PROC_STATUS = "/proc/{pid}/status"
_CLEAR_REFS = "/proc/{pid}/clear_refs"


def engine_tree(workload_pids: tuple[int, ...] | list[int] = ()) -> list[int]:
    """The engine's own processes besides this one (``Backend.worker_pids``) and all their children
    (vLLM's engine core starts the workers that hold the weights); those that have ended are left out."""
    tree: dict[int, None] = {}
    for pid in workload_pids:
        try:
            proc = psutil.Process(pid)
            tree[pid] = None
            tree.update((c.pid, None) for c in proc.children(recursive=True))
        except psutil.Error:
            continue
    tree.pop(os.getpid(), None)
    return list(tree)


def _clear_peak(pid: str | int) -> bool:
    try:
        with open(_CLEAR_REFS.format(pid=pid), "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_bytes(pid: str | int) -> Optional[int]:
    try:
        with open(_PROC_STATUS.format(pid=pid)) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_engine_peak_rss(workload_pids: tuple[int, ...] | list[int]) -> None:
    """Reset the peak-RSS mark (VmHWM) of the engine's own processes (and their children)."""
    for pid in engine_tree(workload_pids):
        _clear_peak(pid)


def reset_peak_rss(workload_pids: tuple[int, ...] | list[int] = ()) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process and of the engine's own processes,
    so the next peak belongs to this configuration. Linux only; returns False where it cannot reset
    this process's (then the peak is the process's lifetime peak)."""
    reset_engine_peak_rss(workload_pids)
    return _clear_peak("self")


def engine_peak_rss_bytes(workload_pids: tuple[int, ...] | list[int]) -> Optional[int]:
    """The summed peak RSS of the engine's own processes (and their children); None when there are none
    (an endpoint effbench did not start)."""
    peaks = [b for pid in engine_tree(workload_pids) if (b := _vm_hwm_bytes(pid)) is not None]
    return sum(peaks) if peaks else None


def peak_rss_bytes(workload_pids: tuple[int, ...] | list[int] = ()) -> int:
    """Peak resident memory of the workload: this process's, plus each of the engine's own processes'
    (their sum: an upper bound on the peak they reached together, and pages they share count in each)."""
    own = _vm_hwm_bytes("self")
    if own is None:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        own = int(peak if sys.platform == "darwin" else peak * 1024)
    return own + (engine_peak_rss_bytes(workload_pids) or 0)


def trim_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it), so the next configuration's peak RSS
    does not include the previous model's memory."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# Share of the whole machine's CPU time used by *other* processes above which a repeat is left out
# and a configuration flagged.
INTERFERENCE_CPU_FRAC = 0.15
# Below this wall time the probe cannot tell a share (the CPU counters tick every 10 ms).
MIN_PROBE_WALL_S = 0.2


@dataclass
class LoadSnapshot:
    wall: float
    busy_s: float  # machine-wide non-idle CPU seconds
    own_s: float  # this process's CPU seconds
    load1: Optional[float]


def _snapshot(workload_pids: tuple[int, ...] = ()) -> LoadSnapshot:
    t = psutil.cpu_times()
    busy = sum(getattr(t, f) for f in t._fields if f not in ("idle", "iowait", "guest", "guest_nice"))
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return LoadSnapshot(time.monotonic(), busy, workload_cpu_seconds(workload_pids), load1)


@dataclass
class Interference:
    other_cpu_frac: Optional[float]
    load_avg_before: Optional[float]
    load_avg_after: Optional[float]

    @property
    def flagged(self) -> bool:
        return self.other_cpu_frac is not None and self.other_cpu_frac > INTERFERENCE_CPU_FRAC


class InterferenceProbe:
    """Brackets a configuration: how much CPU did other processes take meanwhile (docs/method.md, "Interference").
    ``workload_pids``: processes that are the workload, not interference (a serving engine)."""

    def __init__(self, workload_pids: tuple[int, ...] = ()) -> None:
        self.pids = tuple(workload_pids)
        self.start = _snapshot(self.pids)

    def stop(self) -> Interference:
        end = _snapshot(self.pids)
        wall = end.wall - self.start.wall
        ncpu = psutil.cpu_count(logical=True) or 1
        other = None
        if wall >= MIN_PROBE_WALL_S:
            other_s = (end.busy_s - self.start.busy_s) - (end.own_s - self.start.own_s)
            other = max(0.0, min(1.0, other_s / (wall * ncpu)))
        return Interference(other, self.start.load1, end.load1)
