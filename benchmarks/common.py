"""What every suite shares: where results go (one folder per machine) and how JSON results are written."""
from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS = HERE / "configs"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def hardware_slug(device: str = "cpu") -> str:
    """The folder of this machine's results: the detected CPU or GPU name, e.g. ``amd-epyc``."""
    from effbench.hardware import detect

    return slug(detect(device).name)


def results_dir(device: str = "cpu") -> Path:
    path = RESULTS / hardware_slug(device)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """A suite's JSON result, with when, where and from which commit it was taken."""
    from effbench.hardware import detect

    meta = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha(),
            "hardware": detect("cpu").name}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, **data}, indent=2) + "\n")
    return path
