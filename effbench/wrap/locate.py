"""Where a wrapped tool wrote its results, when ``--results`` does not say: the files and folders
its arguments name (``--output``, ``--artifact-dir``, ``--result-dir`` ...) and the working folder,
newest first, the first whose content is a known format."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Optional

from effbench.wrap.formats import ResultsError, detect

MAX_DEPTH = 3  # an AIPerf artifact folder nests its export one or two levels down
MAX_ENTRIES = 5000  # a working folder that is a whole home directory is not searched to the end
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "site-packages", "logs"}
SUFFIXES = {".json", ".jsonl"}
# Preferred first among a tool's several exports: the per-request ones.
PREFERRED = ("profile_export.jsonl", "benchmarks.json")


def _named_paths(args: list[str], cwd: Path) -> list[Path]:
    """Paths the tool's arguments name: plain paths, ``--opt=path`` values and GuideLLM-style JSON
    specs with a ``path``."""
    out: list[Path] = []
    for a in args:
        values = [a]
        if "=" in a and not a.startswith("{"):
            values.append(a.split("=", 1)[1])
        if a.startswith("{"):
            try:
                spec = json.loads(a)
            except json.JSONDecodeError:
                spec = None
            if isinstance(spec, dict):
                values += [str(spec[k]) for k in ("path", "output_path", "output_dir") if isinstance(spec.get(k), str)]
        for v in values:
            if not v or v.startswith("-") or len(v) > 4096:
                continue
            p = Path(v) if os.path.isabs(v) else cwd / v
            try:
                if p.exists():
                    out.append(p)
            except OSError:
                continue
    return out


def _walk(root: Path, depth: int, budget: list[int]) -> Iterator[Path]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for e in entries:
        budget[0] -= 1
        if budget[0] < 0:
            return
        try:
            if e.is_file() and Path(e.name).suffix in SUFFIXES:
                yield Path(e.path)
            elif e.is_dir(follow_symlinks=False) and depth > 0 and e.name not in SKIP_DIRS:
                yield from _walk(Path(e.path), depth - 1, budget)
        except OSError:
            continue


def find_results(args: list[str], cwd: Path, since_unix: float) -> tuple[Optional[Path], str]:
    """(the results file, how it was found) or (None, what was searched)."""
    named = _named_paths(args, cwd)
    files: list[Path] = [p for p in named if p.is_file()]
    budget = [MAX_ENTRIES]
    for root in [*(p for p in named if p.is_dir()), cwd]:
        files += list(_walk(root, MAX_DEPTH, budget))
    fresh: dict[Path, float] = {}
    for f in files:
        try:
            mtime = f.stat().st_mtime
        except OSError:
            continue
        if mtime >= since_unix - 1.0:
            fresh[f.resolve()] = mtime
    ordered = sorted(fresh, key=lambda f: (f.name not in PREFERRED, -fresh[f]))
    for f in ordered:
        try:
            detect(f)
        except ResultsError:
            continue
        return f, f"found {f} (written during the command)"
    where = ", ".join(str(p) for p in [*named, cwd][:4])
    return None, (f"no results file of GuideLLM, AIPerf or vllm bench serve was written during the command "
                  f"(searched {where}); give --results FILE")
