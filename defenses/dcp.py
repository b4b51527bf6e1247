"""DCP: the training-free "efficient defense" heuristic (Khaled et al., arXiv 2309.01838).

With p the served probabilities, s = max p:
  a   = 1 / (1 + exp(1000 (s - beta)))            (on only for queries less confident than beta)
  l_k = ln clip(p_k / (1 - p_k), 1e-12, 1 - 1e-12)
  r_k = beta (sigmoid(gamma l_k) - 1/2)
  y~  = (p - a r) / sum(p - a r)
The top-1 label is usually, not always, preserved: ``top1_change_rate`` measures it.
"""
from __future__ import annotations

import torch

from defenses.base import PostProcessor, register_defense

CLIP_LO, CLIP_HI = 1e-12, 1 - 1e-12
SHARPNESS = 1000.0


def dcp_perturb(p: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """The DCP formula on probabilities p (N, C); computed in float64 so the clip bounds are exact."""
    q = p.double()
    s = q.max(1, keepdim=True).values
    a = torch.sigmoid(-SHARPNESS * (s - beta))
    odds = q / (1 - q)  # p_k = 1 gives inf, which the clip maps to CLIP_HI
    l = torch.log(odds.clamp(CLIP_LO, CLIP_HI))
    r = beta * (torch.sigmoid(gamma * l) - 0.5)
    y = q - a * r
    return (y / y.sum(1, keepdim=True)).to(p.dtype)


def top1_change_rate(probs_before: torch.Tensor, probs_after: torch.Tensor) -> float:
    """Percentage of rows whose top-1 label differs between the two probability tensors."""
    if probs_before.shape != probs_after.shape:
        raise ValueError(f"shape mismatch: {tuple(probs_before.shape)} vs {tuple(probs_after.shape)}")
    if len(probs_before) == 0:
        return 0.0
    changed = probs_before.argmax(1) != probs_after.argmax(1)
    return 100.0 * changed.float().mean().item()


@register_defense("dcp")
class DCP(PostProcessor):
    label = "DCP"
    knobs = {"beta": (0.0, 1.5), "gamma": (0.0, 5.0)}
    defaults = {"beta": 0.5, "gamma": 0.2}
    tune_knob = "beta"
    tune_grid = tuple(round(0.1 * i, 1) for i in range(16))  # 0.0 .. 1.5
    tune_strongest = "high"

    def perturb(self, x, probs):
        return dcp_perturb(probs, float(self.params["beta"]), float(self.params["gamma"]))

    def top1_change_rate(self, x: torch.Tensor) -> float:
        """How often serving changes the base model's top-1 on x (e.g. the ID test set)."""
        self.check_input(x)
        with torch.no_grad():
            before = self.base._proba(x)
            return top1_change_rate(before, self.perturb(x, before))
