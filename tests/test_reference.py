"""The shipped reference data (ML.ENERGY Leaderboard v3): the importer, the extract, records of basis
'reference' and `effbench reference list / show`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from conftest import run_effbench as effbench

from effbench.errors import EffbenchError
from effbench.reference import CITATION, find, points, records_for, to_record, workload
from effbench.reference.mlenergy import extract
from effbench.results.schema import Record

CONFIG = {"gpu_model": "H100", "num_gpus": 2, "max_num_seqs": 64,
          "parallelization": {"tensor_parallel": 2, "data_parallel": 1, "expert_parallel": 1},
          "avg_batch_size": 63.5, "output_throughput_tokens_per_sec": 5000.0, "avg_power_watts": 1000.0,
          "energy_per_token_joules": 0.2, "energy_per_request_joules": 80.0, "avg_output_len": 400.0,
          "median_itl_ms": 12.0, "p90_itl_ms": 15.0, "p95_itl_ms": 17.0, "p99_itl_ms": 25.0,
          "output_length_distribution": {"bins": [0, 1], "counts": [1]}}


def _leaderboard(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "Qwen__Qwen3-32B__lm-arena-chat.json").write_text(json.dumps({
        "model_id": "Qwen/Qwen3-32B", "task": "lm-arena-chat", "total_params_billions": 32.0, "activated_params_billions": 32.0,
        "weight_precision": "bfloat16", "configurations": [CONFIG]}))
    (models / "x__img__text-to-image.json").write_text(json.dumps({"model_id": "x/img", "task": "text-to-image",
                                                                   "configurations": [{}]}))
    return tmp_path


def test_importer_keeps_llm_tasks_and_every_figure(tmp_path: Path) -> None:
    data = extract(_leaderboard(tmp_path))
    (p,) = data["points"]  # the image task is left out
    assert p["arch"] == "qwen3-32b" and p["profile"] == "h100-sxm" and p["tensor_parallel"] == 2 and p["num_gpus"] == 2
    assert (p["output_tokens_per_s"], p["power_w"], p["joules_per_token"]) == (5000.0, 1000.0, 0.2)
    assert p["itl_ms"] == {"p50": 12.0, "p90": 15.0, "p95": 17.0, "p99": 25.0}
    assert "output_length_distribution" not in p and data["citation"] == CITATION


def test_importer_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(EffbenchError, match="no LLM configurations"):
        extract(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a__b__gpqa.json").write_text("{not json")
    with pytest.raises(EffbenchError, match="not readable JSON"):
        extract(tmp_path)
    (tmp_path / "models" / "a__b__gpqa.json").write_text(json.dumps({"model_id": "a/b", "task": "gpqa",
                                                                     "weight_precision": "bfloat16",
                                                                      "total_params_billions": 1,
                                                                     "configurations": [{"gpu_model": "H100"}]}))
    with pytest.raises(EffbenchError, match="lacks"):
        extract(tmp_path)


def test_shipped_extract_matches_the_published_examples() -> None:
    # The dataset README's example: Llama-3.1-8B chat on 1x H100, max_num_seqs 8 and 512.
    p8 = find("llama-3.1-8b-instruct/lm-arena-chat/h100x1/seqs8")
    p512 = find("llama-3.1-8b-instruct/lm-arena-chat/h100x1/seqs512")
    assert (round(p8.joules_per_token, 3), round(p8.output_tokens_per_s), round(p8.power_w)) == (0.455, 1070, 486)
    assert (round(p512.joules_per_token, 3), round(p512.output_tokens_per_s), round(p512.power_w)) == (0.070, 9806, 688)
    assert len(points()) == 482 and {p.task for p in points()} == {"lm-arena-chat", "gpqa", "sourcegraph-fim"}
    assert {p.profile for p in points()} == {"h100-sxm", "b200"}


def test_shipped_data_is_small_and_attributed() -> None:
    from importlib import resources

    data = resources.files("effbench.reference").joinpath("data", "mlenergy-v3.json")
    assert len(data.read_bytes()) < 300_000
    attribution = resources.files("effbench.reference").joinpath("ATTRIBUTION.md").read_text()
    assert "Chung" in attribution and "2505.06371" in attribution and "reference" in attribution


def test_records_are_basis_reference_never_measured() -> None:
    recs = records_for("llama-3.1-8b")
    assert recs and all(r.basis == "reference" and r.energy.status == "reference" for r in recs)
    r = to_record(find("llama-3.1-8b-instruct/lm-arena-chat/h100x1/seqs64"))
    assert "Chung" in r.source and r.hardware.profile == "h100-sxm" and r.hardware.gpus == 1
    assert r.serving.output_tokens_per_s == 5147.15 and r.energy.mean_power_w == 610.3
    assert Record.model_validate_json(r.model_dump_json()) == r  # a valid schema_version 1 record


def test_workloads_are_the_reference_tasks() -> None:
    w = workload("gpqa")
    assert w.output_tokens > 1000 and "assumed" in w.prompt_note  # reasoning: long outputs
    with pytest.raises(EffbenchError, match="lm-arena-chat"):
        workload("chat")


def test_cli_reference_list_and_show() -> None:
    p = effbench("reference", "list", "--model", "arch:qwen3-32b", "--hardware", "h100-sxm", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["basis"] == "reference" and "Chung" in data["citation"]
    assert data["points"]
    assert all(x["arch"] == "qwen3-32b" and x["profile"] == "h100-sxm" and x["basis"] == "reference" for x in data["points"])
    key = data["points"][0]["key"]
    shown = json.loads(effbench("reference", "show", key, "--json").stdout)
    assert shown["key"] == key and shown["basis"] == "reference"
    table = effbench("reference", "list", "--task", "gpqa")
    assert table.returncode == 0 and "gpt-oss" in table.stdout and "published" in table.stdout


def test_cli_reference_errors_are_one_line() -> None:
    assert_one_line_error(effbench("reference", "show", "llama-3.1-8b-instruct/lm-arena-chat/h100x1/seqs9"), "did you mean")
    assert_one_line_error(effbench("reference", "list", "--task", "chat"), "unknown task 'chat'")
