"""The ``effbench`` command. One module per verb; this module only wires them and turns every
error into one line on stderr (a traceback only with ``--debug``)."""
from __future__ import annotations

import inspect
import os
import sys
from typing import NoReturn, Optional

import typer

try:  # typer >= 0.20 vendors its own click; older versions use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc  # type: ignore[no-redef]

from effbench.cli._console import one_line
from effbench.errors import EffbenchError

APP_HELP = (
    "Measure LLM inference efficiency: prefill and decode tokens/s, tokens per joule and memory, "
    "under quantization and batching, per hardware profile. Run 'effbench run' with no options "
    "to benchmark the bundled SmolLM2-135M on this machine."
)
# One module per verb (effbench.cli.<verb>, each with a register(app)); run and sensors always ship.
VERBS = ("run", "sensors", "hardware", "report", "compare", "plan", "models", "wheelhouse", "project", "reference", "wrap")


def _print_version(value: bool) -> None:
    if value:
        import effbench

        typer.echo(f"effbench {effbench.__version__}")
        raise typer.Exit()


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the effbench version and exit.",
                                 is_eager=True, callback=_print_version),
) -> None:
    # --debug is read by main() before parsing; declared here so it shows in --help.
    return None


def build_app(verb: Optional[str] = None) -> typer.Typer:
    """The command-line app with every verb, or with ``verb`` alone: a command then imports only its own
    module (``effbench project --json`` answers without loading the sweep's config and options)."""
    app = typer.Typer(name="effbench", help=APP_HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_root)
    for name in (verb,) if verb in VERBS else VERBS:
        try:
            module = __import__(f"effbench.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"effbench.cli.{name}" or name in ("run", "sensors"):
                raise
            continue
        module.register(app)
    for info in app.registered_commands + [g.typer_instance.info for g in app.registered_groups if g.typer_instance]:
        _one_paragraph_summary(info)
    return app


def _one_paragraph_summary(info: object) -> None:
    """The command list shows each verb's first docstring paragraph as one reflowed line (the docstring's own
    line breaks would otherwise cut it mid-sentence at the terminal's width)."""
    callback = getattr(info, "callback", None)
    text = getattr(info, "help", None) or (callback.__doc__ if callback is not None else None)
    if text and not getattr(info, "short_help", None):
        info.short_help = " ".join(inspect.cleandoc(str(text)).split("\n\n")[0].split())  # type: ignore[attr-defined]


def __getattr__(name: str) -> typer.Typer:
    """``effbench.cli.app``: the whole app, built on first use (PEP 562)."""
    if name == "app":
        globals()["app"] = full = build_app()
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"effbench: error: {one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(code)


def main(argv: Optional[list[str]] = None) -> None:
    """The ``effbench`` command: run ``argv`` (default: ``sys.argv[1:]``), every error one line on stderr and a non-zero exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("EFFBENCH_DEBUG") == "1"
    verb = next((a for a in args if not a.startswith("-")), None)
    try:
        rv = build_app(verb)(args=args, prog_name="effbench", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except click_exc.UsageError as e:
        where = e.ctx.command_path if e.ctx else "effbench"
        _fail(f"{e.format_message()} (see '{where} --help')", 2)
    except click_exc.ClickException as e:
        _fail(e.format_message(), e.exit_code or 1)
    except EffbenchError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; every finished configuration is kept: rerun with --resume and the same --out to continue", 130)
    except Exception as e:  # never a traceback for users (re-raised only with --debug)
        if debug:
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback, and please report it)", 1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
