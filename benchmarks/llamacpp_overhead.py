"""effbench's llama.cpp backend vs llama-cpp-python called directly, same GGUF, prompt and threads.

Interleaves the two (6 rounds) and prints median prompt-processing (pp) and token-generation (tg)
tokens/s. Run under `flock /tmp/effbench-cpu.lock` on a shared machine.
Usage: python benchmarks/llamacpp_overhead.py [OUT.json]
"""
import json
import statistics as st
import sys
import time

import llama_cpp
import numpy as np

from effbench.backends.llamacpp import LlamaCppBackend
from effbench.models import bundled_gguf_path, load_prompt_set, resolve_model
from effbench.quant import get_scheme

P, N = 32, 16
be = LlamaCppBackend()
be.load(resolve_model("smollm2-135m"), get_scheme("gguf-q4_1"), "cpu", 1, 0)
batch = be.prepare(load_prompt_set("en"), 1, P, N)
llm = llama_cpp.Llama(model_path=str(bundled_gguf_path()), n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False)
toks = batch.rows[0]
res = {"direct_pp": [], "direct_tg": [], "eff_pp": [], "eff_tg": []}
for _round in range(6):
    llm.reset()
    t = time.perf_counter()
    llm.eval(toks)
    t1 = time.perf_counter()
    for _ in range(N - 1):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    t2 = time.perf_counter()
    res["direct_pp"].append(P / (t1 - t))
    res["direct_tg"].append((N - 1) / (t2 - t1))
    t = time.perf_counter()
    be.prefill(batch)
    t1 = time.perf_counter()
    be.generate(batch, N)
    t2 = time.perf_counter()
    ttft = t1 - t
    full = t2 - t1
    res["eff_pp"].append(P / ttft)
    res["eff_tg"].append((N - 1) / (full - ttft))
summary = {k: {"median": round(st.median(v), 1), "rounds": [round(x, 1) for x in v]} for k, v in res.items()}
for k, v in summary.items():
    print(k, v["median"], v["rounds"])
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump({"prompt_tokens": P, "new_tokens": N, "threads": 1, "batch_size": 1, "llama_cpp_python": llama_cpp.__version__,
                   "tokens_per_s": summary}, f, indent=2)
