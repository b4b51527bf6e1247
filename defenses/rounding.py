"""Rounding: serve the probabilities rounded to ``decimals`` places (Tramèr et al., USENIX
Security 2016; IBM ART's ``Rounded``, default 3 decimals). ``decimals`` is tuned, fewest first.

ART leaves a rounded row summing to slightly more or less than 1; here the residue (a multiple
of 10^-decimals) goes to the top-1 class, so every answer is still a probability vector with
``decimals`` places.
"""
import torch

from defenses.base import PostProcessor, register_defense


@register_defense("rounding")
class Rounding(PostProcessor):
    label = "Rounding"
    knobs = {"decimals": (0, 10)}
    defaults = {"decimals": 3}
    tune_knob = "decimals"
    tune_strongest = "low"
    tune_grid = (0, 1, 2, 3, 4, 6)

    def _check_params(self):
        super()._check_params()
        if int(self.params["decimals"]) != self.params["decimals"]:
            raise ValueError(f"{self.name}: decimals must be an integer, got {self.params['decimals']!r}")

    def perturb(self, x, probs):
        y = torch.round(probs, decimals=int(self.params["decimals"]))
        top = probs.argmax(1, keepdim=True)
        residue = 1.0 - y.sum(1, keepdim=True)
        return y.scatter_add(1, top, residue).clamp_min(0.0)
