"""The power timeline: consecutive short sensor windows kept as (start, end, joules, status)
segments, so the energy of any later window is the sum of the segments it overlaps, pro rata.

A wrapped load generator says when its requests ran only after it exits; effbench cannot open the
right windows in advance. It keeps the whole timeline instead and integrates it afterwards."""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, Sequence

from effbench.jsonlines import json_lines
from effbench.sensors.base import MIN_COVERAGE, EnergySensor, EnergyStatus
from effbench.stats import combine_rel, uniform_to_95

TIMELINE_FILE = "power_timeline.jsonl"
DEFAULT_SEGMENT_S = 0.25


@dataclass
class Segment:
    """One sensor window of the timeline, on the wall clock (unix seconds)."""

    start_unix: float
    end_unix: float
    joules: Optional[float]
    status: str  # measured, estimated, unavailable
    uncertainty_rel: Optional[float] = None
    coverage: Optional[float] = None
    joules_by_domain: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.end_unix - self.start_unix)

    @property
    def usable(self) -> bool:
        return self.status != "unavailable" and self.joules is not None and self.seconds > 0

    @property
    def power_w(self) -> Optional[float]:
        return self.joules / self.seconds if self.usable and self.joules is not None else None


@dataclass
class Integral:
    """The energy of one window, integrated from the timeline."""

    start_unix: float
    end_unix: float
    joules: Optional[float]  # the observed part, scaled up to the whole window at its mean power
    status: EnergyStatus
    coverage: float  # share of the window inside usable segments
    uncertainty_rel: Optional[float]  # 95% relative half-width
    joules_by_domain: dict[str, float] = field(default_factory=dict)
    segments: int = 0
    basis: str = ""

    @property
    def seconds(self) -> float:
        return max(0.0, self.end_unix - self.start_unix)

    @property
    def mean_power_w(self) -> Optional[float]:
        return None if self.joules is None or self.seconds <= 0 else self.joules / self.seconds


def _overlap(seg: Segment, start: float, end: float) -> float:
    return max(0.0, min(seg.end_unix, end) - max(seg.start_unix, start))


def _edge_error_j(segs: Sequence[Segment], i: int, start: float, end: float) -> float:
    """Bound of the pro-rata error of a segment the window cuts: its power may vary inside it about
    as much as it differs from its neighbours' (zero for steady power)."""
    seg = segs[i]
    part = _overlap(seg, start, end)
    p = seg.power_w
    if p is None or part <= 0 or part >= seg.seconds:
        return 0.0
    near = [q for j in (i - 1, i + 1) if 0 <= j < len(segs) and (q := segs[j].power_w) is not None]
    spread = max((abs(q - p) for q in near), default=p)  # no neighbour: as uncertain as the level
    return min(part, seg.seconds - part) * spread


def integrate(segments: Sequence[Segment], start: float, end: float) -> Integral:
    """Energy over [start, end]: each overlapping usable segment counts by the share of it inside the
    window; a part no usable segment covers is filled at the observed mean power and counted in the
    uncertainty (as a sensor counts the share its samples do not reach). The uncertainty is the
    root-sum-square of the segments' own (energy-weighted: a sensor's accuracy is shared by its
    windows, so it does not average down), the uncovered share and the cut segments' edges."""
    span = max(0.0, end - start)
    segs = sorted(segments, key=lambda s: s.start_unix)
    if span <= 0:
        return Integral(start, end, None, "unavailable", 0.0, None, basis="an empty window")
    joules, covered, err_j = 0.0, 0.0, 0.0
    weighted_u: list[tuple[float, Optional[float], float]] = []
    domains: dict[str, float] = {}
    statuses: set[str] = set()
    used = 0
    for i, seg in enumerate(segs):
        part = _overlap(seg, start, end)
        if part <= 0 or not seg.usable or seg.joules is None:
            continue
        share = part / seg.seconds
        j = seg.joules * share
        joules += j
        covered += part
        used += 1
        statuses.add(seg.status)
        weighted_u.append((j, seg.uncertainty_rel, part))
        for d, dj in seg.joules_by_domain.items():
            domains[d] = domains.get(d, 0.0) + dj * share
        err_j += _edge_error_j(segs, i, start, end)
    coverage = min(1.0, covered / span)
    if used == 0 or coverage < MIN_COVERAGE:
        return Integral(start, end, None, "unavailable", coverage, None, segments=used,
                        basis=f"the power timeline covers only {coverage:.0%} of the window")
    scale = span / covered if covered > 0 else 1.0
    sensor_u = _weighted_mean(weighted_u)
    edge_u = uniform_to_95(err_j / joules) if joules > 0 else None
    unreached = uniform_to_95(1.0 - coverage) if coverage < 1.0 else None
    status: EnergyStatus = "estimated" if "estimated" in statuses else "measured"
    return Integral(start, end, joules * scale, status, coverage, combine_rel(sensor_u, edge_u, unreached),
                    {d: v * scale for d, v in domains.items()}, used,
                    basis=f"{used} power-timeline segment(s), pro rata")


