"""What a plan is asked for: the demand (output tokens/s, or requests/s of given lengths) and the
request around it (latency limits, hardware, prices, hours, grid, quality and headroom limits)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Optional

from effbench.analysis.carbon import WORLD_AVERAGE_G_PER_KWH as WORLD_GRID_G_PER_KWH
from effbench.analysis.carbon import WORLD_AVERAGE_SOURCE as WORLD_GRID_SOURCE
from effbench.errors import EffbenchError

if TYPE_CHECKING:  # pragma: no cover - the catalog loads when a plan is computed
    from effbench.hardware import PriceOverride

HOURS_PER_MONTH = 730.0
DEFAULT_MAX_UTILISATION = 0.8
DEFAULT_MAX_PPL_RISE = 0.10  # 10%


@dataclass(frozen=True)
class Demand:
    tokens_per_s: Optional[float] = None
    requests_per_s: Optional[float] = None
    prompt_tokens: Optional[int] = None
    output_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.tokens_per_s is None) == (self.requests_per_s is None):
            raise EffbenchError("give exactly one target: --target-tokens-per-s N, or --target-requests-per-s R with "
                                "--prompt-tokens P --output-tokens O")
        for flag, v in (("--target-tokens-per-s", self.tokens_per_s), ("--target-requests-per-s", self.requests_per_s),
                        ("--prompt-tokens", self.prompt_tokens), ("--output-tokens", self.output_tokens)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise EffbenchError(f"{flag} must be a positive number (got {v})")
        if self.requests_per_s is not None and (self.prompt_tokens is None or self.output_tokens is None):
            raise EffbenchError("--target-requests-per-s needs --prompt-tokens P and --output-tokens O (the request's lengths)")

    @property
    def output_tokens_per_s(self) -> float:
        return self.tokens_per_s if self.tokens_per_s is not None else self.requests_per_s * self.output_tokens  # type: ignore[operator]

    def label(self) -> str:
        if self.tokens_per_s is not None:
            return f"{self.tokens_per_s:,g} output tokens/s"
        return (f"{self.requests_per_s:,g} requests/s x {self.output_tokens} output tokens "
                f"({self.output_tokens_per_s:,g} tokens/s), prompts of {self.prompt_tokens} tokens")


@dataclass
class PlanRequest:
    demand: Demand
    max_ttft_ms: Optional[float] = None
    max_tpot_ms: Optional[float] = None
    hardware: Optional[list[str]] = None  # profile ids to consider; None = all
    prices: dict[str, PriceOverride] = field(default_factory=dict)
    hours_per_month: float = HOURS_PER_MONTH
    grid_g_per_kwh: float = WORLD_GRID_G_PER_KWH
    grid_source: str = WORLD_GRID_SOURCE
    model: Optional[str] = None
    projections: bool = True
    project_from_cpu: bool = False
    max_ppl_rise: Optional[float] = DEFAULT_MAX_PPL_RISE  # relative; None = no quality filter
    show_flagged: bool = False  # keep quality-flagged schemes, marked, instead of excluding them
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    redundancy: int = 0  # k spare replicas (N+k)
    workload: Optional[str] = None  # a reference task for reference/projected options (tokens form)
    today: Optional[date] = None  # for price staleness (tests pin it)

    def __post_init__(self) -> None:
        if not (0 < self.max_utilisation <= 1):
            raise EffbenchError(f"--max-utilisation must be in (0, 1] (got {self.max_utilisation:g}); "
                                "0.8 leaves 20% queueing headroom")
        if self.redundancy < 0:
            raise EffbenchError(f"--redundancy must be N+k with k >= 0 (got {self.redundancy})")
        if self.max_ppl_rise is not None and not (self.max_ppl_rise >= 0 and math.isfinite(self.max_ppl_rise)):
            raise EffbenchError(f"--max-ppl-rise must be a percentage >= 0 (got {self.max_ppl_rise * 100:g})")
        for flag, v in (("--max-ttft-ms", self.max_ttft_ms), ("--max-tpot-ms", self.max_tpot_ms),
                        ("--hours-per-month", self.hours_per_month)):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise EffbenchError(f"{flag} must be a positive number (got {v})")
        if self.hours_per_month > 744:
            raise EffbenchError(f"--hours-per-month is at most 744 (31 days x 24 h); got {self.hours_per_month:g}")
        if not (self.grid_g_per_kwh >= 0 and math.isfinite(self.grid_g_per_kwh)):
            raise EffbenchError(f"--grid-intensity must be >= 0 gCO2/kWh (got {self.grid_g_per_kwh})")


def parse_redundancy(text: Optional[str]) -> int:
    """``N+k`` (k spare replicas beyond what the load needs), or ``N``; an error names the form."""
    if text is None:
        return 0
    m = re.fullmatch(r"\s*[Nn]\s*(?:\+\s*(\d+))?\s*", text)
    if not m:
        raise EffbenchError(f"--redundancy '{text}' is not N+k (e.g. N+1: one spare replica)")
    return int(m.group(1) or 0)
