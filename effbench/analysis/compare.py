"""Compare two runs: match configurations, compute deltas, test significance, find regressions.

Significance, per metric:
- ``welch``: Welch's t-test on the per-repeat values in ``stats.samples`` (both sides need n >= 2);
- ``ci-overlap``: without samples, the CI95 intervals (from ``stats.ci95_rel``, which is the
  decode tokens/s CI) do not overlap;
- ``exact``: metrics that are deterministic for a configuration (perplexity, peak memory): any
  change is real, so only the threshold decides;
- ``none``: nothing to test with; never counted as a regression.
A regression is a significant change in the worse direction whose relative size exceeds the threshold.
A configuration that succeeded in BASE but failed (``error`` set) or is missing in NEW is also a
regression (``lost``), unless ``allow_missing`` is set.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

from effbench.errors import EffbenchError
from effbench.results.schema import Record
from effbench.stats import welch_p
from effbench.results.store import RESULTS_FILE, iter_record_dicts, read_run_dir, validate_records

Method = Literal["welch", "ci-overlap", "exact", "none"]
KeyT = tuple[str, str, str, int, int, int, str, str]


# -- metrics -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    value: Callable[[Record], Optional[float]]
    samples: Callable[[Record], Optional[list[float]]] = lambda r: None
    exact: bool = False  # deterministic for a configuration
    ci_from_record: bool = False  # stats.ci95_rel describes this metric


def _sample(key: str) -> Callable[[Record], Optional[list[float]]]:
    return lambda r: r.stats.samples.get(key) or None


def _tokens_per_joule_samples(r: Record) -> Optional[list[float]]:
    # tokens per call are fixed, so tokens/J per repeat = (tokens/J x mean J) / J of that repeat.
    joules, tpj, mean_j = r.stats.samples.get("joules_total"), r.energy.tokens_per_joule, r.energy.joules_total
    if not joules or tpj is None or not mean_j or any(j <= 0 for j in joules):
        return None
    return [tpj * mean_j / j for j in joules]


def _prefill_samples(r: Record) -> Optional[list[float]]:
    # the sweep stores no prefill samples; prefill tokens/s = batch x prompt tokens / TTFT, per repeat.
    if s := r.stats.samples.get("prefill_tokens_per_s"):
        return s
    t = r.stats.samples.get("ttft_s")
    w = r.workload
    return [w.batch_size * w.prompt_tokens / x for x in t if x > 0] if t else None


def _tpot_samples(r: Record) -> Optional[list[float]]:
    # tpot = batch / decode tokens/s (one decode step for the whole batch), per repeat.
    d = r.stats.samples.get("decode_tokens_per_s")
    return [r.workload.batch_size / x for x in d if x > 0] if d else None


def _peak_memory(r: Record) -> Optional[float]:
    m = r.memory.peak_device_bytes if r.memory.peak_device_bytes is not None else r.memory.peak_host_bytes
    return float(m) if m is not None else None


METRICS: tuple[Metric, ...] = (
    Metric("decode_tokens_per_s", "decode tok/s", True, lambda r: r.throughput.decode_tokens_per_s,
           _sample("decode_tokens_per_s"), ci_from_record=True),
    Metric("prefill_tokens_per_s", "prefill tok/s", True, lambda r: r.throughput.prefill_tokens_per_s,
           _prefill_samples),
    Metric("ttft_s", "TTFT s", False, lambda r: r.throughput.ttft_s, _sample("ttft_s")),
    Metric("tpot_s", "TPOT s", False, lambda r: r.throughput.tpot_s, _tpot_samples),
    Metric("tokens_per_joule", "tok/J", True, lambda r: r.energy.tokens_per_joule, _tokens_per_joule_samples),
    Metric("peak_memory_bytes", "peak memory", False, _peak_memory, exact=True),
    Metric("perplexity", "perplexity", False, lambda r: r.quality.perplexity, exact=True),
)
METRIC_NAMES = tuple(m.name for m in METRICS)


# -- loading and matching ----------------------------------------------------------------------
def load_side(path: str | Path) -> list[Record]:
    """Records of a run directory or of a ``results.jsonl`` file."""
    p = Path(path)
    if p.is_dir():
        return read_run_dir(p)[1]
    if p.is_file():
        return validate_records(iter_record_dicts(p), str(p))
    raise EffbenchError(f"'{path}' does not exist; pass a run directory (from 'effbench run --out') or its {RESULTS_FILE}")


def config_key(r: Record) -> KeyT:
    hw = r.hardware.profile or r.hardware.detected_name or "?"
    w = r.workload
    return (r.model.id, r.backend.name, r.quantization.scheme, w.batch_size, w.prompt_tokens, w.new_tokens, w.prompt_set, hw)


def key_label(k: KeyT) -> str:
    return f"{k[0]} {k[1]} {k[2]} b{k[3]} p{k[4]} n{k[5]} {k[6]} on {k[7]}"


@dataclass
class MetricDelta:
    metric: str
    base: Optional[float]
    new: Optional[float]
    delta_rel: Optional[float]  # (new - base) / base
    p_value: Optional[float]
    method: Method
    significant: bool
    worse: bool
    regression: bool
    note: str = ""


@dataclass
class ConfigComparison:
    key: KeyT
    label: str
    deltas: list[MetricDelta]

    @property
    def regression(self) -> bool:
        return any(d.regression for d in self.deltas)


@dataclass
class Comparison:
    base: str
    new: str
    threshold: float
    alpha: float
    configs: list[ConfigComparison]
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    mixed_energy: bool = False
    # fine in BASE, failed or vanished in NEW: "<label>: failed in NEW: <error>" / "<label>: missing in NEW"
    lost: list[str] = field(default_factory=list)
    allow_missing: bool = False

    @property
    def regressions(self) -> list[tuple[str, MetricDelta]]:
        return [(c.label, d) for c in self.configs for d in c.deltas if d.regression]

    @property
    def lost_regressions(self) -> list[str]:
        """Configurations lost in NEW that count as regressions (none with ``allow_missing``)."""
        return [] if self.allow_missing else list(self.lost)

    @property
    def regression(self) -> bool:
        return bool(self.regressions or self.lost_regressions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["regression"] = self.regression
        return d


def _ci_overlap_significant(base: Record, new: Record, vb: float, vn: float) -> Optional[bool]:
    rb, rn = base.stats.ci95_rel, new.stats.ci95_rel
    if rb is None or rn is None:
        return None
    return vb * (1 + rb) < vn * (1 - rn) or vn * (1 + rn) < vb * (1 - rb)


def compare_metric(m: Metric, base: Record, new: Record, threshold: float, alpha: float, comparable: bool = True) -> MetricDelta:
    vb, vn = m.value(base), m.value(new)
    if vb is None or vn is None:
        return MetricDelta(m.name, vb, vn, None, None, "none", False, False, False, "missing on one side")
    rel = (vn - vb) / vb if vb else None
    worse = (vn < vb) if m.higher_is_better else (vn > vb)
    sb, sn = m.samples(base), m.samples(new)
    p: Optional[float] = None
    if m.exact:
        method: Method = "exact"
        significant = vn != vb
    elif sb and sn and len(sb) >= 2 and len(sn) >= 2:
        method, p = "welch", welch_p(sb, sn)
        significant = p < alpha
    elif m.ci_from_record and (sig := _ci_overlap_significant(base, new, vb, vn)) is not None:
        method, significant = "ci-overlap", sig
    else:
        method, significant = "none", False
    note = "" if comparable else "measured vs estimated energy: not a regression"
    regression = significant and worse and rel is not None and abs(rel) > threshold and comparable
    return MetricDelta(m.name, vb, vn, rel, p, method, significant, worse, regression, note)


def _energy_kind(r: Record) -> Optional[str]:
    return r.energy.status if r.energy.status in ("measured", "estimated") else None


def compare_records(base: list[Record], new: list[Record], *, threshold: float = 0.05, alpha: float = 0.05,
                    allow_mixed_energy: bool = False, allow_missing: bool = False,
                    base_name: str = "BASE", new_name: str = "NEW") -> Comparison:
    if not 0 <= threshold < 1:
        raise EffbenchError(f"--threshold must be a relative change in [0, 1), e.g. 0.05 for 5% (got {threshold})")
    if not 0 < alpha < 1:
        raise EffbenchError(f"--alpha must be in (0, 1), e.g. 0.05 (got {alpha})")
    failed = [f"{name}: {key_label(config_key(r))}: {r.error}" for name, rs in ((base_name, base), (new_name, new)) for r in rs if r.error]
    b = {config_key(r): r for r in base if not r.error}  # the last record of a key wins (a --resume rerun)
    n = {config_key(r): r for r in new if not r.error}
    new_errors = {config_key(r): r.error for r in new if r.error}
    lost = [f"{key_label(k)}: failed in {new_name}: {new_errors[k]}" if k in new_errors else f"{key_label(k)}: missing in {new_name}"
            for k in b if k not in n]
    common = [k for k in b if k in n]
    if not common:
        raise EffbenchError(f"no configuration of {base_name} matches one of {new_name} (matched on model, backend, scheme, "
                            "batch size, prompt/new tokens, prompt set and hardware); compare runs of the same sweep")
    mixed = [k for k in common if None not in (_energy_kind(b[k]), _energy_kind(n[k])) and _energy_kind(b[k]) != _energy_kind(n[k])]
    if mixed and not allow_mixed_energy:
        k = mixed[0]
        raise EffbenchError(f"{base_name} has {_energy_kind(b[k])} energy and {new_name} {_energy_kind(n[k])} energy "
                            f"(e.g. {key_label(k)}); estimates are not measurements: pass --allow-mixed-energy to compare them anyway")
    configs = []
    for k in common:
        energy_ok = k not in mixed
        deltas = [compare_metric(m, b[k], n[k], threshold, alpha, energy_ok or m.name != "tokens_per_joule") for m in METRICS]
        configs.append(ConfigComparison(k, key_label(k), deltas))
    return Comparison(base_name, new_name, threshold, alpha, configs,
                      only_in_base=[key_label(k) for k in b if k not in n],
                      only_in_new=[key_label(k) for k in n if k not in b],
                      failed=failed, mixed_energy=bool(mixed), lost=lost, allow_missing=allow_missing)


def compare_paths(base: str | Path, new: str | Path, **kwargs) -> Comparison:
    return compare_records(load_side(base), load_side(new), base_name=str(base), new_name=str(new), **kwargs)
