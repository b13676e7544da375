"""The SLURM launcher, through submitit: one job per group. The job runs the same worker as every
other launcher and hands its events back; each event is also written to the job's folder as it
happens, so a job killed by its time limit still returns its finished records.

Options (``--launcher-opt key=value`` or the sweep file's ``launcher:`` section): partition, gpus,
cpus, mem_gb, time (minutes), account, qos, constraint, cluster (``slurm``; ``local`` runs the job
as a local process through submitit's local executor, which is how CI tests this path), folder.
The run directory must be on a filesystem the compute nodes share (as submitit's folder is).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from effbench.errors import EffbenchError, first_line
from effbench.launchers.base import GroupFailed, Launcher, LauncherOptions, Sink, Work, collect_events, read_events, require


class SlurmLauncher(Launcher):
    name = "slurm"
    local = False

    class Options(LauncherOptions):
        partition: Optional[str] = Field(default=None, description="SLURM partition")
        gpus: Optional[int] = Field(default=None, ge=1, description="GPUs per job (gpus_per_node)")
        cpus: Optional[int] = Field(default=None, ge=1, description="CPUs per task")
        mem_gb: Optional[float] = Field(default=None, gt=0, description="memory per job, GB")
        time: int = Field(default=60, ge=1, description="time limit per job, minutes (default 60)")
        account: Optional[str] = Field(default=None, description="SLURM account")
        qos: Optional[str] = Field(default=None, description="SLURM QOS")
        constraint: Optional[str] = Field(default=None, description="node feature constraint (e.g. h100)")
        cluster: Literal["slurm", "local"] = Field(default="slurm", description="slurm (default) or local (submitit's "
                                                                                "local executor: this machine, for tests)")
        folder: Optional[str] = Field(default=None, description="submitit folder (default: RUN_DIR/launcher/slurm)")

    def check(self) -> None:
        self.submitit = require("submitit", "slurm", "slurm")
        self.cluster = self.options.cluster
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise EffbenchError("--launcher slurm: no SLURM here (sbatch not found); run effbench on a SLURM login node, "
                                "or pass --launcher-opt cluster=local to run the jobs on this machine")
        self.time_min = self.options.time
        self.folder = Path(self.options.folder or self.run_dir / "launcher" / "slurm")
        # cluster=local keeps local = False on purpose: the job detects its own hardware and reports
        # it back exactly as on a cluster node, so CI tests the code path a cluster runs.

    def _executor(self, label: str) -> Any:
        ex = self.submitit.AutoExecutor(folder=str(self.folder / label), cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "name": f"effbench-{label}"[:60]}
        if self.options.gpus:
            params["gpus_per_node"] = self.options.gpus
        if self.options.cpus:
            params["cpus_per_task"] = self.options.cpus
        if self.options.mem_gb:
            params["mem_gb"] = self.options.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self.options, key) and self.cluster == "slurm":
                params[f"slurm_{key}"] = getattr(self.options, key)
        ex.update_parameters(**params)
        return ex

    def launch(self, work: Work, group: Any, sink: Sink, label: str) -> None:
        events_file = self.folder / label / "events.jsonl"
        events_file.parent.mkdir(parents=True, exist_ok=True)
        events_file.unlink(missing_ok=True)  # a resumed sweep reruns the group from scratch
        job = self._executor(label).submit(collect_events, work, group, str(events_file))
        sink(("message", f"submitted {label} as {self.cluster} job {job.job_id}"))
        try:
            events = job.result()
        except KeyboardInterrupt:
            job.cancel(check=False)
            raise
        except Exception as e:  # noqa: BLE001 - submitit's FailedJobError, UncompletedJobError, ...
            for event in read_events(events_file):
                sink(event)
            raise GroupFailed(f"{self.cluster} job {job.job_id} failed: {first_line(e) or type(e).__name__}") from None
        for event in events:
            sink(tuple(event))
