"""Gaussian noise on the output (IBM ART's ``GaussianNoise``): y' = max(p + N(0, scale^2), 0),
renormalized (ART default scale 0.2). ``scale`` is tuned, largest first.

Unlike ART, the noise of a query is a function of the query and the victim's seed (a generator
seeded by a hash of the image), so the same query always gets the same answer, whatever batch
it comes in: an attacker cannot average the noise away by asking again, and runs reproduce.
"""
import hashlib

import torch

from defenses.base import PostProcessor, register_defense


@register_defense("gaussian-noise")
class GaussianNoise(PostProcessor):
    label = "Gaussian noise"
    knobs = {"scale": (0.0, 10.0)}
    defaults = {"scale": 0.2}
    tune_knob = "scale"
    tune_strongest = "high"
    tune_grid = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

    def _build(self, ctx):
        self.salt = str(ctx.seed).encode()

    def noise(self, x, k, dtype):
        rows = []
        for xi in x.detach().cpu().contiguous():
            h = hashlib.blake2b(xi.numpy().tobytes(), digest_size=8, key=getattr(self, "salt", b"0"))
            gen = torch.Generator().manual_seed(int.from_bytes(h.digest(), "little") & (2**63 - 1))
            rows.append(torch.randn(k, generator=gen, dtype=dtype))
        return torch.stack(rows).to(x.device)

    def perturb(self, x, probs):
        if float(self.params["scale"]) == 0.0:
            return probs
        y = (probs + float(self.params["scale"]) * self.noise(x, probs.shape[1], probs.dtype)).clamp_min(0.0)
        total = y.sum(1, keepdim=True)
        return torch.where(total > 0, y / total.clamp_min(1e-30), torch.full_like(y, 1.0 / y.shape[1]))
