"""Progress of a run, item by item: a progress bar on a terminal, one line per item otherwise (log files,
Prefect logs): done and failed counts, rate and ETA. Used by `oldphoto restore` and the archive flow."""
from __future__ import annotations

import time
from typing import Any, Callable


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ItemProgress:
    """`start(name)` before an item, `advance(failed=...)` after it. `emit`: where plain lines go (default:
    the console when it is not a terminal; a terminal gets a rich progress bar instead)."""

    def __init__(self, total: int, console: Any = None, label: str = "restoring",
                 emit: Callable[[str], None] | None = None) -> None:
        self.total, self.label = total, label
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.console = console
        self.emit = emit
        self._bar = None
        if emit is None and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[item]}"), console=console)
            self._task = self._bar.add_task(label, total=total, item="", failed="")
        elif emit is None and console is not None:
            self.emit = lambda line: console.print(line, highlight=False, soft_wrap=True)

    def __enter__(self) -> "ItemProgress":
        if self._bar is not None:
            self._bar.__enter__()
        elif self.emit is not None:
            self.emit(f"{self.label}: {self.total} item(s) to do")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, name: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, item=name)

    @property
    def rate(self) -> float:
        n = self.done + self.failed
        return n / max(time.perf_counter() - self.t0, 1e-9)

    @property
    def eta(self) -> float | None:
        n = self.done + self.failed
        return (self.total - n) / self.rate if n else None

    def line(self, name: str = "") -> str:
        n = self.done + self.failed
        return (f"{self.label} {n}/{self.total}: {self.done} done, {self.failed} failed; "
                f"{self.rate * 60:.1f} items/min, ETA {eta_text(self.eta)}" + (f" ({name})" if name else ""))

    def advance(self, failed: bool = False, name: str = "") -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=f"[red]{self.failed} failed" if self.failed else "")
        elif self.emit is not None:
            self.emit(self.line(name))
