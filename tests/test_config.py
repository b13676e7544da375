"""Sweep configuration: YAML and CLI options resolve to one model; bad input names the key."""
from __future__ import annotations

import pytest

from effbench.config import SweepConfig, load_config
from effbench.errors import ConfigError


def write(tmp_path, text, name="sweep.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_the_quick_bundled_benchmark():
    c = load_config()
    assert c.model == ["smollm2-135m"] and c.batch_sizes == [1, 4, 16] and c.quant == ["fp32"]
    assert c.sensor == "auto" and c.offline.repeats is None


def test_yaml_lists_scalars_and_comma_strings(tmp_path):
    p = write(tmp_path, "batch_sizes: 1,4, 16\nquant: [fp32, bf16]\nnew_tokens: 8\nprompts: ko\n")
    c = load_config(p)
    assert c.batch_sizes == [1, 4, 16] and c.quant == ["fp32", "bf16"]
    assert c.new_tokens == [8] and c.prompts == ["ko"]


def test_cli_options_override_the_file(tmp_path):
    p = write(tmp_path, "batch_sizes: [1, 2]\nrepeats: 3\n")
    c = load_config(p, {"batch_sizes": "8", "repeats": None})
    assert c.batch_sizes == [8] and c.offline.repeats == 3


@pytest.mark.parametrize("text, expected", [
    ("batch_size: [1]\n", "unknown key 'batch_size' (did you mean 'batch_sizes'?)"),
    ("batch-sizes: [1]\n", "unknown key 'batch-sizes' (did you mean 'batch_sizes'?)"),
    ("batch_sizes: [1, 0]\n", "key 'batch_sizes': 0 is not a positive integer"),
    ("batch_sizes: [one]\n", "key 'batch_sizes'"),
    ("repeats: many\n", "key 'repeats'"),
    ("quant: [fp33]\n", "unknown quantization scheme 'fp33'; did you mean 'fp32'?"),
    ("sensor: nvlm\n", "unknown sensor 'nvlm'"),
    ("backend: tensorflow\n", "unknown backend 'tensorflow'"),
    ("ci_target: 2\n", "key 'ci_target'"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, expected", [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("batch_sizes: [1\n", "is not valid YAML at line"),
    ("a: b: c\n", "is not valid YAML"),
])
def test_empty_and_malformed_files(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00batch")
    with pytest.raises(ConfigError):
        load_config(p)


def test_cli_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"option --batch-sizes: key 'batch_sizes': 0 is not a positive integer"):
        load_config(None, {"batch_sizes": "0"})


def test_duplicates_dropped_and_gguf_names_accepted():
    c = SweepConfig(batch_sizes=[4, 1, 4], quant=["gguf-q4_1", "fp32", "fp32"])
    assert c.batch_sizes == [4, 1] and c.quant == ["gguf-q4_1", "fp32"]


def test_case_and_spacing_a_user_might_type_are_forgiven():
    c = load_config(None, {"quant": "FP32, Int8-Dynamic", "device": " CPU", "sensor": "Estimate", "batch_sizes": "1,,4"})
    assert c.quant == ["fp32", "int8-dynamic"] and c.device == "cpu" and c.sensor == "estimate"
    assert c.batch_sizes == [1, 4]


def test_min_repeats_above_max_repeats_is_refused():
    with pytest.raises(ConfigError, match=r"min_repeats \(5\) is larger than max_repeats \(2\)"):
        load_config(None, {"min_repeats": 5, "max_repeats": 2})


def test_a_stored_run_reads_the_config_sections_the_sweep_writes():
    """run.json stores the config with its sections; the run loader reads them flat, as older runs wrote."""
    from effbench.config import SECTIONS
    from effbench.results.run import CONFIG_SECTIONS, RunConfig

    assert set(CONFIG_SECTIONS) == set(SECTIONS)
    stored = load_config(None, dict(warmup=3, ci_target=0.02, launcher="process", launcher_opt={"timeout": "9"}))
    cfg = RunConfig.model_validate(stored.model_dump(mode="json"))
    assert (cfg.warmup, cfg.ci_target, cfg.model_extra["launcher"]) == (3, 0.02, "process")
    assert RunConfig.model_validate({"warmup": 2, "launcher": "inline"}).warmup == 2  # a run from before the sections


# Every option `effbench run` had before its options were generated from the config models.
RUN_OPTIONS = """--model -m --backend --device --quant -q --batch-sizes -b --prompt-tokens --new-tokens --prompts --repeats -r
--power-limits --gpu-clocks --sensor --hardware --region --out -o --resume --warmup --min-repeats --max-repeats --ci-target
--max-time-s --idle-s --compile --eager --threads --seed --perplexity --no-perplexity --scenario --endpoint --engine --rates
--concurrency --arrival --requests --duration --warmup-requests --slo-ttft-ms --slo-tpot-ms --api --workload --multi-turn
--shared-prefix --replay --replay-speed --workload-scale --find-capacity --capacity-resolution --capacity-point-s
--capacity-max-points --length-spread --launcher --launcher-opt --quiet""".split()


def test_run_options_are_generated_from_the_config_models_and_none_went_missing():
    import typer.main

    from effbench.cli import run as run_cli
    from effbench.cli.options import config_options
    from effbench.config import SweepConfig

    app = typer.Typer()
    app.command()(run_cli.run_command)
    command = typer.main.get_command(app)
    flags = {f for p in command.params for f in (*p.opts, *p.secondary_opts)}
    assert set(RUN_OPTIONS) <= flags, set(RUN_OPTIONS) - flags
    generated = config_options(SweepConfig)
    # one option per config key, its help carrying the model's default
    assert len({o.key for o in generated}) == len(generated)
    by_key = {o.key: o for o in generated}
    assert "(default: 1)" in by_key["warmup"].help and "(default: 1.0,2.0)" in by_key["rates"].help
    assert by_key["duration"].flags == ("--duration",)


def test_a_sweep_file_takes_sections_and_flat_keys_alike(tmp_path):
    nested = write(tmp_path, "offline: {warmup: 3, ci_target: 0.02}\ngpu: {power_limits: [200, 250]}\n"
                             "serving: {rates: [1, 2]}\nlauncher: {kind: process, timeout: 30}\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("warmup: 3\nci_target: 0.02\npower_limits: 200,250\nrates: 1,2\nlauncher: process\n"
                    "launcher_opt: {timeout: 30}\n")
    a, b = load_config(nested), load_config(flat)
    assert a.model_dump() == b.model_dump()
    assert (a.offline.warmup, a.gpu.power_limits, a.launcher.kind, a.launcher.options().timeout) == (3, [200.0, 250.0],
                                                                                                     "process", 30.0)
    with pytest.raises(ConfigError, match="unknown key 'warmupp' \\(did you mean 'warmup'\\?\\)"):
        load_config(write(tmp_path, "offline: {warmupp: 3}\n"))
    with pytest.raises(ConfigError, match="--launcher-opt 'partitio' is not an option of the slurm launcher"):
        load_config(write(tmp_path, "launcher: {kind: slurm, partitio: gpu}\n"))
    with pytest.raises(ConfigError, match="--launcher-opt timeout='soon'"):
        load_config(write(tmp_path, "launcher: {kind: process, timeout: soon}\n"))


@pytest.mark.parametrize("options, needle", [
    ({"rates": "1,2"}, "option --rates applies to --scenario serving only"),
    ({"scenario": "serving", "repeats": 3}, "option --repeats applies to --scenario offline only"),
    ({"scenario": "serving", "batch_sizes": "4"}, "option --batch-sizes applies to --scenario offline only"),
])
def test_an_option_the_scenario_would_ignore_is_refused(options, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, options)
