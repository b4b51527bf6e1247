"""Reverse sigmoid (Lee et al., "Defending against NN model stealing attacks using deceptive
perturbations", S&P Workshops 2019), as IBM ART's ``ReverseSigmoid`` post-processor computes it:
r = beta (sigmoid(gamma logit(p)) - 1/2), y' = clip(p - r, 0, 1) renormalized. Knobs: ``beta``
(magnitude, > 0; ART default 1.0) and ``gamma`` (convergence, > 0; ART default 0.1). ``beta``
is the one tuned for similar benign accuracy.
"""
import torch

from defenses.base import PostProcessor, register_defense

CLIP = 1e-9   # ART's clip_min


@register_defense("reverse-sigmoid")
class ReverseSigmoid(PostProcessor):
    label = "Reverse sigmoid"
    knobs = {"beta": (1e-6, 10.0), "gamma": (1e-6, 10.0)}
    defaults = {"beta": 1.0, "gamma": 0.1}
    tune_knob = "beta"
    tune_strongest = "high"
    tune_grid = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

    def perturb(self, x, probs):
        beta, gamma = float(self.params["beta"]), float(self.params["gamma"])
        if probs.shape[1] == 1:
            raise ValueError("reverse-sigmoid: needs at least 2 classes")
        p = probs.clamp(CLIP, 1 - CLIP)
        r = beta * (torch.sigmoid(gamma * torch.log(p / (1 - p))) - 0.5)
        y = (probs - r).clamp(0.0, 1.0)
        total = y.sum(1, keepdim=True)
        # ART divides by the sum; a row clipped to all zeros (huge beta) would be 0/0: serve uniform
        return torch.where(total > 0, y / total.clamp_min(1e-30), torch.full_like(y, 1.0 / y.shape[1]))
