"""A dependency-free progress bar for the long commands (demo, bench, profile, find_lr).

On a terminal it redraws one line in place; in a log (CI, a pipe) it prints a line at every 10 % instead, so logs
stay short. Writes to stderr, so the tables on stdout can be piped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``for x in Progress(items, "training"): ...``, or ``with Progress(total=n) as bar: bar.update(note=...)``."""

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        desc: str = "",
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 24,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.count = 0
        self.note = ""
        self._start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_decile = -1

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("Progress: nothing to iterate; pass an iterable or use update()")
        with self:
            for item in self.iterable:
                yield item
                self.update()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Advance by ``n``; ``note`` (e.g. the current loss) is shown after the bar."""
        self.count += n
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.1 or self.count == self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line() + "\x1b[K")
                self.stream.flush()
        elif self.total:
            decile = 10 * self.count // self.total
            if decile > self._last_decile and decile < 10:
                self._last_decile = decile
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Draw the final state (once)."""
        if not self.enabled or self._last_decile == 10:
            return
        self._last_decile = 10
        self.stream.write(("\r" if self._tty else "") + self._line() + ("\x1b[K\n" if self._tty else "\n"))
        self.stream.flush()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        if self.total:
            done = min(self.count / self.total, 1.0)
            filled = int(done * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / done - elapsed if done > 0 else 0.0
            text = f"{self.desc} [{bar}] {self.count}/{self.total} {elapsed:.1f}s<{eta:.1f}s"
        else:
            text = f"{self.desc} {self.count} {elapsed:.1f}s"
        return f"{text}  {self.note}" if self.note else text
