"""A trivial OpenAI-compatible streaming server on loopback: answers /v1/models and streams
``tokens`` tokens per /v1/completions or /v1/chat/completions after ``ttft_s``, ``itl_s`` apart
(``tokens_per_chunk`` to a chunk), with a usage chunk when asked (stream_options.include_usage). It measures effbench's own
client (benchmarks/serving_client.py) and lets tests inject faults (HTTP errors every Nth request,
a server that is not OpenAI, one that dies mid-point). It is never a stand-in for a real engine."""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class StubBehaviour:
    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens: int = 8
    fail_every: int = 0  # every Nth completion answers HTTP 500 (0: never)
    reject_fields: tuple[str, ...] = ("ignore_eos", "min_tokens")  # 422, as transformers serve does
    openai: bool = True  # False: every path answers an HTML page
    exit_after: int = 0  # process mode only: the whole process exits at this completion (a server that dies)
    usage: bool = True  # answers stream_options.include_usage with the token counts
    tokens_per_chunk: int = 1  # tokens sent in one streamed chunk (a server that coalesces tokens)
    chat: bool = True  # serves /v1/chat/completions too
    metrics: bool = False  # exposes /metrics in vLLM's names (requests, tokens, TTFT and ITL histograms)
    metrics_lag_s: float = 0.0  # a finished request is counted this long after its last byte (as a busy server)
    metrics_slow_s: float = 0.0  # each /metrics answer takes this long (a scrape on a loaded machine)
    max_concurrent: int = 0  # completions generated at once; the rest queue (0: no limit). A known capacity:
    # max_concurrent / (ttft_s + (tokens - 1) x itl_s) requests/s


LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class StubMetrics:
    """The server's own view, in vLLM's Prometheus names: what effbench's scraper reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.waiting = 0
        self.generation_tokens = self.prompt_tokens = self.succeeded = 0
        self.hist: dict[str, list[float]] = {"time_to_first_token_seconds": [], "inter_token_latency_seconds": []}

    def observe(self, name: str, seconds: float) -> None:
        with self.lock:
            self.hist[name].append(seconds)

    def text(self) -> str:
        with self.lock:
            lines = [f"vllm:num_requests_running {self.running}", f"vllm:num_requests_waiting {self.waiting}",
                     f"vllm:generation_tokens_total {self.generation_tokens}",
                     f"vllm:prompt_tokens_total {self.prompt_tokens}",
                     f'vllm:request_success_total{{finished_reason="length"}} {self.succeeded}']
            for name, values in self.hist.items():
                lines.append(f"# TYPE vllm:{name} histogram")
                for le in LATENCY_BUCKETS_S:
                    lines.append(f'vllm:{name}_bucket{{le="{le}"}} {sum(v <= le for v in values)}')
                lines.append(f'vllm:{name}_bucket{{le="+Inf"}} {len(values)}')
                lines.append(f"vllm:{name}_sum {sum(values)}")
                lines.append(f"vllm:{name}_count {len(values)}")
        return "\n".join(lines) + "\n"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client closing its keep-alive connections is not an error worth a traceback


class StubServer:
    def __init__(self, behaviour: Optional[StubBehaviour] = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour or StubBehaviour()
        self.count = 0
        self.max_tokens_asked: list[int] = []  # each completion's max_tokens, in arrival order
        self.bodies: list[dict] = []  # each completion request's JSON body, in arrival order
        self._lock = threading.Lock()
        self.metrics = StubMetrics()
        self._slots = threading.BoundedSemaphore(self.behaviour.max_concurrent) if self.behaviour.max_concurrent else None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                b = stub.behaviour
                if not b.openai:
                    return self._send(200, b"<html>not an API</html>", "text/html")
                if self.path.rstrip("/") in ("/v1/models",):
                    return self._send(200, json.dumps({"object": "list", "data": [{"id": "stub"}]}).encode())
                if self.path == "/health":
                    return self._send(200, b"{}")
                if self.path == "/metrics" and b.metrics:
                    time.sleep(b.metrics_slow_s)
                    return self._send(200, stub.metrics.text().encode(), "text/plain; version=0.0.4")
                self._send(404, b"{}")

            def do_POST(self) -> None:
                b = stub.behaviour
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not b.openai:
                    return self._send(200, b"<html>not an API</html>", "text/html")
                chat = self.path == "/v1/chat/completions"
                if not (self.path == "/v1/completions" or (chat and b.chat)):
                    return self._send(404, b'{"detail": "Not Found"}')
                rejected = [f for f in b.reject_fields if f in body]
                if rejected:
                    return self._send(422, json.dumps({"detail": f"Unexpected fields in the request: {rejected}"}).encode())
                with stub._lock:
                    stub.count += 1
                    n = stub.count
                    stub.max_tokens_asked.append(int(body.get("max_tokens") or 0))
                    stub.bodies.append(body)
                if b.exit_after and n >= b.exit_after:
                    os._exit(3)  # dies mid-point, as a crashed engine does (process mode: python -m ...stub)
                if b.fail_every and n % b.fail_every == 0:
                    return self._send(500, b'{"error": "injected failure"}')
                tokens = (min(int(body.get("max_tokens") or b.tokens), b.tokens) if "min_tokens" not in body
                          else int(body["max_tokens"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if chat:
                    self._chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                m = stub.metrics
                with m.lock:
                    m.waiting += 1
                arrived = time.perf_counter()
                if stub._slots is None:
                    return self._generate(b, body, tokens, chat, arrived)
                with stub._slots:
                    self._generate(b, body, tokens, chat, arrived)

            def _generate(self, b: StubBehaviour, body: dict, tokens: int, chat: bool, arrived: float) -> None:
                m = stub.metrics
                with m.lock:
                    m.waiting -= 1
                    m.running += 1
                time.sleep(b.ttft_s)
                per = max(1, b.tokens_per_chunk)
                last = time.perf_counter()
                m.observe("time_to_first_token_seconds", last - arrived)
                for i in range(0, tokens, per):
                    if i:
                        time.sleep(b.itl_s * per)
                        now = time.perf_counter()
                        m.observe("inter_token_latency_seconds", now - last)
                        last = now
                    text = "".join(f" w{k}" for k in range(i, min(tokens, i + per)))
                    self._chunk({"choices": [{"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}]})
                if b.usage and (body.get("stream_options") or {}).get("include_usage"):
                    self._chunk({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": tokens}})
                self._raw(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

                def count() -> None:
                    with m.lock:
                        m.running -= 1
                        m.generation_tokens += tokens
                        m.prompt_tokens += 4
                        m.succeeded += 1

                if b.metrics_lag_s > 0:
                    threading.Timer(b.metrics_lag_s, count).start()
                else:
                    count()

            def _chunk(self, obj: dict) -> None:
                self._raw(f"data: {json.dumps(obj)}\n\n".encode())

            def _raw(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.httpd = _QuietServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "StubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: Optional[list[str]] = None) -> None:
    """Process mode, for tests of a managed engine's life cycle (start, health, death, restart)."""
    ap = argparse.ArgumentParser(prog="python -m effbench.scenarios.serving.stub")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--itl-s", type=float, default=0.0)
    ap.add_argument("--ttft-s", type=float, default=0.0)
    ap.add_argument("--max-concurrent", type=int, default=0, help="completions generated at once; the rest queue")
    ap.add_argument("--exit-after", type=int, default=0)
    ap.add_argument("--hold-mib", type=int, default=0, help="keep this much memory resident, as an engine's weights")
    args = ap.parse_args(argv)
    held = bytearray(b"w") * (args.hold_mib << 20)  # written, so resident  # noqa: F841
    server = StubServer(StubBehaviour(tokens=args.tokens, itl_s=args.itl_s, ttft_s=args.ttft_s,
                                      exit_after=args.exit_after, max_concurrent=args.max_concurrent), port=args.port)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
