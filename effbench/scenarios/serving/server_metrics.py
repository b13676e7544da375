"""The server's own view of a serving point: scrape its Prometheus ``/metrics`` (vLLM, SGLang) while
the load runs, and summarise it, to cross-check the client's figures. The client's TTFT includes
the network, HTTP and its own event loop; the server's does not, so a large gap means the client,
not the server, is slow.

Pure Python: a small parser of the text exposition format (no prometheus_client), and histogram
quantiles computed like Prometheus' ``histogram_quantile`` over the *increase* of the buckets
between the first and the last scrape, so a long-running server's history does not leak in."""
from __future__ import annotations

import asyncio
import math
import re
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx  # an optional dependency (the serving extra): imported where it is used

# A client p50 counts as slower than the server's only past both tolerances: the relative one
# because the server's figure comes from bucket interpolation (buckets are 15 % to 150 % wide), the
# absolute one because a few ms of client-side work (HTTP, SSE parsing, the event loop) are
# expected and not a finding. ITL is ~10x smaller than TTFT, hence its smaller floor.
CLIENT_GAP_REL_TOL = 0.25
CLIENT_GAP_ABS_TOL_MS = {"ttft": 20.0, "itl": 5.0}

# A /metrics body is a few hundred kB; a cap keeps a hostile or confused server from filling memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 5.0
# A server counts a finished request a moment after its last byte left (vLLM updates its counters in the
# output processing that follows the response): the scrapes that open and close a point's window repeat,
# SETTLE_STEP_S apart, until the finished-request and generated-token counters stop moving, for at most
# SETTLE_MAX_S, so the window holds exactly the measured requests on a busy machine too.
SETTLE_STEP_S = 0.05
SETTLE_MAX_S = 2.0

