"""Replicas, cost, energy and CO2e of serving a demand with replicas of a known capacity; rental
prices and their age; the grid's carbon intensity.

Per option (every figure can be recomputed by hand from these):
- replicas N = ceil(D / (C x u)) + k, D the demand and C one replica's capacity (output tokens/s), u
  ``--max-utilisation`` (queueing headroom; 1 for a measured serving record, whose capacity already
  meets a p95 SLO under load), k the spares of ``--redundancy N+k``; utilisation = D / (active x C);
- $/hour = N x price per hour; $/month = $/hour x hours per month; $ per 1M tokens at the target load =
  $/hour / (D x 3600) x 1e6, at full capacity = price of one replica / (C x 3600) x 1e6;
- kWh/month = N x W x hours / 1000 (every replica at full load: an upper bound); kg CO2e/month =
  kWh/month x grid g/kWh / 1000.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Optional

from effbench.analysis.carbon import grid_intensity as grid_by_region

if TYPE_CHECKING:  # pragma: no cover - the catalog loads when a plan is computed
    from effbench.hardware import HardwareProfile
    from effbench.planner.demand import PlanRequest

PRICE_STALE_DAYS = 180  # a rental price older than this is flagged: GPU prices move by 2x in a year


def price_age_days(price_date: Optional[str], today: Optional[date] = None) -> Optional[int]:
    if not price_date:
        return None
    parts = [int(x) for x in price_date.split("-")] + [1]
    return ((today or date.today()) - date(parts[0], parts[1], parts[2])).days


def grid_intensity(region: Optional[str], explicit: Optional[float]) -> tuple[float, str]:
    """(g CO2e per kWh, source): an explicit figure, else the region's, else the world average (where
    the deployment runs is not where the benchmark ran, so this machine's country is not assumed).
    The figures are effbench.analysis.carbon's, so every effbench output cites the same ones."""
    if explicit is not None:
        return explicit, "command line (--grid-intensity)"
    g, source = grid_by_region(region or "world")
    return float(g), source


@dataclass(frozen=True)
class Economics:
    replicas: int
    active_replicas: int
    utilisation: float
    usd_per_hour: Optional[float]
    usd_per_month: Optional[float]
    usd_per_million_at_target: Optional[float]
    usd_per_million_at_capacity: Optional[float]
    spot_usd_per_month: Optional[float]
    kwh_per_month: Optional[float]
    kg_co2e_per_month: Optional[float]


def economics(capacity: float, price_per_replica: Optional[float], spot_per_replica: Optional[float], watts: Optional[float],
              req: PlanRequest, headroom: bool = True) -> Economics:
    """Replicas, cost and energy of serving the demand with replicas of ``capacity`` output tokens/s
    (the module docstring gives the arithmetic)."""
    d = req.demand.output_tokens_per_s
    u = req.max_utilisation if headroom else 1.0
    active = max(math.ceil(d / (capacity * u) - 1e-9), 1)  # any load needs one replica (the 1e-9: float round-off)
    n = active + req.redundancy
    usd_h = n * price_per_replica if price_per_replica is not None else None
    kwh = n * watts * req.hours_per_month / 1000 if watts is not None else None
    return Economics(
        replicas=n, active_replicas=active, utilisation=d / (active * capacity), usd_per_hour=usd_h,
        usd_per_month=usd_h * req.hours_per_month if usd_h is not None else None,
        usd_per_million_at_target=usd_h / (d * 3600) * 1e6 if usd_h is not None else None,
        usd_per_million_at_capacity=price_per_replica / (capacity * 3600) * 1e6 if price_per_replica is not None else None,
        spot_usd_per_month=n * spot_per_replica * req.hours_per_month if spot_per_replica is not None else None,
        kwh_per_month=kwh, kg_co2e_per_month=kwh * req.grid_g_per_kwh / 1000 if kwh is not None else None)


def price_fields(profile: Optional[HardwareProfile], gpus: int,
                 req: PlanRequest) -> tuple[Optional[float], Optional[float], Optional[str], bool]:
    """(price of one replica, spot price of one replica, price date, stale?)."""
    if profile is None:
        return None, None, None, False
    price = profile.price_per_hour_usd * gpus if profile.price_per_hour_usd is not None else None
    spot = profile.spot_price_per_hour_usd * gpus if profile.spot_price_per_hour_usd is not None else None
    age = price_age_days(profile.price_date, req.today)
    return price, spot, profile.price_date, price is not None and (age is None or age > PRICE_STALE_DAYS)
