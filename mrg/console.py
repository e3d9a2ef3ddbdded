"""Terminal output shared by every command: one rich console, rank-zero printing and progress bars.

Everything a user reads goes through here so that multi-process runs print once (on the main
process), progress bars disappear when the output is not a terminal, and tests can capture output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

T = TypeVar("T")

# Rich looks up sys.stdout/sys.stderr at print time when no file is given, so pytest's capture works.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def process_rank() -> int:
    """The global rank of this process under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the process that prints and writes files."""
    return process_rank() == 0


def info(message: str) -> None:
    """Print a message on the main process only."""
    if is_main_process():
        console.print(message, soft_wrap=True)


def warn(message: str) -> None:
    """Print a yellow warning on stderr (main process only)."""
    if is_main_process():
        err_console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def print_error(message: str) -> None:
    """Print one red error line on stderr; long messages are not wrapped so they stay one line."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def progress_enabled() -> bool:
    """Progress bars are shown on the main process of an interactive terminal (and never when MRG_NO_PROGRESS=1)."""
    if os.environ.get("MRG_NO_PROGRESS") == "1" or not is_main_process():
        return False
    return console.is_terminal


def make_progress(*, transfer: bool = False) -> Progress:
    """A rich Progress with the project's columns; ``transfer=True`` shows bytes and speed (downloads)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn()]
    if transfer:
        columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=not progress_enabled(), transient=False)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (silent when not on a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner while a step without a known length runs (plain line when not on a terminal)."""
    if progress_enabled():
        with console.status(message):
            yield
    else:
        info(message)
        yield


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal."""
    return sys.stdout.isatty()
