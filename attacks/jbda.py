"""JBDA: Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017).

Seed: the first ``seed_size`` images of the victim's training set. Each round labels the
whole current set through the oracle, trains the clone ``epochs_per_round`` epochs
(lr 0.1, constant, batch 256: InI's reference code) and, except after the last round, adds
x + step * sign(d clone_logit[label] / dx) for every image, doubling the set. After R rounds
the clone has trained on seed_size * 2^(R-1) images and seed_size * (2^R - 1) labelled
queries were made: 4,800 and 9,450 for R = 6. Augmented images are clipped to the valid
pixel range.

``step_units`` says what ``step`` is measured in:
- ``"normalized"`` (default): added to the normalized image, as InI's reference code does
  (``src/attacks/jbda/jbda.py``: ``x + lmbda * sign(grad)`` on the transformed tensor), so
  0.1 is 0.1 x std in pixels (0.031 on MNIST);
- ``"pixel"``: in [0, 1] pixel units, as the JBDA paper states it (0.1 is 0.32 normalized
  units on MNIST).
"""
from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, register_attack
from attacks.train_clone import train_clone


@register_attack("jbda")
class JBDA(Attack):
    label = "JBDA"
    defaults = {"seed_size": 150, "rounds": 6, "epochs_per_round": 10, "step": 0.1, "lr": 0.1,
                "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256, "max_queries": None,
                "step_units": "normalized"}
    STEP_UNITS = ("normalized", "pixel")

    def _check_params(self):
        p = self.params
        if p["step_units"] not in self.STEP_UNITS:
            raise ValueError(f"jbda: step_units={p['step_units']!r}; accepted: {list(self.STEP_UNITS)}")
        for k in ("seed_size", "rounds", "epochs_per_round"):
            if not isinstance(p[k], int) or p[k] < 1:
                raise ValueError(f"jbda: {k} must be a positive integer, got {p[k]!r}")
        if p["max_queries"] is not None and self.budget() > p["max_queries"]:
            raise ValueError(f"jbda: {p['rounds']} rounds from {p['seed_size']} seeds need "
                             f"{self.budget()} queries, more than the budget {p['max_queries']}")

    def budget(self) -> int:
        p = self.params
        return p["seed_size"] * (2 ** p["rounds"] - 1)

    def seed_images(self) -> int:
        return self.params["seed_size"]

    def run(self, oracle, actx: AttackContext):
        if actx.seed_set is None:
            raise ValueError("jbda needs seed images (AttackContext.seed_set)")
        p = self.params
        x = actx.seed_set[:p["seed_size"]].clone()
        if len(x) < p["seed_size"]:
            raise ValueError(f"jbda: need {p['seed_size']} seed images, got {len(x)}")
        lo, hi = actx.pixel_bounds()
        clone = actx.new_clone()
        for r in range(p["rounds"]):
            answers = oracle.query(x)
            train_clone(clone, x, answers, actx, epochs=p["epochs_per_round"], lr=p["lr"],
                        momentum=p["momentum"], weight_decay=p["weight_decay"],
                        batch_size=p["batch_size"], schedule="constant", desc=f"jbda r{r + 1}",
                        generator=actx.generator(100 + r))
            actx.checkpoint(clone)   # the reference tests the clone after every round
            if r < p["rounds"] - 1:  # the last round's set is never labelled, so not made
                x = torch.cat([x, self.augment(clone, x, answers, actx, lo, hi)])
        self.final_set_size = len(x)
        return clone

    def augment(self, clone, x, answers, actx, lo, hi):
        labels = answers if answers.dim() == 1 else answers.argmax(1)
        out = []
        for i in range(0, len(x), 512):
            xb = x[i:i + 512].to(actx.device).requires_grad_(True)
            logit = clone(xb).gather(1, labels[i:i + 512].to(actx.device)[:, None]).sum()
            (g,) = torch.autograd.grad(logit, xb)
            step = self.params["step"]
            if self.params["step_units"] == "pixel":
                step = step * actx.pixel_scale()
            out.append(torch.max(torch.min(xb + step * g.sign(), hi), lo).detach().cpu())
        return torch.cat(out)
