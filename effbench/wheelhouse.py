"""A wheelhouse for an offline GPU node: effbench plus the packages it needs there, nothing more.

GPU nodes (secure, sovereign, air-gapped) often have no internet but already have PyTorch and
transformers. We take effbench's requirements (and the chosen extras), follow them through the
installed distributions' metadata, drop what the node already has (``skip``, with everything those
packages need in turn, e.g. torch's CUDA wheels), and download exactly the versions installed here:
the combination effbench is tested with. On the node:
``pip install --no-index --find-links DIR effbench``.
"""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from effbench.errors import EffbenchError

DEFAULT_SKIP = ("torch", "transformers")
DEEP_SKIP = ("torch",)  # skipped packages whose whole dependency tree the node has
DEFAULT_EXTRAS = ("quant",)  # torchao + quanto: the weight-only schemes of the GPU suite
SIZE_BUDGET_BYTES = 60 * 1024 * 1024


@dataclass
class Plan:
    """What goes into the wheelhouse and what is left to the node."""

    packages: dict[str, str] = field(default_factory=dict)  # canonical name -> version installed here
    skipped: set[str] = field(default_factory=set)  # the node has these (and what they need)
    missing: list[str] = field(default_factory=list)  # required but not installed here: cannot pin


@dataclass
class Wheelhouse:
    path: Path
    wheels: list[Path]
    plan: Plan

    @property
    def size_bytes(self) -> int:
        return sum(w.stat().st_size for w in self.wheels)


def _requirements(dist: str, extras: Iterable[str] = ()) -> list[Requirement]:
    """Requirements of an installed distribution that apply here, with the given extras."""
    reqs = []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None:
            reqs.append(req)
            continue
        envs = [{"extra": e} for e in ("", *extras)]  # evaluate() fills in the rest from this interpreter
        if any(req.marker.evaluate(env) for env in envs):
            reqs.append(req)
    return reqs


def _closure(roots: Iterable[Requirement], stop: set[str]) -> tuple[dict[str, str], list[str]]:
    """Installed distributions reachable from ``roots`` (with their extras), not passing through ``stop``."""
    found: dict[str, str] = {}
    missing: list[str] = []
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in stop or name in found:
            continue
        try:
            found[name] = md.version(req.name)
        except md.PackageNotFoundError:
            missing.append(str(req))
            continue
        todo.extend(_requirements(req.name, req.extras))
    return found, missing


def check_target(extras: Iterable[str], python_version: Optional[str]) -> None:
    """One line for an extra effbench does not declare, or a node Python that is not a version effbench
    runs on (``requires-python``), before pip is asked for anything."""
    import re

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    meta = md.metadata("effbench")
    declared = sorted(meta.get_all("Provides-Extra") or [])
    unknown = [e for e in extras if e not in declared]
    if unknown:
        raise EffbenchError(f"unknown effbench extra '{unknown[0]}': choose from {', '.join(declared)} (or --extras '')")
    if python_version is None:
        return
    if not re.fullmatch(r"3(\.\d+){1,2}", python_version.strip()):
        raise EffbenchError(f"--python-version '{python_version}' is not a Python 3 version like 3.10")
    needs = meta["Requires-Python"] or ""
    if needs and Version(python_version.strip()) not in SpecifierSet(needs):
        raise EffbenchError(f"--python-version {python_version}: effbench needs Python {needs}")


def plan(extras: Iterable[str] = DEFAULT_EXTRAS, skip: Iterable[str] = DEFAULT_SKIP,
         include: Iterable[str] = ()) -> Plan:
    """effbench's requirement closure minus what the skipped packages bring to the node."""
    skip_names = {canonicalize_name(s) for s in skip}
    # torch's own dependencies (CUDA libraries, triton, sympy, ...) come with the node's torch build.
    # Those of other skipped packages are included: a node with an older transformers may lack
    # typer or pydantic, and pip leaves whatever is already satisfied untouched.
    node_has, _ = _closure([Requirement(s) for s in skip_names & set(DEEP_SKIP)], set())
    node_has.update({s: "" for s in skip_names})
    roots = _requirements("effbench", extras) + [Requirement(i) for i in include]
    packages, missing = _closure(roots, set(node_has))
    packages.pop("effbench", None)
    return Plan(packages=dict(sorted(packages.items())), skipped=set(node_has), missing=missing)


def project_root() -> Path:
    """The source checkout effbench runs from (its wheel is built from there)."""
    import effbench

    root = Path(effbench.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise EffbenchError("the wheelhouse is built from a source checkout of effbench (pip install -e .); "
                            "this effbench is an installed wheel: copy that wheel to the node instead")
    return root


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EffbenchError(f"pip failed while {what}: {tail[0]}")


def _target_args(python_version: Optional[str], platforms: list[str]) -> list[str]:
    """pip download options for a node whose Python or platform differ from this machine's."""
    args: list[str] = ["--only-binary=:all:"]  # the node cannot build an sdist: no index for build backends
    if python_version:
        args += ["--python-version", python_version, "--implementation", "cp"]
    for p in platforms:
        args += ["--platform", p]
    return args


def build(out: Path, extras: Iterable[str] = DEFAULT_EXTRAS, skip: Iterable[str] = DEFAULT_SKIP,
          include: Iterable[str] = (), python_version: Optional[str] = None, platforms: Iterable[str] = (),
          notify: Callable[[str], None] = lambda _: None) -> Wheelhouse:
    out.mkdir(parents=True, exist_ok=True)
    p = plan(extras, skip, include)
    if p.missing:
        raise EffbenchError(f"cannot pin {', '.join(p.missing)}: not installed here; install it "
                            f"(pip install 'effbench[{','.join(extras)}]') and build the wheelhouse again")
    before = set(out.glob("*.whl"))
    notify("building the effbench wheel")
    _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(project_root())], "building the effbench wheel")
    pins = [f"{name}=={version}" for name, version in p.packages.items()]
    notify(f"downloading {len(pins)} wheels: {', '.join(pins)}")
    _pip(["download", "--no-deps", "--quiet", "--dest", str(out), *_target_args(python_version, list(platforms)),
          *pins], "downloading the dependencies")
    wheels = sorted(set(out.glob("*.whl")) | before)
    return Wheelhouse(out, wheels, p)


INSTALL_COMMAND = "pip install --no-index --find-links {dir} 'effbench[{extras}]'"
