"""Does a configuration fit in the device's memory? Checked before its batch is built or anything
is allocated, so an absurd batch size becomes an error record in milliseconds instead of minutes of
building prompts and swapping.

The estimate (bytes), from the loaded model and its config:

    weights                                   as loaded (``LoadedModel.weights_bytes``)
  + batch x (prompt + new) x kv_bytes_per_token          the KV cache at the last step (models/kv.py)
  + batch x prompt x hidden x 4 x ACTIVATION_FACTOR      prefill activations of one layer (fp32 worst case)
  + batch x vocab x 4                                    the fp32 logits of one step
  + batch x (prompt + new) x TOKEN_ID_BYTES              token ids and attention mask (int64)

It is deliberately a lower bound (a small factor, one layer's activations, no allocator overhead):
a configuration is refused only when even the lower bound exceeds the device's whole memory, so the
check never turns away one that would have run. Closer calls are left to the allocator (an
out-of-memory error becomes a record and larger batches are skipped, as before).

"What the device has" is its capacity, not what is free at this instant: the loaded model already
occupies part of it, and free memory changes with other processes, while a refused configuration is
recorded (and skipped by ``--resume``), so the decision must not depend on a passing moment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from effbench.models.kv import ModelDims

ACTIVATION_FACTOR = 8  # live tensors of one layer's prefill, in units of batch x prompt x hidden
LOGIT_BYTES = 4  # logits are float32 whatever the weights' dtype
ACTIVATION_BYTES = 4
TOKEN_ID_BYTES = 16  # an int64 id and an int64 attention-mask entry per token
GIB = 1 << 30


def estimate_bytes(weights_bytes: Optional[int], kv_bytes_per_token: Optional[int], dims: Optional[ModelDims],
                   batch_size: int, prompt_tokens: int, new_tokens: int) -> int:
    """The formula in the module docstring; unknown terms (a backend that does not say, a config
    without the sizes) count as zero, which keeps the estimate a lower bound."""
    tokens = batch_size * (prompt_tokens + new_tokens)
    need = (weights_bytes or 0) + tokens * (kv_bytes_per_token or 0) + tokens * TOKEN_ID_BYTES
    if dims is not None:
        need += batch_size * prompt_tokens * dims.hidden_size * ACTIVATION_BYTES * ACTIVATION_FACTOR
        need += batch_size * dims.vocab_size * LOGIT_BYTES
    return need


def _cgroup_limit_bytes() -> Optional[int]:
    """The memory limit of this process's cgroup (a container's), where one is set (Linux)."""
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):  # cgroup v1 writes a huge number for "no limit"
            return int(text)
    return None


def device_memory_bytes(device: str) -> Optional[int]:
    """Total memory of ``device`` ('cpu', 'cuda', 'cuda:N'): the host's RAM (or its cgroup limit, if
    lower) or the GPU's memory (``torch.cuda.mem_get_info``); None where it cannot be read."""
    kind = device.partition(":")[0]
    if kind == "cpu":
        import psutil

        total = int(psutil.virtual_memory().total)
        limit = _cgroup_limit_bytes()
        return min(total, limit) if limit else total
    if kind == "cuda":
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            return int(torch.cuda.mem_get_info(torch.device(device))[1])
        except (ImportError, RuntimeError, ValueError):
            return None
    return None


def fit_error(need_bytes: int, device: str, have_bytes: Optional[int] = None) -> Optional[str]:
    """The record's ``error`` when ``need_bytes`` exceed the device's memory, else None."""
    have = device_memory_bytes(device) if have_bytes is None else have_bytes
    if have is None or need_bytes <= have:
        return None
    return (f"does not fit: needs {need_bytes / GIB:.1f} GiB, the device has {have / GIB:.1f} GiB; "
            f"use a smaller batch size or fewer tokens")
