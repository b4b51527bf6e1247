"""The black box: the only thing an attack gets from a victim.

``query(x)`` returns probability vectors (soft) or top-1 labels (hard), never logits or
gradients, counts every image and refuses queries past the budget.
"""
from __future__ import annotations

import torch


class BudgetExceededError(RuntimeError):
    """The attacker asked for more images than its query budget allows."""


class Oracle:
    MODES = ("soft", "hard")

    def __init__(self, victim, budget: int, label_mode: str = "soft", device="cpu", batch_size: int = 512):
        if label_mode not in self.MODES:
            raise ValueError(f"unknown label mode {label_mode!r}; accepted: {self.MODES}")
        if not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"query budget must be a positive integer, got {budget!r}")
        self._victim = victim
        self.budget = budget
        self.label_mode = label_mode
        self.device = device
        self.batch_size = batch_size
        self.queries_used = 0

    @property
    def remaining(self) -> int:
        return self.budget - self.queries_used

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Answers for a batch x (N, C, H, W): (N, K) probabilities or (N,) int64 labels, on CPU."""
        n = len(x)
        if n > self.remaining:
            raise BudgetExceededError(f"query of {n} images exceeds the budget: {self.queries_used} of "
                                      f"{self.budget} already used")
        self.queries_used += n
        x = x.detach()
        outs = []
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                outs.append(self._victim(x[i:i + self.batch_size].to(self.device)).detach().cpu())
        probs = torch.cat(outs) if outs else torch.empty(0)
        if self.label_mode == "hard":
            return probs.argmax(1)
        return probs.clone()
