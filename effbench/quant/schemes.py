"""The built-in schemes. Float schemes only set the load dtype; the others quantize after loading."""
from __future__ import annotations

from typing import Any

from effbench.errors import UnsupportedError
from effbench.quant.registry import Scheme, register

TORCH_BACKENDS = ("transformers",)


def _int8_dynamic(model: Any) -> Any:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of torchao, still the fastest int8 on CPU
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _not_yet(name: str):
    def apply(model: Any) -> Any:
        raise UnsupportedError(f"scheme '{name}' is registered but not implemented in this effbench version")

    return apply


register(Scheme("fp32", "torch", 32, "float32", TORCH_BACKENDS + ("vllm",), ("cpu", "cuda"), "float32 weights and compute"))
register(Scheme("fp16", "torch", 16, "float16", TORCH_BACKENDS + ("vllm",), ("cpu", "cuda"), "float16 weights and compute"))
register(Scheme("bf16", "torch", 16, "bfloat16", TORCH_BACKENDS + ("vllm",), ("cpu", "cuda"), "bfloat16 weights and compute"))
register(Scheme("int8-dynamic", "torch", 8, "float32", TORCH_BACKENDS, ("cpu",),
                "torch dynamic int8 quantization of Linear layers (CPU)", apply=_int8_dynamic))
for _name, _lib, _bits, _dtype, _devices, _req, _desc in [
    ("torchao-int8wo", "torchao", 8, "float32", ("cpu", "cuda"), ("torchao",), "torchao int8 weight-only"),
    ("torchao-int4wo", "torchao", 4, "bfloat16", ("cpu", "cuda"), ("torchao",), "torchao int4 weight-only"),
    ("torchao-int8da8w", "torchao", 8, "float32", ("cpu", "cuda"), ("torchao",), "torchao int8 dynamic activation + int8 weight"),
    ("quanto-int8", "quanto", 8, "float32", ("cpu", "cuda"), ("optimum.quanto",), "optimum-quanto int8 weights"),
    ("quanto-int4", "quanto", 4, "float32", ("cpu", "cuda"), ("optimum.quanto",), "optimum-quanto int4 weights"),
    ("quanto-fp8", "quanto", 8, "float32", ("cpu", "cuda"), ("optimum.quanto",), "optimum-quanto float8 weights"),
    ("bnb-int8", "bnb", 8, "float16", ("cuda",), ("bitsandbytes",), "bitsandbytes LLM.int8()"),
    ("bnb-nf4", "bnb", 4, "bfloat16", ("cuda",), ("bitsandbytes",), "bitsandbytes 4-bit NF4"),
]:
    register(Scheme(_name, _lib, _bits, _dtype, TORCH_BACKENDS, _devices, _desc, apply=_not_yet(_name), requires=_req))
