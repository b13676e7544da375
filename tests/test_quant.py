"""The scheme registry and each CPU scheme applied to a tiny random Llama (no download, seconds)."""
from __future__ import annotations

import pytest

from effbench.errors import ConfigError
from effbench.quant import CAPABILITIES, DTYPE_WEIGHTS, GGUF_WEIGHTS, IN_PLACE, LOAD_TIME, get_scheme, schemes
from effbench.quant.registry import check_scheme_names

BRIEF_NAMES = ["fp32", "fp16", "bf16", "int8-dynamic", "torchao-int8wo", "torchao-int4wo", "torchao-int8da8w",
               "quanto-int8", "quanto-int4", "quanto-fp8", "bnb-int8", "bnb-nf4"]


def test_registry_has_every_scheme_the_brief_names():
    assert set(BRIEF_NAMES) <= set(schemes())
    for name in BRIEF_NAMES:
        s = get_scheme(name)
        assert s.name == name and s.weight_bits in (4, 8, 16, 32) and s.description


def test_gguf_names_follow_the_pattern():
    s = get_scheme("gguf-q4_1")
    assert s.library == "gguf" and s.weight_bits == 4 and s.needs == {GGUF_WEIGHTS}
    assert get_scheme("gguf-q8_0").weight_bits == 8
    assert get_scheme("GGUF-Q4_0").name == "gguf-q4_0"


class _Engine:
    """A backend as the scheme registry sees it: a name and what it offers, nothing else."""

    def __init__(self, name: str, *offers: str) -> None:
        self.name, self.offers = name, frozenset(offers)


TRANSFORMERS_LIKE = _Engine("transformers", DTYPE_WEIGHTS, IN_PLACE, LOAD_TIME)


def test_schemes_match_backends_by_what_they_offer_not_by_name():
    """A new engine that offers in-place quantization runs the torchao schemes without any scheme
    naming it; one that only loads float weights runs fp16 but not int8-dynamic."""
    plugin = _Engine("my-engine", DTYPE_WEIGHTS, IN_PLACE)
    assert get_scheme("torchao-int8wo").support(plugin, "cpu") is None
    assert get_scheme("bnb-nf4").support(plugin, "cuda").startswith("scheme 'bnb-nf4' needs quantizing while loading")
    floats_only = _Engine("floats", DTYPE_WEIGHTS)
    assert get_scheme("fp16").support(floats_only, "cuda") is None
    assert "quantizing a loaded torch model in place" in get_scheme("int8-dynamic").support(floats_only, "cpu")


def test_the_real_backends_declare_what_they_offer():
    from effbench.backends import BACKENDS
    from effbench.backends.llamacpp import LlamaCppBackend
    from effbench.backends.transformers import TransformersBackend
    from effbench.backends.vllm import VLLMBackend

    assert {"transformers", "llamacpp", "vllm"} <= set(BACKENDS.names())
    assert TransformersBackend.offers == {DTYPE_WEIGHTS, IN_PLACE, LOAD_TIME}
    assert LlamaCppBackend.offers == {GGUF_WEIGHTS} and VLLMBackend.offers == {DTYPE_WEIGHTS}
    assert set(CAPABILITIES) == {DTYPE_WEIGHTS, IN_PLACE, LOAD_TIME, GGUF_WEIGHTS}


def test_unknown_scheme_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'quanto-int8'"):
        get_scheme("quanto_int8")
    with pytest.raises(ValueError, match="unknown quantization scheme 'int2'"):
        check_scheme_names(["fp32", "int2"])


@pytest.mark.parametrize("name, backend, device, reason", [
    ("bnb-nf4", TRANSFORMERS_LIKE, "cpu", "needs a CUDA device"),
    ("int8-dynamic", TRANSFORMERS_LIKE, "cuda", "needs a CPU device"),
    ("int8-dynamic", _Engine("vllm", DTYPE_WEIGHTS), "cuda", "which the vllm backend does not do"),
    ("gguf-q4_1", TRANSFORMERS_LIKE, "cpu", "needs GGUF quantized weights, which the transformers backend does not do"),
    ("fp32", _Engine("llamacpp", GGUF_WEIGHTS), "cpu", "needs float weights in a torch dtype"),
])
def test_support_reasons(name, backend, device, reason):
    assert reason in get_scheme(name).support(backend, device)


def test_float_schemes_run_everywhere_torch_does():
    for name in ("fp32", "fp16", "bf16"):
        assert get_scheme(name).support(TRANSFORMERS_LIKE, "cpu") is None
        assert get_scheme(name).unquantized


@pytest.fixture
def tiny_model():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def _linear_bytes(model):
    from effbench.backends.transformers import tensor_bytes

    total = 0
    for name, m in model.named_modules():
        if name.endswith("lm_head") or not hasattr(m, "weight") or m.weight is None or "proj" not in name:
            continue
        total += tensor_bytes(m.weight)
    return total


@pytest.mark.parametrize("name, max_ratio", [
    ("torchao-int8wo", 0.30), ("torchao-int4wo", 0.30), ("quanto-int8", 0.30), ("quanto-fp8", 0.30),
])
def test_weight_only_schemes_shrink_linear_weights_and_still_run(tiny_model, name, max_ratio):
    import torch

    scheme = get_scheme(name)
    if scheme.support(TRANSFORMERS_LIKE, "cpu"):
        pytest.skip(scheme.support(TRANSFORMERS_LIKE, "cpu"))
    model = tiny_model.to(getattr(torch, scheme.compute_dtype))
    before = _linear_bytes(model) * 4 // model.dtype.itemsize  # the same weights in fp32
    note = scheme.apply(model, "cpu")
    after = _linear_bytes(model)
    # int8/fp8 keep one byte per weight plus scales: well under 30% of fp32; the CPU int4 path stores
    # int4 values unpacked in int8 bytes, which the weight-bytes figure must show honestly
    assert after < before * max_ratio, (after, before)
    assert note
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 8))).logits
    assert out.shape == (2, 8, 256) and torch.isfinite(out.float()).all()


def test_int4_cpu_note_counts_quantized_layers(tiny_model):
    if get_scheme("torchao-int4wo").support(TRANSFORMERS_LIKE, "cpu"):
        pytest.skip("torchao not installed")
    note = get_scheme("torchao-int4wo").apply(tiny_model.to(__import__("torch").bfloat16), "cpu")
    assert "14 Linear layers quantized" in note and "left in full precision" not in note


def test_int8_dynamic_output_close_to_fp32(tiny_model):
    import copy

    import torch

    ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        ref = tiny_model(ids).logits
        q = copy.deepcopy(tiny_model)
        get_scheme("int8-dynamic").apply(q, "cpu")
        got = q(ids).logits
    assert torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0) > 0.99
