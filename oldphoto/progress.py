"""Progress of a run, item by item: a progress bar on a terminal, plain lines otherwise (log files, Prefect
logs): done and failed counts, rate and ETA. Used by `oldphoto restore` (a line per item when not on a terminal)
and the archive flow (a line every OLDPHOTO_PROGRESS_EVERY_S seconds, default 30, and after the last item, in
the flow's log; the bar when `oldphoto archive` runs it on a terminal: `use_terminal`)."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

EVERY_S_ENV = "OLDPHOTO_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0

_terminal: Any = None


def use_terminal(console: Any) -> None:
    """Runs in this process show their progress as a bar on `console` (a rich Console) when it is a terminal:
    `oldphoto archive` calls this, so the flow it starts in-process draws the bar instead of writing log lines.
    None: back to plain lines."""
    global _terminal
    _terminal = console


def terminal_console() -> Any:
    """The console set by `use_terminal`, when it is a terminal; else None."""
    return _terminal if _terminal is not None and _terminal.is_terminal else None


def every_s_from_env() -> float:
    """Seconds between two plain progress lines ($OLDPHOTO_PROGRESS_EVERY_S, default 30; 0: every item)."""
    raw = os.environ.get(EVERY_S_ENV, "")
    try:
        return max(float(raw), 0.0) if raw else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ItemProgress:
    """`start(name)` before an item, `advance(failed=...)` after it. `emit`: where plain lines go (default:
    the console when it is not a terminal; a terminal gets a rich progress bar instead). `every_s`: at most one
    plain line per this many seconds (0: one per item); the last item always gets its line."""

    def __init__(self, total: int, console: Any = None, label: str = "restoring",
                 emit: Callable[[str], None] | None = None, every_s: float = 0.0) -> None:
        self.total, self.label = total, label
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.console = console
        self.emit = emit
        self.every_s = every_s
        self._last_line = self.t0
        self._bar = None
        self._swapped: list[tuple[Any, Any]] = []
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
            self._logs_above_bar()
        elif self.emit is not None:
            self.emit(f"{self.label}: {self.total} item(s) to do")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            for handler, console in self._swapped:
                handler.console = console
            self._swapped = []
            self._bar.__exit__(*exc)

    def _logs_above_bar(self) -> None:
        """Log handlers that print through a rich console of their own (Prefect's console handler) print
        through the bar's console while it runs, so their lines go above the bar instead of through it."""
        from rich.console import Console

        for handler in logging.getLogger().handlers:
            console = getattr(handler, "console", None)
            if isinstance(console, Console) and console is not self.console and console.is_terminal:
                self._swapped.append((handler, console))
                handler.console = self.console

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
            now = time.perf_counter()
            if now - self._last_line >= self.every_s or self.done + self.failed >= self.total:
                self._last_line = now
                self.emit(self.line(name))
