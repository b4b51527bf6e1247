"""JBDA: Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017).

Seed: the first ``seed_size`` images of the victim's training set. Each round labels the
whole current set through the oracle, trains the clone ``epochs_per_round`` epochs
(lr 0.1, constant), then adds x + step * sign(d clone_logit[label] / dx) for every image,
doubling the set (as the spec reads it). After R rounds the set holds seed_size * 2^R
images and seed_size * (2^R - 1) labelled queries were made: 9,600 and 9,450 for R = 6. ``step`` is in pixel units ([0, 1] scale); images are
clipped to the valid pixel range.
"""
from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, register_attack
from attacks.train_clone import train_clone


@register_attack("jbda")
class JBDA(Attack):
    label = "JBDA"
    defaults = {"seed_size": 150, "rounds": 6, "epochs_per_round": 10, "step": 0.1, "lr": 0.1,
                "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "max_queries": None}

    def _check_params(self):
        p = self.params
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
            step = self.params["step"] * actx.pixel_scale()
            out.append(torch.max(torch.min(xb + step * g.sign(), hi), lo).detach().cpu())
        return torch.cat(out)
