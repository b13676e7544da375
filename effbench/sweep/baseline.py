"""The perplexity baseline of a run, derived from its records (docs/method.md): per (model, backend),
the first record of an unquantized scheme with a finite perplexity, stored or new. Quantized records
get their rise over it and a flag above the threshold; the same whichever launcher measured them."""
from __future__ import annotations

import math
from typing import Any, Iterable

from effbench.errors import EffbenchError
from effbench.quant import get_scheme
from effbench.results.schema import Record

NO_BASELINE_NOTE = "no unquantized scheme in this run to compare perplexity with"


def _unquantized(scheme: Any) -> bool:
    try:
        return isinstance(scheme, str) and get_scheme(scheme).unquantized
    except EffbenchError:  # a scheme this version no longer knows cannot be a baseline
        return False


def _usable(ppl: Any) -> bool:
    return isinstance(ppl, (int, float)) and math.isfinite(ppl) and ppl > 0


class Baselines:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.by_key: dict[tuple[str, str], tuple[str, float]] = {}  # (model, backend) -> (scheme, ppl)

    def add_stored(self, dicts: Iterable[dict[str, Any]]) -> None:
        """Baselines in records already written, in the order they were measured."""
        for d in dicts:
            scheme = (d.get("quantization") or {}).get("scheme")
            ppl = (d.get("quality") or {}).get("perplexity")
            key = ((d.get("model") or {}).get("id"), (d.get("backend") or {}).get("name"))
            if _unquantized(scheme) and _usable(ppl) and all(isinstance(k, str) for k in key):
                self.by_key.setdefault(key, (scheme, float(ppl)))  # type: ignore[arg-type]

    def apply(self, record: Record) -> Record:
        """``record`` with its quality compared to the baseline (an unquantized record becomes one)."""
        q = record.quality
        ppl = q.perplexity if q is not None else None
        if q is None or ppl is None or not _usable(ppl):
            return record
        key = (record.model.id, record.backend.name)
        if _unquantized(record.quantization.scheme):
            self.by_key.setdefault(key, (record.quantization.scheme, float(ppl)))
            return record
        if key not in self.by_key:
            return record.model_copy(update={"quality": q.model_copy(update={"note": q.note or NO_BASELINE_NOTE})})
        scheme, base = self.by_key[key]
        rise = ppl / base - 1
        return record.model_copy(update={"quality": q.model_copy(update={
            "baseline_scheme": scheme, "perplexity_rise": rise, "flagged": rise > self.threshold})})
