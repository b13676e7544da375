"""``effbench wrap``: energy for any load generator. The sensor's idle baseline first, then the
command as a child process under a power timeline; afterwards the tool's own per-request results
are read back into serving records (``records.py``). The timeline is kept whatever happens."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional

from effbench.errors import EffbenchError
from effbench.measure.timeline import DEFAULT_SEGMENT_S, TIMELINE_FILE, Segment, TimelineRecorder

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NOT_FOUND, NOT_EXECUTABLE = 127, 126  # what a shell answers for these


class CommandError(EffbenchError):
    """A command that cannot start: one line, with the exit code a shell gives it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_exit(code: int) -> str:
    """The command's end in words: its exit code, or the signal that killed it."""
    if code > 128:
        try:
            return f"the wrapped command was killed by {signal.Signals(code - 128).name} (exit {code})"
        except ValueError:
            pass
    return f"the wrapped command exited with {code}"


def default_out_dir() -> Path:
    return Path("effbench-runs") / datetime.now().strftime("wrap-%Y%m%d-%H%M%S")


@dataclass
class WrapOptions:
    command: list[str]
    out: Path
    sensor: str = "auto"
    idle_s: float = 5.0
    device: str = "cpu"
    results: Optional[Path] = None
    fmt: str = "auto"
    model: Optional[str] = None
    scheme: str = "unknown"
    hardware: Optional[str] = None
    segment_s: float = DEFAULT_SEGMENT_S


@dataclass
class CommandRun:
    """What the wrapped command did, on the wall clock."""

    command: list[str]
    cwd: Path
    start_unix: float
    end_unix: float
    mono_to_unix: float  # unix - time.perf_counter() when it started: places a tool's monotonic times
    returncode: int  # as a shell reports it: 128 + N when killed by signal N
    signal: Optional[int] = None
    forwarded: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.returncode


def resolve_command(command: list[str]) -> None:
    """A command that cannot start is one line and a shell's exit code, before anything is measured."""
    if not command:
        raise CommandError("give the command to run after '--': effbench wrap [OPTIONS] -- COMMAND ...", 2)
    exe = command[0]
    if os.sep in exe:
        if not Path(exe).exists():
            raise CommandError(f"command not found: {exe}", NOT_FOUND)
        if not os.access(exe, os.X_OK) or Path(exe).is_dir():
            raise CommandError(f"command is not executable: {exe}", NOT_EXECUTABLE)
    elif shutil.which(exe) is None:
        raise CommandError(f"command not found: {exe}", NOT_FOUND)


def run_command(command: list[str], on_start: Callable[[int], None] = lambda pid: None) -> CommandRun:
    """Run ``command`` with this process's stdin/stdout/stderr. It gets its own process group, so
    a Ctrl-C reaches it once, forwarded (with its children: a tool's worker processes) rather than
    twice; SIGINT, SIGTERM and SIGHUP sent to effbench are forwarded the same way."""
    forwarded: list[str] = []
    child: Optional[subprocess.Popen[bytes]] = None
    early: list[int] = []  # signals that came before the child existed: delivered once it does

    def forward(signum: int, frame: Optional[FrameType]) -> None:
        forwarded.append(signal.Signals(signum).name)
        if child is None:
            early.append(signum)
            return
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    previous: dict[signal.Signals, Any] = {}
    for sg in FORWARDED:
        try:
            previous[sg] = signal.signal(sg, forward)
        except (ValueError, OSError):  # not the main thread (tests calling in-process from a worker)
            pass
    try:
        mono_to_unix = time.time() - time.perf_counter()
        start = time.time()
        try:
            if sys.version_info >= (3, 11):
                child = subprocess.Popen(command, process_group=0)
            else:  # Python 3.10 has no process_group: the same setpgid(0, 0), in the child before exec
                child = subprocess.Popen(command, preexec_fn=os.setpgrp)
        except FileNotFoundError:
            raise CommandError(f"command not found: {command[0]}", NOT_FOUND) from None
        except PermissionError:
            raise CommandError(f"command is not executable: {command[0]}", NOT_EXECUTABLE) from None
        except OSError as e:
            raise CommandError(f"cannot start {command[0]}: {e.strerror or e}", NOT_EXECUTABLE) from None
        on_start(child.pid)
        for signum in early:
            os.killpg(child.pid, signum)
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # a handler could not be installed: forward by hand
                forward(signal.SIGINT, None)
    finally:
        for sg, h in previous.items():
            signal.signal(sg, h)
    end = time.time()
    sig = -rc if rc < 0 else None
    return CommandRun(list(command), Path.cwd(), start, end, mono_to_unix, 128 + sig if sig else rc, sig, forwarded)