def _weighted_mean(pairs: Sequence[tuple[float, Optional[float], float]]) -> Optional[float]:
    """Mean of the segments' relative uncertainties, weighted by their joules (by their time where
    every segment read zero)."""
    known = [(j, u, t) for j, u, t in pairs if u is not None]
    if not known:
        return None
    weight = sum(j for j, _, _ in known)
    if weight > 0:
        return sum(j * u for j, u, _ in known) / weight
    return sum(t * u for _, u, t in known) / sum(t for _, _, t in known) if sum(t for _, _, t in known) > 0 else None


# -- the file --------------------------------------------------------------------------------
def write_segment(f: IO[str], seg: Segment) -> None:
    """One line per segment, flushed: a run killed at any moment keeps every finished segment."""
    f.write(json.dumps(asdict(seg), allow_nan=False, default=str) + "\n")
    f.flush()


def read_timeline(path: Path) -> list[Segment]:
    """The segments of a timeline file; a torn or malformed line is skipped."""
    out: list[Segment] = []
    for d in json_lines(path):
        try:
            out.append(Segment(**{k: d[k] for k in Segment.__dataclass_fields__ if k in d}))
        except (TypeError, KeyError):  # not an object, or one without a segment's fields
            continue
    return out


# -- recording -------------------------------------------------------------------------------
class TimelineRecorder:
    """A background thread that keeps one sensor window open at a time, ``segment_s`` long, and
    writes each as a segment. ``stop()`` closes the last (short) one."""

    def __init__(self, sensor: EnergySensor, path: Optional[Path], segment_s: float = DEFAULT_SEGMENT_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not segment_s > 0 or not math.isfinite(segment_s):
            raise ValueError("segment_s must be a positive number of seconds")
        self.sensor, self.path, self.segment_s, self.clock = sensor, path, segment_s, clock
        self.segments: list[Segment] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._file: Optional[IO[str]] = None
        self.error: Optional[str] = None

    def start(self) -> None:
        if self.path is not None:  # None: kept in memory only (a serving point's own timeline)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._loop, name="effbench-power-timeline", daemon=True)
        self._thread.start()

    def _one(self) -> Segment:
        # Each edge is the midpoint of the clock read either side of the sensor call: the sensor's
        # own window edge lies between them.
        a = self.clock()
        try:
            window = self.sensor.start_window()
            t0 = (a + self.clock()) / 2
            self._stop.wait(self.segment_s)
            b = self.clock()
            reading = window.stop()
            t1 = (b + self.clock()) / 2
        except Exception as e:  # noqa: BLE001 - a sensor that fails leaves a gap, not a dead run
            return Segment(a, self.clock(), None, "unavailable", error=f"{type(e).__name__}: {e}")
        return Segment(t0, t1, reading.joules, reading.status if reading.joules is not None else "unavailable",
                       reading.uncertainty_rel, reading.coverage, dict(reading.joules_by_domain),
                       reading.error)

    def _loop(self) -> None:
        while True:
            seg = self._one()
            self.segments.append(seg)
            try:
                if self._file is not None:
                    write_segment(self._file, seg)
            except (OSError, ValueError) as e:
                self.error = f"could not write {self.path}: {e}"
            if self._stop.is_set():
                return

    def stop(self) -> list[Segment]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._file is not None:
            self._file.close()
            self._file = None
        return list(self.segments)


def total_span(segments: Iterable[Segment]) -> tuple[Optional[float], Optional[float]]:
    segs = list(segments)
    if not segs:
        return None, None
    return min(s.start_unix for s in segs), max(s.end_unix for s in segs)


def segment_dicts(segments: Iterable[Segment]) -> list[dict[str, Any]]:
    return [asdict(s) for s in segments]
