"""Recorded power traces: the CSV ``nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv -lms N``
writes, and a plain ``timestamp,watts`` CSV as wall-power meter loggers give. A trace is integrated
over any window by trapezoid (``integrate.integrate``), with the coverage and sampling interval.

Timestamps may be epoch seconds, ISO-8601, or nvidia-smi's ``2026/11/23 21:05:01.123``; those
without a time zone are read in this machine's local time (as nvidia-smi writes them). Samples
out of time order are sorted, with a warning (``Trace.warnings``); a file with more than a tenth of
its samples out of order is refused, as it is not a time series.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from effbench.errors import EffbenchError
from effbench.sensors.base import EnergyReading, unavailable_reading
from effbench.sensors.generations import Generation, generation_of
from effbench.sensors.integrate import Integral, integrate, median_interval
from effbench.sensors.poller import Polled, Sensing

# nvidia-smi's power.draw has the accuracy NVML states for the GPU's generation (generations.py:
# +-5% for Fermi/Kepler, unstated since). A meter's own accuracy is the user's to give (--accuracy).
_MISSING = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "nan"}
_UNIT = re.compile(r"\s*(w|watts?)\s*$", re.IGNORECASE)


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds, ISO-8601 or nvidia-smi's ``YYYY/MM/DD HH:MM:SS.fff``."""
    s = text.strip()
    try:
        value = float(s)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    iso = s.replace("/", "-", 2) if re.match(r"^\d{4}/\d{2}/\d{2}", s) else s
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"'{text}' is not a time (epoch seconds, ISO-8601 or YYYY/MM/DD HH:MM:SS.fff)") from None


def _watts(text: str) -> Optional[float]:
    """Watts from ``71.23 W`` or ``71.23``; None for nvidia-smi's ``[N/A]`` and empty cells."""
    s = _UNIT.sub("", text.strip())
    if s.lower() in _MISSING:
        return None
    value = float(s)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{text}' is not a power in watts")
    return value


@dataclass(frozen=True)
class _Columns:
    time: int
    power: int
    index: Optional[int]
    name: Optional[int] = None  # nvidia-smi's "name" column: the GPU model, hence its generation
    instant: bool = False  # power.draw.instant: the last update period, not power.draw's average


def _columns_from_header(cells: list[str]) -> Optional[_Columns]:
    names = [c.strip().lower() for c in cells]
    time_col = next((i for i, n in enumerate(names)
                     if n.split(" ")[0] in ("timestamp", "time", "t", "epoch", "unix", "datetime")), None)
    power_col = next((i for i, n in enumerate(names) if "power" in n or "watt" in n or n in ("w", "[w]")), None)
    index_col = next((i for i, n in enumerate(names) if n in ("index", "gpu", "gpu_index")), None)
    name_col = next((i for i, n in enumerate(names) if n in ("name", "gpu_name", "model")), None)
    if time_col is None or power_col is None:
        return None
    return _Columns(time_col, power_col, index_col, name_col, "instant" in names[power_col])


@dataclass
class Trace:
    path: str
    kind: str  # "nvidia-smi" or "plain"
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # domain -> (epoch s, W)
    warnings: list[str] = field(default_factory=list)  # what was repaired on reading (samples sorted by time)
    gpu_models: dict[str, str] = field(default_factory=dict)  # domain -> GPU model (the "name" column)
    instant: bool = False  # the power column is power.draw.instant
    gpu_model: Optional[str] = None  # given by the user (--gpu-model): wins over the name column

    @property
    def start(self) -> float:
        return min(float(t[0]) for t, _ in self.series.values())

    @property
    def end(self) -> float:
        return max(float(t[-1]) for t, _ in self.series.values())

    def generation(self, domain: str) -> Optional[Generation]:
        """The GPU generation behind a domain (None for a plain meter trace or an unnamed GPU)."""
        model = self.gpu_model or self.gpu_models.get(domain)
        return generation_of(model) if model else None

    def sensing(self, domain: str) -> Sensing:
        """What one of this domain's samples saw: a named GPU's sensor semantics by generation, an
        unnamed GPU's as the newest (averaged, blind share unstated), a meter's unstated."""
        gen = self.generation(domain)
        if gen is None and self.kind == "nvidia-smi":
            gen = generation_of(None)
        if gen is None:
            return Sensing(None, None, 0.0)
        return Sensing(gen.duty, None if self.instant else gen.power_usage_average_s, gen.update_period_s)

    def accuracy(self, domains: list[str]) -> Optional[float]:
        """The stated accuracy of these domains (the worst), None when any is unstated."""
        stated = [(g.accuracy_rel if (g := self.generation(d)) else None) for d in domains]
        return None if any(a is None for a in stated) else max(stated)  # type: ignore[type-var]

    @property
    def accuracy_rel(self) -> Optional[float]:
        return self.accuracy(sorted(self.series))

    def domains(self, gpu: Optional[int] = None) -> list[str]:
        if gpu is None:
            return sorted(self.series)
        domain = f"gpu:{gpu}"
        if domain not in self.series:
            raise EffbenchError(f"{self.path} has no GPU {gpu} (it has: {', '.join(sorted(self.series))})")
        return [domain]


