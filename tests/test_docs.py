"""The docs quote only what the repository holds and stay in step with the code.

- every generated block (``python -m benchmarks.tables``) matches what the committed result files
  and the code give today;
- every run id, result path and relative link quoted in README.md, docs/ and benchmarks/README.md
  exists in this repository;
- every option written after an ``effbench <verb>`` in those pages is an option of that verb;
- docs/method.md lists every field of the result record and every key of a hardware profile.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import summary, tables

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHOD = ROOT / "docs" / "method.md"
RUN_ID = re.compile(r"(?<![0-9a-f])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{12}(?![0-9a-f])")
RESULT_PATH = re.compile(r"(?:benchmarks/results|tests/data)/[\w./-]*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _committed_files() -> list[Path]:
    """The repository's files: what git tracks (a fresh clone), else everything under the results folders."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "benchmarks/results", "tests/data"], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        files = [ROOT / f for f in out.split("\0") if f]
        if files:
            return files
    except (OSError, subprocess.SubprocessError):
        pass
    return [p for d in ("benchmarks/results", "tests/data") for p in (ROOT / d).rglob("*") if p.is_file()]


def _known_run_ids() -> set[str]:
    ids: set[str] = set()
    for f in _committed_files():
        if f.name == "run.json":
            ids.add(json.loads(f.read_text(encoding="utf-8")).get("run_id"))
        elif f.name.endswith(".jsonl"):
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    ids.add(json.loads(line).get("run_id"))
    return {i for i in ids if i}


def test_generated_blocks_match_the_committed_results():
    problems = tables.check()
    assert not problems, "\n\n".join(problems)


def test_every_quoted_run_id_is_in_a_committed_results_file():
    known = _known_run_ids()
    assert known, "no committed run found under benchmarks/results or tests/data"
    quoted = {(doc.relative_to(ROOT).as_posix(), rid) for doc in DOCS for rid in RUN_ID.findall(doc.read_text(encoding="utf-8"))}
    assert quoted, "the docs quote no run id: the pattern or the docs changed"
    missing = sorted(q for q in quoted if q[1] not in known)
    assert not missing, f"run ids quoted but in no committed run.json/results.jsonl: {missing}"


def test_every_quoted_result_path_and_relative_link_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for path in RESULT_PATH.findall(text):
            if not (ROOT / path.rstrip(".,;:")).exists():
                missing.append((doc.name, path))
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#", 1)[0]).exists():
                missing.append((doc.name, target))
    assert not missing, f"paths the docs quote that this repository lacks: {missing}"


def test_docs_do_not_point_outside_the_repository():
    for doc in DOCS:
        assert "../shared" not in doc.read_text(encoding="utf-8"), f"{doc.name} points outside the repository"


def _commands() -> dict[str, set[str]]:
    """'run', 'hardware show', ... -> the option names it accepts (global and help options included)."""
    import typer

    from effbench.cli import app

    root = typer.main.get_command(app)
    base = {"--help", "-h", *(o for p in root.params for o in p.opts)}
    out: dict[str, set[str]] = {}

    def walk(path: list[str], cmd) -> None:
        opts = base | {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", []))}
        if path:
            out[" ".join(path)] = opts
        for name, sub in getattr(cmd, "commands", {}).items():
            walk([*path, name], sub)

    walk([], root)
    return out


def test_every_option_written_after_an_effbench_verb_exists():
    commands = _commands()
    bad = []
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            for m in re.finditer(r"(?<![\w/.'-])effbench ([a-z]+)(?: ([a-z]+))?([^`|'\"()]*)", line):
                verb = f"{m.group(1)} {m.group(2)}" if m.group(2) and f"{m.group(1)} {m.group(2)}" in commands else m.group(1)
                if verb not in commands:
                    continue
                rest = m.group(0).split(" #")[0]  # a shell comment is prose
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                    if opt not in commands[verb]:
                        bad.append((doc.name, f"effbench {verb}", opt))
    assert not bad, f"options the docs give to a verb that lacks them: {sorted(set(bad))}"


def _method_table_keys(heading: str) -> set[str]:
    """The first column of the first table under ``## heading`` in docs/method.md."""
    text = METHOD.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return {m.group(1) for line in table if (m := re.match(r"^\| `([\w.]+)` \|", line))}


def test_method_lists_every_record_field_and_no_other():
    from pydantic import BaseModel

    from effbench.results.schema import Record

    fields = set()
    for name, info in Record.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            fields |= {f"{name}.{f}" for f in sub.model_fields}
        else:
            fields.add(name)
    documented = _method_table_keys("The result record")
    assert fields - documented == set(), f"record fields missing from docs/method.md: {sorted(fields - documented)}"
    assert documented - fields == set(), f"docs/method.md lists fields the record lacks: {sorted(documented - fields)}"


def test_method_lists_every_hardware_profile_key_and_no_other():
    from effbench.hardware import HardwareProfile

    keys = {k for k, f in HardwareProfile.model_fields.items() if not f.exclude}
    documented = _method_table_keys("Hardware profiles")
    assert keys == documented, f"missing: {sorted(keys - documented)}; extra: {sorted(documented - keys)}"


@pytest.mark.parametrize("value, noise, expected", [
    (-0.02, 0.10, "-2.0% (within ±3%)"),
    (0.02, 0.10, "+2.0% (within ±3%)"),
    (-0.05, 0.10, "-5.0% (outside ±3%, inside the 10.0% noise)"),
    (-0.05, 0.01, "-5.0% (OUTSIDE ±3% and the 1.0% noise)"),
    (0.05, 0.01, "+5.0% (OUTSIDE ±3% and the 1.0% noise)"),
])
def test_overhead_verdict_is_two_sided(value, noise, expected):
    assert summary._verdict(value, summary.RUNNER_TARGET, noise) == expected


def test_a_missing_ci_is_not_printed_as_zero():
    assert summary.ci(None) == "n/a"
    assert summary.ci(0.0) == "±0.0%"
    assert summary.ci(0.0456) == "±4.6%"
