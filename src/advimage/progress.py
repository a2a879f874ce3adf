"""Progress bars on stderr that stay whole when the output is not a terminal."""

from __future__ import annotations

import shutil
import sys
from typing import Any


def stderr_console() -> Any:
    """A rich console on stderr; when stderr is not a terminal, a wide fixed width instead of
    rich's 80 columns, so that bars and tables are not cut in logs."""
    from rich.console import Console

    width = None if sys.stderr.isatty() else max(160, shutil.get_terminal_size((160, 24)).columns)
    return Console(stderr=True, width=width)


def stdout_console() -> Any:
    """The same on stdout (tables)."""
    from rich.console import Console

    width = None if sys.stdout.isatty() else max(160, shutil.get_terminal_size((160, 24)).columns)
    return Console(width=width)


def progress_bar(enabled: bool = True, console: Any = None) -> Any:
    """A rich Progress: description, bar, done/total, images/s, elapsed, ETA and a status field."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("  -  img/s" if speed is None else f"{speed:6.2f} img/s", style="progress.data.speed")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), RateColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    return Progress(*columns, console=console or stderr_console(), disable=not enabled, transient=False)
