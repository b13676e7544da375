"""The serving client: one streamed OpenAI-compatible completion per request, on httpx's async
client, with a timestamp for every streamed chunk (TTFT, ITL and TPOT come from them)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

# Fields some servers use to force the output length; `transformers serve` refuses unknown fields
# with HTTP 422, so they are sent only when the server accepted them (see ``probe``).
FORCE_LENGTH_FIELDS = {"ignore_eos": True}


@dataclass
class Request:
    index: int
    prompt: str
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
    output_tokens: Optional[int] = None  # counted with the model's tokenizer
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
        """Output tokens: the tokenizer's count, else the server's, else one per chunk."""
        for n in (self.output_tokens, self.usage_completion_tokens):
            if n is not None:
                return n
        return len(self.chunk_times)

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
    """Posts streamed completions to ``base_url``/v1/completions."""

    def __init__(self, base_url: str, model: str, timeout_s: float, max_connections: int = 1024,
                 force_length: bool = False) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.force_length = force_length
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0), limits=limits, trust_env=False)

    def body(self, req: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": req.prompt, "max_tokens": req.max_tokens,
                                "temperature": 0.0, "stream": True}
        if self.force_length:
            body.update(FORCE_LENGTH_FIELDS, min_tokens=req.max_tokens)
        return body

    async def send(self, req: Request, scheduled: float) -> Result:
        res = Result(req.index, req.warmup, scheduled, prompt_tokens=req.prompt_tokens)
        res.start = time.perf_counter()
        try:
            async with self._http.stream("POST", f"{self.base_url}/v1/completions", json=self.body(req)) as r:
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
        choices = chunk.get("choices") or []
        text = (choices[0].get("text") or "") if choices and isinstance(choices[0], dict) else ""
        if text:
            res.chunk_times.append(now)
            res.text += text
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            res.usage_prompt_tokens = usage.get("prompt_tokens", res.usage_prompt_tokens)
            res.usage_completion_tokens = usage.get("completion_tokens", res.usage_completion_tokens)

    async def close(self) -> None:
        await self._http.aclose()
