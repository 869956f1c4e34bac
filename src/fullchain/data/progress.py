"""A progress bar per pipeline phase (shards done of total, or another `unit`), on stderr."""

from __future__ import annotations

from typing import Any


class Progress:
    def __init__(self, name: str, *, total: int, done: int, enabled: bool,
                 unit: str = "shards") -> None:
        self.name, self.total, self.done, self.enabled = name, total, done, enabled
        self.unit = unit
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress("[bold]{task.description}", BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"{self.name} {self.unit}", total=self.total,
                                            completed=self.done)
        return self

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
