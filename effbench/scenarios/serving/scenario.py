"""The serving scenario: a real OpenAI-compatible server under offered load (rates or
concurrency), with latency percentiles, goodput at the SLO and steady-state energy per request.

One group is one model + scheme on one engine: the engine starts once (``--engine``) or is the
user's (``--endpoint``), and each rate or concurrency level is one configuration (one record)."""
from __future__ import annotations

import random
import time
from typing import Any, ClassVar, Optional

from effbench.analysis.carbon import carbon_section
from effbench.errors import EffbenchError, UnsupportedError
from effbench.measure.host import InterferenceProbe, engine_peak_rss_bytes, reset_engine_peak_rss
from effbench.models import build_token_rows, load_prompt_set
from effbench.registry import importable
from effbench.results.schema import Energy, Memory, ServingInfo, Stats, Throughput
from effbench.scenarios.base import Context, Point, Scenario, Session
from effbench.scenarios.serving.client import Client, Request, Result
from effbench.scenarios.serving.engines import ENGINES, EngineInfo, ManagedEngine, check_endpoint
from effbench.scenarios.serving.load import Load, PointRun, run_point
from effbench.scenarios.serving.metrics import summarize_point
from effbench.stats import combine_rel

DEFAULT_REQUESTS = 32  # measured requests per point when neither --requests nor --duration is given
ENDPOINT = "endpoint"  # the backend name of records measured on a server effbench did not start
# The float schemes a managed engine loads by dtype; anything else it cannot be asked for.
ENGINE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
OUTPUT_NOT_FORCED = ("not forced: the server refuses ignore_eos/min_tokens, so requests may stop early at EOS; "
                     "output tokens are counted as they came back")


def servable_model_path(spec: Any, notify: Any) -> str:
    """A checkpoint directory a managed engine (and the tokenizer) can load for ``spec``."""
    from pathlib import Path

    if spec.kind == "gguf":
        from effbench.models.gguf_cache import cached_checkpoint

        return str(cached_checkpoint(Path(spec.location), notify=notify))
    if spec.kind == "arch":
        raise UnsupportedError("a random-weights architecture (arch:...) cannot be served; give a checkpoint")
    return spec.location


