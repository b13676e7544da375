"""Serving workloads: what each request of a point asks for (docs/serving-load.md, "Workloads").

- ``fixed`` (default): every request ``--prompt-tokens`` in, ``--new-tokens`` out (``--length-spread``
  draws output lengths uniformly around it);
- a named output-length distribution (``lm-arena-chat``, ``gpqa``, ``sourcegraph-fim``, or
  ``TASK@MODEL-ID``): ML.ENERGY v3's published histograms (reference data, lengths.py);
- a file of (prompt_tokens, output_tokens) pairs (CSV or JSONL), or a dataset file (JSONL of
  ``prompt``/``text``, of chat ``messages``, or ShareGPT ``conversations``) as the prompt source;
- ``--multi-turn T``: each conversation continues, so its prompt grows and its prefix repeats;
- ``--shared-prefix N:L``: N system prompts of L tokens, shared round-robin by the requests;
- ``--replay FILE``: a trace of (timestamp, prompt_tokens, output_tokens) requests sent at its own
  pace (``--replay-speed``); Mooncake JSONL and BurstGPT CSV are read directly.

Every record names its workload (name or file with its SHA-256, parameters, the lengths drawn), so
two runs compare only on the same traffic."""
from __future__ import annotations

import bisect
import csv
import hashlib
import io
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from effbench.errors import EffbenchError

if TYPE_CHECKING:
    from effbench.scenarios.serving.config import ServingConfig

MOONCAKE_BLOCK_TOKENS = 512  # a Mooncake trace's hash_ids name blocks of this many prompt tokens
# Column names of length pairs and traces, as the common public formats spell them.
PROMPT_KEYS = ("prompt_tokens", "input_length", "input_tokens", "Request tokens", "prompt_len")
OUTPUT_KEYS = ("output_tokens", "output_length", "Response tokens", "output_len", "max_tokens")
TIME_KEYS_S = ("timestamp_s", "Timestamp", "time_s", "arrival_s")
TIME_KEYS_MS = ("timestamp_ms",)
DATASET_KEYS = ("prompt", "text", "messages", "conversations")


@dataclass(frozen=True)
class WorkloadRequest:
    """What one request asks for; the prompt text is built from it (PromptBuilder)."""

    prompt_tokens: int
    output_tokens: int
    at: Optional[float] = None  # replay: seconds after the first request
    conversation: Optional[int] = None  # multi-turn: which conversation, and its turn
    turn: int = 0
    prefix: Optional[int] = None  # shared-prefix: which shared system prompt
    blocks: tuple[int, ...] = ()  # replay (Mooncake): prompt blocks, equal ids = equal text
    text: Optional[str] = None  # a dataset's own prompt
    messages: Optional[tuple[dict[str, str], ...]] = None  # a dataset's own conversation, up to this turn


@dataclass
class Workload:
    name: str
    kind: str  # fixed, distribution, pairs, dataset, replay
    requests: list[WorkloadRequest]
    params: dict[str, Any] = field(default_factory=dict)
    prefix_tokens: int = 0
    prefixes: int = 0

    @property
    def schedule(self) -> Optional[tuple[float, ...]]:
        """A replayed trace's send times, else None (the load's own arrivals)."""
        if self.kind != "replay":
            return None
        return tuple(r.at or 0.0 for r in self.requests)

    def describe(self) -> dict[str, Any]:
        """The record's ``serving.workload``: enough to tell whether two runs saw the same traffic."""
        prompts = [r.prompt_tokens + self.prefix_tokens for r in self.requests]
        outputs = [r.output_tokens for r in self.requests]
        return {"name": self.name, "kind": self.kind, **self.params,
                "requests_drawn": len(self.requests),
                "prompt_tokens": _summary(prompts), "output_tokens": _summary(outputs)}


