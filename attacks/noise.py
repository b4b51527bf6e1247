"""Random noise: the floor a data-free attack must beat (the baseline DFME's paper argues
against, Truong et al., CVPR 2021).

The attacker queries ``budget`` images of i.i.d. uniform pixels in [0, 1] (mapped to the API's
normalized input space) and trains a fresh clone on the answers: soft cross-entropy on
probabilities, cross-entropy on labels. Holds ``budget`` images in memory
(budget x C x H x W float32: 100k MNIST-size images are 314 MB).

Measured for stealbench issue 15 (smallcnn MNIST victim at 98%, soft labels): 9.7-14.6% at 30k
and 100k queries (lr 0.01-0.03, 3-30 epochs), near chance: the victim gives nearly every noise
image the same class. DFME with the same budget: 73-94%.
"""
from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, register_attack
from attacks.train_clone import train_new_clone


@register_attack("random-noise")
class RandomNoise(Attack):
    label = "Random noise"
    defaults = {"budget": 100_000, "epochs": 10, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128}

    def _check_params(self):
        p = self.params
        for k in ("budget", "epochs", "batch_size"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
                raise ValueError(f"random-noise: {k} must be a positive integer, got {p[k]!r}")
        if not p["lr"] > 0:
            raise ValueError(f"random-noise: lr must be > 0, got {p['lr']!r}")

    def budget(self) -> int:
        return self.params["budget"]

    def run(self, oracle, actx: AttackContext):
        b = self.params["budget"]
        lo, hi = (t.cpu() for t in actx.pixel_bounds())
        u = torch.rand((b, actx.in_channels, actx.input_size, actx.input_size), generator=actx.generator(13))
        x = lo + (hi - lo) * u
        answers = torch.cat([oracle.query(x[i:i + 1024]) for i in range(0, b, 1024)])
        return train_new_clone(actx, x, answers, self.params, "random-noise", checkpoint_epochs=True)
