"""The Ray launcher: one Ray task per group, with its resources (GPUs, CPUs, an accelerator type),
on a local Ray (``ray.init()``) or an existing cluster (``--launcher-opt address=ray://HOST:PORT``
or ``address=HOST:PORT``; ``auto`` joins the cluster this machine belongs to)."""
from __future__ import annotations

import socket
from typing import Any, Optional
from urllib.parse import urlsplit

from pydantic import Field

from effbench.errors import EffbenchError, first_line
from effbench.launchers.base import GroupFailed, Launcher, Sink, TimeoutOptions, Work, collect_events, require

CONNECT_TIMEOUT_S = 3.0


def _host_port(address: str) -> Optional[tuple[str, int]]:
    """HOST:PORT of a cluster address (ray://HOST:PORT or HOST:PORT); None for auto/local."""
    if address in ("", "auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if not parts.hostname:
        raise EffbenchError(f"--launcher-opt address={address!r} is not ray://HOST:PORT, HOST:PORT or auto")
    return parts.hostname, parts.port or (10001 if address.startswith("ray://") else 6379)


class RayLauncher(Launcher):
    name = "ray"
    local = False

    class Options(TimeoutOptions):
        address: str = Field(default="", description="ray://HOST:PORT or HOST:PORT of a running cluster, or auto "
                                                     "(default: a local Ray)")
        gpus: Optional[float] = Field(default=None, gt=0, description="GPUs per task")
        cpus: float = Field(default=1.0, gt=0, description="CPUs per task (default 1)")
        accelerator_type: Optional[str] = Field(default=None, description="Ray accelerator type, e.g. H100 or L40S")

    def check(self) -> None:
        self.ray = require("ray", "ray", "ray")
        self.address = self.options.address
        target = _host_port(self.address)
        if target is not None:  # ray.init would retry for a minute: say in seconds that nobody answers
            try:
                socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
            except OSError as e:
                raise EffbenchError(f"--launcher ray: cannot reach a Ray cluster at {self.address} ({e.strerror or e}); "
                                    "check the address, or leave it out to start a local Ray") from None
        self.timeout_s = self.options.timeout
        # local stays False even for a local Ray: the task reports its host's hardware like a cluster's.

    def _init(self) -> None:
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                kwargs["address"] = self.address
            self.ray.init(**kwargs)

    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None:
        self._init()
        resources: dict[str, Any] = {"num_cpus": self.options.cpus, "max_retries": 0}
        if self.options.gpus:
            resources["num_gpus"] = self.options.gpus
        if self.options.accelerator_type:
            resources["accelerator_type"] = self.options.accelerator_type
        task = self.ray.remote(**resources)(collect_events)
        ref = task.remote(work, group)
        try:
            events = self.ray.get(ref, timeout=self.timeout_s)
        except KeyboardInterrupt:
            self.ray.cancel(ref, force=True)
            raise
        except Exception as e:  # noqa: BLE001 - RayTaskError, GetTimeoutError, WorkerCrashedError, ...
            self.ray.cancel(ref, force=True)
            raise GroupFailed(f"ray task failed: {type(e).__name__}: {first_line(e)}") from None
        for event in events:
            sink(tuple(event))

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()
