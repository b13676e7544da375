"""The serving scenario's keys (``--scenario serving``): the server (``--endpoint`` or a managed
``--engine``), the offered load (rates or closed-loop users), the traffic (effbench/scenarios/serving/
workload.py), SLOs and the capacity search. Light: the CLI imports it to generate its options."""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from effbench.config_fields import LIST_HELP, checked, cli, positive_ints, request_rate, split_list


class ServingConfig(BaseModel):
    """The serving scenario's own keys: the sweep file's ``serving:`` section; on the command line and
    as top-level sweep-file keys they keep their plain names (``--rates``, ``rates: 1,2,inf``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    endpoint: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Serving: the base URL of an OpenAI-compatible server already running (vLLM, SGLang, TGI, llama.cpp, "
        "transformers serve); effbench does not stop it."))
    engine: str = Field(default="transformers", json_schema_extra=cli(
        "Serving: the engine effbench starts on a loopback port: transformers, vllm or llamacpp."))
    engine_args: list[str] = Field(default_factory=list, json_schema_extra=cli(
        "Serving: extra arguments for the managed engine's command line (sweep file).", hidden=True))
    host: str = Field(default="127.0.0.1", json_schema_extra=cli(
        "Serving: the address a managed engine binds (loopback unless asked otherwise).", hidden=True))
    rates: list[float] = Field(default_factory=lambda: [1.0, 2.0], json_schema_extra=cli(
        f"Serving: offered requests/s, {LIST_HELP}; inf = all at once.", listed=True))
    concurrency: list[int] = Field(default_factory=list, json_schema_extra=cli(
        f"Serving: closed-loop users, {LIST_HELP} (instead of --rates).", listed=True, default="none"))
    arrival: Literal["poisson", "constant"] = Field(default="poisson", json_schema_extra=cli(
        "Serving: arrivals at a rate, poisson or constant."))
    requests: Optional[int] = Field(default=None, ge=1, json_schema_extra=cli(
        "Serving: measured requests per point (warm-up excluded).", default="enough for --duration, else 32"))
    duration_s: Optional[float] = Field(default=None, gt=0, json_schema_extra=cli(
        "Serving: seconds of sending per point.", "--duration", default="none"))
    warmup_requests: int = Field(default=2, ge=0, json_schema_extra=cli(
        "Serving: requests per point before the measured ones."))
    slo_ttft_ms: Optional[float] = Field(default=None, gt=0, json_schema_extra=cli(
        "Serving: time-to-first-token SLO in ms (goodput; p95 for --find-capacity).", default="none"))
    slo_tpot_ms: Optional[float] = Field(default=None, gt=0, json_schema_extra=cli(
        "Serving: time-per-output-token SLO in ms (goodput; p95 for --find-capacity).", default="none"))
    length_spread: float = Field(default=0.0, ge=0, lt=1, json_schema_extra=cli(
        "Serving: output lengths drawn per request, uniform in new_tokens x (1 +- SPREAD), 0 <= SPREAD < 1."))
    request_timeout_s: float = Field(default=120.0, gt=0, json_schema_extra=cli(
        "Serving: seconds one request may take before it counts as failed."))
    point_timeout_s: float = Field(default=600.0, gt=0, json_schema_extra=cli(
        "Serving: seconds one load point may take before its unfinished requests count as failed."))
    api: Literal["completions", "chat"] = Field(default="completions", json_schema_extra=cli(
        "Serving: which OpenAI API the client drives, completions or chat (the server applies the chat template)."))
    server_metrics: bool = Field(default=True, json_schema_extra=cli(
        "Serving: scrape the server's Prometheus /metrics at each point's start and end and every 10 s (where it "
        "has one), as a cross-check.", "--server-metrics/--no-server-metrics"))
    # Capacity at the SLO: search the highest rate whose p95 TTFT/TPOT meet --slo-ttft-ms/--slo-tpot-ms,
    # from the lowest of ``rates`` up, until the bracket is within ``capacity_resolution`` (relative).
    # The traffic (effbench/scenarios/serving/workload.py): a named output-length distribution or a
    # file, multi-turn conversations, shared system prompts, a replayed trace. Sweep file: ``workload:``
    # takes a name/file or a section {name, turns, shared_prefix, replay, replay_speed, scale}.
    workload: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Serving: the traffic: fixed (default: --prompt-tokens in, --new-tokens out), a published output-length "
        "distribution (lm-arena-chat, gpqa, sourcegraph-fim, or TASK@MODEL-ID), or a file of (prompt_tokens, "
        "output_tokens) pairs or of prompts/conversations (CSV/JSONL)."))
    multi_turn: int = Field(default=1, ge=1, json_schema_extra=cli(
        "Serving: turns per conversation; each request continues its conversation, so its prompt grows and its "
        "prefix repeats."))
    shared_prefix: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Serving: N:L, N system prompts of L tokens shared round-robin by the requests.", default="none"))
    replay: Optional[str] = Field(default=None, json_schema_extra=cli(
        "Serving: replay a trace of (timestamp, prompt_tokens, output_tokens) requests at its own pace (Mooncake "
        "JSONL, BurstGPT CSV or a plain CSV/JSONL).", default="none"))
    replay_speed: float = Field(default=1.0, gt=0, json_schema_extra=cli("Serving --replay: time scale, 2 = twice as fast."))
    workload_scale: float = Field(default=1.0, gt=0, json_schema_extra=cli(
        "Serving: output lengths of a named distribution x this (small machines)."))
    find_capacity: bool = Field(default=False, json_schema_extra=cli(
        "Serving: search the highest request rate whose p95 TTFT and p95 TPOT meet --slo-ttft-ms/--slo-tpot-ms, "
        "from the lowest of --rates up; records it with its bracket, goodput and J/request.", "--find-capacity"))
    capacity_resolution: float = Field(default=0.1, gt=0, lt=1, json_schema_extra=cli(
        "Serving --find-capacity: stop when the bracket's top is within this share of its bottom."))
    capacity_point_s: float = Field(default=20.0, gt=0, json_schema_extra=cli(
        "Serving --find-capacity: seconds of arrivals per tried rate (a steady state needs some)."))
    capacity_max_points: int = Field(default=10, ge=2, json_schema_extra=cli("Serving --find-capacity: most rates tried."))

    @field_validator("concurrency", "engine_args", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return split_list(v)

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        return [request_rate(x) for x in (split_list(v) or [])]

    @model_validator(mode="before")
    @classmethod
    def _workload_section(cls, data: Any) -> Any:
        """``workload: {name: lm-arena-chat, turns: 3, shared_prefix: 4:512, replay: f, replay_speed: 2}``."""
        if not isinstance(data, dict) or not isinstance(data.get("workload"), dict):
            return data
        data = dict(data)
        section = dict(data.pop("workload"))
        names = {"name": "workload", "file": "workload", "turns": "multi_turn", "multi_turn": "multi_turn",
                 "shared_prefix": "shared_prefix", "replay": "replay", "replay_speed": "replay_speed",
                 "scale": "workload_scale"}
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ValueError(f"unknown workload key '{unknown[0]}'; known: {', '.join(sorted(names))}")
        for k, v in section.items():
            if k == "shared_prefix" and isinstance(v, dict):
                v = f"{v.get('prompts', v.get('count'))}:{v.get('tokens')}"
            data[names[k]] = v
        return data

    @field_validator("shared_prefix")
    @classmethod
    def _shared_prefix(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            from effbench.scenarios.serving.workload import parse_shared_prefix

            checked(parse_shared_prefix, v)
        return v

    @field_validator("rates")
    @classmethod
    def _sorted_rates(cls, v: list[float]) -> list[float]:
        return sorted(dict.fromkeys(v))  # lowest first: the sweep stops where the engine saturates

    @field_serializer("rates")
    def _rates_json(self, v: list[float]) -> list[Any]:
        return ["inf" if math.isinf(r) else r for r in v]  # JSON has no infinity

    @field_validator("concurrency")
    @classmethod
    def _users(cls, v: list[int]) -> list[int]:
        return sorted(positive_ints(v))

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from effbench.scenarios.serving.engines import ENGINES

        return checked(ENGINES.canonical, v)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        url = str(v).strip()
        bad = f"'{v}' is not an http(s) URL; give e.g. http://127.0.0.1:8000"
        if not url.startswith(("http://", "https://")):
            raise ValueError(bad)
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (parsing the port raises on a malformed one)
        except ValueError as e:
            raise ValueError(f"{bad} ({e})") from None
        if not parts.hostname:
            raise ValueError(f"{bad} (no host)")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _some_load(self) -> "ServingConfig":
        if not self.rates and not self.concurrency:
            raise ValueError("give --rates or --concurrency")
        if not self.concurrency and math.inf in self.rates and self.requests is None:
            raise ValueError("rate inf sends every request at once: give --requests N")
        if self.find_capacity:
            if self.slo_ttft_ms is None and self.slo_tpot_ms is None:
                raise ValueError("--find-capacity searches the rate that meets an SLO: give --slo-ttft-ms and/or --slo-tpot-ms")
            if self.concurrency:
                raise ValueError("--find-capacity searches over request rates: give --rates (its lowest is where the search "
                                 "starts), not --concurrency")
            if not [r for r in self.rates if math.isfinite(r)]:
                raise ValueError("--find-capacity needs a finite starting rate in --rates, e.g. --rates 1")
        if self.replay and (self.find_capacity or self.concurrency):
            raise ValueError("--replay sends the trace at its own pace: leave out --concurrency and --find-capacity")
        return self