Labels = dict[str, str]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: ``name{labels} value [timestamp]``."""

    name: str
    labels: Labels
    value: float
    timestamp: float | None = None


# --------------------------------------------------------------------------------------- parsing

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# One item inside braces: a bare or quoted label name, ``="value"`` (absent for the quoted metric
# name of the UTF-8 form ``{"my.metric", a="b"}``), then a comma or the closing brace.
_ITEM_RE = re.compile(
    r'\s*(?:([a-zA-Z_][a-zA-Z0-9_]*)|"((?:[^"\\]|\\.)*)")\s*(?:=\s*"((?:[^"\\]|\\.)*)")?\s*([,}])')
_CLOSE_RE = re.compile(r"\s*}")
_ESCAPE_RE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def _unescape(s: str) -> str:
    # Only \\, \" and \n are escapes in the format; anything else is kept as written.
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m[1], "\\" + m[1]), s) if "\\" in s else s


def _number(tok: str) -> float:
    if "_" in tok:  # float() takes 1_000; the format does not
        raise ValueError(tok)
    return float(tok)  # takes +Inf, -Inf, NaN and exponents, like Go's ParseFloat


def _parse_line(line: str) -> Sample | None:
    name: str | None = None
    pos = 0
    if not line.startswith("{"):
        m = _NAME_RE.match(line)
        if not m:
            return None
        name, pos = m.group(), m.end()
    labels: Labels = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            close = _CLOSE_RE.match(line, pos)  # `{}` and a trailing comma are allowed
            if close:
                pos = close.end()
                break
            m = _ITEM_RE.match(line, pos)
            if not m:
                return None
            bare, quoted, value, sep = m.groups()
            if value is not None:
                labels[bare if bare is not None else _unescape(quoted)] = _unescape(value)
            elif quoted is not None and name is None:
                name = _unescape(quoted)
            else:
                return None
            pos = m.end()
            if sep == "}":
                break
    if name is None or (pos < len(line) and line[pos] not in " \t"):
        return None
    rest = line[pos:].split("#", 1)[0].split()  # `# {...}` after the value is an exemplar
    if len(rest) not in (1, 2):
        return None
    try:
        return Sample(name, labels, _number(rest[0]), _number(rest[1]) if len(rest) == 2 else None)
    except ValueError:
        return None


def _parse(text: str, keep: frozenset[str] | None = None) -> tuple[list[Sample], dict[str, str]]:
    """Samples (only those named in ``keep`` when given), and the families named by ``# TYPE``
    lines (a family without samples yet still says the server exposes it)."""
    samples: list[Sample] = []
    types: dict[str, str] = {}
    # split("\n"), not splitlines(): a label value may hold U+2028 and the like, which are not
    # line ends in this format.
    for raw in text.split("\n"):
        line = raw.strip(" \t\r")
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                types[parts[2].strip('"')] = parts[3].strip().lower()
            continue
        if keep is not None and not line.startswith("{"):
            m = _NAME_RE.match(line)  # skipping unwanted lines unparsed is most of the speed
            if m is None or m.group() not in keep:
                continue
        s = _parse_line(line)
        if s is not None:
            samples.append(s)
    return samples, types


def parse_prometheus(text: str) -> list[Sample]:
    """Every well-formed sample in a Prometheus (or OpenMetrics) text body; bad lines are skipped."""
    return _parse(text)[0]


# ----------------------------------------------------------------------------- histogram maths

def _quantile(q: float, buckets: Iterable[tuple[float, float]]) -> tuple[float, float, float] | None:
    """(value, lower bound, upper bound) of the q-quantile of cumulative ``(le, count)`` buckets."""
    merged: dict[float, float] = {}
    for le, count in buckets:
        if not math.isnan(le) and math.isfinite(count):
            merged[le] = merged.get(le, 0.0) + count  # equal bounds add up, as Prometheus does
    bs = sorted(merged.items())
    if len(bs) < 2 or not math.isinf(bs[-1][0]) or bs[-1][0] < 0:
        return None  # no +Inf bucket: the total is unknown (Prometheus answers NaN)
    counts: list[float] = []
    for _, c in bs:  # cumulative counts never fall; float noise or hostile input can make them
        counts.append(max(c, counts[-1]) if counts else max(c, 0.0))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = bisect_left(counts, rank)
    if b >= len(bs) - 1:  # in the +Inf bucket: the highest finite bound is all that is known
        return bs[-2][0], bs[-2][0], math.inf
    hi = bs[b][0]
    if b == 0 and hi <= 0:
        return hi, hi, hi
    lo = 0.0 if b == 0 else bs[b - 1][0]
    below = 0.0 if b == 0 else counts[b - 1]
    inside = counts[b] - below
    if inside <= 0:
        return lo, lo, hi
    return lo + (hi - lo) * (rank - below) / inside, lo, hi


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank
    q * total. ``buckets`` are (upper bound, cumulative count) and must include +Inf. None when
    empty or without a +Inf bucket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    r = _quantile(q, buckets)
    return None if r is None else r[0]


# --------------------------------------------------------------------------- engine knowledge

@dataclass(frozen=True)
class EngineMetricNames:
    """Where an engine keeps each figure. Where a tuple holds several names, the first one the
    server exposes wins (a newer name first: during a deprecation window both carry the same
    data, and adding them would count it twice)."""

    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_cache_usage: tuple[str, ...]
    prefix_queries: tuple[str, ...]  # counters: hit rate = increase(hits) / increase(queries)
    prefix_hits: tuple[str, ...]
    prefix_hit_rate_gauge: tuple[str, ...]  # the fallback when there are no counters
    ttft: tuple[str, ...]  # histograms, in seconds
    itl: tuple[str, ...]
    e2e: tuple[str, ...]
    generation_tokens: tuple[str, ...]
    prompt_tokens: tuple[str, ...]
    requests_succeeded: tuple[str, ...]
    preemptions: tuple[str, ...]

    def counters(self) -> tuple[str, ...]:
        return (*self.prefix_queries, *self.prefix_hits, *self.generation_tokens, *self.prompt_tokens,
                *self.requests_succeeded, *self.preemptions)

    def histograms(self) -> tuple[str, ...]:
        return (*self.ttft, *self.itl, *self.e2e)


# vllm/v1/metrics/loggers.py (PrometheusStatLogger) and vllm/engine/metrics.py (V0). Counters are
# declared without `_total`; prometheus_client adds it on exposition.
VLLM = EngineMetricNames(
    running=("vllm:num_requests_running",),
    waiting=("vllm:num_requests_waiting",),
    kv_cache_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # renamed in 0.9
    prefix_queries=("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    prefix_hits=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    prefix_hit_rate_gauge=("vllm:gpu_prefix_cache_hit_rate",),  # V0 only
    ttft=("vllm:time_to_first_token_seconds",),
    # time_per_output_token_seconds held per-token gaps until it was renamed inter_token_latency
    itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    e2e=("vllm:e2e_request_latency_seconds",),
    generation_tokens=("vllm:generation_tokens_total",),
    prompt_tokens=("vllm:prompt_tokens_total",),
    requests_succeeded=("vllm:request_success_total",),  # labelled by finished_reason
    preemptions=("vllm:num_preemptions_total",),
)

# python/sglang/srt/metrics/collector.py (SchedulerMetricsCollector, TokenizerMetricsCollector).
SGLANG = EngineMetricNames(
    running=("sglang:num_running_reqs",),
    waiting=("sglang:num_queue_reqs",),
    kv_cache_usage=("sglang:token_usage",),  # share of the KV token pool in use
    # cached/prompt tokens of finished requests: SGLang's counterpart of vLLM's hits/queries
    prefix_queries=("sglang:prompt_tokens_total",),
    prefix_hits=("sglang:cached_tokens_total",),
    prefix_hit_rate_gauge=("sglang:cache_hit_rate",),
    ttft=("sglang:time_to_first_token_seconds",),
    itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    e2e=("sglang:e2e_request_latency_seconds",),
    generation_tokens=("sglang:generation_tokens_total",),
    prompt_tokens=("sglang:prompt_tokens_total",),
    requests_succeeded=("sglang:num_requests_total",),  # finished requests; aborts count apart
    preemptions=(),  # SGLang "retracts" instead, under names that changed across versions
)

ENGINES: dict[str, EngineMetricNames] = {"vllm": VLLM, "sglang": SGLANG}
# Requests that finished without a result; vLLM counts them in request_success_total too.
FAILED_FINISH_REASONS = frozenset({"abort", "error"})
# Gauges that are fractions: averaged over label sets (engines), where counts are added up.
_FRACTION_FIELDS = ("kv_cache_usage", "prefix_hit_rate_gauge")
_GAUGE_FIELDS = ("running", "waiting", *_FRACTION_FIELDS)


def _series_names(e: EngineMetricNames) -> set[str]:
    gauges = {n for f in _GAUGE_FIELDS for n in getattr(e, f)}
    return gauges | set(e.counters()) | {h + sfx for h in e.histograms() for sfx in ("_bucket", "_sum", "_count")}


# Every series name the summary reads. A vLLM body holds hundreds of other samples (request-size
# histograms, HTTP and process metrics); once the first scrape has shown the body is Prometheus
# text, later scrapes parse only these, to hold the GIL (which the load's event loop needs) briefly.
RELEVANT_SERIES = frozenset(set.union(*(_series_names(e) for e in ENGINES.values())))


def detect_source(names: Iterable[str]) -> str:
    """"vllm" or "sglang" by the metric-name prefix most names carry, else "unknown"."""
    n = {"vllm": 0, "sglang": 0}
    for name in names:
        for src in n:
            if name.startswith(src + ":"):
                n[src] += 1
    best = max(n, key=lambda s: n[s])
    return best if n[best] else "unknown"


# ------------------------------------------------------------------------------------- summary

@dataclass
class GaugeStats:
    mean: float | None = None
    max: float | None = None


@dataclass
class LatencyStats:
    """Milliseconds, from the increase of a histogram over the window."""

    p50: float | None = None
    p95: float | None = None
    mean: float | None = None  # exact: increase(_sum) / increase(_count)
    count: int | None = None
    # The bucket the p50 falls in: the true server p50 lies between these, whatever the
    # interpolation says. This is the resolution of the server's figure.
    p50_bucket: tuple[float, float] | None = None


@dataclass
class ServerMetrics:
    exposed: bool
    reason: str | None = None  # why not exposed
    url: str | None = None
    source: str = "unknown"
    scrapes: int = 0
    failed_scrapes: int = 0
    last_error: str | None = None
    window_s: float | None = None  # between the first and the last successful scrape
    running: GaugeStats = field(default_factory=GaugeStats)
    waiting: GaugeStats = field(default_factory=GaugeStats)
    kv_cache_usage: GaugeStats = field(default_factory=GaugeStats)  # 0..1
    prefix_cache_hit_rate: float | None = None
    ttft_ms: LatencyStats = field(default_factory=LatencyStats)
    itl_ms: LatencyStats = field(default_factory=LatencyStats)
    e2e_ms: LatencyStats = field(default_factory=LatencyStats)
    generation_tokens: int | None = None
    prompt_tokens: int | None = None
    requests_succeeded: int | None = None
    preemptions: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: no NaN or infinity (None instead), tuples as lists."""
        return _json_safe(asdict(self))


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _series_key(s: Sample) -> SeriesKey:
    return s.name, tuple(sorted(s.labels.items()))


