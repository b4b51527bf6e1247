"""KnockoffNets, random strategy (Orekondy et al., CVPR 2019).

The attacker samples ``budget`` images from its surrogate query set without augmentation,
labels them through the oracle and trains a clone from scratch (SGD lr 0.1, momentum 0.9,
wd 5e-4, cosine schedule). Soft-label answers train with soft cross-entropy, hard-label
answers with cross-entropy.
"""
from __future__ import annotations

from attacks.base import Attack, AttackContext, draw_queries, query_in_batches, register_attack
from attacks.train_clone import train_new_clone


@register_attack("knockoff")
class KnockoffNets(Attack):
    label = "KnockoffNets"
    defaults = {"budget": 50_000, "epochs": 50, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128, "curve_budgets": ()}

    def _check_params(self):
        b = self.params["budget"]
        if not isinstance(b, int) or b <= 0:
            raise ValueError(f"knockoff: budget must be a positive integer, got {b!r}")
        if self.params["epochs"] < 1:
            raise ValueError(f"knockoff: epochs must be >= 1, got {self.params['epochs']}")
        for c in self.params["curve_budgets"]:
            if not 0 < c < b:
                raise ValueError(f"knockoff: curve budget {c} must lie in (0, budget={b})")

    def budget(self) -> int:
        return self.params["budget"]

    def run(self, oracle, actx: AttackContext):
        x, _ = draw_queries(actx, "knockoff", self.params["budget"])
        x, answers, refused = query_in_batches(oracle, x)
        self.curve = {}  # budget -> clone, for budget curves
        if refused is not None:   # train on what was answered; the runner scores that clone
            if answers is not None and len(answers) > 1:
                self._train(actx, x, answers, "knockoff (refused)", checkpoint=True)
            raise refused
        for c in self.params["curve_budgets"]:
            self.curve[c] = self._train(actx, x[:c], answers[:c], f"knockoff@{c}")
        return self._train(actx, x, answers, "knockoff", checkpoint=True)

    def _train(self, actx, x, answers, desc, checkpoint=False):
        return train_new_clone(actx, x, answers, self.params, desc, checkpoint)
