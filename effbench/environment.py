"""Everything a reviewer needs to reproduce a run (docs/method.md, "The run directory"), gathered once per run."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import psutil

import effbench
from effbench.hardware import cpu_name
from effbench.hardware.cpu import cpu_affinity

_PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "safetensors", "gguf", "numpy",
             "optimum-quanto", "torchao", "bitsandbytes", "llama-cpp-python", "vllm", "nvidia-ml-py",
             "codecarbon", "pydantic")
_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES",
             "PYTORCH_CUDA_ALLOC_CONF", "EFFBENCH_CACHE_DIR")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_sha() -> Optional[str]:
    """The commit of the effbench source in use (editable installs), with '-dirty' if modified."""
    root = Path(effbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory),
                     "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return gpus


def nvml_block(env: Optional[dict[str, str]] = None, nvml: Any = None) -> dict[str, Any]:
    """The GPUs CUDA shows, as NVML sees them: a MIG device in ``CUDA_VISIBLE_DEVICES`` resolves
    to its parent GPU (name, UUID, MIG mode, the slice), with power limit, clocks, the other
    compute processes and their memory, and utilisation. ``{"unavailable": why}`` without NVML."""
    from effbench.errors import UnsupportedError
    from effbench.sensors.nvml import NvmlDevices

    try:
        devices = NvmlDevices.open("cuda", nvml, env)
    except UnsupportedError as e:
        return {"unavailable": str(e)}
    try:
        return devices.environment()
    finally:
        devices.close()


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {}
    return {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }


def collect(extra: Optional[dict[str, Any]] = None, load_torch: bool = True) -> dict[str, Any]:
    """The environment block of ``run.json``. Sensors add their device details through ``extra``.

    ``load_torch=False`` (a scenario that loads no model in this process: the serving client) never
    imports torch, which that process does not use: the ``torch`` block is empty and ``gpus`` names
    the GPUs CUDA shows as NVML sees them (index and name)."""
    mem = psutil.virtual_memory()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    env = {
        "collected_at": now_iso(),
        "effbench_version": effbench.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": {
            "model": cpu_name(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cpus": psutil.cpu_count(logical=True),
            "affinity": cpu_affinity(),
        },
        "memory_bytes": int(mem.total),
        "load_avg": load,
        "torch": _torch_info() if load_torch else {},
        "gpus": _gpus() if load_torch else [],
        "nvml": nvml_block(),
        "packages": package_versions(),
        "env_vars": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
    }
    if not load_torch:
        nvml: Any = env["nvml"]
        env["gpus"] = [{"index": i, "name": g.get("name")} for i, g in enumerate(nvml.get("gpus") or [])]
    env.update(extra or {})
    return env
