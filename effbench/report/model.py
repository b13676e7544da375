"""Records -> tidy rows, groups and derived statistics (Pareto front, roofline fraction).

No presentation here: plots, markdown, HTML and exports all read the same ``Row`` table, so a
number means the same thing in every output.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from effbench.results.hardware import RunProfiles, StoredRun, resolve_run_profiles
from effbench.results.schema import Record
from effbench.results.store import RUN_FILE, read_run_dir, run_dir_of


@dataclass(frozen=True)
class RunSource:
    """One run directory: its metadata (``run.json``), its records and their hardware profiles
    (from run.json, or ``--hardware`` for a run that stores none; never this machine's)."""

    path: Path
    label: str  # short name shown in reports (the directory name, made unique)
    run: dict[str, Any]
    records: list[Record]
    profiles: RunProfiles = field(default_factory=RunProfiles)
    warnings: tuple[str, ...] = ()

    @property
    def hostname(self) -> str:
        return str((self.run.get("environment") or {}).get("hostname") or "")


@dataclass(frozen=True)
class Row:
    """One configuration, flattened. Field order is the CSV column order."""

    source: str
    run_id: str
    config_id: str
    hardware: str  # the profile id, else the detected device name: the report's section key
    hardware_profile: Optional[str]
    detected_name: Optional[str]
    hostname: str
    device: Optional[str]
    model: str
    params: Optional[int]
    backend: str
    backend_version: Optional[str]
    scheme: str
    weight_bits: Optional[float]
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prompt_set: str
    prefill_tokens_per_s: Optional[float] = None
    decode_tokens_per_s: Optional[float] = None
    e2e_tokens_per_s: Optional[float] = None
    ttft_s: Optional[float] = None
    tpot_s: Optional[float] = None
    energy_status: str = "unavailable"
    energy_sensor: Optional[str] = None
    energy_basis: Optional[str] = None
    energy_flags: str = ""
    sampling_interval_s: Optional[float] = None
    energy_window_s: Optional[float] = None
    coverage: Optional[float] = None
    idle_power_w: Optional[float] = None
    joules_total: Optional[float] = None
    joules_dynamic: Optional[float] = None
    joules_per_token: Optional[float] = None
    decode_joules_per_token: Optional[float] = None
    tokens_per_joule: Optional[float] = None
    joules_per_kchar: Optional[float] = None
    energy_uncertainty_rel: Optional[float] = None
    peak_host_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    weights_bytes: Optional[int] = None
    perplexity: Optional[float] = None
    repeats: int = 0
    warmup: Optional[int] = None
    ci95_rel: Optional[float] = None
    stop_reason: Optional[str] = None
    interference: bool = False
    perplexity_rise: Optional[float] = None  # over the unquantized baseline of the same run
    quality_flagged: bool = False
    random_weights: bool = False  # architecture-only model: speed/memory/energy only
    load_avg_before: Optional[float] = None
    load_avg_after: Optional[float] = None
    roofline_bound_tokens_per_s: Optional[float] = None
    roofline_fraction: Optional[float] = None
    error: Optional[str] = None

    @property
    def estimated(self) -> bool:
        return self.energy_status == "estimated"

    @property
    def peak_memory_bytes(self) -> Optional[int]:
        """Device memory where the model ran on an accelerator, else host memory."""
        return self.peak_device_bytes if self.peak_device_bytes is not None else self.peak_host_bytes


def row_fields() -> list[str]:
    return [f.name for f in fields(Row)]


# -- loading -----------------------------------------------------------------------------------

def load_sources(dirs: Sequence[str | Path], hardware: Optional[str] = None) -> list[RunSource]:
    """Read every run directory, or its results.jsonl (errors are one-line ``EffbenchError``s from the
    store). ``hardware``: the profile of runs that store none. Each source carries its warnings."""
    sources: list[RunSource] = []
    seen: set[Path] = set()
    labels: set[str] = set()
    for d in dirs:
        path = run_dir_of(d).resolve()
        if path in seen:  # the same directory twice would double every record
            continue
        seen.add(path)
        run, records = read_run_dir(path)
        label = _unique(path.name or str(path), labels)
        labels.add(label)
        warnings: list[str] = []
        if not (path / RUN_FILE).is_file():
            warnings.append(f"{path} has no {RUN_FILE}: its environment, sensor, idle baseline and hardware are unknown")
        profiles = resolve_run_profiles([StoredRun(str(path), run, records)], hardware)
        warnings += [f"{m}; the roofline is not drawn" for m in profiles.messages()]
        sources.append(RunSource(path, label, run, records, profiles, tuple(warnings)))
    return sources


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}-{i}", i + 1
    return candidate


