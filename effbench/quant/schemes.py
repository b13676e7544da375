"""The built-in schemes. Float schemes only set the load dtype; the others quantize the Linear
layers of a loaded model in place (torch, torchao, optimum-quanto) or while loading (bitsandbytes)."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

from effbench.quant.registry import Scheme, register

CPU_CUDA = ("cpu", "cuda")
# torchao int4 groups: 128 is the CUDA kernels' default; 32 divides the hidden sizes of small
# models (576 for SmolLM2-135M) so no layer is left unquantized on CPU.
INT4_GROUP = {"cuda": 128, "cpu": 32}


def _linears(model: Any) -> list[tuple[str, Any]]:
    import torch

    # The output head stays in full precision, as the libraries' own recipes do.
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]


def _only_linears(model: Any, group: Optional[int] = None) -> tuple[Callable[[Any, str], bool], str]:
    """A filter for torchao's ``quantize_`` that keeps layers whose input size the group divides,
    and a note naming any layer left in full precision (torchao would skip them silently)."""
    keep = {id(m) for n, m in _linears(model) if group is None or m.in_features % group == 0}
    skipped = [n for n, m in _linears(model) if id(m) not in keep]
    note = f"{len(keep)} Linear layers quantized"
    if skipped:
        note += f"; {len(skipped)} left in full precision (in_features not divisible by group {group}): {', '.join(skipped[:3])}"
    return (lambda module, fqn: id(module) in keep), note


def _int8_dynamic(model: Any, device: str) -> str:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of torchao, still the fastest int8 on CPU
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return "torch.ao quantize_dynamic on every nn.Linear (weights int8, activations quantized per batch)"


def _torchao(kind: str) -> Callable[[Any, str], str]:
    def apply(model: Any, device: str) -> str:
        import torch
        import torchao.quantization as tq
        from torchao.quantization import quantize_

        dev = device.partition(":")[0]
        group = None
        if kind == "int8wo":
            config = tq.Int8WeightOnlyConfig()
        elif kind == "int8da8w":
            config = tq.Int8DynamicActivationInt8WeightConfig()
        elif dev == "cuda":
            group = INT4_GROUP["cuda"]
            config = tq.Int4WeightOnlyConfig(group_size=group)
        else:  # the CUDA int4 kernels do not exist on CPU; the intx path stores int4 values unpacked in int8
            from torchao.quantization.granularity import PerGroup

            group = INT4_GROUP["cpu"]
            int4 = torch.int4  # type: ignore[attr-defined]  # a torch dtype (>= 2.6) its stubs do not declare
            config = tq.IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(group))
        keep, note = _only_linears(model, group)
        quantize_(model, config, filter_fn=keep)
        return f"torchao {type(config).__name__}" + (f" group {group}" if group else "") + f"; {note}"

    return apply


def _quanto(qtype: str) -> Callable[[Any, str], str]:
    def apply(model: Any, device: str) -> str:
        from optimum import quanto

        weights = getattr(quanto, qtype)
        quanto.quantize(model, weights=weights, exclude=["lm_head"])
        quanto.freeze(model)
        return f"optimum-quanto {qtype} weights, activations unquantized, lm_head excluded"

    return apply


def _bnb(kind: str) -> Callable[[str], dict]:
    def load_kwargs(device: str) -> dict:
        import torch
        from transformers import BitsAndBytesConfig

        if kind == "int8":
            cfg = BitsAndBytesConfig(load_in_8bit=True)
        else:
            cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return {"quantization_config": cfg, "device_map": {"": device}}

    return load_kwargs


for _name, _bits, _dtype, _desc in [
    ("fp32", 32, "float32", "float32 weights and compute"),
    ("fp16", 16, "float16", "float16 weights and compute"),
    ("bf16", 16, "bfloat16", "bfloat16 weights and compute"),
]:
    register(Scheme(_name, "torch", _bits, _dtype, CPU_CUDA, _desc))

register(Scheme("int8-dynamic", "torch", 8, "float32", ("cpu",),
                "torch dynamic int8 quantization of Linear layers (CPU)", apply=_int8_dynamic))
register(Scheme("torchao-int8wo", "torchao", 8, "float32", CPU_CUDA, "torchao int8 weight-only",
                apply=_torchao("int8wo"), requires=("torchao",), cuda_dtype="bfloat16"))
register(Scheme("torchao-int4wo", "torchao", 4, "bfloat16", CPU_CUDA,
                "torchao int4 weight-only (CUDA: int4 kernels, group 128; CPU: intx int4, group 32)",
                apply=_torchao("int4wo"), requires=("torchao",)))
register(Scheme("torchao-int8da8w", "torchao", 8, "float32", CPU_CUDA,
                "torchao int8 dynamic activation + int8 weight", apply=_torchao("int8da8w"), requires=("torchao",),
                cuda_dtype="bfloat16"))
register(Scheme("quanto-int8", "quanto", 8, "float32", CPU_CUDA, "optimum-quanto int8 weights",
                apply=_quanto("qint8"), requires=("optimum.quanto",), cuda_dtype="bfloat16"))
register(Scheme("quanto-int4", "quanto", 4, "float32", CPU_CUDA, "optimum-quanto int4 weights",
                apply=_quanto("qint4"), requires=("optimum.quanto",), cuda_dtype="bfloat16"))
register(Scheme("quanto-fp8", "quanto", 8, "float32", CPU_CUDA, "optimum-quanto float8 (e4m3) weights",
                apply=_quanto("qfloat8"), requires=("optimum.quanto",), cuda_dtype="bfloat16"))
register(Scheme("bnb-int8", "bnb", 8, "float16", ("cuda",), "bitsandbytes LLM.int8()",
                load_kwargs=_bnb("int8"), requires=("bitsandbytes",)))
register(Scheme("bnb-nf4", "bnb", 4, "bfloat16", ("cuda",), "bitsandbytes 4-bit NF4",
                load_kwargs=_bnb("nf4"), requires=("bitsandbytes",)))
