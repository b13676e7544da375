"""The ML.ENERGY Leaderboard v3 LLM data (published GPU measurements) as effbench reference points.

``extract`` is the importer: the leaderboard's ``public/data`` folder (one JSON per model and task)
-> the compact extract shipped in ``data/mlenergy-v3.json`` (per configuration the figures the
planner and the projection use; the output-length histograms are left out). ``points`` reads the
shipped extract. Nothing here is effbench's measurement: every point is basis ``reference``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from effbench.errors import EffbenchError

DATA_FILE = "mlenergy-v3.json"
SOURCE_ID = "mlenergy-v3"
CITATION = ('J.-W. Chung et al., "The ML.ENERGY Benchmark: Toward Automated Inference Energy Measurement and '
            'Optimization", NeurIPS Datasets and Benchmarks 2025 (arXiv 2505.06371)')
SOURCE = ("ML.ENERGY Leaderboard v3 public data (github.com/ml-energy/leaderboard, public/data/, commit "
          "0cd52dab897c5d91a45f4d413038f3b8b4251b0f, data last_updated 2026-02-16)")
TASKS = ("lm-arena-chat", "gpqa", "sourcegraph-fim")

# The published model ids whose architecture effbench ships (effbench models): those points can be
# compared with, and fitted by, the projection (every LLM of the v3 leaderboard, shipped extract or not). Fine-tunes and
# re-releases of one base (DeepSeek-V3.1 and R1-0528 of V3; Instruct and Thinking) share its shapes.
ARCH_OF = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "meta-llama/Llama-3.3-70B-Instruct": "llama-3.3-70b",
    "Qwen/Qwen3-14B": "qwen3-14b",
    "google/gemma-3-27b-it": "gemma-3-27b",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct": "llama-4-maverick",
    "meta-llama/Llama-3.1-405B-Instruct": "llama-3.1-405b",
    "meta-llama/Llama-3.1-405B-Instruct-FP8": "llama-3.1-405b",
    "Qwen/Qwen3-8B": "qwen3-8b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "qwen3-30b-a3b",
    "Qwen/Qwen3-30B-A3B-Thinking-2507": "qwen3-30b-a3b",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": "qwen3-30b-a3b",
    "google/gemma-3-12b-it": "gemma-3-12b",
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "Qwen/Qwen3-235B-A22B-Instruct-2507": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Thinking-2507": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8": "qwen3-235b-a22b",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct": "qwen3-coder-480b-a35b",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8": "qwen3-coder-480b-a35b",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-v3",
    "deepseek-ai/DeepSeek-V3.1": "deepseek-v3",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": "llama-4-scout",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8": "llama-4-maverick",
    "nvidia/NVIDIA-Nemotron-Nano-9B-v2": "nemotron-nano-9b-v2",
    "nvidia/NVIDIA-Nemotron-Nano-12B-v2": "nemotron-nano-12b-v2",
}
# The published GPU names -> effbench hardware profile ids.
PROFILE_OF = {"H100": "h100-sxm", "H200": "h200", "B200": "b200"}
# The published weight_precision -> the effbench scheme name of the weights as served.
SCHEME_OF = {"bfloat16": "bf16", "fp8": "fp8", "mxfp4": "mxfp4"}
# fp8 checkpoints whose weights carry a scale per 128 x 128 block (their config.json's
# quantization_config.weight_block_size); the other fp8 checkpoints here (Llama-3.1-405B-Instruct-FP8,
# Llama-4-Maverick-17B-128E-Instruct-FP8) scale per output channel.
FP8_BLOCK_SCALED = {"Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8",
                    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8", "deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-V3.1"}


@dataclass(frozen=True)
class ReferencePoint:
    """One published configuration: a model served by vLLM on ``num_gpus`` GPUs at a concurrency cap."""

    model_id: str  # as published (Hugging Face id)
    arch: Optional[str]  # the effbench architecture name, where effbench ships it
    task: str
    weight_precision: str
    total_params_b: float
    active_params_b: float
    gpu: str  # as published: H100, B200
    profile: Optional[str]  # the effbench hardware profile id
    num_gpus: int
    tensor_parallel: int
    expert_parallel: int
    data_parallel: int
    max_num_seqs: int
    avg_batch_size: float
    output_tokens_per_s: float
    power_w: float  # all GPUs of the configuration
    joules_per_token: float
    joules_per_request: float
    avg_output_len: float
    itl_ms: dict[str, float]  # p50, p90, p95, p99

    @property
    def scheme(self) -> str:
        return SCHEME_OF.get(self.weight_precision, self.weight_precision)

    @property
    def fp8_block_scaled(self) -> bool:
        """fp8 weights with a scale per 128 x 128 block (``FP8_BLOCK_SCALED``), not per channel."""
        return self.model_id in FP8_BLOCK_SCALED

    @property
    def key(self) -> str:
        """A stable id for ``effbench reference show``."""
        short = self.model_id.split("/")[-1].lower()
        return f"{short}/{self.task}/{self.gpu.lower()}x{self.num_gpus}/seqs{self.max_num_seqs}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scheme": self.scheme, "key": self.key, "basis": "reference", "source": SOURCE_ID}


# -- the importer -------------------------------------------------------------------------------
def _point(model: dict[str, Any], c: dict[str, Any]) -> ReferencePoint:
    par = c.get("parallelization") or {}
    return ReferencePoint(
        model_id=model["model_id"], arch=ARCH_OF.get(model["model_id"]), task=model["task"],
        weight_precision=model["weight_precision"], total_params_b=float(model["total_params_billions"]),
        active_params_b=float(model.get("activated_params_billions") or model["total_params_billions"]),
        gpu=c["gpu_model"], profile=PROFILE_OF.get(c["gpu_model"]), num_gpus=int(c["num_gpus"]),
        tensor_parallel=int(par.get("tensor_parallel", 1)), expert_parallel=int(par.get("expert_parallel", 1)),
        data_parallel=int(par.get("data_parallel", 1)), max_num_seqs=int(c["max_num_seqs"]),
        avg_batch_size=round(float(c["avg_batch_size"]), 3),
        output_tokens_per_s=round(float(c["output_throughput_tokens_per_sec"]), 2),
        power_w=round(float(c["avg_power_watts"]), 1), joules_per_token=round(float(c["energy_per_token_joules"]), 5),
        joules_per_request=round(float(c["energy_per_request_joules"]), 2), avg_output_len=round(float(c["avg_output_len"]), 1),
        itl_ms={"p50": round(float(c["median_itl_ms"]), 3), "p90": round(float(c["p90_itl_ms"]), 3),
                "p95": round(float(c["p95_itl_ms"]), 3), "p99": round(float(c["p99_itl_ms"]), 3)},
    )


def extract(src: str | Path) -> dict[str, Any]:
    """The leaderboard data folder (holding ``models/*.json``) -> the shipped extract (LLM tasks only)."""
    folder = Path(src)
    files = sorted((folder / "models").glob("*.json")) if (folder / "models").is_dir() else sorted(folder.glob("*.json"))
    points: list[dict[str, Any]] = []
    for f in files:
        try:
            model = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EffbenchError(f"reference data file '{f}' is not readable JSON ({e})") from None
        if not isinstance(model, dict) or model.get("task") not in TASKS:
            continue
        for c in model.get("configurations") or []:
            try:
                points.append(asdict(_point(model, c)))
            except (KeyError, TypeError, ValueError) as e:
                raise EffbenchError(f"reference data file '{f}': a configuration lacks {e}; is this the leaderboard's "
                                    "public/data?") from None
    if not points:
        raise EffbenchError(f"no LLM configurations found under '{folder}' (expected models/<org>__<model>__<task>.json)")
    return {"source": SOURCE, "citation": CITATION, "tasks": list(TASKS), "points": points}


# -- the shipped extract ------------------------------------------------------------------------
def _read(text: str) -> list[ReferencePoint]:
    return [ReferencePoint(**p) for p in json.loads(text)["points"]]


@lru_cache(maxsize=1)
def points() -> tuple[ReferencePoint, ...]:
    """Every shipped reference point (basis ``reference``)."""
    text = (resources.files("effbench.reference") / "data" / DATA_FILE).read_text(encoding="utf-8")
    return tuple(_read(text))


def find(key: str) -> ReferencePoint:
    """The point with this key (``effbench reference list`` shows them), or a one-line error."""
    for p in points():
        if p.key == key:
            return p
    import difflib

    close = difflib.get_close_matches(key, [p.key for p in points()], n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise EffbenchError(f"no reference point '{key}'; {hint}'effbench reference list' shows the keys")
