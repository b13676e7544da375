"""Checks of a sweep that need no model, run by ``Sweep()`` before anything is loaded, written or
printed, so an impossible sweep is one line in milliseconds, not a progress bar, a model load and a
table of error records.

- Options that contradict each other (``contradictions``).
- More ``--threads`` than this machine's CPUs, for a launcher that runs here (``threads_error``).
- Memory fit from the config alone (``nothing_fits``): the lower bound of ``measure/fit.py`` without
  the loaded weights and KV cache (token ids, one layer's prefill activations, the logits, from the
  model's config where it is at hand). When no configuration of the sweep can fit on its device, the
  sweep is refused; when some can, the others stay error records written by the worker (as before),
  so the sweep measures what it can.
"""
from __future__ import annotations

from typing import Optional

from effbench.config import SweepConfig
from effbench.measure.fit import device_memory_bytes, estimate_bytes, fit_error
from effbench.models import ModelSpec
from effbench.models.kv import ModelDims
from effbench.models.resolve import model_dims
from effbench.sweep.plan import GroupSpec


def contradictions(config: SweepConfig) -> Optional[str]:
    """The first pair of options that cannot both hold, as a one-line message; None when none."""
    if config.resume and not config.out:
        return "--resume continues the run in --out: give --out RUN_DIR"
    return None


def threads_error(threads: Optional[int], cpus: int) -> Optional[str]:
    """Why ``--threads`` cannot run on ``cpus`` logical CPUs, else None: more threads than CPUs measure
    their contention, not the backend (and some BLAS builds crash on absurd counts)."""
    if threads is None or threads <= cpus:
        return None
    return (f"--threads {threads} exceeds the {cpus} logical CPU(s) this process may use; oversubscribed threads "
            f"measure their contention, not the backend: give --threads {cpus} or fewer (or leave it out)")


def context_error(dims: Optional[ModelDims], model_id: str, prompt_tokens: int, new_tokens: int) -> Optional[str]:
    """Why ``prompt_tokens + new_tokens`` cannot run on the model (beyond its maximum context), else None."""
    limit = dims.max_context if dims else None
    if limit is None or prompt_tokens + new_tokens <= limit:
        return None
    return (f"{prompt_tokens} prompt + {new_tokens} new tokens exceed {model_id}'s context of {limit} tokens; "
            "lower --prompt-tokens or --new-tokens")


def nothing_fits(groups: list[GroupSpec], specs: dict[str, ModelSpec], memory: bool = True) -> Optional[str]:
    """Why no configuration of ``groups`` can run (one line): each is beyond its model's context or
    does not fit on its device; None when at least one might (or a device's memory cannot be read here).
    ``memory=False`` (a server holds the model, not this process): the context rule only."""
    dims = {spec.id: model_dims(spec) for spec in specs.values()}
    have: dict[str, Optional[int]] = {}
    first: Optional[str] = None
    total = 0
    for g in groups:
        if g.device not in have:
            have[g.device] = device_memory_bytes(g.device) if g.device != "auto" and memory else None
        for p in g.points:
            total += 1
            too_long = context_error(dims.get(g.spec.id), g.spec.id, p.prompt_tokens, p.new_tokens)
            if too_long:
                first = first or too_long
                continue
            need = estimate_bytes(None, None, dims.get(g.spec.id), p.batch_size, p.prompt_tokens, p.new_tokens)
            why = fit_error(need, g.device, have[g.device]) if have[g.device] is not None else None
            if why is None:
                return None
            first = first or (f"batch size {p.batch_size} with {p.prompt_tokens} prompt + {p.new_tokens} new tokens "
                              f"({g.spec.id} on {g.device}) {why}")
    if first is None:
        return None
    return first if total == 1 else f"none of the {total} configurations fits; e.g. {first}"