# -- roofline (optional: provided by effbench.analysis.roofline and effbench.hardware) ---------

RooflineFn = Callable[[Record], tuple[Optional[float], Optional[float]]]


def _no_roofline(record: Record) -> tuple[Optional[float], Optional[float]]:
    return None, None


def profile_lookup(sources: Iterable[RunSource] = ()) -> Callable[[Optional[str], Optional[str]], Any]:
    """(profile id, detected name) -> the hardware profile the runs stored for records with that key, or
    None. Only what the runs stored (or ``--hardware`` said): a report never describes a run's
    hardware from the machine it is written on."""
    by_key: dict[tuple[Optional[str], Optional[str]], Any] = {}
    for src in sources:
        for r in src.records:
            p = src.profiles.of(r)
            if p is not None:
                by_key.setdefault((r.hardware.profile, r.hardware.detected_name), p)
    return lambda pid, name: by_key.get((pid, name))


def roofline_function(sources: Iterable[RunSource] = ()) -> RooflineFn:
    """(bound tokens/s, achieved fraction) per record, or (None, None) while the roofline module or
    the record's hardware profile is missing: the report then skips the roofline plot with a note.
    The profile is the one the record's own run stored in run.json (``sources``)."""
    try:
        from effbench.analysis import roofline
    except ImportError:
        return _no_roofline
    sources = list(sources)

    def compute(record: Record) -> tuple[Optional[float], Optional[float]]:
        profile = next((p for src in sources if (p := src.profiles.of(record)) is not None), None)
        if profile is None:
            return None, None
        try:
            bound = roofline.decode_bound_tokens_per_s(record, profile)
            frac = roofline.achieved_fraction(record, profile)
        except Exception:  # noqa: BLE001 - a profile lacking bandwidth must not sink the report
            return None, None
        return _finite(bound), _finite(frac)

    return compute


