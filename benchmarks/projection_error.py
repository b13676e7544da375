"""Leave-one-model-out error of the GPU projection model on the shipped reference data.

Each architecture of the ML.ENERGY Leaderboard v3 extract that effbench ships a config for is left
out in turn; the model is fitted to the others and predicts every published point of the one left
out (output tokens/s and J/token, at the point's mean running batch). The errors |predicted /
published - 1| are summarised (median, 90th and 95th percentiles), overall, per reference GPU and per
model. The same run writes the fit effbench ships (``effbench/analysis/projection_fit.json``), whose
band is the 95th percentile above. Deterministic: no timing, no randomness; runs in seconds anywhere.

    python -m benchmarks.projection_error            # writes both files
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, write_json

OUT = RESULTS / "reference" / "projection_error.json"
FIT = Path(__file__).resolve().parents[1] / "effbench" / "analysis" / "projection_fit.json"


def run() -> dict[str, Any]:
    from effbench.analysis.projection import coefficients_dict, fit_reference
    from effbench.reference import CITATION, SOURCE

    model = fit_reference()
    FIT.write_text(json.dumps(model.to_dict(), indent=1) + "\n")
    e = model.errors
    return {"suite": "projection_error", "source": SOURCE, "citation": CITATION,
            "method": "leave-one-model-out: fit on all other architectures, predict every point of the one left out",
            "points": e.points, "models": e.models, "tokens_per_s": e.tokens_per_s, "joules_per_token": e.joules_per_token,
            "per_device": e.per_device, "per_model": e.per_model, "coefficients": coefficients_dict(model.coefficients)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    data = run()
    path = write_json(OUT, data)
    t, j = data["tokens_per_s"], data["joules_per_token"]
    print(f"{path}: {data['points']} points, {len(data['models'])} models; tokens/s median {t['median']:.0%}, p90 {t['p90']:.0%}; "
          f"J/token median {j['median']:.0%}, p90 {j['p90']:.0%}")


if __name__ == "__main__":
    main()
