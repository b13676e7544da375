"""The process launcher: one child process per group, so a segfault, an out-of-memory kill or a
hang (``timeout``) of one group becomes that group's error records and the sweep goes on.

Events stream back through a pipe as they happen (a record finished before the crash is kept).
The parent blocks in ``multiprocessing.connection.wait`` on the pipe and the child's sentinel:
no busy waiting, so the measurement keeps its cores.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Optional

from pydantic import Field

from effbench.errors import first_line
from effbench.launchers.base import GroupFailed, Launcher, Sink, TimeoutOptions, Work

GRACE_S = 5.0  # how long a timed-out or interrupted child gets to exit before it is killed


def _child(work: Work, group: Any, conn: Connection) -> None:
    try:
        work(group, conn.send)
    except BaseException as e:  # noqa: BLE001 - tell the parent why, then exit non-zero
        try:
            conn.send(("crash", f"{type(e).__name__}: {first_line(e)}"))
        except (OSError, ValueError):
            pass
        raise SystemExit(1) from None
    finally:
        conn.close()


def describe_exit(code: Optional[int], crash: Optional[str]) -> str:
    if crash:
        return f"worker process failed: {crash}"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"worker process killed by {name}{why}"
    return f"worker process exited with code {code}"


class ProcessLauncher(Launcher):
    name = "process"

    class Options(TimeoutOptions):
        start_method: str = Field(default="spawn", description="multiprocessing start method: spawn (default), "
                                                               "forkserver or fork")

    def check(self) -> None:
        self.timeout_s = self.options.timeout
        method = self.options.start_method
        if method not in mp.get_all_start_methods():
            from effbench.errors import ConfigError

            raise ConfigError(f"--launcher-opt start_method={method!r}: choose one of {', '.join(mp.get_all_start_methods())}")
        self.context: Any = mp.get_context(method)  # typeshed's BaseContext lacks Process
        self.inherits_registrations = method == "fork"  # spawn and forkserver start a fresh interpreter

    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None:
        pipe: tuple[Connection, Connection] = self.context.Pipe(duplex=False)
        reader, writer = pipe
        proc = self.context.Process(target=_child, args=(work, group, writer), name=f"effbench-{label}", daemon=True)
        proc.start()
        writer.close()  # the child holds the only writer: EOF on our end means it is gone
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        crash: Optional[str] = None
        try:
            open_pipe = True
            while open_pipe or proc.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._stop(proc)
                    raise GroupFailed(f"timed out after {self.timeout_s:g} s (launcher option timeout)")
                waitables = [reader, proc.sentinel] if open_pipe else [proc.sentinel]
                for ready in wait(waitables, timeout=remaining):
                    if ready is reader:
                        try:
                            event = reader.recv()
                        except (EOFError, OSError):
                            open_pipe = False
                            continue
                        if event and event[0] == "crash":
                            crash = str(event[1])
                        else:
                            sink(event)
                if not proc.is_alive() and open_pipe and not reader.poll(0):
                    open_pipe = False
        except BaseException:
            self._stop(proc)
            raise
        finally:
            reader.close()
        proc.join()
        if proc.exitcode != 0 or crash:
            raise GroupFailed(describe_exit(proc.exitcode, crash))

    @staticmethod
    def _stop(proc: mp.process.BaseProcess) -> None:
        if proc.is_alive():
            proc.terminate()
            proc.join(GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