def _finite(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- tidy rows ---------------------------------------------------------------------------------

def to_row(source: RunSource, r: Record, roofline: RooflineFn = _no_roofline) -> Row:
    t, e, m, s = r.throughput, r.energy, r.memory, r.stats
    bound, frac = roofline(r) if not r.error else (None, None)
    return Row(
        source=source.label, run_id=r.run_id, config_id=r.config_id,
        hardware=r.hardware.profile or r.hardware.detected_name or "unknown hardware",
        hardware_profile=r.hardware.profile, detected_name=r.hardware.detected_name, hostname=source.hostname,
        device=r.backend.device, model=r.model.id, params=r.model.params, backend=r.backend.name,
        backend_version=r.backend.version, scheme=r.quantization.scheme, weight_bits=r.quantization.weight_bits,
        batch_size=r.workload.batch_size, prompt_tokens=r.workload.prompt_tokens, new_tokens=r.workload.new_tokens,
        prompt_set=r.workload.prompt_set,
        prefill_tokens_per_s=t.prefill_tokens_per_s, decode_tokens_per_s=t.decode_tokens_per_s,
        e2e_tokens_per_s=t.e2e_tokens_per_s, ttft_s=t.ttft_s, tpot_s=t.tpot_s,
        energy_status=e.status, energy_sensor=e.sensor, energy_basis=e.basis, energy_flags=";".join(e.flags),
        sampling_interval_s=e.sampling_interval_s, energy_window_s=e.window_s, coverage=e.coverage,
        idle_power_w=e.idle_power_w,
        joules_total=e.joules_total, joules_dynamic=e.joules_dynamic, joules_per_token=e.joules_per_token,
        decode_joules_per_token=e.decode_joules_per_token, tokens_per_joule=e.tokens_per_joule,
        joules_per_kchar=e.joules_per_kchar, energy_uncertainty_rel=e.uncertainty_rel,
        peak_host_bytes=m.peak_host_bytes, peak_device_bytes=m.peak_device_bytes,
        weights_bytes=m.weights_bytes or r.model.weights_bytes, perplexity=r.quality.perplexity,
        repeats=s.repeats, warmup=s.warmup, ci95_rel=s.ci95_rel, stop_reason=s.stop_reason,
        interference=s.interference, load_avg_before=s.load_avg_before, load_avg_after=s.load_avg_after,
        perplexity_rise=r.quality.perplexity_rise, quality_flagged=r.quality.flagged,
        random_weights=r.model.weights == "random",
        roofline_bound_tokens_per_s=bound, roofline_fraction=frac, error=r.error,
    )


def tidy(sources: Iterable[RunSource], roofline: Optional[RooflineFn] = None) -> list[Row]:
    sources = list(sources)
    fn = roofline or roofline_function(sources)
    rows = [to_row(src, r, fn) for src in sources for r in src.records]
    return sorted(rows, key=_sort_key)


def _sort_key(r: Row) -> tuple:
    return (r.hardware, r.model, r.scheme, r.backend, r.prompt_set, r.prompt_tokens, r.new_tokens, r.batch_size, r.source)


# -- grouping ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """The rows of one hardware x model section."""

    hardware: str
    model: str
    rows: list[Row] = field(default_factory=list)


def ok_rows(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if not r.error]


def error_rows(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.error]


def hardware_names(rows: Iterable[Row]) -> list[str]:
    return sorted({r.hardware for r in rows})


def group_rows(rows: Iterable[Row]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for r in rows:
        groups.setdefault((r.hardware, r.model), Group(r.hardware, r.model)).rows.append(r)
    return [groups[k] for k in sorted(groups)]


# Dimensions that split a plot's series when they vary within the plotted rows. A scheme is always
# part of the label; the others only when needed, so a plain sweep reads "fp32", not "fp32/en/64/32".
_SERIES_DIMENSIONS: list[tuple[str, Callable[[Row], str]]] = [
    ("hardware", lambda r: r.hardware),
    ("scheme", lambda r: r.scheme),
    ("backend", lambda r: r.backend),
    ("prompt_set", lambda r: r.prompt_set),
    ("prompt_tokens", lambda r: f"p{r.prompt_tokens}"),
    ("new_tokens", lambda r: f"n{r.new_tokens}"),
    ("source", lambda r: r.source),
]


def series(rows: Sequence[Row], always: Sequence[str] = ("scheme",)) -> dict[str, list[Row]]:
    """Rows split into lines (label -> rows sorted by batch size). Besides ``always``, a dimension
    joins the label only where it separates rows that agree on every other dimension."""
    def needed(name: str, fn: Callable[[Row], str]) -> bool:
        others = [f for n, f in _SERIES_DIMENSIONS if n != name]
        seen: dict[tuple[str, ...], set[str]] = {}
        for r in rows:
            seen.setdefault(tuple(f(r) for f in others), set()).add(fn(r))
        return any(len(v) > 1 for v in seen.values())

    used = [(name, fn) for name, fn in _SERIES_DIMENSIONS if name in always or needed(name, fn)]
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(" / ".join(fn(r) for _, fn in used), []).append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in sorted(out.items())}


# -- metrics -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A plotted/tabulated quantity: which row attribute, its label and its relative error."""

    key: str
    label: str
    energy: bool = False  # estimated energy must be marked wherever an energy metric appears
    err_key: Optional[str] = None  # row attribute holding the relative uncertainty
    scale: float = 1.0
    missing: str = ""  # what to do when no record has it (shown where a plot is skipped)

    def value(self, r: Row) -> Optional[float]:
        v = getattr(r, self.key)
        return None if v is None else float(v) * self.scale

    def error(self, r: Row) -> Optional[float]:
        v, rel = self.value(r), getattr(r, self.err_key) if self.err_key else None
        return None if v is None or rel is None else abs(v) * float(rel)


GIB = 1024 ** 3
_NO_ENERGY = "the run had no energy sensor; rerun with --sensor auto, nvml, rapl or estimate"
METRICS = {
    "prefill": Metric("prefill_tokens_per_s", "prefill tokens/s"),
    "decode": Metric("decode_tokens_per_s", "decode tokens/s", err_key="ci95_rel"),
    "tokens_per_joule": Metric("tokens_per_joule", "tokens/J", energy=True, err_key="energy_uncertainty_rel",
                               missing=_NO_ENERGY),
    "joules_per_kchar": Metric("joules_per_kchar", "J per 1,000 output chars", energy=True,
                               err_key="energy_uncertainty_rel", missing=_NO_ENERGY),
    "host_memory": Metric("peak_host_bytes", "peak host memory (GiB)", scale=1 / GIB),
    "device_memory": Metric("peak_device_bytes", "peak device memory (GiB)", scale=1 / GIB),
    "perplexity": Metric("perplexity", "perplexity (lower is better)", missing="run with --perplexity"),
    "roofline": Metric("roofline_fraction", "% of the decode roofline bound", scale=100.0,
                       missing="needs a hardware profile with memory bandwidth: run with --hardware ID"),
}


def has_data(rows: Iterable[Row], metric: Metric) -> bool:
    return any(metric.value(r) is not None for r in rows)


# -- Pareto front ------------------------------------------------------------------------------

def pareto_front(rows: Sequence[Row], x: Metric, y: Metric) -> list[Row]:
    """Rows not dominated on (x, y), both to maximise; sorted by x. A row is dominated when another
    is at least as good on both and strictly better on one."""
    pts = [(r, x.value(r), y.value(r)) for r in rows]
    pts = [(r, a, b) for r, a, b in pts if a is not None and b is not None]
    front = [
        (r, a, b) for r, a, b in pts
        if not any(a2 >= a and b2 >= b and (a2 > a or b2 > b) for _, a2, b2 in pts)
    ]
    return [r for r, _, _ in sorted(front, key=lambda p: (p[1], p[2]))]


# -- summaries used by several sections --------------------------------------------------------

def value_range(values: Iterable[Optional[float]]) -> Optional[tuple[float, float]]:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return (min(xs), max(xs)) if xs else None


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


def collapse_texts(texts: Iterable[Optional[str]]) -> list[str]:
    """Distinct texts, with texts that differ only in their numbers merged into one whose varying
    numbers become ranges ("utilisation 97% ..." and "... 100% ..." -> "utilisation 97-100% ...")."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for t in texts:
        if t:
            parts = _NUMBER.split(t)
            groups.setdefault(tuple(parts[0::2]), []).append(parts[1::2])
    out = []
    for words, numbers in groups.items():
        merged = []
        for column in zip(*numbers):
            lo, hi = min(column, key=float), max(column, key=float)
            merged.append(lo if float(lo) == float(hi) else f"{lo}-{hi}")
        out.append("".join(w + (merged[i] if i < len(merged) else "") for i, w in enumerate(words)))
    return out


def best(rows: Iterable[Row], metric: Metric) -> Optional[Row]:
    """The row with the highest value of ``metric``."""
    scored = [(metric.value(r), r) for r in rows]
    scored = [(v, r) for v, r in scored if v is not None]
    return max(scored, key=lambda p: p[0])[1] if scored else None
