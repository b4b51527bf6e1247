"""The black box: the only thing an attack gets from a victim.

``query(x)`` returns probability vectors (soft) or top-1 labels (hard), never logits or
gradients, counts every answered image and refuses queries past the budget.

One oracle is one account. A victim may watch the account's query stream: every layer of a
(composed) victim that has ``new_monitor()`` gives the oracle a fresh monitor, and the oracle
calls ``monitor.observe(x, probs)`` with each batch, in query order, before it answers
(``probs``: the served probabilities, also in hard-label mode). ``observe`` returns None, or a
verdict dict (``monitor``, ``at``: the stream position of the query that raised the flag, and
its statistics) once it flags the account; the oracle then answers nothing more: that batch and
every later one raise ``Refused``. Monitors are found by duck typing, so the oracle imports no
defense.
"""
from __future__ import annotations

import torch


class BudgetExceededError(RuntimeError):
    """The attacker asked for more images than its query budget allows."""


class Refused(RuntimeError):
    """A stream monitor of the victim flagged this account; the oracle answers it no more."""

    def __init__(self, verdict: dict, answered: int):
        self.verdict, self.answered = dict(verdict), answered
        super().__init__(f"account flagged by {self.verdict.get('monitor', 'a monitor')} at its query "
                         f"{self.verdict.get('at')}; {answered} queries answered before the refusal")


def stream_monitors(victim) -> list:
    """A fresh monitor from every layer of ``victim`` that offers one (``new_monitor()``),
    outermost first; a post-processor's inner layer is its ``base`` (defenses/base.py)."""
    out, layer, seen = [], victim, set()
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        make = getattr(layer, "new_monitor", None)
        if callable(make):
            out.append(make())
        layer = getattr(layer, "base", None)
    return out


class Oracle:
    MODES = ("soft", "hard")

    def __init__(self, victim, budget: int, label_mode: str = "soft", device="cpu", batch_size: int = 512,
                 monitors: list | None = None):
        if label_mode not in self.MODES:
            raise ValueError(f"unknown label mode {label_mode!r}; accepted: {self.MODES}")
        if not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"query budget must be a positive integer, got {budget!r}")
        self._victim = victim
        self.budget = budget
        self.label_mode = label_mode
        self.device = device
        self.batch_size = batch_size
        self.queries_used = 0          # answered queries
        self.monitors = stream_monitors(victim) if monitors is None else list(monitors)
        self.refused: Refused | None = None

    @property
    def remaining(self) -> int:
        return self.budget - self.queries_used

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Answers for a batch x (N, C, H, W): (N, K) probabilities or (N,) int64 labels, on CPU."""
        if self.refused is not None:
            raise Refused(self.refused.verdict, self.refused.answered)
        n = len(x)
        if n > self.remaining:
            raise BudgetExceededError(f"query of {n} images exceeds the budget: {self.queries_used} of "
                                      f"{self.budget} already used")
        x = x.detach()
        outs = []
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                outs.append(self._victim(x[i:i + self.batch_size].to(self.device)).detach().cpu())
        probs = torch.cat(outs) if outs else torch.empty(0)
        for monitor in self.monitors:   # in query order, before any answer leaves
            verdict = monitor.observe(x, probs) if n else None
            if verdict is not None:
                self.refused = Refused(verdict, self.queries_used)
                raise self.refused
        self.queries_used += n
        if self.label_mode == "hard":
            return probs.argmax(1)
        return probs.clone()
