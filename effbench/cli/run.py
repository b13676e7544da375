"""``effbench run``: parse options into a ``SweepConfig``, run the sweep with a progress bar,
print a summary table. No measurement logic lives here."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from effbench.cli._console import cell, comma_items, err, fmt, fmt_bytes, out
from effbench.stats import repeats_for_target
from effbench.sweep.observer import SweepObserver

if TYPE_CHECKING:  # pragma: no cover - annotations only: the CLI's start-up loads neither
    from effbench.results.schema import Record
    from effbench.sweep.plan import ConfigPoint

LIST_HELP = "comma-separated"


def _d(key: str) -> str:
    """'(default: X)' from the config model: CLI help never repeats a default by hand."""
    from effbench.config import ServingConfig, SweepConfig

    f = SweepConfig.model_fields.get(key) or ServingConfig.model_fields[key]
    value = f.get_default(call_default_factory=True)
    shown = (",".join(map(str, value)) if isinstance(value, list)
             else "on" if value is True else "off" if value is False else value)
    return f"(default: {shown})"


def _launcher_opts(values: Optional[list[str]]) -> Optional[dict[str, str]]:
    """--launcher-opt key=value (repeatable or comma-separated) -> a dict; a malformed one is one line."""
    if not values:
        return None
    from effbench.errors import ConfigError

    opts: dict[str, str] = {}
    for item in comma_items(values):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--launcher-opt '{item}' is not KEY=VALUE (e.g. --launcher-opt partition=gpu)")
        opts[key.strip()] = value.strip()
    return opts


class _ProgressObserver(SweepObserver):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("sweep", total=1)
        self.current = ""

    def start(self, total: int, done_before: int) -> None:
        self.progress.update(self.task, total=total, completed=done_before)
        if done_before:
            self.message(f"resuming: {done_before} of {total} configurations already done")

    def message(self, text: str) -> None:
        self.progress.console.print(cell(text), style="dim")

    def config_started(self, point: ConfigPoint) -> None:
        self.current = point.label()
        self.progress.update(self.task, description=cell(f"{self.current}  (warm-up)").plain)

    def repeat_done(self, point: ConfigPoint, repeats: int) -> None:
        self.progress.update(self.task, description=cell(f"{self.current}  repeat {repeats}").plain)

    def config_done(self, point: ConfigPoint, record: Record) -> None:
        self.progress.advance(self.task)
        if record.error:
            self.progress.console.print(cell(f"{point.label()}: {record.error}"), style="yellow")


def _energy_cell(r: Record) -> str:
    e = r.energy
    if e.tokens_per_joule is None:
        return "-"
    mark = {"measured": "", "estimated": "~"}.get(e.status, "?")
    return f"{mark}{e.tokens_per_joule:,.1f}"


def _short_note(r: Record) -> str:
    s = r.stats
    return f"short of ±{s.ci_target:.0%} ({s.stop_reason})" if s.short_of_target else ""


def target_hint(records: list[Record]) -> Optional[str]:
    """One line for the configurations whose repeats ended before the interval reached its target:
    how much they spread and about how many repeats (and how long) the target would take."""
    short = [r for r in records if not r.error and r.stats.short_of_target]
    if not short:
        return None
    # short of target: both the interval and its target are known
    needed = [repeats_for_target(r.stats.repeats, ci, target) for r in short
              if (ci := r.stats.ci95_rel) is not None and (target := r.stats.ci_target) is not None]
    seconds = [n * (r.stats.duration_s or 0.0) / max(1, r.stats.repeats + r.stats.excluded_repeats + (r.stats.warmup or 0))
               for n, r in zip(needed, short)]
    spreads = [r.stats.spread_cv for r in short if r.stats.spread_cv is not None]

    def span(lo: str, hi: str) -> str:
        return lo if lo == hi else f"{lo} to {hi}"
    spread = f"their repeats spread {span(f'{min(spreads):.0%}', f'{max(spreads):.0%}')}, so " if spreads else ""
    return (f"{len(short)} configuration(s) stopped before the ±{short[0].stats.ci_target:.0%} target; {spread}about "
            f"{span(str(min(needed)), str(max(needed)))} repeats "
            f"(~{span(f'{min(seconds) / 60:.1f}', f'{max(seconds) / 60:.1f}')} min per configuration) "
            "would reach it: raise --max-repeats and --max-time-s, or measure on a quieter machine "
            "(other work, or a shared VM's neighbours, vary each repeat's speed).")


def summary_table(records: list[Record], title: str) -> Table:
    """The terminal table of offline records a run prints at its end."""
    table = Table(title=title)
    cols = ["model", "scheme", "batch", "prefill tok/s", "decode tok/s", "TTFT ms", "TPOT ms",
            "tok/J", "peak RSS", "CI95", "n", "ppl", "note"]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("model", "scheme", "note") else "left")
    for r in records:
        t = r.throughput
        note = r.error or "; ".join(n for n in ("busy machine" if r.stats.interference else "", _short_note(r)) if n)
        table.add_row(
            cell(r.model.id), cell(r.quantization.scheme), str(r.workload.batch_size),
            fmt(t.prefill_tokens_per_s), fmt(t.decode_tokens_per_s), fmt(t.ttft_s, 1, 1000), fmt(t.tpot_s, 1, 1000),
            _energy_cell(r), fmt_bytes(r.memory.peak_host_bytes),
            f"±{r.stats.ci95_rel:.1%}" if r.stats.ci95_rel is not None else "-",
            str(r.stats.repeats), fmt(r.quality.perplexity, 2), cell(note),
        )
    return table


def serving_table(records: list[Record], title: str) -> Table:
    """One row per load point of a serving sweep: what a planner reads off a replica."""
    table = Table(title=title)
    cols = ["model", "scheme", "offered", "achieved req/s", "out tok/s", "TTFT p50 ms", "TTFT p95 ms",
            "TPOT p50 ms", "TPOT p95 ms", "goodput req/s", "J/request", "failed", "note"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "scheme", "note") else "right")
    for r in records:
        s, e = r.serving, r.energy
        ttft, tpot = (s.ttft_ms, s.tpot_ms) if s else (None, None)
        mark = {"measured": "", "estimated": "~"}.get(e.status, "?")
        note = r.error or (serving_note(s) if s else "")
        table.add_row(
            cell(r.model.id), cell(r.quantization.scheme), s.load_label if s else str(r.workload.batch_size),
            fmt(s.achieved_rate if s else None, 2), fmt(s.output_tokens_per_s if s else None),
            fmt(ttft.p50 if ttft else None, 1), fmt(ttft.p95 if ttft else None, 1),
            fmt(tpot.p50 if tpot else None, 1), fmt(tpot.p95 if tpot else None, 1),
            fmt(s.goodput if s else None, 2),
            f"{mark}{e.joules_per_request:,.2f}" if e.joules_per_request is not None else "-",
            str(s.failed) if s and s.failed is not None else "-", cell(note),
        )
    return table


def serving_note(s: Any) -> str:
    """What the row's figures rest on: a capacity found, saturation, or no steady state."""
    notes = []
    if s.capacity is not None:
        c = s.capacity
        notes.append(f"capacity {c.rate:.3g} req/s [{c.ci95[0]:.3g}, {c.ci95[1]:.3g}]" if c.rate is not None and c.ci95
                     else f"capacity {c.rate:.3g} req/s ({c.reason})" if c.rate is not None else f"no capacity: {c.reason}")
    if s.saturated:
        notes.append(f"saturated: {s.saturation_reason}")
    if s.steady is None and s.whole is not None:
        notes.append("whole point (no steady state)")
    return "; ".join(notes)


