"""The ``mrg`` command line: a thin layer of typer commands over the library.

Each command parses its options, loads its config, calls one library function and prints a rich
summary. ``main()`` is the single place where errors become messages: an ``MrgError`` or a usage
error prints one red line and exits with 1 (``MRG_DEBUG=1`` re-raises with the full traceback).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make torch several times slower whenever another process shares the
# cores; sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs time on an idle machine. A short spin is the
# compromise: benchmarks/bench_threads.py and benchmarks/RESULTS.md. Set before any command imports torch;
# a GOMP_SPINCOUNT or OMP_WAIT_POLICY chosen by the user wins.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

import importlib  # noqa: E402
import pkgutil  # noqa: E402
import sys

import typer

from mrg.cli.app import app
from mrg.console import print_error
from mrg.errors import MrgError

try:  # typer >= 0.26 vendors click; older releases use the click package
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef]

__all__ = ["app", "main"]

# Importing a command module registers its commands on `app`; the help lists them in this order,
# then any other module in this package alphabetically.
_COMMAND_ORDER = ("prepare", "train", "generate", "answer", "evaluate", "label", "report", "analyze", "methods", "metrics", "benchmark", "train_lm", "train_vq",
                  "tokenize_images", "synthesize", "demo",
                  "config_cmd")
_NOT_COMMANDS = {"app", "options"}


def _register_commands() -> None:
    present = {info.name for info in pkgutil.iter_modules(__path__)} - _NOT_COMMANDS
    ordered = [name for name in _COMMAND_ORDER if name in present]
    ordered += sorted(present - set(ordered))
    for name in ordered:
        importlib.import_module(f"{__name__}.{name}")


_register_commands()


def _exit(code: int) -> None:
    """Exit with ``code``; a process of a multi-process launch leaves its process group and ends at once.

    A torchrun worker could abort after its outputs were written, in the C++ teardown at interpreter exit
    ("terminate called without an active exception", seen on CI for 2-process generate and train), which fails
    the whole launch. Everything is written and flushed by now, so such a process skips that teardown
    (``os._exit``) after leaving torch.distributed. A single process exits normally.
    """
    if "torch" in sys.modules:
        from mrg.distributed import end_worker_process

        end_worker_process(code)
    sys.exit(code)


def _debug() -> bool:
    return os.environ.get("MRG_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mrg`` console script; exits the process with the command's status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="mrg", standalone_mode=False)
    except MrgError as err:
        if _debug():
            raise
        print_error(str(err))
        _exit(1)
    except NoArgsIsHelpError:
        _exit(0)  # a group called without a subcommand; typer has already printed its help
    except UsageError as err:
        if _debug():
            raise
        command = err.ctx.command_path if err.ctx is not None else "mrg"
        print_error(f"{err.format_message()} (see '{command} --help')")
        _exit(1)
    except (typer.Abort, KeyboardInterrupt):
        print_error("interrupted; finished outputs are kept, unfinished ones were not written")
        _exit(130)
    _exit(result if isinstance(result, int) else 0)
