"""Sizing: measured (or projected) records -> a ranked list of hardware x scheme x batch options
with replicas, cost, energy and CO2e for a target load (``effbench plan``).

One module per job:
- ``demand``: the target (D output tokens/s: the target tokens/s, or R requests/s x O output tokens)
  and the request around it (limits, hardware, prices, hours, grid, headroom, spares);
- ``quality``: the perplexity rise of each scheme, and the ``--max-ppl-rise`` filter;
- ``option``: one option from one record: a replica's capacity, latency, power and memory under the demand;
- ``economics``: replicas, cost, energy and CO2e of an option (its docstring gives the arithmetic);
- ``candidates``: where options come from: measured records, the same carried by the roofline to
  profiles nobody measured (effbench.analysis.transfer), and for a shipped architecture (``arch:NAME``)
  the published reference data or the fitted GPU projection (effbench.analysis.projection);
- ``rank``: the plan: a serving replica at its best load, the options ranked, stale prices named.
Every projection formula lives in effbench.analysis; this package only sizes with them. The names below
are today's public names of ``effbench.planner``, except the function ``economics`` (it would hide the
submodule of that name: ``effbench.planner.economics.economics``).
"""
from __future__ import annotations

from effbench.analysis.transfer import CPU_TO_GPU_BAND, scheme_runs_on_device
from effbench.analysis.transfer import project_record as project
from effbench.models.arch import RANDOM_WEIGHTS_NOTE
from effbench.planner.candidates import (
    CONCURRENCY_CANDIDATES,
    DEFAULT_WORKLOAD,
    arch_name,
    arch_options,
    known_arch,
    load_records,
    load_runs,
)
from effbench.planner.demand import (
    DEFAULT_MAX_PPL_RISE,
    DEFAULT_MAX_UTILISATION,
    HOURS_PER_MONTH,
    Demand,
    PlanRequest,
    parse_redundancy,
)
from effbench.planner.economics import PRICE_STALE_DAYS, Economics, grid_intensity, price_age_days, price_fields
from effbench.planner.option import (
    PlanOption,
    build_option,
    capacity_tokens_per_s,
    context_memory_bytes,
    peak_memory_bytes,
    power_w,
    serving_load,
    tpot_ms,
    ttft_ms,
)
from effbench.planner.quality import quality_flag, scheme_rises
from effbench.planner.rank import RUN_HARDWARE_OPTION, Plan, plan

__all__ = [
    "CONCURRENCY_CANDIDATES", "CPU_TO_GPU_BAND", "DEFAULT_MAX_PPL_RISE", "DEFAULT_MAX_UTILISATION", "DEFAULT_WORKLOAD",
    "HOURS_PER_MONTH", "PRICE_STALE_DAYS", "RANDOM_WEIGHTS_NOTE", "RUN_HARDWARE_OPTION", "Demand", "Economics", "Plan",
    "PlanOption", "PlanRequest", "arch_name", "arch_options", "build_option", "capacity_tokens_per_s", "context_memory_bytes",
    "grid_intensity", "known_arch", "load_records", "load_runs", "parse_redundancy", "peak_memory_bytes", "plan",
    "power_w", "price_age_days", "price_fields", "project", "quality_flag", "scheme_rises", "scheme_runs_on_device",
    "serving_load", "tpot_ms", "ttft_ms",
]
