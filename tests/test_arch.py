"""Architecture-only models (random weights), `effbench models`, the wheelhouse plan, and the CPU-only
logic of the GPU validation suite (against the NVML simulator)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from effbench.errors import EffbenchError, UnsupportedError
from effbench.models import arch, resolve_model

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 128,
        "tie_word_embeddings": True}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    return d / "config.json"


# -- shipped configs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(arch.catalog()))
def test_parameter_count_matches_model_card(name: str) -> None:
    entry = arch.catalog()[name]
    count = arch.count_params(arch.load_config(f"arch:{name}"))
    # A card that states the whole multimodal model (Llama 4 Scout: with its vision encoder) says so, with its tolerance.
    tolerance = json.loads(arch._data_dir().joinpath(arch.CATALOG_FILE).read_text())[name].get("stated_tolerance", 0.01)
    assert abs(count.scoped(entry.stated_scope) / entry.stated_params - 1) < tolerance, (name, count)


def test_catalog_lists_the_required_architectures() -> None:
    assert {"llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-3-4b", "exaone-4.0-1.2b",
            "llama-3.2-1b", "smollm2-135m"} <= set(arch.catalog())


def test_native_architectures_only() -> None:
    assert type(arch.load_config("arch:exaone-4.0-1.2b")).__name__ == "Exaone4Config"
    assert type(arch.load_config("arch:gemma-3-4b")).__name__ == "Gemma3TextConfig"


def _shrunk(name: str) -> dict:
    """A shipped config at toy width (every architectural feature kept: layer types, rope scaling,
    norms, tying), a full sliding/global pattern deep, so each one can run a forward pass in a second."""
    cfg = arch.config_dict(f"arch:{name}")
    depth = 6 if cfg["model_type"] == "gemma3_text" else 2
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=depth, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, vocab_size=512)
    if "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"][:depth]
    if "hybrid_override_pattern" in cfg:  # Nemotron-H: one Mamba, one attention, one MLP layer
        cfg.update(num_hidden_layers=3, hybrid_override_pattern="M*-", mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=16,
                   n_groups=1)
    if "kv_lora_rank" in cfg:  # DeepSeek-V3: MLA and MoE at toy width, one dense layer first
        cfg.update(kv_lora_rank=16, q_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, head_dim=8, num_key_value_heads=4,
                   v_head_dim=16, first_k_dense_replace=1,
                   n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, moe_intermediate_size=32)
    for key in ("num_experts", "num_local_experts"):
        if key in cfg:
            cfg.update({key: 4, "num_experts_per_tok": min(cfg.get("num_experts_per_tok", 1), 2), "moe_intermediate_size": 32})
    return cfg


@pytest.mark.parametrize("name", sorted(arch.catalog()))
def test_every_shipped_architecture_builds_and_generates(name: str, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "config.json"
    path.write_text(json.dumps(_shrunk(name)))
    tok, model = arch.load_random(str(path), torch.float32, "cpu", seed=0)
    ids = torch.tensor([tok.encode("a prompt of some length for the model")])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 3)


# -- resolution ---------------------------------------------------------------------------------------

def test_resolve_shipped_and_path(tiny_config: Path) -> None:
    spec = resolve_model("arch:SmolLM2-135M")
    assert (spec.id, spec.kind, spec.location) == ("arch:smollm2-135m", "arch", "arch:smollm2-135m")
    by_path = resolve_model(f"arch:{tiny_config}")
    assert (by_path.id, by_path.kind, by_path.location) == ("arch:tiny-llama", "arch", str(tiny_config.resolve()))
    assert resolve_model(f"arch:{tiny_config.parent}").location == str(tiny_config.resolve())


def test_unknown_architecture_is_one_line_error() -> None:
    with pytest.raises(EffbenchError, match="llama-3.1-8b") as e:
        resolve_model("arch:no-such-model")
    assert "\n" not in str(e.value)


def test_remote_code_config_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**TINY, "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    with pytest.raises(UnsupportedError, match="remote code"):
        arch.load_config(str(cfg))


# -- building -----------------------------------------------------------------------------------------

def _fingerprint(model) -> list:
    return [(n, t.float().sum().item(), t.float().abs().sum().item()) for n, t in model.state_dict().items()]


def test_same_seed_same_weights(tiny_config: Path) -> None:
    import torch

    cfg = arch.load_config(str(tiny_config))
    a = arch.build_model(cfg, torch.float32, "cpu", seed=7)
    b = arch.build_model(cfg, torch.float32, "cpu", seed=7)
    c = arch.build_model(cfg, torch.float32, "cpu", seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert _fingerprint(a) != _fingerprint(c)
    assert a.lm_head.weight is a.model.embed_tokens.weight  # ties survive to_empty
    assert torch.isfinite(a.model.rotary_emb.inv_freq).all() and a.model.rotary_emb.inv_freq[0] == 1.0


def test_random_tokenizer_is_seeded_and_in_vocab() -> None:
    tok = arch.RandomTokenizer(vocab_size=100, seed=3, pad_token_id=None, eos_token_id=[5, 6])
    ids = tok("the same text")["input_ids"]
    assert ids == tok("the same text")["input_ids"] and all(0 <= i < 100 for i in ids)
    assert ids != arch.RandomTokenizer(100, 4, None, 5)("the same text")["input_ids"]
    assert tok.pad_token_id == 5


_MEMORY_PROBE = textwrap.dedent("""
    import json, sys, torch
    from effbench.models import arch

    def peak_kib():  # VmHWM: the process's peak resident set since the last reset
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))

    def reset():
        open("/proc/self/clear_refs", "w").write("5")

    full = arch.load_config("arch:llama-3.1-8b")
    arch.count_params(full)  # warm imports and caches
    reset(); base = peak_kib()
    count = arch.count_params(full)  # the whole 8B on the meta device
    meta_kib = peak_kib() - base

    # The 8B's own layer (4096 x 14336 matrices) at full width, one layer deep and a small vocab so
    # it runs in seconds: a full-precision host copy would show as >= 2x the bf16 bytes.
    small = arch.load_config("arch:llama-3.1-8b")
    small.num_hidden_layers, small.vocab_size = 1, 8192
    reset(); base = peak_kib()
    model = arch.build_model(small, torch.bfloat16, "cpu", seed=0)
    built_kib = peak_kib() - base
    bf16_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"params": count.total, "meta_kib": meta_kib, "built_kib": built_kib,
                      "bf16_bytes": bf16_bytes, "dtype": str(next(model.parameters()).dtype)}))
