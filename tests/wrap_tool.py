"""A stand-in load generator for tests/test_wrap.py: it writes one results file in the real format
of GuideLLM 0.8, AIPerf 0.13, ``vllm bench serve`` or CSV (each built on a real file in
tests/data/wrap/) with requests of known timings placed around now, waits until the last answer,
and exits with the code asked.

    python tests/wrap_tool.py FORMAT OUT [--requests N] [--exit N] [--reversed]

Request i is sent at t0 + GAP x i, answers TTFT later with its first token and LIFE after its send
with its last; OUTPUT tokens each, PROMPT prompt tokens. ``--reversed`` swaps send and answer
(timestamps out of order). ``OUT`` is a file (guidellm, vllm, csv) or a folder (aiperf)."""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "wrap"
GAP, TTFT, LIFE, OUTPUT, PROMPT = 0.02, 0.03, 0.12, 10, 20
LEAD = 0.1  # the first send comes this long after the tool starts


def schedule(n: int, t0: float) -> list[tuple[float, float]]:
    return [(t0 + LEAD + GAP * i, t0 + LEAD + GAP * i + LIFE) for i in range(n)]


def gaps() -> list[float]:
    return [(LIFE - TTFT) / (OUTPUT - 1)] * (OUTPUT - 1)


def write_csv(out: Path, reqs: list[tuple[float, float]]) -> None:
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start", "end", "output_tokens", "prompt_tokens", "ttft_s"])
        for s, e in reqs:
            w.writerow([repr(s), repr(e), OUTPUT, PROMPT, TTFT])


def write_vllm(out: Path, reqs: list[tuple[float, float]], mono: float) -> None:
    doc = json.loads((DATA / "vllm-0.32.0-bench-serve.json").read_text())
    n = len(reqs)
    doc.update(num_prompts=n, completed=n, start_times=[s - mono for s, _ in reqs], ttfts=[TTFT] * n,
               itls=[gaps() for _ in reqs], latencies=[e - s for s, e in reqs], output_lens=[OUTPUT] * n,
               input_lens=[PROMPT] * n, errors=[""] * n, generated_texts=["x"] * n, queue_times=[0.0] * n)
    out.write_text(json.dumps(doc))


def write_guidellm(out: Path, reqs: list[tuple[float, float]]) -> None:
    doc = json.loads((DATA / "guidellm-0.8.1-benchmarks.json").read_text())
    bench = doc["benchmarks"][0]
    template = bench["requests"]["successful"][0]
    made = []
    for s, e in reqs:
        r = copy.deepcopy(template)
        t = r["info"]["timings"]
        t.update(request_start=s, first_token_iteration=s + TTFT, first_output_token_iteration=s + TTFT,
                 last_token_iteration=e, request_end=e, token_iterations=OUTPUT)
        r.update(request_start_time=s, request_end_time=e, time_to_first_token_ms=TTFT * 1000, output_tokens=OUTPUT,
                 prompt_tokens=PROMPT, request_latency=e - s)
        made.append(r)
    bench["requests"]["successful"] = made
    bench["metrics"]["request_totals"]["successful"] = len(made)
    out.write_text(json.dumps(doc))


def write_aiperf(out: Path, reqs: list[tuple[float, float]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "aiperf-0.13.0" / "profile_export_aiperf.json", out / "profile_export_aiperf.json")
    template = json.loads((DATA / "aiperf-0.13.0" / "profile_export.jsonl").read_text().splitlines()[0])
    lines = []
    for s, e in reqs:
        d = copy.deepcopy(template)
        d["metadata"].update(request_start_ns=int(s * 1e9), request_end_ns=int(e * 1e9))
        m = d["metrics"]
        m["time_to_first_token"]["value"] = TTFT * 1000
        m["inter_chunk_latency"]["value"] = [g * 1000 for g in gaps()]
        m["request_latency"]["value"] = (e - s) * 1000
        for k in ("output_sequence_length", "usage_completion_tokens", "output_token_count"):
            if k in m:
                m[k]["value"] = OUTPUT
        for k in ("input_sequence_length", "usage_prompt_tokens"):
            if k in m:
                m[k]["value"] = PROMPT
        lines.append(json.dumps(d))
    (out / "profile_export.jsonl").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("format", choices=["csv", "vllm", "guidellm", "aiperf", "none", "wait"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--exit", type=int, default=0)
    ap.add_argument("--kill-self", action="store_true", help="end by SIGTERM")
    ap.add_argument("--reversed", action="store_true")
    args, _ = ap.parse_known_args()
    if args.format == "wait":  # until SIGTERM, which it answers by writing OUT and exiting 7
        def done(signum: int, frame: object) -> None:
            args.out.write_text(signal.Signals(signum).name)
            sys.exit(7)

        signal.signal(signal.SIGTERM, done)
        (args.out.parent / "ready").write_text("1")
        time.sleep(60)
        return 1
    if args.format == "none":  # writes nothing
        if args.kill_self:
            os.kill(os.getpid(), signal.SIGTERM)
        return args.exit
    t0, mono = time.time(), time.time() - time.perf_counter()
    reqs = schedule(args.requests, t0)
    if args.reversed:
        reqs = [(e, s) for s, e in reqs]
    time.sleep(max(0.0, max(max(p) for p in reqs) - time.time() + 0.05))
    if args.format == "csv":
        write_csv(args.out, reqs)
    elif args.format == "vllm":
        write_vllm(args.out, reqs, mono)
    elif args.format == "guidellm":
        write_guidellm(args.out, reqs)
    elif args.format == "aiperf":
        write_aiperf(args.out, reqs)
    if args.kill_self:
        os.kill(os.getpid(), signal.SIGTERM)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
