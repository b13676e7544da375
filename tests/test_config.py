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
    assert c.sensor == "auto" and c.repeats is None


def test_yaml_lists_scalars_and_comma_strings(tmp_path):
    p = write(tmp_path, "batch_sizes: 1,4, 16\nquant: [fp32, bf16]\nnew_tokens: 8\nprompts: ko\n")
    c = load_config(p)
    assert c.batch_sizes == [1, 4, 16] and c.quant == ["fp32", "bf16"]
    assert c.new_tokens == [8] and c.prompts == ["ko"]


def test_cli_options_override_the_file(tmp_path):
    p = write(tmp_path, "batch_sizes: [1, 2]\nrepeats: 3\n")
    c = load_config(p, {"batch_sizes": "8", "repeats": None})
    assert c.batch_sizes == [8] and c.repeats == 3


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
