"""CPU package and DRAM energy from Linux powercap (RAPL): ``/sys/class/powercap/intel-rapl:*``.

Each package zone (``intel-rapl:N``, or ``amd-rapl:N`` on some kernels) becomes ``cpu:package-N`` and
its ``dram`` subzone ``dram:N``; ``core``/``uncore`` subzones are parts of the package and would count
twice, and ``psys`` covers the whole platform, so they are left out. ``energy_uj`` wraps around at
``max_energy_range_uj``: every read goes through one running total per zone that undoes a wrap, and a
background thread reads while a window is open, often enough that no zone can wrap twice unseen.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from effbench.errors import UnsupportedError
from effbench.sensors.base import EnergyReading, EnergySensor, SensorInfo, Window, observed_reading, unavailable_reading
from effbench.sensors.integrate import counter_delta
from effbench.sensors.poller import describe_error

POWERCAP_ROOT = Path("/sys/class/powercap")
# energy_uj moves about every millisecond.
UPDATE_PERIOD_S = 0.001
# RAPL on Haswell and newer tracks a wall meter within a few percent; older parts and AMD less tested.
ACCURACY_REL = 0.05
# Read every zone at least this often while a window is open (a 262 kJ range wraps in ~20 min at 200 W).
WRAP_GUARD_S = 60.0

_ZONE = re.compile(r"^(intel|amd)-rapl:(\d+)(?::(\d+))?$")


@dataclass
class Zone:
    domain: str  # "cpu:package-0" or "dram:0"
    path: Path
    max_range_uj: Optional[int]


@dataclass
class _Running:
    """A zone's total since the sensor opened, built from raw reads with wrap-around undone."""

    last_raw: int
    total_uj: int = 0


def discover(root: Path) -> list[Zone]:
    """Package and DRAM zones under ``root``; raises ``UnsupportedError`` saying why none can be read."""
    if not root.is_dir():
        raise UnsupportedError(f"no RAPL here ({root} does not exist: not Linux, or no powercap driver in this VM/container)")
    zones: list[Zone] = []
    for d in sorted(root.iterdir()):
        m = _ZONE.match(d.name)
        if not m:
            continue
        name = _read_text(d / "name")
        package, sub = m.group(2), m.group(3)
        if sub is None and name.startswith("package"):
            domain = f"cpu:package-{package}"
        elif sub is not None and name == "dram":
            domain = f"dram:{package}"
        else:
            continue
        zones.append(Zone(domain, d / "energy_uj", _read_int(d / "max_energy_range_uj")))
    if not zones:
        raise UnsupportedError(f"no RAPL package zones under {root} (no intel-rapl/amd-rapl powercap driver loaded)")
    for z in zones:
        try:
            int(z.path.read_text())
        except PermissionError:
            raise UnsupportedError(
                f"RAPL energy files are readable only by root ({z.path}: permission denied); run as root or "
                f"'sudo chmod a+r {root}/*-rapl:*/energy_uj {root}/*-rapl:*/*-rapl:*/energy_uj'"
            ) from None
        except (OSError, ValueError) as e:
            raise UnsupportedError(f"cannot read {z.path} ({describe_error(e)})") from None
    return zones


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


class _RaplWindow(Window):
    def __init__(self, sensor: "RaplSensor") -> None:
        self._sensor = sensor
        self._t0 = sensor.clock()
        self._e0, self._error = sensor._totals(opening=True)

    def stop(self) -> EnergyReading:
        e1, error = self._sensor._totals(opening=False)
        duration = self._sensor.clock() - self._t0
        error = self._error or error
        if error:
            return unavailable_reading("rapl", duration, f"RAPL read failed mid-window: {error}")
        joules = {d: (e1[d] - self._e0[d]) / 1e6 for d in e1}
        return observed_reading("rapl", duration, joules, accuracy_rel=ACCURACY_REL, coverage=1.0,
                                resolution_s=UPDATE_PERIOD_S, basis="RAPL energy_uj counters (powercap)")


