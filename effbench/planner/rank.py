"""The plan: the request checked, the candidates gathered, a serving replica kept at its best load,
the options ranked (cheapest first; on equal cost less energy, measured before projected, lower TPOT),
and stale prices named."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from effbench.errors import EffbenchError
from effbench.planner.candidates import arch_name, candidates, known_arch
from effbench.planner.demand import DEFAULT_MAX_UTILISATION, Demand, PlanRequest
from effbench.planner.economics import PRICE_STALE_DAYS
from effbench.planner.option import PlanOption

if TYPE_CHECKING:  # pragma: no cover - the catalog, schema and run store load when a plan is computed
    from effbench.results.run import Run
    from effbench.results.schema import Record

# plan's own option for the profile of a run that stores none (its --hardware filters candidates).
RUN_HARDWARE_OPTION = "--run-hardware ID"


@dataclass
class Plan:
    """A ranked shopping list: the demand it sizes for, the options cheapest first, and what was left out."""

    demand: str  # the demand as the user gave it, in words
    demand_tokens_per_s: float  # ... as output tokens/s
    hours_per_month: float  # billed hours the monthly costs assume
    grid_g_per_kwh: float  # carbon intensity the CO2e figures assume
    grid_source: str
    options: list[PlanOption]
    excluded: list[str] = field(default_factory=list)  # "<candidate>: <why>" for each option left out
    warnings: list[str] = field(default_factory=list)
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    redundancy: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def best_serving_load(options: list[PlanOption], excluded: list[str]) -> tuple[list[PlanOption], list[str]]:
    """A serving replica is one option: the highest measured load that meets the limits (its capacity);
    its lower loads are the same replica, less used."""
    best: dict[tuple, PlanOption] = {}
    for o in options:
        if o.serving_load is None:
            continue
        key = (o.hardware, o.gpus_per_replica, o.basis, o.model, o.backend, o.scheme)
        if key not in best or o.capacity_tokens_per_s > best[key].capacity_tokens_per_s:
            best[key] = o
    keep = [o for o in options
            if o.serving_load is None or best.get((o.hardware, o.gpus_per_replica, o.basis, o.model, o.backend, o.scheme)) is o]
    dropped = [f"{o.model} {o.scheme} {o.serving_load} on {o.hardware}: a higher load of the same replica meets the limits"
               for o in options if o not in keep]
    return keep, excluded + dropped


def rank_key(o: PlanOption) -> tuple:
    # Cheapest first; on equal cost, less energy, measured before projected, then lower TPOT.
    return (o.usd_per_month is None, o.usd_per_month or 0.0, o.kwh_per_month or 0.0, o.basis != "measured",
            o.tpot_ms if o.tpot_ms is not None else math.inf, o.replicas)


def plan(records: Sequence[Record], req: PlanRequest, runs: Sequence[Union[Run, Mapping[str, Any]]] = (),
         run_hardware: Optional[str] = None) -> Plan:
    """``runs``: the runs the records come from (``results.load_run``, or bare run.json contents). Each record's
    hardware is the profile its run stored; a run that stores none is an error unless ``run_hardware``
    names the profile it ran on. Records given without a run are looked up by profile id in the catalog.
    Nothing describes the machine the plan is computed on. With ``req.model`` an architecture
    (``arch:NAME``), records are optional: GPUs nobody measured are sized from the reference data and
    the GPU projection model."""
    from effbench.hardware import get_profile, profiles
    from effbench.results.hardware import Profiles, given_profile
    from effbench.results.run import Run

    given = given_profile(run_hardware, req.prices)
    resolved = Profiles.of_runs((r if isinstance(r, Run) else Run.of(str(r.get("run_id") or "?"), [], r))
                                .reprofiled(given, req.prices) for r in runs).require(RUN_HARDWARE_OPTION)
    catalog = profiles(req.prices)  # read once: the price check and the projection targets both use it
    known_ids = resolved.ids | {p.id for p in catalog}
    wanted = ({h if h in resolved.ids else get_profile(h, req.prices, local=False).id  # unknown ids -> error
               for h in req.hardware} if req.hardware else None)
    unknown_prices = sorted(set(req.prices) - known_ids)
    if unknown_prices:
        raise EffbenchError(f"--price names unknown hardware profile '{unknown_prices[0]}'; "
                            "'effbench hardware list' shows the ids (or the results' own profiles)")
    model_arch = arch_name(req.model)
    if req.model is not None and req.model.lower().startswith("arch:") and model_arch is None:
        import difflib

        from effbench.models.arch import catalog as arch_catalog
        from effbench.models.arch import resolve_arch

        name = req.model[len("arch:"):]
        near = difflib.get_close_matches(name.lower(), sorted(arch_catalog()), n=3, cutoff=0.4)
        if near:  # the nearest shipped names; else the one-line error that lists them all
            raise EffbenchError(f"unknown architecture: architecture '{name}' not found; nearest: {', '.join(near)} "
                                "('effbench models' lists them all)")
        resolve_arch(req.model)
    if req.model is not None:
        records = [r for r in records if r.model.id.lower() == req.model.lower()]
        if not records and model_arch is None:
            raise EffbenchError(f"no records for model '{req.model}' in the results given")
    if not records and model_arch is None:
        raise EffbenchError("no records in the results given")
    archs = sorted({a for a in [model_arch, *(arch_name(r.model.id) for r in records)] if a})
    _check_context(sorted({*archs, *(a for a in (known_arch(r.model.id) for r in records) if a)}), req.demand)
    found = candidates(records, req, resolved, catalog, wanted, archs)
    options, excluded = best_serving_load(found.options, found.excluded)
    options.sort(key=rank_key)
    for i, o in enumerate(options, 1):
        o.rank = i
    warnings = list(found.warnings)
    stale = sorted({f"{o.hardware} ({o.price_date or 'undated'})" for o in options if o.price_stale})
    if stale:
        warnings.append(f"prices older than {PRICE_STALE_DAYS} days or undated: {', '.join(stale)}; "
                        "check them and pass --price ID=USD_PER_HOUR")
    return Plan(req.demand.label(), req.demand.output_tokens_per_s, req.hours_per_month, req.grid_g_per_kwh,
                req.grid_source, options, excluded, warnings, req.max_utilisation, req.redundancy)


def _check_context(archs: Sequence[str], demand: Demand) -> None:
    """Refuse request lengths beyond a model's maximum context (its config's max_position_embeddings)."""
    if demand.prompt_tokens is None or demand.output_tokens is None:
        return
    from effbench.analysis.projection import check_lengths
    from effbench.models.stepshape import of

    for name in archs:
        check_lengths(of(name), demand.prompt_tokens, demand.output_tokens)
