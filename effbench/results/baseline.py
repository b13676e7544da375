"""The perplexity baseline (docs/method.md), the one rule the sweep, the report and the planner use:
per (model, backend), the first record of an unquantized scheme with a finite, positive perplexity,
in the order the records were written (a run's results.jsonl; several runs in the order given).
A quantized record's rise is its perplexity over that baseline's, minus one, flagged above the
threshold; the same whichever launcher measured it."""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from effbench.errors import EffbenchError
from effbench.results.schema import Record

NO_BASELINE_NOTE = "no unquantized scheme in this run to compare perplexity with"
DEFAULT_PPL_THRESHOLD = 0.10  # the sweep config's ppl_threshold default, for runs that stored none


def unquantized(scheme: object) -> bool:
    """Whether ``scheme`` names an unquantized scheme (one that can be a baseline)."""
    from effbench.quant import get_scheme

    try:
        return isinstance(scheme, str) and get_scheme(scheme).unquantized
    except EffbenchError:  # a scheme this version no longer knows cannot be a baseline
        return False


def usable(ppl: object) -> bool:
    """Whether ``ppl`` is a perplexity a rise can be computed from (finite and positive)."""
    return isinstance(ppl, (int, float)) and math.isfinite(ppl) and ppl > 0


class Baselines:
    """The baseline of each (model, backend), fed with records in the order they were written."""

    def __init__(self, threshold: float = DEFAULT_PPL_THRESHOLD) -> None:
        self.threshold = threshold
        self.by_key: dict[tuple[str, str], tuple[str, float]] = {}  # (model, backend) -> (scheme, ppl)

    def offer(self, model: object, backend: object, scheme: object, ppl: object) -> None:
        """One record's figures: it becomes the baseline of its model and backend if it is the first that can."""
        if (isinstance(scheme, str) and unquantized(scheme) and isinstance(ppl, (int, float)) and usable(ppl)
                and isinstance(model, str) and isinstance(backend, str)):
            self.by_key.setdefault((model, backend), (scheme, float(ppl)))

    def add(self, records: Iterable[Record]) -> Baselines:
        """Baselines among ``records`` (failed ones excluded), in their order; returns itself."""
        for r in records:
            if not r.error:
                self.offer(r.model.id, r.backend.name, r.quantization.scheme, r.quality.perplexity)
        return self

    def add_stored(self, dicts: Iterable[dict[str, Any]]) -> None:
        """Baselines in records already written (as read, not yet validated), in the order they were measured."""
        for d in dicts:
            self.offer((d.get("model") or {}).get("id"), (d.get("backend") or {}).get("name"),
                       (d.get("quantization") or {}).get("scheme"), (d.get("quality") or {}).get("perplexity"))

    def rise(self, record: Record) -> Optional[float]:
        """The record's perplexity rise: the one it stored, else over its baseline here, else None."""
        q = record.quality
        if q.perplexity_rise is not None:
            return q.perplexity_rise
        base, ppl = self.by_key.get((record.model.id, record.backend.name)), q.perplexity
        return ppl / base[1] - 1 if base is not None and ppl is not None and usable(ppl) else None

    def apply(self, record: Record) -> Record:
        """``record`` with its quality compared to the baseline (an unquantized record becomes one)."""
        q = record.quality
        ppl = q.perplexity
        if ppl is None or not usable(ppl):
            return record
        key = (record.model.id, record.backend.name)
        if unquantized(record.quantization.scheme):
            self.by_key.setdefault(key, (record.quantization.scheme, float(ppl)))
            return record
        if key not in self.by_key:
            return record.model_copy(update={"quality": q.model_copy(update={"note": q.note or NO_BASELINE_NOTE})})
        scheme, base = self.by_key[key]
        rise = ppl / base - 1
        return record.model_copy(update={"quality": q.model_copy(update={
            "baseline_scheme": scheme, "perplexity_rise": rise, "flagged": rise > self.threshold})})

    def completed(self, records: Iterable[Record]) -> list[Record]:
        """``records`` with perplexity compared where a record lacks the comparison (a ``--resume``
        session that had no baseline in memory wrote it unflagged); failed records as they are."""
        return [self.apply(r) if r.quality.baseline_scheme is None and not r.error else r for r in records]