def _summary(values: Sequence[int]) -> Optional[dict[str, float]]:
    if not values:
        return None
    xs = sorted(values)
    return {"mean": sum(xs) / len(xs), "p50": float(xs[len(xs) // 2]), "p90": float(xs[min(len(xs) - 1, int(0.9 * len(xs)))]),
            "max": float(xs[-1])}


# -- building a point's workload ----------------------------------------------------------------
def build_workload(s: ServingConfig, n: int, prompt_tokens: int, new_tokens: int, seed: int, users: Optional[int]) -> Workload:
    """``n`` requests of the serving config ``s`` (its workload keys) for one point."""
    if s.replay:
        w = _replay(s.replay, s.replay_speed, n if s.requests else None)
    elif s.workload and s.workload != "fixed" and _is_file(s.workload):
        w = _from_file(s.workload, n, new_tokens)
    elif s.workload and s.workload != "fixed":
        w = _distribution(s.workload, n, prompt_tokens, seed, s.workload_scale)
    else:
        w = _fixed(n, prompt_tokens, new_tokens, s.length_spread, seed)
    if s.multi_turn > 1:
        w = _multi_turn(w, s.multi_turn, users)
    if s.shared_prefix:
        count, tokens = parse_shared_prefix(s.shared_prefix)
        w.requests = [_replace(r, prefix=i % count) for i, r in enumerate(w.requests)]
        w.prefixes, w.prefix_tokens = count, tokens
        w.params["shared_prefix"] = {"prompts": count, "tokens": tokens}
    return w


def _replace(r: WorkloadRequest, **changes: Any) -> WorkloadRequest:
    from dataclasses import replace

    return replace(r, **changes)


def _is_file(name: str) -> bool:
    """A path rather than a distribution's name (``TASK@MODEL-ID`` holds a slash too)."""
    if Path(name).expanduser().is_file():
        return True
    return "@" not in name and (any(sep in name for sep in ("/", "\\")) or name.endswith((".csv", ".jsonl", ".json")))


def _fixed(n: int, prompt_tokens: int, new_tokens: int, spread: float, seed: int) -> Workload:
    def out(i: int) -> int:  # deterministic per request: the same lengths at every rate
        if not spread:
            return new_tokens
        return max(1, round(new_tokens * random.Random(i * 7919 + seed).uniform(1 - spread, 1 + spread)))

    params = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, **({"length_spread": spread} if spread else {})}
    return Workload("fixed", "fixed", [WorkloadRequest(prompt_tokens, out(i)) for i in range(n)], params)


def _distribution(name: str, n: int, prompt_tokens: int, seed: int, scale: float) -> Workload:
    from effbench.scenarios.serving import lengths

    try:
        edges, weights = lengths.histogram(name)
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, lengths.names(), n=3)
        raise EffbenchError(f"unknown workload '{name}': give fixed, a file, or one of {', '.join(lengths.names()[:3])}"
                            + (f" (did you mean {', '.join(near)}?)" if near else " (or TASK@MODEL-ID)")) from None
    bins = list(zip(edges, edges[1:]))
    cumulative = list(itertools.accumulate(weights))

    def draw(i: int) -> int:  # one generator per request: request i's length does not depend on n
        rng = random.Random(f"{seed}:{i}")
        b = min(len(bins) - 1, bisect.bisect_right(cumulative, rng.random() * cumulative[-1]))
        return max(1, round(scale * rng.uniform(*bins[b])))

    outs = [draw(i) for i in range(n)]
    data = lengths.shipped()
    params = {"distribution": name, "source": data["source"], "citation": data["citation"], "basis": "reference",
              "prompt_tokens": prompt_tokens, **({"scale": scale} if scale != 1.0 else {})}
    return Workload(name, "distribution", [WorkloadRequest(prompt_tokens, o) for o in outs], params)


