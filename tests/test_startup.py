"""Start-up stays light: the CLI's own start-up (``effbench --help``, ``effbench run --help``,
``effbench project ...``) and the serving client up to its first request import none of the heavy
libraries (scipy, torch, transformers, numpy, matplotlib). Each check runs in a fresh interpreter and
reads ``sys.modules``; none times anything, so none depends on the machine's speed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("scipy", "torch", "transformers", "numpy", "matplotlib")
MARK = "EFFBENCH-HEAVY-MODULES:"
PROJECT = ["project", "--model", "arch:qwen3-32b", "--hardware", "h200", "--gpus", "2", "--concurrency", "64",
           "--workload", "lm-arena-chat", "--json"]


def _report() -> str:
    """Code that prints which heavy packages the process has imported, as one marked line on stderr."""
    return textwrap.dedent(f"""
        import json as _json, sys as _sys
        _sys.stderr.write({MARK!r} + _json.dumps(sorted({{m.split(".")[0] for m in _sys.modules}} & set({HEAVY!r}))) + "\\n")
    """)


def _run(code: str, timeout: float = 300) -> tuple[list[str], subprocess.CompletedProcess]:
    p = subprocess.run([sys.executable, "-c", code + _report()], capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith(MARK)]
    assert lines, p.stderr[-3000:]
    return json.loads(lines[-1][len(MARK):]), p


def _cli(*args: str) -> str:
    """Run the CLI as its entry point does, in this process (a SystemExit is the normal end of --help)."""
    return textwrap.dedent(f"""
        from effbench.cli import main
        try:
            main({list(args)!r})
        except SystemExit as e:
            assert not e.code, e.code
    """)


@pytest.mark.parametrize("code", [
    pytest.param("import effbench.cli", id="import effbench.cli"),
    pytest.param("import effbench.cli.run", id="import effbench.cli.run"),
    pytest.param(_cli("--help"), id="effbench --help"),
    pytest.param(_cli("run", "--help"), id="effbench run --help"),
    pytest.param(_cli("project", "--help"), id="effbench project --help"),
])
def test_the_cli_starts_without_heavy_libraries(code: str) -> None:
    heavy, _ = _run(code)
    assert heavy == []


def test_a_projection_imports_no_heavy_library() -> None:
    """``effbench project`` reads the shipped fit and the shipped architecture shapes: no fit, no meta-device model."""
    heavy, p = _run(_cli(*PROJECT))
    assert heavy == []
    assert json.loads(p.stdout)["basis"] in ("projected", "reference")


def test_the_serving_scenario_module_imports_no_heavy_library() -> None:
    heavy, _ = _run("import effbench.scenarios.serving.scenario")
    assert heavy == []


def _checkpoint(tmp_path: Path) -> Path:
    """A checkpoint directory the serving client can use without weights: the bundled model's
    architecture as config.json and a small word-level tokenizer.json (the light ``tokenizers`` path)."""
    tokenizers = pytest.importorskip("tokenizers")
    from effbench.models import arch

    d = tmp_path / "ckpt"
    d.mkdir()
    config = arch._data_dir().joinpath(arch.catalog()["smollm2-135m"].config_file).read_text(encoding="utf-8")
    (d / "config.json").write_text(config, encoding="utf-8")
    words = ["[UNK]", "the", "a", "of", "and", "to", "in", "is", "it", "that"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    return d


def test_the_serving_client_imports_no_heavy_library_before_its_first_request(tmp_path: Path) -> None:
    """``effbench run --scenario serving --endpoint URL``: the heavy packages imported at each
    connection to the server, up to and including the measured requests (numpy and scipy may come
    after them, for the point's statistics)."""
    pytest.importorskip("httpx")
    from effbench.scenarios.serving.stub import StubServer

    model = _checkpoint(tmp_path)
    with StubServer() as srv:
        port = srv.httpd.server_address[1]
        code = textwrap.dedent(f"""
            import sys
            seen = []
            def _hook(event, args):
                if event == "socket.connect" and isinstance(args[1], tuple) and len(args[1]) >= 2 and args[1][1] == {port}:
                    seen.append(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
            sys.addaudithook(_hook)
        """) + _cli("run", "--scenario", "serving", "--endpoint", srv.url, "--model", str(model),
                    "--concurrency", "1", "--requests", "3", "--warmup-requests", "1", "--new-tokens", "4",
                    "--prompt-tokens", "8", "--sensor", "none", "--idle-s", "0", "--quiet",
                    "--out", str(tmp_path / "run")) + textwrap.dedent(f"""
            import json
            sys.stderr.write({MARK!r}.replace("MODULES", "CONNECTS") + json.dumps(seen) + "\\n")
        """)
        _, p = _run(code)
        measured = srv.count
    connects = [line for line in p.stderr.splitlines() if line.startswith(MARK.replace("MODULES", "CONNECTS"))]
    seen = json.loads(connects[-1].split(":", 1)[1])
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["error"] for r in records] == [None] and measured >= 3  # it did measure
    assert seen and all(heavy == [] for heavy in seen), seen
    env = json.loads((tmp_path / "run" / "run.json").read_text())["environment"]
    assert env["torch"] == {}  # the client process does not use torch: its block stays empty
