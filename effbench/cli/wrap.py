"""``effbench wrap [OPTIONS] -- COMMAND ...``: energy for any load generator (GuideLLM, AIPerf,
``vllm bench serve``, a script). Parses options, runs the command under the sensor and prints where
the records are; the command's exit code is effbench's."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer

from effbench.cli._console import one_line, unset, warn


def _note(message: str) -> None:
    sys.stderr.write(f"effbench: {one_line(message)}\n")
    sys.stderr.flush()


def _device(device: str, sensor: str) -> str:
    """``auto``: the first GPU where a GPU sensor can measure it, else the CPU."""
    if device != "auto":
        return device
    if sensor in ("auto", "nvml"):
        from effbench.sensors import SENSORS

        try:
            s = SENSORS.get("nvml").for_device("cuda:0")
            try:
                if s.info().available:
                    return "cuda:0"
            finally:
                s.close()
        except Exception:  # noqa: BLE001 - no NVML here: the CPU
            pass
    return "cpu"


def wrap_command(
    command: Optional[list[str]] = typer.Argument(None, metavar="-- COMMAND ...", help="The load generator and its arguments.",
                                                  show_default=False),
    out_dir: Optional[Path] = unset("--out", "-o", help="Run directory. (default: effbench-runs/wrap-<time>)"),
    sensor: str = typer.Option("auto", "--sensor", help="Energy sensor: auto, nvml, rapl, estimate or none."),
    idle_s: float = typer.Option(5.0, "--idle-s",
                                 help="Seconds of idle-power baseline before the command (measuring sensors only)."),
    device: str = typer.Option("auto", "--device",
                               help="What the sensor measures: cpu or cuda:N; auto = cuda:0 where NVML sees it, else cpu."),
    results: Optional[Path] = unset("--results",
                                    help="The tool's results file. (default: found among the files the command wrote)"),
    fmt: str = typer.Option("auto", "--format",
                            help="Results format: auto, guidellm, aiperf, vllm or csv (columns start, end, output_tokens; "
                                 "optional prompt_tokens, cached_tokens, ttft_s)."),
    model: Optional[str] = unset("--model", "-m", help="Model id for the records. (default: the one the tool names)"),
    scheme: str = typer.Option("unknown", "--scheme", help="Quantization the server runs (bf16, fp8, ...) for the records."),
    hardware: Optional[str] = unset("--hardware", help="Hardware profile id or profile YAML path. (default: detected)"),
    segment_s: float = typer.Option(0.25, "--segment-s", help="Length of one power-timeline segment, in seconds."),
) -> int:
    """Run COMMAND under an energy sensor: an idle baseline first, then a power timeline
    (power_timeline.jsonl) all along; afterwards the tool's per-request results become records
    (run.json, results.jsonl) with its own latency figures, whole and steady throughput, energy per
    request and per token over its steady window, and energy attributed to each request."""
    from effbench.wrap.runner import WrapOptions, default_out_dir, wrap

    if not math.isfinite(segment_s) or segment_s <= 0:
        raise typer.BadParameter("must be a finite number > 0", param_hint="--segment-s")
    if not math.isfinite(idle_s) or idle_s < 0:
        raise typer.BadParameter("must be a finite number >= 0", param_hint="--idle-s")
    if fmt not in ("auto", "guidellm", "aiperf", "vllm", "csv"):
        raise typer.BadParameter("choose auto, guidellm, aiperf, vllm or csv", param_hint="--format")
    argv = list(command or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    out = out_dir or default_out_dir()
    opts = WrapOptions(command=argv, out=out, sensor=sensor, idle_s=idle_s, device=_device(device, sensor),
                       results=results, fmt=fmt, model=model, scheme=scheme, hardware=hardware, segment_s=segment_s)
    problems: list[str] = []
    code, where = wrap(opts, _note, problems.append)
    timeline = where / "power_timeline.jsonl"
    from effbench.wrap.records import describe

    if code:
        from effbench.wrap.runner import describe_exit

        tail = "; ".join(problems)
        sys.stderr.write(f"effbench: error: {one_line(describe_exit(code))}{'; ' + one_line(tail) if tail else ''}; "
                         f"power timeline kept in {timeline}, records in {where}\n")
        sys.stderr.flush()
        return code
    for p in problems:
        warn(p)
    for line in describe(where):
        _note(line)
    return 0


def register(app: typer.Typer) -> None:
    """Add ``effbench wrap`` to the command-line app."""
    app.command("wrap", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(wrap_command)
