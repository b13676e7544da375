"""Serving workloads against known truth: published length distributions drawn as published, pair
and dataset files read as written, conversations whose prefix repeats, shared system prompts, and
traces replayed at their own pace; bad files are one line."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import assert_one_line_error, run_effbench

from effbench.errors import EffbenchError
from effbench.scenarios.serving import lengths
from effbench.scenarios.serving.stub import StubBehaviour, StubServer
from effbench.scenarios.serving.workload import PromptBuilder, build_workload

pytest.importorskip("httpx")


def _cfg(**kw):
    base = dict(replay=None, replay_speed=1.0, requests=None, workload=None, workload_scale=1.0, length_spread=0.0,
                multi_turn=1, shared_prefix=None)
    return SimpleNamespace(**{**base, **kw})


def _hist_mean(name: str) -> float:
    edges, weights = lengths.histogram(name)
    return sum(w * (a + b) / 2 for (a, b), w in zip(zip(edges, edges[1:]), weights)) / sum(weights)


@pytest.mark.parametrize("name", ["lm-arena-chat", "gpqa", "sourcegraph-fim", "lm-arena-chat@meta-llama/Llama-3.1-8B-Instruct"])
def test_a_named_distribution_draws_the_published_lengths(name):
    w = build_workload(_cfg(workload=name), 4000, 64, 32, seed=1, users=None)
    outs = [r.output_tokens for r in w.requests]
    assert sum(outs) / len(outs) == pytest.approx(_hist_mean(name), rel=0.05)
    d = w.describe()
    assert d["kind"] == "distribution" and d["basis"] == "reference" and "ML.ENERGY" in d["source"]
    assert d["prompt_tokens"]["mean"] == 64 and d["requests_drawn"] == 4000
    assert build_workload(_cfg(workload=name), 50, 64, 32, 1, None).requests == w.requests[:50]  # seeded, prefix-stable


def test_the_shipped_lengths_are_the_published_ones():
    import pathlib

    src = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mlenergy-leaderboard-v3" / "models"
    if not src.is_dir():
        pytest.skip("the published files are not beside this checkout")
    assert lengths.extract(src) == lengths.shipped()


def test_pair_and_dataset_files_are_read_as_written(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("prompt_tokens,output_tokens\n10,5\n20,7\n")
    w = build_workload(_cfg(workload=str(pairs)), 5, 64, 32, 0, None)
    assert [(r.prompt_tokens, r.output_tokens) for r in w.requests] == [(10, 5), (20, 7), (10, 5), (20, 7), (10, 5)]
    assert w.kind == "pairs" and len(w.describe()["sha256"]) == 64
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                                                   {"from": "human", "value": "and?"}]}) + "\n")
    w = build_workload(_cfg(workload=str(chats)), 2, 64, 8, 0, None)
    assert [len(r.messages) for r in w.requests] == [1, 3] and w.requests[1].messages[-1]["content"] == "and?"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Tell me about GPUs."}\n')
    assert build_workload(_cfg(workload=str(prompts)), 1, 64, 8, 0, None).requests[0].text == "Tell me about GPUs."


@pytest.mark.parametrize("content, needle", [
    ("prompt_tokens,output_tokens\n10,five\n", "not a number"),
    ('{"messages": []}\n', "no turns"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}\n', "no user turn"),
    ("{not json\n", "not valid JSON"),
    ("", "no rows"),
])
def test_bad_workload_files_are_one_clear_error(tmp_path, content, needle):
    f = tmp_path / ("w.csv" if content.startswith("prompt") else "w.jsonl")
    f.write_text(content)
    with pytest.raises(EffbenchError, match=needle):
        build_workload(_cfg(workload=str(f)), 3, 64, 8, 0, None)


def test_conversations_grow_and_repeat_their_prefix_and_shared_prompts_repeat():
    builder = PromptBuilder(None, ["alpha beta gamma delta", "epsilon zeta eta theta iota"])
    w = build_workload(_cfg(multi_turn=3, shared_prefix="2:5"), 12, 6, 4, 0, users=2)
    assert [(r.conversation, r.turn) for r in w.requests[:6]] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert (w.requests[6].conversation, w.requests[6].turn) == (2, 0)  # after 3 turns, a new conversation
    chat = [builder.build(i, r, w, chat=True) for i, r in enumerate(w.requests)]
    first, second, third = chat[0], chat[2], chat[4]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[:len(second)] == second and second[:len(first)] == first  # the prefix repeats
    assert chat[0][0] == chat[2][0] and chat[1][0] != chat[0][0]  # request i uses shared prompt i mod 2
    text = builder.build(4, w.requests[4], w, chat=False)
    assert isinstance(text, str) and text.startswith(builder.build(2, w.requests[2], w, chat=False))


def test_a_trace_replays_at_its_own_pace(tmp_path):
    trace = tmp_path / "trace.jsonl"  # Mooncake: timestamps in ms, hash_ids name 512-token blocks
    rows = [{"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [1, 2]},
            {"timestamp": 200, "input_length": 700, "output_length": 4, "hash_ids": [1, 3]},
            {"timestamp": 1000, "input_length": 300, "output_length": 4, "hash_ids": [4]},
            {"timestamp": 1200, "input_length": 300, "output_length": 4, "hash_ids": [4]}]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    w = build_workload(_cfg(replay=str(trace), replay_speed=2.0), 0, 0, 0, 0, None)
    assert w.schedule == (0.0, 0.1, 0.5, 0.6) and w.params["format"] == "mooncake"
    assert w.params["trace_rate"] == pytest.approx(3 / 0.6)
    builder = PromptBuilder(None, [" ".join(f"w{i}" for i in range(2000))])
    p0, p1 = (builder.build(i, w.requests[i], w, chat=False).split() for i in (0, 1))
    assert len(p0) == 600 and len(p1) == 700 and p0[:512] == p1[:512]  # block 1 is shared
    with StubServer(StubBehaviour(tokens=4)) as srv:
        out = tmp_path / "r"
        p = run_effbench("run", "--scenario", "serving", "--endpoint", srv.url, "--replay", str(trace), "--replay-speed", "2",
                         "--warmup-requests", "0", "--sensor", "none", "--idle-s", "0", "--quiet", "--out", str(out))
        assert p.returncode == 0, p.stderr
        rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
        assert [b["max_tokens"] for b in srv.bodies[-4:]] == [4, 4, 4, 4]
    s = rec["serving"]
    assert s["arrival"] == "replay" and s["requests"] == 4 and s["failed"] == 0
    assert s["workload"]["kind"] == "replay" and s["workload"]["replay_speed"] == 2.0
    assert s["rate"] == pytest.approx(5.0)  # the trace's own rate at this speed
    assert s["realised_rate"] == pytest.approx(5.0, rel=0.15)  # sent at the trace's pace


def test_a_burstgpt_trace_and_bad_traces(tmp_path):
    burst = tmp_path / "burst.csv"
    burst.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "5,ChatGPT,100,20,120,Conversation log\n6.5,GPT-4,50,10,60,Conversation log\n")
    w = build_workload(_cfg(replay=str(burst)), 0, 0, 0, 0, None)
    assert w.schedule == (0.0, 1.5) and w.params["format"] == "burstgpt" and w.requests[1].prompt_tokens == 50
    backwards = tmp_path / "back.csv"
    backwards.write_text("timestamp_s,prompt_tokens,output_tokens\n2,10,5\n1,10,5\n")
    with pytest.raises(EffbenchError, match="before the previous row"):
        build_workload(_cfg(replay=str(backwards)), 0, 0, 0, 0, None)
    p = run_effbench("run", "--scenario", "serving", "--endpoint", "http://127.0.0.1:9", "--replay", str(backwards))
    assert_one_line_error(p, "before the previous row")
    p = run_effbench("run", "--scenario", "serving", "--endpoint", "http://127.0.0.1:9", "--replay", str(tmp_path / "none.csv"))
    assert_one_line_error(p, "not found")


def test_workloads_through_the_cli_name_their_traffic_and_unknown_names_are_one_line(tmp_path):
    with StubServer(StubBehaviour(tokens=64)) as srv:
        out = tmp_path / "r"
        p = run_effbench("run", "--scenario", "serving", "--endpoint", srv.url, "--workload", "lm-arena-chat",
                         "--workload-scale", "0.01", "--multi-turn", "2", "--shared-prefix", "2:8", "--api", "chat",
                         "--concurrency", "2", "--requests", "6", "--prompt-tokens", "8", "--sensor", "none",
                         "--idle-s", "0", "--quiet", "--out", str(out))
        assert p.returncode == 0, p.stderr
        bodies = [b for b in srv.bodies if b.get("messages") and b["messages"][0]["role"] == "system"]
    s = json.loads((out / "results.jsonl").read_text().splitlines()[0])["serving"]
    wl = s["workload"]
    assert wl["name"] == "lm-arena-chat" and wl["multi_turn"] == 2 and wl["shared_prefix"] == {"prompts": 2, "tokens": 8}
    assert wl["scale"] == 0.01 and wl["output_tokens"]["max"] <= 0.01 * 4096 + 1
    assert len(bodies) >= 6 and max(len(b["messages"]) for b in bodies) == 4  # system, user, assistant, user
    assert_one_line_error(run_effbench("run", "--scenario", "serving", "--endpoint", "http://127.0.0.1:9",
                                       "--workload", "lm-arena-chta"), "lm-arena-chat")
    assert_one_line_error(run_effbench("run", "--scenario", "serving", "--endpoint", "http://127.0.0.1:9",
                                       "--shared-prefix", "4x512"), "N:L")