def _first_seen(names: tuple[str, ...], seen: Iterable[str]) -> str | None:
    have = set(seen)
    return next((n for n in names if n in have), None)


def _count(x: float | None) -> int | None:
    return None if x is None else round(x)


class _Window:
    """What the scrapes of one point add up to. Counters and histogram series keep only their
    increase (Prometheus' ``increase`` without extrapolation: a drop is a restart, counted from
    zero), so memory does not grow with the number of scrapes."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.source = "unknown"
        self.names: EngineMetricNames | None = None
        self.gauges: dict[str, list[float]] = {f: [] for f in _GAUGE_FIELDS}
        self.last: dict[SeriesKey, float] = {}
        self.increase: dict[SeriesKey, float] = {}
        self.seen: set[str] = set()  # counter and histogram families exposed (samples or TYPE)

    def add(self, samples: list[Sample], types: dict[str, str], t: float) -> None:
        first = self.scrapes == 0
        self.scrapes += 1
        self.first_t = t if self.first_t is None else self.first_t
        self.last_t = t
        if self.names is None:  # a fresh server may expose no vllm:/sglang: sample yet
            self.source = detect_source([*types, *(s.name for s in samples)])
            self.names = ENGINES.get(self.source)
        names = self.names
        if names is None:
            return
        by_name: dict[str, list[Sample]] = {}
        for s in samples:
            by_name.setdefault(s.name, []).append(s)
        self._gauges(names, by_name)
        self._counters(names, by_name, types, first)

    def _gauges(self, names: EngineMetricNames, by_name: dict[str, list[Sample]]) -> None:
        for f in _GAUGE_FIELDS:
            name = _first_seen(getattr(names, f), by_name)
            vals = [s.value for s in by_name.get(name or "", []) if math.isfinite(s.value)]
            if vals:
                self.gauges[f].append(sum(vals) / len(vals) if f in _FRACTION_FIELDS else sum(vals))

    def _counters(self, names: EngineMetricNames, by_name: dict[str, list[Sample]], types: dict[str, str],
                  first: bool) -> None:
        families: list[tuple[str, tuple[str, ...]]] = [(n, (n,)) for n in names.counters()]
        families += [(h, (h + "_bucket", h + "_sum", h + "_count")) for h in names.histograms()]
        for family, series in families:
            # A counter's TYPE line names it with `_total` (Prometheus text) or without (OpenMetrics)
            declared = family in types or family.removesuffix("_total") in types
            if declared or any(n in by_name for n in series):
                self.seen.add(family)
            for n in series:
                for s in by_name.get(n, []):
                    if not math.isfinite(s.value) or s.value < 0:
                        continue
                    key = _series_key(s)
                    prev = self.last.get(key)
                    if prev is None:  # a series new since the first scrape was created at zero
                        step = 0.0 if first else s.value
                    elif s.value < prev:  # a drop is a restart: counted from zero again
                        step = s.value
                    else:
                        step = s.value - prev
                    self.increase[key] = self.increase.get(key, 0.0) + step
                    self.last[key] = s.value

    # ---- reading the window

    def _total(self, name: str, skip: tuple[str, frozenset[str]] | None = None) -> float:
        return sum(v for (n, labels), v in self.increase.items()
                   if n == name and not (skip and dict(labels).get(skip[0]) in skip[1]))

    def counter(self, aliases: tuple[str, ...], skip: tuple[str, frozenset[str]] | None = None) -> float | None:
        name = _first_seen(aliases, self.seen)
        return None if name is None else self._total(name, skip)

    def latency_ms(self, aliases: tuple[str, ...]) -> LatencyStats:
        name = _first_seen(aliases, self.seen)
        if name is None:
            return LatencyStats()
        buckets: dict[float, float] = {}
        for (n, labels), v in self.increase.items():
            if n == name + "_bucket":
                try:
                    le = _number(dict(labels).get("le", ""))
                except ValueError:
                    continue
                buckets[le] = buckets.get(le, 0.0) + v  # `sum by (le)` over the label sets
        count = self._total(name + "_count")
        if math.inf not in buckets and buckets and count > 0:
            buckets[math.inf] = count  # a missing +Inf bucket is the _count series
        if count <= 0 and math.inf in buckets:
            count = buckets[math.inf]
        total_s = self._total(name + "_sum")
        p50, p95 = _quantile(0.5, buckets.items()), _quantile(0.95, buckets.items())
        return LatencyStats(
            p50=None if p50 is None else p50[0] * 1000,
            p95=None if p95 is None else p95[0] * 1000,
            mean=total_s / count * 1000 if count > 0 else None,
            count=_count(count),
            p50_bucket=None if p50 is None else (p50[1] * 1000, p50[2] * 1000))

    def gauge(self, f: str) -> GaugeStats:
        vals = self.gauges[f]
        return GaugeStats(sum(vals) / len(vals), max(vals)) if vals else GaugeStats()

    def hit_rate(self) -> float | None:
        names = self.names
        if names is None:
            return None
        # Counters first: they cover exactly this window. A family declared by a TYPE line but
        # with no series yet (SGLang creates cached_tokens_total on the first hit) counts as 0.
        queries, hits = self.counter(names.prefix_queries), self.counter(names.prefix_hits)
        if queries and queries > 0 and hits is not None:
            return hits / queries
        return self._hit_rate_gauge()

    def _hit_rate_gauge(self) -> float | None:
        return self.gauge("prefix_hit_rate_gauge").mean

    def summary(self, url: str | None) -> ServerMetrics:
        m = ServerMetrics(exposed=True, url=url, source=self.source, scrapes=self.scrapes)
        if self.first_t is not None and self.last_t is not None:
            m.window_s = self.last_t - self.first_t
        names = self.names
        if names is None:
            return m
        m.running = self.gauge("running")
        m.waiting = self.gauge("waiting")
        m.kv_cache_usage = self.gauge("kv_cache_usage")
        m.prefix_cache_hit_rate = self.hit_rate()
        m.ttft_ms = self.latency_ms(names.ttft)
        m.itl_ms = self.latency_ms(names.itl)
        m.e2e_ms = self.latency_ms(names.e2e)
        m.generation_tokens = _count(self.counter(names.generation_tokens))
        m.prompt_tokens = _count(self.counter(names.prompt_tokens))
        m.requests_succeeded = _count(self.counter(names.requests_succeeded,
                                                   skip=("finished_reason", FAILED_FINISH_REASONS)))
        m.preemptions = _count(self.counter(names.preemptions))
        return m


def summarize_scrapes(texts: Iterable[str], url: str | None = None) -> ServerMetrics:
    """The summary of scrape bodies taken in order (first to last), as the scraper makes it; for
    bodies saved elsewhere and for tests. They carry no times, so ``window_s`` is None."""
    w = _Window()
    for i, text in enumerate(texts):
        samples, types = _parse(text)
        if samples or types:
            w.add(samples, types, float(i))
    if w.scrapes == 0:
        return ServerMetrics(exposed=False, reason="no scrape was Prometheus text", url=url)
    m = w.summary(url)
    m.window_s = None
    return m


# ------------------------------------------------------------------------------------- scraper

def metrics_url(base: str) -> str:
    """``/metrics`` at the server's root: vLLM and SGLang serve it beside ``/v1``, not under it."""
    base = base.strip().rstrip("/")
    if base.endswith("/metrics"):
        return base
    return base.removesuffix("/v1") + "/metrics"