class RaplSensor(EnergySensor):
    """RAPL counters; ``root`` and ``clock`` are injectable so tests drive a fake powercap tree."""

    name = "rapl"
    # Not for "cuda": a GPU run's energy comes only from a GPU sensor (docs/method.md); asked for by
    # name on a GPU run, RAPL's domains stay labelled as the CPU's.
    auto_for = ("cpu",)
    auto_rank = 10

    def __init__(self, root: Path | str = POWERCAP_ROOT, clock: Callable[[], float] = time.monotonic,
                 wrap_guard_s: Optional[float] = WRAP_GUARD_S) -> None:
        self.root = Path(root)
        self.clock = clock
        self.wrap_guard_s = wrap_guard_s
        self._zones: Optional[list[Zone]] = None
        self._failure: Optional[str] = None
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._open_windows = 0
        self._guard: Optional[threading.Thread] = None
        self._guard_stop = threading.Event()

    def zones(self) -> list[Zone]:
        if self._zones is None:
            if self._failure:
                raise UnsupportedError(self._failure)
            try:
                self._zones = discover(self.root)
            except UnsupportedError as e:
                self._failure = str(e)
                raise
        return self._zones

    def info(self) -> SensorInfo:
        try:
            zones = self.zones()
        except UnsupportedError as e:
            return SensorInfo("rapl", "energy-counter", False, str(e), accuracy_rel=ACCURACY_REL)
        return SensorInfo("rapl", "energy-counter", True, f"RAPL energy counters under {self.root}",
                          tuple(z.domain for z in zones), UPDATE_PERIOD_S, ACCURACY_REL)

    def refresh(self) -> dict[str, int]:
        """Read every zone and advance its running total; raises OSError/ValueError on a bad read."""
        with self._lock:
            for z in self.zones():
                raw = int(z.path.read_text())
                run = self._running.get(z.domain)
                if run is None:
                    self._running[z.domain] = _Running(raw)
                    continue
                delta = counter_delta(run.last_raw, raw, z.max_range_uj)
                run.last_raw = raw
                if delta is None:  # the window spanning this read fails; the next starts afresh
                    raise ValueError(f"{z.path} went down ({raw} uJ) and max_energy_range_uj is unreadable: "
                                     "a wrap of unknown range, so the energy is not known")
                run.total_uj += delta
            return {d: r.total_uj for d, r in self._running.items()}

    def _totals(self, opening: bool) -> tuple[dict[str, int], Optional[str]]:
        try:
            totals = self.refresh()
            error = None
        except (OSError, ValueError) as e:
            totals, error = {}, describe_error(e)
        self._track(opening)
        return totals, error

    def _track(self, opening: bool) -> None:
        """Run the wrap guard thread while any window is open."""
        with self._lock:
            self._open_windows += 1 if opening else -1
            start = opening and self._guard is None and self.wrap_guard_s
            stop = self._guard if self._open_windows <= 0 else None
            if start:
                self._guard_stop.clear()
                self._guard = threading.Thread(target=self._guard_loop, name="effbench-rapl-wrap-guard", daemon=True)
                self._guard.start()
            if stop is not None:
                self._guard = None
        if stop is not None:
            self._guard_stop.set()
            stop.join()

    def _guard_loop(self) -> None:
        while not self._guard_stop.wait(self.wrap_guard_s):
            try:
                self.refresh()
            except (OSError, ValueError):
                pass  # the window's own reads report the failure

    def start_window(self) -> Window:
        self.zones()
        return _RaplWindow(self)

    def environment(self) -> dict:
        try:
            return {"rapl_zones": {z.domain: str(z.path.parent) for z in self.zones()}}
        except UnsupportedError as e:
            return {"rapl": f"unavailable: {e}"}

    def close(self) -> None:
        with self._lock:
            guard, self._guard = self._guard, None
            self._open_windows = 0
        if guard is not None:
            self._guard_stop.set()
            guard.join()
