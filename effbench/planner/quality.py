"""The quality filter: a scheme's perplexity rise over the unquantized baseline of the same model and
backend, and whether it fails ``--max-ppl-rise`` (or its sweep flagged it)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover - the schema loads when a plan is computed
    from effbench.planner.demand import PlanRequest
    from effbench.results.schema import Record

Rises = dict[tuple[str, str, str], float]  # (model, backend, scheme) -> relative perplexity rise


def scheme_rises(records: Sequence[Record]) -> Rises:
    """(model, backend, scheme) -> perplexity rise over the unquantized baseline of the same model and
    backend (``results.baseline``: the rule the sweep and the report use), the highest of its records:
    a scheme's quality is one figure, whichever batch size's record carries it (a resumed sweep may
    have written it on some records only)."""
    from effbench.results.baseline import Baselines

    baselines = Baselines().add(records)
    rises: Rises = {}
    for r in records:
        key = (r.model.id, r.backend.name, r.quantization.scheme)
        rise = baselines.rise(r)
        if rise is not None:
            rises[key] = max(rises.get(key, rise), rise)
    return rises


def quality_flag(record: Record, req: PlanRequest, rises: Optional[Rises] = None) -> Optional[str]:
    """Why a record's scheme fails the quality limit (its perplexity rise, or the sweep's flag), else None."""
    q = record.quality
    if req.max_ppl_rise is None:
        return None
    rise = (rises or {}).get((record.model.id, record.backend.name, record.quantization.scheme), q.perplexity_rise)
    if rise is not None and rise > req.max_ppl_rise:
        return (f"perplexity +{rise:.0%} over {q.baseline_scheme or 'the unquantized baseline'} "
                f"> --max-ppl-rise {req.max_ppl_rise:.0%}")
    if q.flagged:
        return "quality flagged by its sweep (perplexity rise above the sweep's threshold)"
    return None
