"""Progress display for long steps (compiles, Verilator builds, simulations).

On a terminal a step shows a spinner with the elapsed time, redrawn in place on stderr, and
ends with one line saying how long it took. When stderr is not a terminal (a log file, CI, a
pipe) nothing is redrawn: one line when the step starts and one when it ends, so that logs
stay readable.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["step", "Bar"]

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
# Redraw often enough for the spinner to look alive, rarely enough to cost nothing.
_PERIOD_S = 0.1


def _format_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s"


class _Spinner:
    """Redraws ``message`` with a spinner and the elapsed time from a background thread."""

    def __init__(self, message: str, stream: TextIO) -> None:
        self.message = message
        self.stream = stream
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidal-spinner", daemon=True)

    def _run(self) -> None:
        frame = 0
        while not self._stop.wait(_PERIOD_S):
            elapsed = _format_elapsed(time.monotonic() - self.start)
            self.stream.write(f"\r\x1b[2K{_FRAMES[frame % len(_FRAMES)]} {self.message} "
                              f"({elapsed})")
            self.stream.flush()
            frame += 1

    def __enter__(self) -> _Spinner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        # Clear the spinner line so the closing line starts at column 0.
        self.stream.write("\r\x1b[2K")
        self.stream.flush()


@contextlib.contextmanager
def step(message: str, stream: TextIO | None = None, quiet: bool = False) -> Iterator[None]:
    """Show that a long step is running, and how long it took.

    Parameters
    ----------
    message : str
        What is being done, e.g. ``"building Verilator model"``.
    stream : TextIO, optional
        Where to write; default ``sys.stderr`` (looked up at call time, so that tests that
        capture stderr see the lines).
    quiet : bool
        Write nothing at all.

    Notes
    -----
    If the step raises, the closing line says ``failed`` and the exception propagates.
    """
    if quiet:
        yield
        return
    stream = sys.stderr if stream is None else stream
    start = time.monotonic()
    interactive = stream.isatty()
    outcome = "failed"
    try:
        if interactive:
            with _Spinner(message, stream):
                yield
        else:
            stream.write(f"{message} ...\n")
            stream.flush()
            yield
        outcome = "done"
    finally:
        stream.write(f"{message}: {outcome} in {_format_elapsed(time.monotonic() - start)}\n")
        stream.flush()


class Bar:
    """A progress bar of ``total`` jobs: ``advance(line)`` when one finishes.

    On a terminal the bar (done/total, elapsed time) is redrawn in place below the finished
    jobs' lines; otherwise each finished job is one ``[done/total] line`` line. Nothing at
    all when ``quiet``.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.total, self.label, self.done, self.quiet = total, label, 0, quiet
        self.stream = sys.stderr if stream is None else stream
        self.start = time.monotonic()
        self.interactive = self.stream.isatty()
        self._draw()

    def _draw(self) -> None:
        if self.quiet or not self.interactive:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(f"\r\x1b[2K{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} "
                          f"({_format_elapsed(time.monotonic() - self.start)})")
        self.stream.flush()

    def advance(self, line: str) -> None:
        """Count one finished job and show ``line`` about it."""
        self.done += 1
        if self.quiet:
            return
        prefix = "\r\x1b[2K" if self.interactive else ""
        self.stream.write(f"{prefix}[{self.done}/{self.total}] {line}\n")
        self._draw()
        if self.interactive and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()