@dataclass
class Measured:
    run: CommandRun
    segments: list[Segment]
    idle: Optional[dict[str, Any]]
    sensor_info: dict[str, Any]
    sensor_env: dict[str, Any]
    timeline_path: Path
    timeline_error: Optional[str] = None


def measure(opts: WrapOptions, notify: Callable[[str], None]) -> Measured:
    """Idle baseline, then the command under the power timeline. The timeline thread stops (its
    file complete) before this returns or raises."""
    from effbench.sensors import create as create_sensor
    from effbench.sweep.worker import measure_idle

    resolve_command(opts.command)
    sensor = create_sensor(opts.sensor, opts.device)
    path = opts.out / TIMELINE_FILE
    try:
        info = sensor.info().to_dict()
        env = sensor.environment()
        idle = measure_idle(sensor, opts.idle_s, notify)
        recorder = TimelineRecorder(sensor, path, opts.segment_s)
        recorder.start()
        try:
            # an estimate counts the CPU time of the command's process tree (a server it starts too)
            run = run_command(opts.command, lambda pid: sensor.attribute([pid]))
        finally:
            segments = recorder.stop()
    finally:
        sensor.close()
    return Measured(run, segments, idle, info, env, path, recorder.error)


def run_json(opts: WrapOptions, m: Measured, run_id: str, hardware: dict[str, Any]) -> dict[str, Any]:
    """``run.json`` of a wrapped run: what report, compare and plan read from any run directory."""
    from effbench.environment import collect, now_iso

    return {
        "schema_version": 1,
        "run_id": run_id,
        "created_at": now_iso(),
        "config": {"scenario": "serving", "sensor": opts.sensor, "device": opts.device, "idle_s": opts.idle_s,
                   "wrap": {"command": m.run.command, "cwd": str(m.run.cwd),
                            "results": str(opts.results) if opts.results else None,
                            "format": opts.fmt, "segment_s": opts.segment_s}},
        "environment": collect({"sensor_device": m.sensor_info.get("device"),
                                **({"sensor_environment": m.sensor_env} if m.sensor_env else {})}, load_torch=False),
        "sensor": m.sensor_info,
        "idle_baseline": m.idle,
        "hardware": hardware,
        "wrap": {"command": m.run.command, "exit_code": m.run.exit_code, "signal": m.run.signal,
                 "forwarded_signals": m.run.forwarded, "start_unix": m.run.start_unix, "end_unix": m.run.end_unix,
                 "power_timeline": TIMELINE_FILE, "segments": len(m.segments), "host": socket.gethostname()},
        "sessions": [{"started_at": datetime.fromtimestamp(m.run.start_unix).astimezone().isoformat(timespec="seconds"),
                      "finished_at": now_iso(), "status": "complete" if m.run.exit_code == 0 else "failed",
                      "launcher": "wrap"}],
    }


def wrap(opts: WrapOptions, notify: Callable[[str], None], warn: Callable[[str], None]) -> tuple[int, Path]:
    """Measure, then write the records. Returns (the command's exit code, the run directory)."""
    from effbench.results.store import RunStore
    from effbench.sweep.worker import hardware_block
    from effbench.wrap.records import build_records

    resolve_command(opts.command)
    store = RunStore(opts.out)
    if store.exists():
        raise EffbenchError(f"'{opts.out}' already holds a run; choose another --out")
    opts.out.mkdir(parents=True, exist_ok=True)
    m = measure(opts, notify)
    if m.timeline_error:
        warn(m.timeline_error)
    run_id = uuid.uuid4().hex[:12]
    try:
        hardware = hardware_block(opts.hardware, opts.device)
    except Exception as e:  # noqa: BLE001 - the records matter more than the hardware's name
        hardware = {"profile": opts.hardware, "detected_name": None, "kind": None, "error": str(e)}
    store.write_run(run_json(opts, m, run_id, hardware))
    idle_w = (m.idle or {}).get("power_w")
    records, problems = build_records(opts, m, run_id, idle_w, hardware)
    for r in records:
        store.append(r)
    for p in problems:
        warn(p)
    return m.run.exit_code, opts.out
