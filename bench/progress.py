"""Progress for logs: one line per finished victim or cell, with the ETA of the whole stage.

Progress bars suit a terminal; in a log (CI, nohup, a file) they become hundreds of
carriage-return updates, so ``bench.run`` shows bars only on a terminal and these lines
everywhere else.
"""
from __future__ import annotations

import sys
import time


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LineProgress:
    def __init__(self, total: int, what: str, enabled: bool = True, stream=None):
        self.total, self.what, self.enabled = total, what, enabled and total > 0
        self.stream = stream or sys.stdout
        self.t0, self.k = time.time(), 0
        if self.enabled:
            self.say(f"{total} {what}{'s' if total != 1 else ''} to run")

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def done(self, name: str, detail: str = "") -> None:
        self.k += 1
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        eta = elapsed / self.k * (self.total - self.k)
        width = len(str(self.total))
        self.say(f"[{self.k:>{width}}/{self.total}] {self.what} {name}{': ' + detail if detail else ''} "
                 f"| {hms(elapsed)} elapsed, ETA {hms(eta)}")