class ServingScenario(Scenario):
    name = "serving"
    loads_model: ClassVar[bool] = False  # the engine is a server the scenario starts or reaches

    @classmethod
    def backends(cls, config: Any) -> list[str]:
        s = config.serving
        return [ENDPOINT] if s.endpoint else [ENGINES.canonical(s.engine)]

    @classmethod
    def load_points(cls, config: Any) -> list[dict[str, Any]]:
        s = config.serving
        if s.concurrency:
            return [{"batch_size": c, "concurrency": c} for c in s.concurrency]
        return [{"batch_size": 1, "rate": r} for r in s.rates]

    @classmethod
    def offered_load(cls, config: Any, point: Any) -> dict[str, Any]:
        """The ``serving`` fields of the offered load: what every record of the point carries."""
        s = config.serving
        return dict(rate=point.rate, concurrency=point.concurrency,
                    arrival=s.arrival if point.rate is not None else "closed-loop",
                    warmup_requests=s.warmup_requests, slo={"ttft_ms": s.slo_ttft_ms, "tpot_ms": s.slo_tpot_ms})

    @classmethod
    def point_sections(cls, config: Any, point: Any) -> dict[str, Any]:
        return {"serving": ServingInfo(**cls.offered_load(config, point))}

    @classmethod
    def check(cls, config: Any) -> None:
        if not importable("httpx"):
            raise EffbenchError("the serving scenario needs httpx; pip install 'effbench[serving]'")
        if config.serving.endpoint:
            check_endpoint(config.serving.endpoint)  # one line within seconds, before anything is written

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.s = config.serving
        self.engine: Optional[ManagedEngine] = None
        self.info: Optional[EngineInfo] = None
        self.session: Optional[Session] = None
        self.tokenizer: Any = None
        self.force_length = False
        self.saturated_at: Optional[str] = None
        self._prompts: dict[tuple, list[str]] = {}

    # -- the group ---------------------------------------------------------------------------
    def open(self, session: Session) -> str:
        """Start (or reach) the engine; returns its version for the records."""
        self.session = session
        if self.s.endpoint:
            model_id = check_endpoint(self.s.endpoint)
            self.info = EngineInfo(ENDPOINT, None, self.s.endpoint.rstrip("/"), False, [], model_id)
        else:
            self._start_engine()
        self.tokenizer = self._tokenizer()
        self.force_length = self._accepts_forced_length()
        return (self.info.version if self.info else None) or "unknown"

    def _start_engine(self) -> None:
        sess = self.session
        assert sess is not None
        dtype = ENGINE_DTYPES.get(sess.scheme.name)
        engine_cls = ENGINES.get(self.s.engine)
        if dtype is None and engine_cls.name != "llamacpp":
            raise UnsupportedError(f"the {engine_cls.name} engine serves fp32/fp16/bf16 here, not '{sess.scheme.name}'")
        path = sess.spec.location if engine_cls.name == "llamacpp" else servable_model_path(sess.spec, sess.notify)
        self.engine = engine_cls(path, dtype or "auto", sess.device, sess.threads, host=self.s.host,
                                 extra_args=self.s.engine_args, notify=sess.notify)
        self.info = self.engine.start()
        if sess.sensor is not None:
            sess.sensor.attribute(self.info.pids)  # an estimate counts the server's CPU time, not only ours

    def restart(self) -> None:
        """A managed engine that died mid-point is started again for the next point."""
        if self.engine is not None and not self.engine.alive():
            self.engine.stop()
            self._start_engine()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None

    def engine_pids(self) -> list[int]:
        return list(self.info.pids) if self.info else []

    def _tokenizer(self) -> Any:
        """The model's own tokenizer (token counts must not depend on the server's word for it)."""
        sess = self.session
        assert sess is not None
        try:
            from effbench.models.hf import quiet_transformers

            quiet_transformers()
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(servable_model_path(sess.spec, sess.notify))
        except Exception as e:  # noqa: BLE001 - an endpoint's model may not be here: count what the server says
            sess.notify(f"no local tokenizer for {sess.spec.id} ({type(e).__name__}); token counts come from the server")
            return None

    def _client(self, force_length: Optional[bool] = None) -> Client:
        assert self.info is not None
        return Client(self.info.url, self.info.model or "", self.s.request_timeout_s,
                      force_length=self.force_length if force_length is None else force_length)

    def _accepts_forced_length(self) -> bool:
        """Whether the server takes ignore_eos/min_tokens (vLLM, SGLang do; transformers serve says 422)."""
        import asyncio

        req = Request(-1, "Hello", 1, 2)

        async def probe() -> bool:
            client = self._client(force_length=True)
            try:
                res = await client.send(req, time.perf_counter())
                return res.ok
            finally:
                await client.close()

        return asyncio.run(probe())

    # -- one point ---------------------------------------------------------------------------
    def skip_reason(self, point: Point) -> Optional[str]:
        if self.saturated_at and point.rate is not None:
            return f"skipped: the engine saturated at {self.saturated_at}; higher rates were not offered"
        return None

    def _requests(self, point: Point, n: int) -> list[str]:
        key = (point.prompt_set, point.prompt_tokens, n)
        if key not in self._prompts:
            prompts = load_prompt_set(point.prompt_set)
            if self.tokenizer is None:
                texts = [prompts.texts[i % len(prompts.texts)] for i in range(n)]
            else:
                rows = build_token_rows(lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"],
                                        prompts, n, point.prompt_tokens)
                texts = [self.tokenizer.decode(r) for r in rows]
            self._prompts[key] = texts
        return self._prompts[key]

    def measure(self, point: Point, ctx: Context) -> dict[str, Any]:
        self.restart()
        s = self.s
        requests = s.requests if s.requests or s.duration_s else DEFAULT_REQUESTS
        load = Load(rate=point.rate, concurrency=point.concurrency, arrival=s.arrival, requests=requests,
                    duration_s=s.duration_s, warmup_requests=s.warmup_requests, seed=self.config.seed)
        texts = self._requests(point, s.warmup_requests + load.planned_requests)
        spread = s.length_spread

        def make(i: int, warmup: bool) -> Request:
            new = point.new_tokens
            if spread:  # deterministic per request: the same lengths at every rate
                new = max(1, round(new * random.Random(i * 7919 + self.config.seed).uniform(1 - spread, 1 + spread)))
            return Request(i, texts[i % len(texts)], point.prompt_tokens, new, warmup)

        wall0 = time.time()
        perf0 = time.perf_counter()
        pids = tuple(self.engine_pids())
        probe = InterferenceProbe(pids)  # the engine is the workload, not interference
        reset_engine_peak_rss(pids)  # the engine's peak during this point (its load included after a restart)
        run = run_point(self._client, load, make, ctx.sensor.start_window, budget_s=s.point_timeout_s)
        interference = probe.stop()
        peak = engine_peak_rss_bytes(pids)
        if self.engine is not None and not self.engine.alive():
            raise EffbenchError(f"the {self.engine.name} engine died during the point: {self.engine.log_tail()}")
        sections = self._sections(point, ctx, run, load, lambda t: wall0 + (t - perf0))
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
        for r in results:
            if self.tokenizer is not None and r.ok:
                r.output_tokens = len(self.tokenizer(r.text, add_special_tokens=False)["input_ids"])
            if r.usage_prompt_tokens is not None:
                r.prompt_tokens = r.usage_prompt_tokens

    def _sections(self, point: Point, ctx: Context, run: PointRun, load: Load, to_unix: Any) -> dict[str, Any]:
        s = self.s
        answered = {r.index for r in run.results}
        for i in run.issued:
            if i not in answered:
                run.results.append(Result(i, i < s.warmup_requests, 0.0, error="no answer within the point's time limit"))
        self._count_tokens(run.results)
        measured = [r for r in run.results if not r.warmup]
        sent = [r for r in measured if r.start]
        span = (max(r.end for r in sent) - min(r.start for r in sent)) if sent else 0.0
        summary = summarize_point(measured, span, point.rate, s.slo_ttft_ms, s.slo_tpot_ms)
        mismatch = [r for r in measured if r.ok and r.output_tokens is not None and r.usage_completion_tokens is not None
                    and r.output_tokens != r.usage_completion_tokens]
        serving = ServingInfo(
            **self.offered_load(self.config, point), requests=len(measured), duration_s=span,
            engine=self.info.to_dict() if self.info else {},
            output_length="forced (ignore_eos, min_tokens)" if self.force_length else OUTPUT_NOT_FORCED,
            token_count=("the model's tokenizer" if self.tokenizer is not None else "the server's usage (no local tokenizer)"),
            usage_mismatches=len(mismatch), max_in_flight=run.max_in_flight, **summary,
        )
        if serving.saturated and point.rate is not None:
            self.saturated_at = serving.load_label
        energy = self._energy(run, measured, ctx, to_unix)
        ttft = serving.ttft_ms.mean / 1000 if serving.ttft_ms else None
        tpot = serving.tpot_ms.mean / 1000 if serving.tpot_ms else None
        e2e = serving.e2e_ms.mean / 1000 if serving.e2e_ms else None
        throughput = Throughput(ttft_s=ttft, tpot_s=tpot, e2e_latency_s=e2e,
                                e2e_tokens_per_s=summary["output_tokens_per_s"])
        stats = Stats(repeats=summary["completed"], warmup=s.warmup_requests, duration_s=span,
                      stop_reason="requests" if s.requests else "duration",
                      samples={"ttft_s": [r.ttft_s for r in measured if r.ttft_s is not None],
                               "e2e_latency_s": [r.e2e_s for r in measured if r.e2e_s is not None]})
        return {"serving": serving, "energy": energy, "throughput": throughput, "stats": stats}

    def _energy(self, run: PointRun, measured: list[Result], ctx: Context, to_unix: Any) -> Energy:
        reading = run.reading
        if reading is None or run.window_start is None or run.window_end is None:
            return Energy(status="unavailable", basis="no steady-state window (no measured request was sent)")
        ws, we = run.window_start, run.window_end
        tokens_in_window = 0.0
        for r in run.results:
            if r.ok and r.chunk_times:
                per_chunk = r.tokens / len(r.chunk_times)
                tokens_in_window += per_chunk * sum(ws <= t <= we for t in r.chunk_times)
        energy = Energy(status=reading.status, sensor=reading.sensor, sampling_interval_s=reading.sampling_interval_s,
                        coverage=reading.coverage, idle_power_w=ctx.idle_power_w, basis=reading.basis or reading.error,
                        window_s=reading.duration_s, confidence=0.95,
                        windows=[{"phase": "steady", "start": to_unix(ws), "end": to_unix(we), "calls": 1,
                                  "joules": reading.joules}])
        joules = reading.joules
        if joules is None:
            energy.status = "unavailable"
            return energy
        if reading.duration_s < self.min_window_s(ctx):
            energy.flags.append("short-window")
        energy.joules_total = joules
        energy.joules_by_domain = dict(reading.joules_by_domain)
        energy.mean_power_w = joules / reading.duration_s if reading.duration_s > 0 else None
        if ctx.idle_power_w is not None:
            energy.joules_dynamic = max(0.0, joules - ctx.idle_power_w * reading.duration_s)
        ok = [r for r in measured if r.ok]
        # Token boundaries at the window's edges: at most one chunk per request in flight either side.
        edge = 2 * max(1, run.max_in_flight) / tokens_in_window if tokens_in_window else None
        energy.uncertainty_rel = combine_rel(reading.uncertainty_rel, edge)
        if tokens_in_window > 0:
            energy.joules_per_token = joules / tokens_in_window
            energy.tokens_per_joule = tokens_in_window / joules if joules > 0 else None
            if energy.joules_dynamic:
                energy.tokens_per_joule_dynamic = tokens_in_window / energy.joules_dynamic
            if ok:
                mean_tokens = sum(r.tokens for r in ok) / len(ok)
                energy.joules_per_request = energy.joules_per_token * mean_tokens
                chars = sum(len(r.text) for r in ok)
                if chars:
                    energy.joules_per_kchar = energy.joules_per_token * sum(r.tokens for r in ok) / chars * 1000
        energy.tokens_in_window = tokens_in_window
        return energy

    def min_window_s(self, ctx: Context) -> float:
        from effbench.measure.loop import WINDOW_PERIODS

        period = ctx.sensor.info().update_period_s or 0.0
        return WINDOW_PERIODS * period
