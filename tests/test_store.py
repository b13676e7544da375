"""The run directory survives interruption at any byte: torn lines are ignored and repaired."""
from __future__ import annotations

import json

import pytest

from effbench.errors import EffbenchError
from effbench.results.schema import Record
from effbench.results.store import RunStore, read_run_dir


def make_record(config_id: str, **extra) -> Record:
    return Record(run_id="r1", config_id=config_id, model={"id": "m"}, backend={"name": "fake"},
                  quantization={"scheme": "fp32"},
                  workload={"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4, "prompt_set": "en"}, **extra)


def test_append_and_read_back(tmp_path):
    s = RunStore(tmp_path / "run")
    s.append(make_record("a"))
    s.append(make_record("b", error="out of memory: x"))
    assert s.completed_config_ids() == {"a", "b"}
    _, records = read_run_dir(s.path)
    assert [r.config_id for r in records] == ["a", "b"]
    assert records[1].error.startswith("out of memory")


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    s = RunStore(tmp_path / "run")
    s.append(make_record("a"))
    full = json.dumps(make_record("b").to_json_dict())
    with s.results_file.open("a") as f:
        f.write(full[: len(full) // 2])  # killed mid-write
    assert s.completed_config_ids() == {"a"}
    s.append(make_record("c"))
    lines = s.results_file.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert s.completed_config_ids() == {"a", "c"}


def test_schema_version_mismatch_and_missing_dir(tmp_path):
    s = RunStore(tmp_path / "run")
    d = make_record("a").to_json_dict()
    d["schema_version"] = 99
    s.path.mkdir()
    s.results_file.write_text(json.dumps(d) + "\n")
    with pytest.raises(EffbenchError, match="schema_version 99"):
        read_run_dir(s.path)
    with pytest.raises(EffbenchError, match="does not exist"):
        read_run_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EffbenchError, match="not a run directory"):
        read_run_dir(tmp_path / "empty")


def test_record_has_every_contract_field():
    """The brief's field list (section 4) is a contract: every dotted name exists in a record."""
    contract = """schema_version run_id config_id model.id model.params model.weights_bytes backend.name
    backend.version quantization.scheme quantization.weight_bits workload.batch_size workload.prompt_tokens
    workload.new_tokens workload.prompt_set throughput.prefill_tokens_per_s throughput.decode_tokens_per_s
    throughput.e2e_tokens_per_s throughput.ttft_s throughput.tpot_s energy.status energy.sensor
    energy.sampling_interval_s energy.coverage energy.idle_power_w energy.joules_total energy.joules_prefill
    energy.joules_decode energy.joules_per_token energy.tokens_per_joule energy.joules_per_kchar
    energy.uncertainty_rel memory.peak_host_bytes memory.peak_device_bytes memory.weights_bytes
    quality.perplexity stats.repeats stats.ci95_rel hardware.profile hardware.detected_name error""".split()
    d = make_record("a").to_json_dict()
    for name in contract:
        node = d
        for part in name.split("."):
            assert part in node, name
            node = node[part]


def test_non_finite_numbers_are_stored_as_null_not_a_crash(tmp_path):
    s = RunStore(tmp_path / "run")
    s.append(make_record("a", quality={"perplexity": float("nan")}, throughput={"ttft_s": float("inf")}))
    (d,) = s.record_dicts()
    assert d["quality"]["perplexity"] is None and d["throughput"]["ttft_s"] is None


def test_an_impossible_figure_is_dropped_and_flagged_when_written(tmp_path):
    """A negative rate or energy (a sensor or timing fault) is not written as a measurement: None, and named
    in energy.flags; the file reads back."""
    s = RunStore(tmp_path / "run")
    r = make_record("a", throughput={"decode_tokens_per_s": -3.0, "prefill_tokens_per_s": 50.0})
    r.energy.joules_total = -1.0
    s.append(r)
    (d,) = s.record_dicts()
    assert d["throughput"]["decode_tokens_per_s"] is None and d["throughput"]["prefill_tokens_per_s"] == 50.0
    assert d["energy"]["joules_total"] is None
    assert {"impossible-throughput.decode_tokens_per_s", "impossible-energy.joules_total"} <= set(d["energy"]["flags"])
    _, (back,) = read_run_dir(s.path)
    assert back.throughput.prefill_tokens_per_s == 50.0


@pytest.mark.parametrize("section, field, value", [("throughput", "decode_tokens_per_s", -5.0),
                                                   ("energy", "tokens_per_joule", "NaN"),
                                                   ("energy", "joules_total", -0.5)])
def test_a_results_file_with_an_impossible_figure_is_refused_in_one_line(tmp_path, section, field, value):
    s = RunStore(tmp_path / "run")
    s.append(make_record("a"))
    d = s.record_dicts()[0]
    d[section][field] = value
    s.results_file.write_text(json.dumps(d).replace('"NaN"', "NaN") + "\n")
    with pytest.raises(EffbenchError, match=rf"record 1 is invalid at '{section}.{field}': .*finite number >= 0"):
        read_run_dir(s.path)


def test_run_json_that_is_not_an_object_is_a_clear_error(tmp_path):
    s = RunStore(tmp_path / "run")
    s.path.mkdir()
    s.run_file.write_text("[]")
    with pytest.raises(EffbenchError, match="not a run description"):
        s.read_run()


def test_garbage_lines_are_skipped_with_a_warning(tmp_path, capsys):
    s = RunStore(tmp_path / "run")
    s.append(make_record("a"))
    with s.results_file.open("a") as f:
        f.write("garbage{{\n[1, 2]\n")
    s.append(make_record("b"))
    _, records = read_run_dir(s.path)
    assert [r.config_id for r in records] == ["a", "b"]
    assert "skipped 2 line(s)" in capsys.readouterr().err
