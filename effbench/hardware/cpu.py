"""This machine's CPU as a hardware profile: model name and cores from the OS, memory bandwidth
measured with a short numpy copy/triad test and cached per machine (spec sheets rarely say what
a VM or a given DIMM population actually delivers)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from effbench.hardware.catalog import HardwareProfile

LOCK_FILE = os.environ.get("EFFBENCH_CPU_LOCK", "/tmp/effbench-cpu.lock")
LOCK_WAIT_S = 30.0
ARRAY_BYTES = 128 * 2**20  # per array: well beyond any L3, short enough to take about a second
ROUNDS = 5
WATTS_PER_CPU = 10.0  # same assumption as the estimate sensor when no profile gives a TDP


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_profile_id(name: str) -> str:
    """``AMD EPYC 7B13 64-Core Processor`` -> ``cpu-amd-epyc-7b13-64-core-processor``."""
    slug = re.sub(r"\((r|tm)\)", "", name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", slug).strip("-")
    return f"cpu-{slug or 'unknown'}"


def _vendor(name: str) -> str:
    low = name.lower()
    for key, vendor in (("amd", "amd"), ("intel", "intel"), ("apple", "apple"), ("arm", "arm"), ("neoverse", "arm")):
        if key in low:
            return vendor
    return "unknown"


def _machine_key(name: str) -> str:
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    raw = f"{machine_id}|{socket.gethostname()}|{name}|{os.cpu_count()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_file() -> Path:
    env = os.environ.get("EFFBENCH_CACHE_DIR")
    if env:
        return Path(env) / "cpu-bandwidth.json"
    import platformdirs

    return Path(platformdirs.user_cache_dir("effbench")) / "cpu-bandwidth.json"


@contextlib.contextmanager
def _cpu_lock(wait_s: float) -> Iterator[bool]:
    """Hold the shared CPU lock while measuring, so concurrent benchmarks do not skew it. Waits at
    most ``wait_s`` (a parent ``flock`` on the same file would otherwise deadlock us) and yields
    whether the lock was obtained."""
    try:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    got = False
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        yield got
    finally:
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def measure_bandwidth_gbps() -> float:
    """Best-of-rounds GB/s of a numpy copy (2 arrays of traffic) and triad a = b + s*c (numpy runs
    it as two passes: 5 arrays of traffic). Counts bytes actually moved, so it is comparable with
    spec-sheet bandwidth, within what a single process on the allowed cores can reach."""
    import numpy as np

    n = ARRAY_BYTES // 8
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    best = 0.0
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        np.copyto(a, b)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)
        best = max(best, 5 * a.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def cached_bandwidth(name: str, measure: bool = True) -> Optional[dict]:
    """``{gbps, measured_at, method, locked}`` for this machine, measured once and cached. A figure
    taken without the CPU lock (machine possibly busy) is replaced as soon as the lock is free."""
    key = _machine_key(name)
    entry = _read_cache().get(key)
    if not measure or (entry and entry.get("locked")):
        return entry
    with _cpu_lock(0.0 if entry else LOCK_WAIT_S) as locked:
        if entry and not locked:
            return entry  # still busy: keep the provisional figure
        gbps = measure_bandwidth_gbps()
    entry = {"gbps": round(gbps, 2), "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "method": "numpy copy/triad, best of 5, 128 MiB arrays", "locked": locked}
    data = _read_cache()
    data[key] = entry
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        cache_file().write_text(json.dumps(data, indent=2))
    except OSError:
        pass  # an unwritable cache only costs a re-measurement next time
    return entry


def cpu_affinity() -> Optional[int]:
    """The logical CPUs this process may run on, where the OS says (None where it does not)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """The logical CPUs this process may run on: its affinity, else all of them."""
    return cpu_affinity() or os.cpu_count() or 1


def local_cpu_profile(measure: bool = True) -> Optional[HardwareProfile]:
    """This machine's CPU; ``None`` when the bandwidth is not cached and ``measure`` is False."""
    import psutil

    name = cpu_name()
    bw = cached_bandwidth(name, measure)
    if bw is None:
        return None
    cores = os.cpu_count() or 1
    lock_note = "" if bw.get("locked", True) else " (CPU lock not obtained: may be low if the machine was busy)"
    return HardwareProfile(
        id=cpu_profile_id(name), name=name, vendor=_vendor(name), kind="cpu",
        memory_gb=round(psutil.virtual_memory().total / 1e9, 2), memory_bandwidth_gbps=bw["gbps"],
        tdp_w=WATTS_PER_CPU * cores, tdp_source=f"assumed {WATTS_PER_CPU:.0f} W per logical CPU",
        match=[f"^{re.escape(name)}$"], cores=cores,
        bandwidth_source=f"measured {bw['measured_at']}: {bw['method']}{lock_note}",
        notes="detected on this machine; peak TFLOPs unknown; no price (set one with --price or prices.yaml)",
        origin="detected",
    )