# -- files ----------------------------------------------------------------------------------------
def _read(path_text: str, what: str) -> tuple[Path, str]:
    path = Path(path_text).expanduser()
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EffbenchError(f"{what} '{path_text}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EffbenchError(f"cannot read {what} '{path_text}': {type(e).__name__}") from None


def _rows(path: Path, text: str, what: str) -> list[dict[str, Any]]:
    """The file's rows as dicts: CSV with a header, or JSON lines (a JSON array too)."""
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                rows = json.loads(stripped)
            except json.JSONDecodeError:
                raise EffbenchError(f"{what} '{path}' is not valid JSON") from None
        else:
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise EffbenchError(f"{what} '{path}' line {i} is not valid JSON") from None
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        raise EffbenchError(f"{what} '{path}' holds no rows")
    return rows


def _int(row: dict[str, Any], keys: Sequence[str], what: str, line: int) -> int:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            try:
                v = int(float(row[k]))
            except (TypeError, ValueError):
                raise EffbenchError(f"{what} row {line}: '{k}' is not a number ({str(row[k])[:40]!r})") from None
            if v < 0:
                raise EffbenchError(f"{what} row {line}: '{k}' is negative")
            return v
    raise EffbenchError(f"{what} row {line} has none of {', '.join(keys)}")


def _file_params(path: Path, text: str) -> dict[str, Any]:
    return {"file": str(path), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _from_file(name: str, n: int, new_tokens: int) -> Workload:
    path, text = _read(name, "workload file")
    rows = _rows(path, text, "workload file")
    if any(k in rows[0] for k in DATASET_KEYS):
        return _dataset(path, text, rows, n, new_tokens)
    pairs = [WorkloadRequest(max(1, _int(r, PROMPT_KEYS, "workload file", i)), max(1, _int(r, OUTPUT_KEYS, "workload file", i)))
             for i, r in enumerate(rows, 1)]
    return Workload(path.name, "pairs", [pairs[i % len(pairs)] for i in range(n)], _file_params(path, text))


def _dataset(path: Path, text: str, rows: list[dict[str, Any]], n: int, new_tokens: int) -> Workload:
    """Prompts (or conversations) from a dataset; each conversation is one request per user turn."""
    items: list[WorkloadRequest] = []
    for i, r in enumerate(rows, 1):
        turns = _turns(r)
        if turns is None:
            p = r.get("prompt", r.get("text"))
            if not isinstance(p, str) or not p.strip():
                raise EffbenchError(f"dataset file '{path}' row {i} has no prompt text")
            items.append(WorkloadRequest(0, new_tokens, text=p))
            continue
        users = [k for k, m in enumerate(turns) if m["role"] == "user"]
        if not users:
            raise EffbenchError(f"conversation file '{path}' row {i} has no user turn")
        for t, k in enumerate(users):
            items.append(WorkloadRequest(0, new_tokens, conversation=i - 1, turn=t, messages=tuple(turns[:k + 1])))
    return Workload(path.name, "dataset", [items[j % len(items)] for j in range(n)], _file_params(path, text))


def _turns(row: dict[str, Any]) -> Optional[list[dict[str, str]]]:
    """A row's chat turns as {role, content} (OpenAI ``messages`` or ShareGPT ``conversations``)."""
    raw = row.get("messages", row.get("conversations"))
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise EffbenchError("a conversation row has no turns (messages/conversations is empty)")
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
    turns = []
    for m in raw:
        if not isinstance(m, dict):
            continue
        role = roles.get(str(m.get("role", m.get("from", ""))).lower())
        content = m.get("content", m.get("value"))
        if role and isinstance(content, str):
            turns.append({"role": role, "content": content})
    return turns


# -- replay ---------------------------------------------------------------------------------------
def _replay(name: str, speed: float, cap: Optional[int]) -> Workload:
    path, text = _read(name, "trace file")
    rows = _rows(path, text, "trace file")
    mooncake = "hash_ids" in rows[0] or ("timestamp" in rows[0] and "input_length" in rows[0])
    times: list[float] = []
    reqs: list[tuple[int, int, tuple[int, ...]]] = []
    for i, r in enumerate(rows, 1):
        t = _time_s(r, mooncake, i)
        if times and t < times[-1]:
            raise EffbenchError(f"trace file '{path}' row {i}: timestamp {t:g} s is before the previous row's "
                                f"({times[-1]:g} s); sort the trace by time")
        times.append(t)
        blocks = tuple(int(b) for b in r.get("hash_ids") or () if isinstance(b, (int, float)))
        reqs.append((max(1, _int(r, PROMPT_KEYS, "trace file", i)), max(1, _int(r, OUTPUT_KEYS, "trace file", i)), blocks))
    if cap is not None:
        times, reqs = times[:cap], reqs[:cap]
    t0 = times[0]
    requests = [WorkloadRequest(p, o, at=(t - t0) / speed, blocks=b) for t, (p, o, b) in zip(times, reqs)]
    fmt = "mooncake" if mooncake else "burstgpt" if "Timestamp" in rows[0] else "generic"
    span = requests[-1].at or 0.0
    return Workload(path.name, "replay", requests,
                    {**_file_params(path, text), "format": fmt, "replay_speed": speed,
                     "trace_rate": (len(requests) - 1) / span if span > 0 else None})


def _time_s(row: dict[str, Any], mooncake: bool, line: int) -> float:
    for keys, unit in ((TIME_KEYS_S, 1.0), (TIME_KEYS_MS, 1e-3), (("timestamp",), 1e-3 if mooncake else 1.0)):
        for k in keys:
            if k in row and row[k] not in (None, ""):
                try:
                    v = float(row[k]) * unit
                except (TypeError, ValueError):
                    raise EffbenchError(f"trace file row {line}: '{k}' is not a number") from None
                if not math.isfinite(v):
                    raise EffbenchError(f"trace file row {line}: '{k}' is not finite")
                return v
    raise EffbenchError(f"trace file row {line} has no timestamp (timestamp, Timestamp, timestamp_s or timestamp_ms)")


# -- multi-turn and shared prefixes ----------------------------------------------------------------
def _multi_turn(w: Workload, turns: int, users: Optional[int]) -> Workload:
    """Request i continues conversation (i mod U) + U x (i div (U x T)) at turn (i div U) mod T, U the
    users (closed loop) or the conversations needed (open loop): each user's next request is its
    conversation's next turn, and a conversation of T turns is followed by a new one."""
    if w.kind == "dataset":
        return w  # a dataset's conversations carry their own turns
    n = len(w.requests)
    u = users or max(1, math.ceil(n / turns))
    w.requests = [_replace(r, conversation=(i % u) + u * (i // (u * turns)), turn=(i // u) % turns)
                  for i, r in enumerate(w.requests)]
    w.params["multi_turn"] = turns
    return w


def parse_shared_prefix(text: str) -> tuple[int, int]:
    """``N:L`` -> (N shared prompts, L tokens each)."""
    try:
        count, tokens = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise EffbenchError(f"--shared-prefix '{text}' is not N:L (e.g. 4:512: 4 system prompts of 512 tokens)") from None
    if count < 1 or tokens < 1:
        raise EffbenchError(f"--shared-prefix '{text}': N and L must be at least 1")
    return count, tokens


# -- prompt text ------------------------------------------------------------------------------------
Prompt = Any  # str, or a list of chat messages ({role, content})


class PromptBuilder:
    """Prompt text of the asked token lengths, cut from the prompt set's token stream. Request i's own
    text starts at prompt i of the set and runs on through the next ones (as the offline rows do);
    a keyed piece (a shared prefix, a conversation's turn, a trace's block) starts where its key
    hashes to, so equal keys give equal text and the server's prefix cache can see the repeat."""

    def __init__(self, tokenizer: Any, texts: Sequence[str]) -> None:
        self.tok = tokenizer
        stream: list[Any] = []
        self.starts: list[int] = []
        for t in texts:
            self.starts.append(len(stream))
            stream.extend(tokenizer.encode(t) if tokenizer is not None else t.split())
        if not stream:
            raise EffbenchError("the prompt set tokenizes to nothing")
        self.stream = stream
        self.exact = tokenizer is not None  # without a tokenizer a word stands for a token

    def _take(self, start: int, n: int) -> list[Any]:
        s = self.stream
        out: list[Any] = []
        while len(out) < n:
            take = s[start % len(s):][: n - len(out)]
            out.extend(take)
            start = 0
        return out

    def _text(self, units: list[Any]) -> str:
        return self.tok.decode(units) if self.tok is not None else " ".join(units)

    def own(self, i: int, n: int) -> str:
        return self._text(self._take(self.starts[i % len(self.starts)], n))

    def keyed(self, key: str, n: int) -> str:
        start = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % len(self.stream)
        return self._text(self._take(start, n))

    def blocks(self, i: int, blocks: Sequence[int], n: int) -> str:
        """A trace row's prompt: its hash-id blocks (shared where ids repeat), cut or filled to n."""
        units: list[Any] = []
        for b in blocks:
            start = int(hashlib.sha256(f"block{b}".encode()).hexdigest()[:12], 16) % len(self.stream)
            units.extend(self._take(start, MOONCAKE_BLOCK_TOKENS))
            if len(units) >= n:
                break
        if len(units) < n:
            units.extend(self._take(self.starts[i % len(self.starts)], n - len(units)))
        return self._text(units[:n])

    def build(self, i: int, r: WorkloadRequest, w: Workload, chat: bool) -> Prompt:
        """Request i's prompt: chat messages for the chat API, else one text."""
        messages: list[dict[str, str]] = []
        if r.prefix is not None:
            messages.append({"role": "system", "content": self.keyed(f"prefix{r.prefix}", w.prefix_tokens)})
        if r.messages is not None:
            messages.extend(r.messages)
        elif r.text is not None:
            messages.append({"role": "user", "content": r.text})
        elif r.conversation is not None:
            for t in range(r.turn):
                messages.append({"role": "user", "content": self.keyed(f"c{r.conversation}u{t}", r.prompt_tokens)})
                messages.append({"role": "assistant", "content": self.keyed(f"c{r.conversation}a{t}", r.output_tokens)})
            messages.append({"role": "user", "content": self.keyed(f"c{r.conversation}u{r.turn}", r.prompt_tokens)})
        elif r.blocks:
            messages.append({"role": "user", "content": self.blocks(i, r.blocks, r.prompt_tokens)})
        else:
            messages.append({"role": "user", "content": self.own(i, r.prompt_tokens)})
        if chat:
            return messages
        if len(messages) == 1:
            return messages[0]["content"]
        return "\n\n".join(m["content"] for m in messages)  # completions: the turns as one text
