"""Progress of long work: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

A bar redraws itself with carriage returns, which a log file or a pipe shows as one endless line
(or not at all until the end). Off a terminal, :func:`progress` writes a line such as
``evaluating accuracy: 1200/5000 batches, 24%, 1m12s left`` at most every ``interval`` seconds,
and nothing for work that ends before the first interval: quick steps stay quiet.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["LineProgress", "line_interval", "progress"]

DEFAULT_INTERVAL = 5.0
# Seconds between lines off a terminal (e.g. 60 for a long batch job's log).
INTERVAL_ENV = "SCRATCHGPT_PROGRESS_INTERVAL"


def line_interval() -> float:
    """Seconds between progress lines: ``SCRATCHGPT_PROGRESS_INTERVAL``, else 5."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def _amount(n: float, unit: str) -> str:
    if unit == "B":  # bytes read the way people read them
        for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if n >= scale:
                return f"{n / scale:.1f} {suffix}"
        return f"{n:.0f} B"
    return f"{n:,.0f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """The off-terminal progress: the subset of tqdm's interface the package uses (iterate,
    ``update``, ``set_postfix``, ``write``, ``close``, context manager), printing plain lines."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        interval: float = DEFAULT_INTERVAL,
        file: IO[str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.initial = initial
        self.interval = interval
        self.file = file
        self.clock = clock
        self.start = self.last = clock()
        self.postfix = ""
        self.printed = False
        self.printed_n = initial
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LineProgress without an iterable cannot be iterated"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _out(self) -> IO[str]:
        return self.file if self.file is not None else sys.stderr

    def line(self) -> str:
        """The current state as one line."""
        elapsed = self.clock() - self.start
        done = self.n - self.initial
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            amount = f"{_amount(self.n, self.unit)}/{_amount(self.total, self.unit)}"
            if self.unit != "B":
                amount += f" {self.unit}"
            parts = [amount, f"{self.n / self.total:.0%}"]
            if done > 0 and self.n < self.total:
                parts.append(f"{_duration(elapsed * (self.total - self.n) / done)} left")
            else:
                parts.append(f"{_duration(elapsed)} elapsed")
        else:
            amount = _amount(self.n, self.unit) + ("" if self.unit == "B" else f" {self.unit}")
            parts = [amount, f"{_duration(elapsed)} elapsed"]
        if self.postfix:
            parts.append(self.postfix)
        return head + ", ".join(parts)

    def _emit(self) -> None:
        self.last = self.clock()
        self.printed = True
        self.printed_n = self.n
        out = self._out()
        out.write(self.line() + "\n")
        out.flush()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._emit()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def write(self, message: str, file: IO[str] | None = None) -> None:
        out = file if file is not None else self._out()
        out.write(message + "\n")
        out.flush()

    def close(self) -> None:
        # A final line only when progress lines were shown: it says the work is complete.
        if not self.closed and self.printed and self.n != self.printed_n:
            self._emit()
        self.closed = True


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = None,
    interval: float | None = None,
    file: IO[str] | None = None,
    **bar_options: Any,
) -> Any:
    """Progress over ``iterable`` (or ``total`` units fed by ``update``): a tqdm bar when
    ``file`` (default: standard error) is a terminal, a :class:`LineProgress` line every
    ``interval`` seconds (default :func:`line_interval`) when it is not, nothing when
    ``enabled`` is False. ``bar_options`` go to tqdm (``initial`` to both)."""
    from tqdm.auto import tqdm

    out = file if file is not None else sys.stderr
    if enabled is False:
        return tqdm(iterable, total=total, disable=True)
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, file=out, dynamic_ncols=True, **bar_options
        )
    initial = bar_options.get("initial", 0)
    return LineProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        interval=line_interval() if interval is None else interval,
        file=file,
    )