class _NotExposed(Exception):
    pass


class _HasBaseUrl(Protocol):
    @property
    def base_url(self) -> object: ...


# The counters a finished request moves, in every engine's names (see SETTLE_STEP_S).
_FINISHED_SERIES = frozenset(n for e in ENGINES.values() for n in e.requests_succeeded)
_PROGRESS_SERIES = _FINISHED_SERIES | {n for e in ENGINES.values() for n in e.generation_tokens}


def _sum_of(samples: list[Sample], names: frozenset[str]) -> float | None:
    """The sum of these series, None where the body has none of them."""
    values = [x.value for x in samples if x.name in names and math.isfinite(x.value)]
    return sum(values) if values else None


def _finished(samples: list[Sample]) -> float | None:
    """Requests the server has counted as finished, all finish reasons, since it started (None: it
    exposes no such counter, so there is nothing to wait for)."""
    return _sum_of(samples, _FINISHED_SERIES)


class MetricsScraper:
    """Scrapes ``/metrics`` every ``interval_s`` in a background task while a load point runs.

    ``await start(target)`` scrapes once and finds out whether the server exposes metrics (a
    404, a body that is not Prometheus text, or no connection all mean "not exposed", never an
    exception); ``await stop()`` scrapes a last time and returns the summary. Give it a URL rather
    than the load's own client where that client's connection pool is sized to the load: a scrape
    would take a connection a request is waiting for."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.url: str | None = None
        self.exposed = False
        self.reason: str | None = "not started"
        self.failed_scrapes = 0
        self.last_error: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._own_http = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._window = _Window()
        self._result: ServerMetrics | None = None
        self._finished_before: float | None = None  # see count_before
        self._finished_at_start: float | None = None  # in the window's first scrape (see stop)

    @property
    def scrapes(self) -> int:
        return self._window.scrapes

    def _connect(self, target: str | _HasBaseUrl) -> bool:
        """The URL and HTTP client to scrape with; False (with ``reason``) where there is no URL."""
        import httpx

        if self._http is not None:
            return True
        if isinstance(target, httpx.AsyncClient):
            self._http, self._own_http = target, False
            base = str(target.base_url)
        else:
            self._own_http = True
            base = target if isinstance(target, str) else str(target.base_url)
        if not base.startswith(("http://", "https://")):
            self.reason = f"no http(s) URL to scrape ({base!r})"
            return False
        self.url = metrics_url(base)
        # trust_env=False: a proxy from the environment must not sit between us and the server
        self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        return True

    async def count_before(self, target: str | _HasBaseUrl) -> None:
        """Reads the server's finished-request count before a warm-up (nothing enters the window), so
        ``start`` can wait until the warm-up's requests are counted too (see SETTLE_STEP_S)."""
        if self._task is not None or self._result is not None or not self._connect(target):
            return
        try:
            self._finished_before = _finished((await self._read())[0])
        except _NotExposed:
            pass

    async def start(self, target: str | _HasBaseUrl, finished_since_count: int = 0) -> bool:
        """The first scrape; True when the server exposes metrics (then scraping goes on).
        ``target``: the server's base URL, an ``httpx.AsyncClient`` with a ``base_url`` (used as
        is, not closed), or anything else with a ``base_url`` (effbench's serving ``Client``).
        ``finished_since_count``: requests that finished since ``count_before`` (the warm-up): the
        first scrape waits until the server has counted them, so none of them enters the window."""
        if self._task is not None or self._result is not None:
            raise RuntimeError("a MetricsScraper is started once")
        if not self._connect(target):
            return False
        at_least = None if self._finished_before is None else self._finished_before + finished_since_count
        try:
            self._finished_at_start = _finished(await self._scrape(settle=True, at_least=at_least))
        except _NotExposed as e:
            self.reason = str(e)
            await self._close()
            return False
        self.exposed, self.reason = True, None
        self._task = asyncio.create_task(self._loop())
        return True

    async def scrape_now(self, settle: bool = False, at_least: float | None = None) -> bool:
        """One scrape outside the schedule (``settle`` and ``at_least`` as ``_scrape`` takes them); False
        when it failed (it is counted, never raised)."""
        if not self.exposed or self._result is not None:
            return False
        try:
            await self._scrape(settle, at_least)
            return True
        except _NotExposed as e:
            self.failed_scrapes += 1
            self.last_error = str(e)
            return False

    async def stop(self, expected_requests: int | None = None) -> ServerMetrics:
        """Ends the background scrapes, scrapes a last time and summarises the window. ``expected_requests``:
        the requests the client saw finish inside the window; the last scrape waits (up to SETTLE_MAX_S)
        until the server has counted at least that many, so a late counter update is not lost."""
        if self._result is not None:
            return self._result
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.exposed:
            start = self._finished_at_start
            await self.scrape_now(settle=True, at_least=None if start is None or not expected_requests
                                  else start + expected_requests)
            m = self._window.summary(self.url)
            m.failed_scrapes, m.last_error = self.failed_scrapes, self.last_error
        else:
            m = ServerMetrics(exposed=False, reason=self.reason, url=self.url)
        await self._close()
        self._result = m
        return m

    async def _loop(self) -> None:
        next_t = time.monotonic()
        while True:
            next_t = max(next_t + self.interval_s, time.monotonic())
            await asyncio.sleep(next_t - time.monotonic())
            await self.scrape_now()

    async def _scrape(self, settle: bool = False, at_least: float | None = None) -> list[Sample]:
        """One scrape into the window (its samples returned); _NotExposed says why it could not be used.
        ``settle``: the last of the scrapes taken until the finished-request counters stop moving;
        ``at_least``: ... and until the server has counted that many finished requests in all (both for
        at most SETTLE_MAX_S)."""
        def short(samples: list[Sample]) -> bool:
            return at_least is not None and (_finished(samples) or 0.0) < at_least

        async with self._lock:
            samples, types, t = await self._read()
            deadline = t + SETTLE_MAX_S
            while t < deadline and (settle or short(samples)):
                await asyncio.sleep(SETTLE_STEP_S)
                again = await self._read()
                moved = _sum_of(again[0], _PROGRESS_SERIES) != _sum_of(samples, _PROGRESS_SERIES)
                samples, types, t = again
                if not moved and not short(samples):
                    break
            self._window.add(samples, types, t)
            return samples

    async def _read(self) -> tuple[list[Sample], dict[str, str], float]:
        """One fetched and parsed body. The window's first scrape parses everything, to judge the body;
        later ones only what is summarised. Parsed off the event loop: the load's requests are
        timestamped on it."""
        assert self._http is not None and self.url is not None
        text = await self._fetch(self._http, self.url)
        t = time.monotonic()
        samples, types = await asyncio.to_thread(_parse, text, RELEVANT_SERIES if self._window.scrapes else None)
        if not samples and not types:
            raise _NotExposed(f"{self.url} is not Prometheus text: {' '.join(text.split())[:80]!r}")
        return samples, types, t

    @staticmethod
    async def _fetch(http: httpx.AsyncClient, url: str) -> str:
        """The body; any failure to get one (HTTP status, content type, transport) is _NotExposed."""
        try:
            async with http.stream("GET", url) as r:
                if r.status_code != 200:
                    raise _NotExposed(f"{url} answered HTTP {r.status_code}")
                kind = r.headers.get("content-type", "").lower()
                if "html" in kind or "json" in kind:
                    raise _NotExposed(f"{url} is not Prometheus text (content-type {kind})")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _NotExposed(f"{url} sent more than {MAX_BODY_BYTES} bytes")
                return body.decode("utf-8", "replace")
        except _NotExposed:
            raise
        except Exception as e:  # whatever the transport raises means "not scraped", never a crash
            raise _NotExposed(f"could not scrape {url}: {type(e).__name__}: {str(e).strip()[:200]}") from e

    async def _close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
        self._http = None


