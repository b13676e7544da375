"""What a user sees on mistyped input: one line on stderr naming the problem, non-zero exit, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import assert_one_line_error
from conftest import run_effbench as effbench


@pytest.mark.parametrize("args, needles", [
    (["run", "--model", "/no/such/model"], ["/no/such/model", "not found"]),
    (["run", "--model", "./missing.gguf"], ["./missing.gguf"]),
    (["run", "--quant", "int3-magic"], ["unknown quantization scheme 'int3-magic'", "--quant"]),
    (["run", "--batch-sizes", "0"], ["--batch-sizes", "0 is not a positive integer"]),
    (["run", "--batch-sizes", "1,x"], ["--batch-sizes"]),
    (["run", "--new-tokens", "-3"], ["--new-tokens"]),
    (["run", "--repeats", "lots"], ["--repeats"]),
    (["run", "--sensor", "wattmeter"], ["unknown sensor 'wattmeter'"]),
    (["run", "--backend", "tensorflow"], ["unknown backend 'tensorflow'"]),
    (["run", "--device", "tpu"], ["unknown device 'tpu'"]),
    (["run", "--prompts", "klingon"], ["prompt set 'klingon' not found"]),
    (["run", "--bogus-option"], ["No such option"]),
    (["frobnicate"], ["No such command"]),
])
def test_bad_run_input_gives_one_line(args, needles):
    assert_one_line_error(effbench(*args), *needles)


def test_cuda_device_without_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert_one_line_error(effbench("run", "--device", "cuda"), "no CUDA GPU", "--device cpu")


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("batch_sizes: [1, 4\n", "not valid YAML"),
    ("batch_size: 4\n", "unknown key 'batch_size'"),
    ("batch_sizes: [0]\n", "key 'batch_sizes'"),
    ("quant: 7\n", "key 'quant'"),
])
def test_bad_sweep_files_give_one_line(tmp_path, text, needle):
    p = tmp_path / "sweep.yaml"
    p.write_text(text)
    assert_one_line_error(effbench("run", str(p)), needle)


def test_missing_sweep_file():
    assert_one_line_error(effbench("run", "no-such-sweep.yaml"), "does not exist")


def test_existing_out_dir_without_resume(tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    assert_one_line_error(effbench("run", "--out", str(tmp_path), "--model", str(tmp_path)), "config.json")


@pytest.mark.parametrize("verb", [[], ["run"], ["sensors"]])
def test_help_is_complete(verb):
    p = effbench(*verb, "--help")
    assert p.returncode == 0
    assert "Usage" in p.stdout
    if verb == ["run"]:
        for opt in ("--model", "--backend", "--device", "--quant", "--batch-sizes", "--prompt-tokens",
                    "--new-tokens", "--prompts", "--repeats", "--sensor", "--hardware", "--out", "--resume"):
            assert opt in p.stdout, opt


def test_version():
    p = effbench("--version")
    assert p.returncode == 0 and p.stdout.startswith("effbench ")


def test_unreachable_hub_id_fails_fast_with_one_line(tmp_path):
    import os

    env = dict(os.environ, HF_ENDPOINT="https://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    p = subprocess.run([sys.executable, "-m", "effbench", "run", "--model", "some-org/some-model"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert_one_line_error(p, "some-org/some-model", "not reachable")


def test_run_says_how_far_short_of_the_target_a_noisy_configuration_ended(tmp_path, stand_in, model_dir):
    """Repeats that spread too much for the target within the caps: the table's note says so and one
    line says how many repeats (and how long) the target would take at that spread."""
    from conftest import FAST, FakeBackend, Timing, tiny_config

    import effbench
    from effbench.cli.run import summary_table, target_hint
    from effbench.stats import repeats_for_target

    stand_in(lambda: FakeBackend(timing=FAST, jitter=[1.0, 1.6, 0.7, 1.5] * 20))
    run = effbench.run(tiny_config(model_dir, tmp_path / "out", repeats=None, min_repeats=3, max_repeats=4, ci_target=0.01))
    s = run.records[0].stats
    assert s.stop_reason == "max-repeats" and s.short_of_target and s.spread_cv > 0.2
    hint = target_hint(run.records)
    assert hint.startswith("2 configuration(s) stopped before the ±1% target; their repeats spread ")
    needed = sorted(repeats_for_target(r.stats.repeats, r.stats.ci95_rel, 0.01) for r in run.records)
    assert f"about {needed[0]}" in hint and "--max-repeats" in hint and "--max-time-s" in hint
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(summary_table(run.records, "t"))
    assert "short of ±1% (max-repeats)" in console.export_text()
    # a run that reaches its target has nothing to say (calls long enough that a busy machine's
    # sleep jitter, a few ms, stays far inside the loose target)
    steady = Timing(prefill_base=0.02, prefill_per_token=0.0, step_base=0.01, step_per_seq=0.0)
    stand_in(lambda: FakeBackend(timing=steady))
    run = effbench.run(tiny_config(model_dir, tmp_path / "ok", repeats=None, min_repeats=3, max_repeats=4, ci_target=0.9))
    assert target_hint(run.records) is None


def test_hostile_strings_in_an_error_are_shown_escaped_not_obeyed():
    """A model name carrying a terminal escape sequence, a carriage return and a zero-width mark comes
    back escaped on the one error line; other scripts (Korean) come back as they are."""
    line = assert_one_line_error(effbench("project", "--model", "arch:\x1b[31mevil\r\u200bx", "--hardware", "h100-sxm",
                                          "--concurrency", "8", "--workload", "gpqa"), "unknown architecture")
    assert "\x1b" not in line and "\u200b" not in line and "\r" not in line
    assert "\\x1b[31mevil" in line and "\\u200bx" in line
    korean = assert_one_line_error(effbench("project", "--model", "arch:한국어-모델", "--hardware", "h100-sxm",
                                            "--concurrency", "8", "--workload", "gpqa"), "unknown architecture")
    assert "한국어-모델" in korean


def test_command_list_shows_each_verb_summary_as_one_reflowed_paragraph() -> None:
    from effbench.cli import build_app

    app = build_app()
    infos = list(app.registered_commands) + [g.typer_instance.info for g in app.registered_groups if g.typer_instance]
    assert len(infos) >= 10
    for info in infos:
        assert info.short_help and "\n" not in info.short_help and "  " not in info.short_help, info.short_help


@pytest.mark.parametrize("args, needle", [
    (["wrap", "--idle-s", "nan", "--", "true"], "--idle-s: must be a finite number >= 0"),
    (["wrap", "--segment-s", "inf", "--", "true"], "--segment-s: must be a finite number > 0"),
    (["run", "--idle-s", "inf"], "finite number"),
])
def test_non_finite_numbers_are_refused_in_one_line(args, needle, tmp_path):
    p = effbench(*args, cwd=tmp_path)
    assert p.returncode == 2
    assert_one_line_error(p, needle)
    assert not list(tmp_path.iterdir())  # refused before anything ran or was written


def test_more_threads_than_cpus_is_refused_before_anything_runs(tmp_path):
    from effbench.sweep.checks import threads_error

    assert threads_error(None, 2) is None and threads_error(2, 2) is None
    assert "--threads 3 exceeds the 2 logical CPU(s)" in (threads_error(3, 2) or "")
    p = effbench("run", "--threads", "100000", "--out", str(tmp_path / "run"))  # a BLAS build crashed on it
    assert p.returncode == 2
    assert_one_line_error(p, "--threads 100000 exceeds the")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("url, needle", [("http://[::1", "Invalid IPv6 URL"), ("http://:80", "no host"),
                                         ("http://h:99999", "Port out of range")])
def test_a_malformed_endpoint_is_one_line(url, needle, tmp_path):
    p = effbench("run", "--scenario", "serving", "--endpoint", url, "--rates", "1", "--out", str(tmp_path / "run"))
    assert p.returncode == 2
    assert_one_line_error(p, "is not an http(s) URL", needle)
