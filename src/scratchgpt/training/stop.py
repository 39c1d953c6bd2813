"""The stop flag: SIGINT/SIGTERM once finishes the step, saves and stops; twice aborts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class StopFlag:
    """SIGINT/SIGTERM once: finish the step, save, stop. Twice: abort at once.

    Used as a context manager around the loop; ``requested`` names the first signal (or None).
    """

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.requested: str | None = None
        self.agreed = False  # under torchrun: every rank knows of the stop (set by the loop)
        self._notify = notify
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._notify(
            f"{self.requested}: stopping after this step and saving a checkpoint "
            "(press Ctrl-C again to abort without saving)"
        )

    def __enter__(self) -> StopFlag:
        # Signal handlers can only be set from the main thread; elsewhere the flag stays unset.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
