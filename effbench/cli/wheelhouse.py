"""``effbench wheelhouse DIR``: wheels of effbench and the packages it needs on an offline GPU node
that already has PyTorch and transformers (docs/offline-gpu-node.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effbench.cli._console import err, fmt_bytes, out


def wheelhouse_command(
    directory: Path = typer.Argument(..., help="Folder to write the wheels to (created if missing)."),
    extras: str = typer.Option(",".join(("quant",)), "--extras",
                               help="effbench extras to include, comma-separated (quant: torchao + quanto; '' for none)."),
    skip: str = typer.Option("torch,transformers", "--skip",
                             help="Packages the node already has, comma-separated; what they need is left out too."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Also include this installed package (repeatable)."),
    python_version: Optional[str] = typer.Option(None, "--python-version",
                                                 help="The node's Python, e.g. 3.10, when it differs from this one."),
    platform: Optional[list[str]] = typer.Option(None, "--platform",
                                                 help="The node's wheel platform, e.g. manylinux2014_x86_64 (repeatable)."),
    plan_only: bool = typer.Option(False, "--plan", help="Only print what would go in, download nothing."),
) -> None:
    """Build a folder of wheels to install effbench on a GPU node with no internet."""
    from effbench import wheelhouse as wh

    extra_list = [e.strip() for e in extras.split(",") if e.strip()]
    skip_list = [s.strip() for s in skip.split(",") if s.strip()]
    wh.check_target(extra_list, python_version)
    if plan_only:
        p = wh.plan(extra_list, skip_list, include or [])
        for name, version in p.packages.items():
            out.print(f"{name}=={version}")
        if p.missing:
            err.print(f"not installed here (cannot pin): {', '.join(p.missing)}")
        return
    house = wh.build(directory, extra_list, skip_list, include or [], python_version, platform or [],
                     lambda m: err.print(m, markup=False))
    out.print(f"{len(house.wheels)} wheels, {fmt_bytes(house.size_bytes)} in {directory}")
    if house.size_bytes > wh.SIZE_BUDGET_BYTES:
        err.print(f"note: larger than {fmt_bytes(wh.SIZE_BUDGET_BYTES)}; leave out extras with --extras ''")
    out.print(f"left to the node (already there): {', '.join(skip_list)} and what they need")
    install = wh.INSTALL_COMMAND.format(dir=directory, extras=",".join(extra_list)).replace("[]", "")
    out.print(f"on the node: {install}", markup=False)  # brackets are extras, not rich markup


def register(app: typer.Typer) -> None:
    """Add ``effbench wheelhouse`` to the command-line app."""
    app.command("wheelhouse")(wheelhouse_command)
