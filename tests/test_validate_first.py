"""Validate before loading (issue 24): every check that needs no model (sizes, memory fit from the
config, options that contradict each other) is one line on stderr before anything is loaded, written
or printed: no progress line, no table, no run directory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_effbench, tiny_config

from effbench.errors import EffbenchError
from effbench.sweep import Sweep, run_sweep

HUGE = 10**12


@pytest.fixture
def sized_model(tmp_path: Path) -> Path:
    """A checkpoint directory whose config gives the sizes the memory check uses (nothing to load)."""
    d = tmp_path / "sized-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "vocab_size": 100}))
    return d


def _refused(tmp_path: Path, *args: str, needles: tuple[str, ...]) -> str:
    out = tmp_path / "run"
    p = run_effbench("run", "--out", str(out), "--sensor", "none", "--idle-s", "0", *args)
    line = assert_one_line_error(p, *needles)
    assert p.stdout == "" and not out.exists(), p.stdout
    return line


@pytest.mark.parametrize("args, needles", [
    (("--batch-sizes", str(HUGE)), (f"batch size {HUGE} with 64 prompt + 32 new tokens", "does not fit: needs")),
    (("--prompt-tokens", str(10**9), "--batch-sizes", "1"), ("1000000000 prompt", "does not fit: needs")),
    (("--batch-sizes", f"{HUGE},{2 * HUGE}"), ("none of the 2 configurations fits; e.g. batch size", "does not fit")),
], ids=["huge-batch", "huge-prompt", "all-huge"])
def test_a_sweep_where_nothing_fits_is_one_line_before_loading(tmp_path, sized_model, args, needles):
    _refused(tmp_path, "--model", str(sized_model), *args, needles=needles)


@pytest.mark.parametrize("args, needles", [
    (("--new-tokens", "0"), ("--new-tokens", "0 is not a positive integer")),
    (("--new-tokens=-3",), ("--new-tokens", "-3 is not a positive integer")),
    (("--batch-sizes", "0"), ("--batch-sizes", "not a positive integer")),
    (("--prompt-tokens=-1",), ("--prompt-tokens", "not a positive integer")),
    (("--repeats", "0"), ("--repeats",)),
    (("--min-repeats", "9", "--max-repeats", "3"), ("min_repeats (9) is larger than max_repeats (3)",)),
], ids=["new-0", "new-negative", "batch-0", "prompt-negative", "repeats-0", "repeat-bounds"])
def test_bad_sizes_are_one_line_before_loading(tmp_path, sized_model, args, needles):
    _refused(tmp_path, "--model", str(sized_model), *args, needles=needles)


def test_resume_without_out_is_one_line(sized_model):
    p = run_effbench("run", "--model", str(sized_model), "--resume", "--sensor", "none")
    assert_one_line_error(p, "--resume continues the run in --out")
    assert p.stdout == ""


def test_nothing_fits_is_refused_by_sweep_construction(tmp_path, model_dir):
    refusal = f"^batch size {HUGE} with 8 prompt \\+ 4 new tokens \\(tiny-model on cpu\\) does not fit"
    with pytest.raises(EffbenchError, match=refusal):
        Sweep(tiny_config(model_dir, tmp_path / "run", batch_sizes=[HUGE]))
    assert not (tmp_path / "run").exists()


def test_a_sweep_where_some_fit_measures_them_and_records_the_rest(tmp_path, model_dir):
    run = run_sweep(tiny_config(model_dir, tmp_path / "run", batch_sizes=[1, HUGE]))
    errors = {r.workload.batch_size: r.error for r in run.records}
    assert errors[1] is None and errors[HUGE].startswith("does not fit")


def test_a_length_beyond_the_model_context_is_one_line_before_loading(tmp_path):
    d = tmp_path / "short-context"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "vocab_size": 100,
                                               "max_position_embeddings": 128}))
    _refused(tmp_path, "--model", str(d), "--prompt-tokens", "120", "--new-tokens", "16", "--batch-sizes", "1",
             needles=("120 prompt + 16 new tokens exceed", "context of 128 tokens", "--prompt-tokens"))


@pytest.mark.parametrize("args, needle", [
    (("--rates", "1,2"), "option --rates applies to --scenario serving only"),
    (("--scenario", "serving", "--endpoint", "http://127.0.0.1:9", "--ci-target", "0.1"),
     "option --ci-target applies to --scenario offline only"),
], ids=["serving-option-offline", "offline-option-serving"])
def test_an_option_the_scenario_ignores_is_one_line(tmp_path, sized_model, args, needle):
    _refused(tmp_path, "--model", str(sized_model), *args, needles=(needle,))
