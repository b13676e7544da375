"""The serving client: one streamed OpenAI-compatible request per request (``/v1/completions`` or
``/v1/chat/completions``), on httpx's async client, with a timestamp for every streamed chunk (TTFT,
ITL and TPOT come from them) and the server's own ``usage`` token counts where it sends them."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

Api = Literal["completions", "chat"]
API_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
# Fields some servers use to force the output length; `transformers serve` refuses unknown fields
# with HTTP 422, so they are sent only when the server accepted them (the scenario probes first).
FORCE_LENGTH_FIELDS = {"ignore_eos": True}
# Asks for a final chunk with the server's token counts (as vLLM's bench, GuideLLM and AIPerf do):
# counting re-tokenized text differs from what the server generated.
USAGE_FIELDS = {"stream_options": {"include_usage": True}}


@dataclass
class Request:
    index: int
    prompt: Any  # text, or chat messages [{role, content}] (a conversation, a system prompt)
    prompt_tokens: int
    max_tokens: int
    warmup: bool = False


@dataclass
class Result:
    """What came back for one request. Times are ``time.perf_counter()`` seconds."""

    index: int
    warmup: bool
    scheduled: float  # when the arrival schedule wanted it sent
    start: float = 0.0  # when it was sent
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # chunks that carried text
    text: str = ""
    prompt_tokens: int = 0
    usage_prompt_tokens: Optional[int] = None
    usage_completion_tokens: Optional[int] = None
    usage_cached_tokens: Optional[int] = None  # prompt tokens the server's prefix cache held (usage.prompt_tokens_details)
    output_tokens: Optional[int] = None  # counted with the model's tokenizer (only without usage)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)

    @property
    def ttft_s(self) -> Optional[float]:
        return self.chunk_times[0] - self.start if self.ok else None

    @property
    def e2e_s(self) -> Optional[float]:
        return self.end - self.start if self.ok else None

    @property
    def tokens(self) -> int:
        """Output tokens: the server's own count (usage), else the tokenizer's, else one per chunk."""
        for n in (self.usage_completion_tokens, self.output_tokens):
            if n is not None:
                return n
        return len(self.chunk_times)

    @property
    def token_count_source(self) -> str:
        if self.usage_completion_tokens is not None:
            return "usage"
        return "tokenizer" if self.output_tokens is not None else "chunks"

    @property
    def tpot_s(self) -> Optional[float]:
        """Mean time per output token after the first (the decode speed one user sees)."""
        if not self.ok or self.tokens < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (self.tokens - 1)

    @property
    def itl_s(self) -> list[float]:
        """Gaps between streamed chunks (one token each on most servers)."""
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])] if self.ok else []

    @property
    def client_lag_s(self) -> float:
        return max(0.0, self.start - self.scheduled)


class Client:
    """Posts streamed requests to ``base_url`` on the OpenAI API ``api`` (completions or chat; on
    chat the server applies the model's chat template)."""

    def __init__(self, base_url: str, model: str, timeout_s: float, max_connections: int = 1024,
                 force_length: bool = False, api: Api = "completions", usage: bool = True) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.force_length = force_length
        self.api = api
        self.usage = usage
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0), limits=limits, trust_env=False)

    def body(self, req: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens, "temperature": 0.0, "stream": True}
        messages = req.prompt if isinstance(req.prompt, list) else [{"role": "user", "content": req.prompt}]
        if self.api == "chat":
            body["messages"] = messages
        else:
            body["prompt"] = "\n\n".join(m["content"] for m in messages)
        if self.usage:
            body.update(USAGE_FIELDS)
        if self.force_length:
            body.update(FORCE_LENGTH_FIELDS, min_tokens=req.max_tokens)
        return body

    async def send(self, req: Request, scheduled: float) -> Result:
        res = Result(req.index, req.warmup, scheduled, prompt_tokens=req.prompt_tokens)
        res.start = time.perf_counter()
        try:
            async with self._http.stream("POST", self.base_url + API_PATHS[self.api], json=self.body(req)) as r:
                if r.status_code != 200:
                    detail = (await r.aread()).decode("utf-8", "replace")
                    res.error = f"HTTP {r.status_code}: {' '.join(detail.split())[:200]}"
                    return res
                async for line in r.aiter_lines():
                    now = time.perf_counter()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    self._chunk(res, data, now)
                    if res.error:
                        return res
        except Exception as e:  # noqa: BLE001 - any transport failure is this request's error
            res.error = f"{type(e).__name__}: {str(e).strip()[:200] or 'no message'}"
        finally:
            res.end = time.perf_counter()
        if res.error is None and not res.chunk_times:
            res.error = "the server streamed no text"
        return res

    @staticmethod
    def _chunk(res: Result, data: str, now: float) -> None:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            res.error = f"not an OpenAI stream chunk: {data[:80]!r}"
            return
        if not isinstance(chunk, dict):
            res.error = f"not an OpenAI stream chunk: {data[:80]!r}"
            return
        if chunk.get("error"):
            res.error = f"server error: {str(chunk['error'])[:200]}"
            return
        text = chunk_text(chunk.get("choices"))
        if text:
            res.chunk_times.append(now)
            res.text += text
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            res.usage_prompt_tokens = _count(usage.get("prompt_tokens"), res.usage_prompt_tokens)
            res.usage_completion_tokens = _count(usage.get("completion_tokens"), res.usage_completion_tokens)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                res.usage_cached_tokens = _count(details.get("cached_tokens"), res.usage_cached_tokens)

    async def close(self) -> None:
        await self._http.aclose()


def chunk_text(choices: Any) -> str:
    """The text one stream chunk carries: ``text`` (completions) or ``delta.content`` (chat; a
    reasoning model's ``reasoning_content`` is generated output too, as vLLM's bench counts it)."""
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    text = choice.get("text")
    if isinstance(text, str):
        return text
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return ""
    parts = (delta.get(k) for k in ("reasoning_content", "reasoning", "content"))
    return "".join(p for p in parts if isinstance(p, str))


def _count(value: Any, default: Optional[int]) -> Optional[int]:
    """A usage token count, only when it is one (a hostile server's string or float is ignored)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