# --------------------------------------------------------------------------------- cross-check

def cross_check(server: ServerMetrics | dict[str, Any], client_ttft_p50_ms: float | None,
                client_itl_p50_ms: float | None) -> dict[str, Any]:
    """Client p50s against the server's: ratios, and a one-line ``note`` when the client is
    slower than the server beyond the tolerances *and* beyond the top of the bucket the server's
    p50 falls in (interpolation inside a bucket is all the server figure can say)."""
    d = server.to_dict() if isinstance(server, ServerMetrics) else server
    out: dict[str, Any] = {"rel_tol": CLIENT_GAP_REL_TOL, "abs_tol_ms": dict(CLIENT_GAP_ABS_TOL_MS)}
    slow: list[str] = []
    for key, client in (("ttft", client_ttft_p50_ms), ("itl", client_itl_p50_ms)):
        stats = d.get(f"{key}_ms") if d.get("exposed") else None
        stats = stats if isinstance(stats, dict) else {}
        srv, bucket = _finite(stats.get("p50")), stats.get("p50_bucket")
        hi = _finite(bucket[1]) if isinstance(bucket, (list, tuple)) and len(bucket) == 2 else None
        cl = _finite(client)
        ratio = cl / srv if cl is not None and srv else None
        slower = None  # unknown without both p50s, or with the server's p50 past its last bucket
        if cl is not None and srv is not None and hi is not None:
            slower = (cl > srv * (1 + CLIENT_GAP_REL_TOL) and cl - srv > CLIENT_GAP_ABS_TOL_MS[key]
                      and cl > hi)
        out[key] = {"client_p50_ms": cl, "server_p50_ms": srv, "server_p50_bucket_ms": bucket,
                    "ratio": ratio, "client_slower": slower}
        if slower and cl is not None and srv is not None and hi is not None and bucket is not None:
            slow.append(f"{key.upper()} p50 {_ms(cl)} vs {_ms(srv)} ({cl / srv:.1f}x; the server's p50 is only "
                        f"known to lie in its histogram bucket {_ms(_finite(bucket[0]) or 0.0)}-{_ms(hi)})")
    if slow:
        out["note"] = ("client slower than the server: " + "; ".join(slow)
                       + ": the gap is in the client or the network, not the engine")
    else:
        out["note"] = None
    return out


def _ms(x: float) -> str:
    return f"{x:.0f} ms" if abs(x) >= 100 else f"{x:.1f} ms"


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None