def load_trace(path: str | Path, gpu_model: Optional[str] = None) -> Trace:
    """Read a trace; a malformed file raises ``EffbenchError`` naming the line. ``gpu_model``
    (e.g. "H100") names the GPU of a trace without a ``name`` column, for its sensor semantics."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EffbenchError(f"trace '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EffbenchError(f"cannot read trace '{path}' ({type(e).__name__}: {e})") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), 1)
            if r and not r[0].lstrip().startswith("#") and any(c.strip() for c in r)]
    if not rows:
        raise EffbenchError(f"trace '{path}' is empty")
    header_cells = rows[0][1]
    cols = _columns_from_header(header_cells)
    has_header = cols is not None
    if cols is not None:
        rows = rows[1:]
    elif len(header_cells) in (2, 3):  # no header: timestamp,[index,]watts
        cols = _Columns(0, len(header_cells) - 1, 1 if len(header_cells) == 3 else None)
    else:
        raise EffbenchError(f"{path}:{rows[0][0]}: expected a header with a timestamp and a power column "
                            "(nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv) or 'timestamp,watts'")
    kind = "nvidia-smi" if cols.index is not None or any("power.draw" in c for c in header_cells) else "plain"
    points: dict[str, list[tuple[float, float]]] = {}
    models: dict[str, str] = {}
    width = max(cols.time, cols.power, cols.index or 0, cols.name or 0) + 1
    for n, row in rows:
        if has_header and [c.strip() for c in row] == [c.strip() for c in header_cells]:
            continue  # a repeated header (a restarted logger appending to the same file)
        if len(row) < width:
            raise EffbenchError(f"{path}:{n}: expected {width} columns, got {len(row)}: {','.join(row)!r}")
        try:
            t = parse_time(row[cols.time])
            w = _watts(row[cols.power])
            domain = f"gpu:{int(row[cols.index])}" if cols.index is not None else "meter"
        except ValueError as e:
            raise EffbenchError(f"{path}:{n}: {e}") from None
        if w is not None:
            points.setdefault(domain, []).append((t, w))
        if cols.name is not None and row[cols.name].strip():
            models.setdefault(domain, row[cols.name].strip())
    if not points:
        raise EffbenchError(f"trace '{path}' has no power samples")
    trace = Trace(str(path), kind, gpu_models=models, instant=cols.instant, gpu_model=gpu_model)
    for domain, pts in points.items():
        times, watts, disorder = _in_time_order(str(path), domain, pts, len(points) > 1)
        trace.series[domain] = (times, watts)
        if disorder:
            trace.warnings.append(disorder)
    return trace


# A logger's few late lines are sorted into place; beyond this share of samples out of order the
# file is not a recording in time order (shuffled, or several logs merged) and sorting would invent one.
MAX_OUT_OF_ORDER_FRAC = 0.1


def _in_time_order(path: str, domain: str, pts: list[tuple[float, float]],
                   name_domain: bool) -> tuple[np.ndarray, np.ndarray, Optional[str]]:
    """One domain's samples sorted by time, and a warning when the file did not have them in order:
    samples earlier than one before them, and repeated timestamps (zero-width steps that add no
    energy). Refuses a series too scrambled to be a time series."""
    arr = np.asarray(pts, dtype=float)
    t = arr[:, 0]
    late = int(np.sum(t[1:] < np.maximum.accumulate(t)[:-1])) if t.size > 1 else 0
    order = np.argsort(t, kind="stable")
    t, w = t[order], arr[order, 1]
    repeated = int(np.sum(np.diff(t) == 0)) if t.size > 1 else 0
    where = f" ({domain})" if name_domain else ""
    if late > MAX_OUT_OF_ORDER_FRAC * t.size:
        raise EffbenchError(f"trace '{path}'{where}: {late} of {t.size} samples are earlier than a sample before "
                            f"them, so it is not a time series (shuffled, or several logs merged?); "
                            f"sort it by timestamp or record it again")
    problems = []
    if late:
        problems.append(f"{late} of {t.size} samples were out of time order and have been sorted")
    if repeated:
        problems.append(f"{repeated} of {t.size} samples repeat an earlier timestamp (kept: they add no energy)")
    return t, w, (f"trace '{path}'{where}: " + "; ".join(problems)) if problems else None


@dataclass(frozen=True)
class TraceEnergy:
    """A trace integrated over one window."""

    start: float
    end: float
    integrals: dict[str, Integral]
    trace: Optional[Trace] = None
    accuracy_override: Optional[float] = None  # a meter's accuracy the user gave (--accuracy)

    @property
    def joules(self) -> float:
        return sum(i.joules for i in self.integrals.values())

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def mean_power_w(self) -> Optional[float]:
        return self.joules / self.duration_s if self.duration_s > 0 else None

    @property
    def reach(self) -> float:
        """Share of the window within reach of a sample (the logger's gaps left out)."""
        return min(i.coverage for i in self.integrals.values())

    @property
    def coverage(self) -> float:
        """Share of the window the sensor observed: the reach times what each sample saw (a named
        A100/H100 observes 25% of each update period)."""
        return self.reading().coverage or 0.0

    @property
    def sampling_interval_s(self) -> Optional[float]:
        known = [i.sampling_interval_s for i in self.integrals.values() if i.sampling_interval_s]
        return max(known) if known else None

    @property
    def uncertainty_rel(self) -> Optional[float]:
        """The 95% half-width a live sensor's reading of the same samples would carry."""
        return self.reading().uncertainty_rel

    @property
    def flags(self) -> list[str]:
        return self.reading().flags

    def reading(self) -> EnergyReading:
        """One ``EnergyReading`` of the window, through the same arithmetic as a polled sensor,
        each domain with its own sensor semantics; domains' absolute errors add in quadrature."""
        parts = []
        for d, integral in self.integrals.items():
            gen = self.trace.generation(d) if self.trace else None
            accuracy = self.accuracy_override if self.accuracy_override is not None else (gen.accuracy_rel if gen else None)
            sensing = self.trace.sensing(d) if self.trace else Sensing(None, None, 0.0)
            if not sensing.period_s:  # a meter: each sample stands for its own interval
                sensing = Sensing(None, None, integral.sampling_interval_s or 0.0)
            flags: tuple[str, ...] = () if accuracy is not None else ("accuracy-unstated",)
            if sensing.duty is None:
                flags += ("duty-unstated",)
            parts.append(Polled(self.start, self.end, {d: integral}).reading(
                "trace", accuracy, domains=(d,), sensing=sensing, flags=flags))
        total = sum(p.joules or 0.0 for p in parts)
        unc = (sum(((p.uncertainty_rel or 0.0) * (p.joules or 0.0)) ** 2 for p in parts) ** 0.5 / total) if total > 0 else None
        unavailable = [p for p in parts if p.status == "unavailable"]
        return EnergyReading(
            status="unavailable" if unavailable else "measured", sensor="trace", duration_s=self.duration_s,
            joules_by_domain={} if unavailable else {d: i.joules for d, i in self.integrals.items()},
            sampling_interval_s=self.sampling_interval_s, coverage=min(p.coverage or 0.0 for p in parts),
            uncertainty_rel=unc, error="; ".join(p.error for p in parts if p.error) or None,
            flags=sorted({f for p in parts for f in p.flags}),
        )


def integrate_trace(trace: Trace, start: Optional[float] = None, end: Optional[float] = None,
                    gpu: Optional[int] = None, accuracy_rel: Optional[float] = None) -> TraceEnergy:
    """Joules of the trace's domains (or one GPU) over [start, end] (default: the whole trace)."""
    start = trace.start if start is None else start
    end = trace.end if end is None else end
    if end <= start:
        raise EffbenchError(f"the window ends before it starts ({start:.3f} >= {end:.3f})")
    integrals = {}
    for d in trace.domains(gpu):
        t, w = trace.series[d]
        # The trace's own median spacing: a logger that paused leaves an uncovered gap.
        integral = integrate(t, w, start, end, median_interval(t))
        assert integral is not None  # every stored series has samples
        integrals[d] = integral
    return TraceEnergy(start, end, integrals, trace, accuracy_rel)


def trace_reading(trace: Trace, start: float, end: float, gpu: Optional[int] = None,
                  accuracy_rel: Optional[float] = None) -> EnergyReading:
    """An ``EnergyReading`` for one window of a finished run, from a trace recorded beside it."""
    te = integrate_trace(trace, start, end, gpu, accuracy_rel)
    if te.reach == 0.0:
        return unavailable_reading("trace", te.duration_s, f"{trace.path} has no samples in this window")
    reading = te.reading()
    models = sorted({m for d in te.integrals if (m := trace.gpu_model or trace.gpu_models.get(d))})
    reading.basis = (f"{trace.kind} power trace {Path(trace.path).name}, trapezoid"
                     + (f" ({', '.join(models)})" if models else ""))
    return reading