""")


def test_meta_build_and_materialisation_make_no_host_copy() -> None:
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["params"] == 8_030_261_248
    assert r["meta_kib"] * 1024 < 64 * 2**20  # 8B on meta: no weights allocated (16 GB in bf16)
    assert r["dtype"] == "torch.bfloat16"
    # Materialised straight into bf16: peak is the bf16 weights plus slack, far from fp32 (2x).
    assert r["built_kib"] * 1024 < 1.3 * r["bf16_bytes"], r


# -- quantized random weights and the backend ---------------------------------------------------------

@pytest.mark.parametrize("scheme", ["torchao-int8wo", "quanto-int8", "quanto-int4"])
def test_weight_only_schemes_apply_to_random_weights(tiny_config: Path, scheme: str) -> None:
    from effbench.backends.transformers import TransformersBackend
    from effbench.models import load_prompt_set
    from effbench.quant import get_scheme

    s = get_scheme(scheme)
    if s.support(TransformersBackend, "cpu"):
        pytest.skip(s.support(TransformersBackend, "cpu"))
    backend = TransformersBackend()
    loaded = backend.load(resolve_model(f"arch:{tiny_config}"), s, "cpu", 1, 0)
    full = TransformersBackend().load(resolve_model(f"arch:{tiny_config}"), get_scheme("fp32"), "cpu", 1, 0)
    assert loaded.weights_bytes < full.weights_bytes
    batch = backend.prepare(load_prompt_set("en"), 2, 8)
    size = backend.output_size(backend.generate(batch, 3), batch)
    assert size.tokens == 6 and size.chars is None
    with pytest.raises(NotImplementedError, match="random weights"):
        backend.perplexity("some text")


def test_bnb_on_random_weights_is_a_clear_unsupported(tiny_config: Path) -> None:
    from effbench.backends.transformers import TransformersBackend
    from effbench.quant import get_scheme

    with pytest.raises(UnsupportedError, match="architecture-only"):
        TransformersBackend().load(resolve_model(f"arch:{tiny_config}"), get_scheme("bnb-nf4"), "cpu", 1, 0)


def test_sweep_record_says_random_and_why(tiny_config: Path, tmp_path: Path) -> None:
    import effbench

    run = effbench.run(model=[f"arch:{tiny_config}"], batch_sizes=[1, 2], new_tokens=[4], prompt_tokens=[8],
                       repeats=1, warmup=0, idle_s=0, threads=1, sensor="estimate", out=str(tmp_path / "run"))
    assert len(run.records) == 2
    for r in run.records:
        assert r.error is None
        assert r.model.weights == "random" and "random weights" in r.model.note
        assert r.quality.perplexity is None and "random weights" in r.quality.note
        assert r.energy.joules_per_kchar is None and r.energy.output_chars is None
        assert r.throughput.decode_tokens_per_s > 0


@pytest.mark.model
def test_cli_run_bundled_architecture(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "effbench", "run", "--model", "arch:smollm2-135m", "--batch-sizes", "1",
                           "--new-tokens", "4", "--prompt-tokens", "8", "--repeats", "1", "--threads", "1",
                           "--idle-s", "0", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert rec["model"]["weights"] == "random" and rec["model"]["params"] == 134_515_008
    assert rec["quality"]["perplexity"] is None and rec["quality"]["note"]


# -- effbench models ----------------------------------------------------------------------------------

def test_models_command_lists_configs_and_counts(tiny_config: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "effbench", "models", "--json", "--config", str(tiny_config)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {a["name"]: a for a in data["architectures"]}
    assert set(arch.catalog()) | {"tiny-llama"} == set(rows)
    llama = rows["llama-3.1-8b"]
    assert llama["params"] == 8_030_261_248 and llama["weight_bytes"]["bf16"] == 2 * 8_030_261_248
    raw = json.loads(arch._data_dir().joinpath(arch.CATALOG_FILE).read_text())
    assert all(abs(r["stated_deviation"]) < raw.get(n, {}).get("stated_tolerance", 0.01) for n,
               r in rows.items() if r["stated_deviation"] is not None)
    assert "bundled" in data and data["bundled"]["name"] == "smollm2-135m"
    table = subprocess.run([sys.executable, "-m", "effbench", "models"], capture_output=True, text=True, timeout=300)
    assert "arch:exaone-4.0-1.2b" in table.stdout and "8.030B" in table.stdout


def test_models_command_bad_config_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "effbench", "models", "--config", "/no/such/config.json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# -- wheelhouse -------------------------------------------------------------------------------------

def test_wheelhouse_plan_leaves_torch_tree_out() -> None:
    from effbench import wheelhouse

    plan = wheelhouse.plan(extras=(), skip=("torch", "transformers"))
    names = set(plan.packages)
    assert {"torch", "transformers", "effbench"}.isdisjoint(names)
    assert not any(n.startswith("nvidia-cu") or n == "triton" for n in names)
    assert {"typer", "pydantic", "accelerate", "nvidia-ml-py"} <= names
    assert all(plan.packages.values())  # every one pinned to the version installed here


# -- GPU validation suite, CPU-only parts -----------------------------------------------------------

def _simulated_nvml(waveform):
    from effbench.sensors.simulated import FakeGpu, FakeNvml, SimClock

    clock = SimClock(10.0)
    return FakeNvml([FakeGpu(waveform)], clock), clock


def _simulated_load(sensors, clock, seconds: float, step: float = 0.02):
    """What the matmul loop does on a GPU, in simulated time: time passes, pollers sample."""
    def load() -> int:
        n = int(round(seconds / step))
        for i in range(n):
            clock.advance(step)
            for s in sensors.values():
                if not s.counter_mode and (i % round(s.poll_interval_s / step) == 0):
                    s.poller().sample()
        return n
    return load


def test_energy_comparison_steady_agrees_bursty_shows_missed_spikes() -> None:
    from benchmarks.gpu_validation.suite import compare_windows, energy_verdicts, nvml_sensors
    from effbench.sensors.simulated import Constant, spiky

    results = []
    for name, wave in (("steady", Constant(300.0)), ("bursty", spiky(100.0, 600.0, 0.15, 0.03))):
        nv, clock = _simulated_nvml(wave)
        sensors = nvml_sensors("cuda", nvml=nv, clock=clock, threaded=False, env={})
        t0 = clock()
        c = compare_windows(name, _simulated_load(sensors, clock, 6.0), sensors, clock=clock)
        assert c.readings["counter"]["joules"] == pytest.approx(wave.energy(t0, clock()), rel=0.01)
        results.append(c)
    steady, bursty = results
    assert all(abs(steady.rel_diff(n)) < 0.05 for n in steady.readings if n != "counter")
    assert abs(bursty.rel_diff("poll_instant_100ms")) > 0.10  # the sensor's 25% window aliases the bursts
    verdicts = energy_verdicts(results)
    assert all(v.startswith("ok") for v in verdicts if "steady" in v)
    assert any(v.startswith("info: bursty") for v in verdicts)


def _record(scheme: str, batch: int, jpt: float, **kw):
    from effbench.results.schema import Energy, Memory, ModelInfo, QuantizationInfo, Record, Throughput, WorkloadInfo

    return Record(run_id="r", config_id=f"{scheme}{batch}", model=ModelInfo(id="arch:llama-3.1-8b", weights="random"),
                  backend={"name": "transformers"}, quantization=QuantizationInfo(scheme=scheme),
                  workload=WorkloadInfo(batch_size=batch, prompt_tokens=512, new_tokens=256, prompt_set="en"),
                  throughput=Throughput(decode_tokens_per_s=1000.0 * batch),
                  energy=Energy(status="measured", joules_per_token=jpt, tokens_per_joule_dynamic=1 / (jpt * 0.7),
                                decode_joules_per_token=jpt * 0.9),
                  memory=Memory(peak_device_bytes=20 * 2**30), **kw)


def test_summary_puts_joules_per_token_beside_mlenergy() -> None:
    from benchmarks.gpu_validation.suite import ENGINE_NOTE, rows_from_records, summary_markdown

    rows = rows_from_records([_record("torchao-int4wo", 64, 0.2), _record("bf16", 64, 0.36), _record("bf16", 1, 2.0),
                              _record("torchao-int8wo", 64, 0.3, error="out of memory: CUDA")])
    assert [(r.scheme, r.batch_size) for r in rows] == [("bf16", 1), ("bf16", 64), ("torchao-int8wo", 64),
                                                        ("torchao-int4wo", 64)]
    text = summary_markdown("NVIDIA H100 80GB HBM3", [], rows, ["run-bf16"])
    assert "0.12 J/token" in text and "0.360 J/token total" in text and "3.0x theirs" in text
    assert "vLLM" in text and ENGINE_NOTE in text and "out of memory" in text


def test_suite_exits_with_one_line_without_gpu(capsys: pytest.CaptureFixture) -> None:
    import torch

    from benchmarks.gpu_validation.suite import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "needs an NVIDIA GPU" in out


@pytest.mark.parametrize("extras, version, needle", [(["bogus"], None, "unknown effbench extra 'bogus'"),
                                                     (["quant"], "abc", "is not a Python 3 version"),
                                                     (["quant"], "3.8", "effbench needs Python >=3.10")])
def test_wheelhouse_refuses_an_unknown_extra_or_python_in_one_line(extras, version, needle) -> None:
    from effbench import wheelhouse as wh

    with pytest.raises(EffbenchError, match=needle):
        wh.check_target(extras, version)
    wh.check_target(["quant", "test"], "3.12")  # declared extras, a supported Python