def run_command(
    config: Optional[Path] = typer.Argument(None, help="YAML sweep file; its keys are these options' names with underscores.",
                                            show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Model: 'smollm2-135m' (bundled), a checkpoint dir, a .gguf file or a hub id; "
                                             f"{LIST_HELP}. {_d('model')}", show_default=False),
    backend: Optional[str] = typer.Option(None, "--backend",
                                          help=f"Inference backend: transformers, llamacpp or vllm. {_d('backend')}",
                                          show_default=False),
    device: Optional[str] = typer.Option(None, "--device", help=f"auto, cpu, cuda or cuda:N. {_d('device')}", show_default=False),
    quant: Optional[str] = typer.Option(None, "--quant", "-q",
                                        help=f"Quantization schemes, {LIST_HELP} (fp32, fp16, bf16, int8-dynamic, ...). "
                                             f"{_d('quant')}", show_default=False),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", "-b", help=f"Batch sizes, {LIST_HELP}. {_d('batch_sizes')}",
                                              show_default=False),
    prompt_tokens: Optional[str] = typer.Option(None, "--prompt-tokens",
                                                help=f"Prompt length(s) in tokens, {LIST_HELP}. {_d('prompt_tokens')}",
                                                show_default=False),
    new_tokens: Optional[str] = typer.Option(None, "--new-tokens",
                                             help=f"Generated tokens per sequence (forced, greedy), {LIST_HELP}. "
                                                  f"{_d('new_tokens')}", show_default=False),
    prompts: Optional[str] = typer.Option(None, "--prompts",
                                          help=f"Prompt sets: en, ko, ja or a text/JSONL file; {LIST_HELP}. {_d('prompts')}",
                                          show_default=False),
    repeats: Optional[int] = typer.Option(None, "--repeats", "-r",
                                          help="Exactly this many repeats per configuration. (default: adaptive, until CI95 <= "
                                               "--ci-target)", show_default=False),
    power_limits: Optional[str] = typer.Option(None, "--power-limits",
                                               help=f"NVIDIA GPU power limits to sweep, in W, {LIST_HELP} (needs root; originals "
                                                    "restored). (default: unchanged)", show_default=False),
    gpu_clocks: Optional[str] = typer.Option(None, "--gpu-clocks",
                                             help=f"Locked SM clocks to sweep, in MHz, {LIST_HELP} (needs root; reset "
                                                  "afterwards). (default: unchanged)", show_default=False),
    sensor: Optional[str] = typer.Option(None, "--sensor",
                                         help=f"Energy sensor: auto, nvml, rapl, estimate or none. {_d('sensor')}",
                                         show_default=False),
    hardware: Optional[str] = typer.Option(None, "--hardware",
                                           help="Hardware profile id or profile YAML path. (default: detected)",
                                           show_default=False),
    region: Optional[str] = typer.Option(None, "--region",
                                         help="Grid region for CO2e: ISO country code, USA/<state>, world, ... (default: "
                                              "EFFBENCH_REGION, else this machine's country, else world)", show_default=False),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory. (default: effbench-runs/run-<time>)",
                                          show_default=False),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run in --out, skipping finished configurations.",
                                          show_default=False),
    warmup: Optional[int] = typer.Option(None, "--warmup", help=f"Warm-up generations per configuration. {_d('warmup')}",
                                         show_default=False),
    min_repeats: Optional[int] = typer.Option(None, "--min-repeats", help=f"Adaptive mode: fewest repeats. {_d('min_repeats')}",
                                              show_default=False),
    max_repeats: Optional[int] = typer.Option(None, "--max-repeats", help=f"Adaptive mode: most repeats. {_d('max_repeats')}",
                                              show_default=False),
    ci_target: Optional[float] = typer.Option(None, "--ci-target",
                                              help="Stop when the CI95 of decode tok/s is within this relative width. "
                                                   f"{_d('ci_target')}", show_default=False),
    max_time_s: Optional[float] = typer.Option(None, "--max-time-s",
                                               help=f"Time cap per configuration in seconds. {_d('max_time_s')}",
                                               show_default=False),
    idle_s: Optional[float] = typer.Option(None, "--idle-s",
                                           help="Seconds of idle-power baseline before the sweep (measuring sensors only). "
                                                f"{_d('idle_s')}", show_default=False),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--eager",
                                                 help="torch.compile the model (transformers backend). (default: eager)",
                                                 show_default=False),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend. (default: the library's)",
                                          show_default=False),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Random seed. {_d('seed')}", show_default=False),
    perplexity: Optional[bool] = typer.Option(None, "--perplexity/--no-perplexity",
                                              help=f"Score perplexity on the shipped texts. {_d('perplexity')}",
                                              show_default=False),
    scenario: Optional[str] = typer.Option(None, "--scenario",
                                           help="What is measured: offline (static batches through generate) or serving (an "
                                                f"OpenAI-compatible server under load). {_d('scenario')}", show_default=False),
    endpoint: Optional[str] = typer.Option(None, "--endpoint",
                                           help="Serving: the base URL of an OpenAI-compatible server already running (vLLM, "
                                                "SGLang, TGI, llama.cpp, transformers serve).", show_default=False),
    engine: Optional[str] = typer.Option(None, "--engine",
                                         help="Serving: the engine effbench starts on a loopback port: transformers, vllm or "
                                              f"llamacpp. {_d('engine')}", show_default=False),
    rates: Optional[str] = typer.Option(None, "--rates",
                                        help=f"Serving: offered requests/s, {LIST_HELP}; inf = all at once. {_d('rates')}",
                                        show_default=False),
    concurrency: Optional[str] = typer.Option(None, "--concurrency",
                                              help="Serving: closed-loop users, {LIST_HELP} (instead of "
                                                   "--rates).".format(LIST_HELP=LIST_HELP), show_default=False),
    arrival: Optional[str] = typer.Option(None, "--arrival",
                                          help=f"Serving: arrivals at a rate, poisson or constant. {_d('arrival')}",
                                          show_default=False),
    requests: Optional[int] = typer.Option(None, "--requests",
                                           help="Serving: measured requests per point (warm-up excluded). (default: enough for "
                                                "--duration, else 32)", show_default=False),
    duration: Optional[float] = typer.Option(None, "--duration", help="Serving: seconds of sending per point.",
                                             show_default=False),
    warmup_requests: Optional[int] = typer.Option(None, "--warmup-requests",
                                                  help="Serving: requests per point before the measured ones. "
                                                       f"{_d('warmup_requests')}", show_default=False),
    slo_ttft_ms: Optional[float] = typer.Option(None, "--slo-ttft-ms",
                                                help="Serving: time-to-first-token SLO in ms (goodput; p95 for --find-capacity).",
                                                show_default=False),
    slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms",
                                                help="Serving: time-per-output-token SLO in ms (goodput; p95 for "
                                                     "--find-capacity).", show_default=False),
    api: Optional[str] = typer.Option(None, "--api",
                                      help="Serving: which OpenAI API the client drives, completions or chat (the server "
                                           f"applies the chat template). {_d('api')}", show_default=False),
    workload: Optional[str] = typer.Option(None, "--workload",
                                           help="Serving: the traffic: fixed (default: --prompt-tokens in, --new-tokens out), a "
                                                "published output-length distribution (lm-arena-chat, gpqa, sourcegraph-fim, or "
                                                "TASK@MODEL-ID), or a file of (prompt_tokens, output_tokens) pairs or of "
                                                "prompts/conversations (CSV/JSONL).", show_default=False),
    multi_turn: Optional[int] = typer.Option(None, "--multi-turn",
                                             help="Serving: turns per conversation; each request continues its conversation, so "
                                                  f"its prompt grows and its prefix repeats. {_d('multi_turn')}",
                                             show_default=False),
    shared_prefix: Optional[str] = typer.Option(None, "--shared-prefix",
                                                help="Serving: N:L, N system prompts of L tokens shared round-robin by the "
                                                     "requests.", show_default=False),
    replay: Optional[str] = typer.Option(None, "--replay",
                                         help="Serving: replay a trace of (timestamp, prompt_tokens, output_tokens) requests at "
                                              "its own pace (Mooncake JSONL, BurstGPT CSV or a plain CSV/JSONL).",
                                         show_default=False),
    replay_speed: Optional[float] = typer.Option(None, "--replay-speed",
                                                 help=f"Serving --replay: time scale, 2 = twice as fast. {_d('replay_speed')}",
                                                 show_default=False),
    workload_scale: Optional[float] = typer.Option(None, "--workload-scale",
                                                   help="Serving: output lengths of a named distribution x this (small "
                                                        f"machines). {_d('workload_scale')}", show_default=False),
    find_capacity: Optional[bool] = typer.Option(None, "--find-capacity",
                                                 help="Serving: search the highest request rate whose p95 TTFT and p95 TPOT meet "
                                                      "--slo-ttft-ms/--slo-tpot-ms, from the lowest of --rates up; records it "
                                                      "with its bracket, goodput and J/request.", show_default=False),
    capacity_resolution: Optional[float] = typer.Option(None, "--capacity-resolution",
                                                        help="Serving --find-capacity: stop when the bracket's top is within "
                                                             f"this share of its bottom. {_d('capacity_resolution')}",
                                                        show_default=False),
    capacity_point_s: Optional[float] = typer.Option(None, "--capacity-point-s",
                                                     help="Serving --find-capacity: seconds of arrivals per tried rate. "
                                                          f"{_d('capacity_point_s')}", show_default=False),
    capacity_max_points: Optional[int] = typer.Option(None, "--capacity-max-points",
                                                      help="Serving --find-capacity: most rates tried. "
                                                           f"{_d('capacity_max_points')}", show_default=False),
    length_spread: Optional[float] = typer.Option(None, "--length-spread",
                                                  help="Serving: output lengths drawn per request, uniform in new_tokens x (1 "
                                                       f"+- SPREAD), 0 <= SPREAD < 1. {_d('length_spread')}", show_default=False),
    launcher: Optional[str] = typer.Option(None, "--launcher",
                                           help="Where groups run: inline, process (one child per group), slurm (submitit) or "
                                                f"ray. {_d('launcher')}", show_default=False),
    launcher_opt: Optional[list[str]] = typer.Option(None, "--launcher-opt",
                                                     help="Launcher option KEY=VALUE, repeatable (e.g. timeout=600, "
                                                          "partition=gpu, address=ray://host:10001).", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run a sweep (models x schemes x batch sizes x lengths) and write run.json + results.jsonl.

    With no options it benchmarks the bundled SmolLM2-135M on this machine at batch sizes 1, 4 and 16.
    """
    from effbench.config import load_config
    from effbench.sweep import Sweep

    overrides = dict(
        model=model, backend=backend, device=device, quant=quant, batch_sizes=batch_sizes,
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, prompts=prompts, repeats=repeats, sensor=sensor,
        hardware=hardware, region=region, out=out_dir, resume=resume, warmup=warmup, min_repeats=min_repeats,
        max_repeats=max_repeats, ci_target=ci_target, max_time_s=max_time_s, idle_s=idle_s, threads=threads,
        compile=compile_model,
        seed=seed, perplexity=perplexity, scenario=scenario, launcher=launcher, launcher_opt=_launcher_opts(launcher_opt),
        endpoint=endpoint, engine=engine, rates=rates, concurrency=concurrency, arrival=arrival, requests=requests,
        duration=duration, warmup_requests=warmup_requests, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms,
        length_spread=length_spread, api=api, find_capacity=find_capacity, workload=workload, multi_turn=multi_turn,
        shared_prefix=shared_prefix, replay=replay, replay_speed=replay_speed, workload_scale=workload_scale,
        capacity_resolution=capacity_resolution,
        capacity_point_s=capacity_point_s, capacity_max_points=capacity_max_points,
        power_limits=power_limits, gpu_clocks=gpu_clocks,
    )
    sweep = Sweep(load_config(config, overrides))  # checks every input before the progress bar starts
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet) as progress:
        result = sweep.run(_ProgressObserver(progress))
    serving = any(r.serving is not None for r in result.records) or sweep.config.scenario == "serving"
    table = serving_table if serving else summary_table
    out.print(table(result.records, f"effbench run {result.run_id}"))
    hint = None if serving else target_hint(result.records)
    if hint:
        out.print(cell(hint), style="dim")
    estimated = any(r.energy.status == "estimated" for r in result.records)
    if estimated:
        what = "J/request" if serving else "tok/J"
        out.print(f"~ {what} is estimated (TDP x utilisation), not measured; see energy.basis in the records.", style="dim")
    out.print(cell(f"results: {result.path / 'results.jsonl'}"))
    if result.records and all(r.error for r in result.records):
        from effbench.errors import EffbenchError

        raise EffbenchError("no configuration could be measured; the note column above says why for each")


def register(app: typer.Typer) -> None:
    """Add ``effbench run`` to the command-line app."""
    app.command("run")(run_command)
