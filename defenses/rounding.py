"""Rounding: serve the probabilities with ``decimals`` places (Tramèr et al., USENIX Security
2016; IBM ART's ``Rounded``, default 3 decimals). ``decimals`` is tuned, fewest first.

ART rounds each entry and leaves the row summing to slightly more or less than 1. Here a row is
rounded by largest remainders: every entry rounded down to ``decimals`` places, then the units
still missing from 1 go, one each, to the entries that lost the most. The answer is a probability
vector with ``decimals`` places, each entry within one unit of the true value and equal to ART's
wherever ART's row sums to 1, and the order of the entries is kept: no class overtakes the
top-1 (it may tie), as rounding promises. (Putting ART's residue on the top-1 alone, as this file
did before, could push it strictly below another class: [.4528, .4771, .0568, ...] at 1 decimal
served 0.5 vs 0.4.)
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
        scale = 10 ** int(self.params["decimals"])
        units = probs.double() * scale
        floor = units.floor()
        missing = (scale - floor.sum(1, keepdim=True)).round().long()   # 0 .. K-1 units left to place
        # rank entries by the remainder they lost (ties: the lower class index first)
        order = torch.argsort(-(units - floor), dim=1, stable=True)
        gets = (torch.arange(units.shape[1]).expand_as(units) < missing).double()
        y = floor.scatter_add(1, order, gets) / scale
        return y.to(probs.dtype)
